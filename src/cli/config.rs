//! `basphere config`: the settings in force and where each came from.

use crate::cli::Run;
use crate::config::Entry;
use crate::context::{Allowed, Context, Role};
use crate::error::Result;
use crate::output::{Human, Output, Report};

/// Show the configuration in force and where each value came from
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Precedence: command-line flag, then BASPHERE_<KEY> environment variable, then the config file, then the default."
)]
pub struct Args {
    /// Print a configuration file with every setting, its help and its default, commented
    #[arg(long)]
    pub template: bool,
}

/// Administrators on the bastion, and the service account.
pub const ALLOWED: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

/// The template holds only defaults, nothing of this installation: anyone on the
/// bastion may print it (the package is built from it, by any account).
pub const TEMPLATE: Allowed = ALLOWED.and(Allowed::of(&[Role::Stranger]));

impl Run for Args {
    fn allowed(&self) -> Allowed {
        if self.template {
            TEMPLATE
        } else {
            ALLOWED
        }
    }

    fn needs_database(&self) -> bool {
        false
    }

    fn speaks_json(&self) -> bool {
        !self.template
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        if self.template {
            return Ok(Report::text(crate::config::template(&Default::default())));
        }
        let entries = ctx.config.entries();
        let row = |e: &Entry| vec![e.key.clone(), e.value.clone(), e.source.to_string()];
        let rows = entries.iter().map(row).collect();
        let headers = vec!["KEY", "VALUE", "SOURCE"];
        Ok(Report::new(&entries, Human::Table { headers, rows }))
    }
}
