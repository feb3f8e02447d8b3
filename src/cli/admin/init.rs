//! `basphere admin init`: set an installation up. For now, only its database.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::init;
use crate::output::{Human, Output, Report};

/// Set up this host's installation: for now, its data directory and database
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every other command refuses to run without a database, so a \
mistyped --data-dir, or a volume not yet mounted, never looks like an empty installation. \
Run it once when installing: it asks nothing, and leaves an existing database as it is."
)]
pub struct Args {
    /// Create the data directory and an empty database (with this installation's id)
    #[arg(long)]
    pub database_only: bool,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    if !args.database_only {
        return Err(Error::invalid_with_help(
            "`admin init` sets up only the database for now",
            "run `basphere admin init --database-only`",
        ));
    }
    let done = init::database_only(ctx)?;
    let line = if done.created {
        format!(
            "created the basphere database {} (installation {})",
            done.database.display(),
            done.installation
        )
    } else {
        format!(
            "the basphere database {} already exists (installation {}); nothing changed",
            done.database.display(),
            done.installation
        )
    };
    Ok(Report::new(&done, Human::Lines(vec![line])))
}
