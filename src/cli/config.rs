//! `basphere config`: the settings in force and where each came from.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::output::Output;

/// Show the configuration in force and where each value came from
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Precedence: command-line flag, then BASPHERE_<KEY> environment variable, then the config file, then the default."
)]
pub struct Args {}

/// Administrators on the bastion, and the service account.
pub const ALLOWED: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<i32> {
        let entries = ctx.config.entries();
        if out.json {
            return out.json(&entries).map(|_| 0);
        }
        let rows = entries
            .into_iter()
            .map(|e| vec![e.key, e.value, e.source.to_string()])
            .collect();
        out.table(&["KEY", "VALUE", "SOURCE"], rows)?;
        Ok(0)
    }
}
