//! `basphere admin quota ...`: per-user limits.

use clap::Subcommand;

use crate::context::Context;
use crate::db::quotas::Overrides;
use crate::error::{Error, Result};
use crate::ops::quota;
use crate::output::{Output, Report};
use crate::validate::{self, Size, UserId};

/// Show and change users' quotas
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Change some of a user's limits; the others stay as they are
    #[command(after_help = "Example:\n  basphere admin quota set alice --cpus 8 --memory 16G")]
    Set {
        user: UserId,
        #[arg(long, allow_hyphen_values = true)]
        cpus: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        memory: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        disk: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        vms: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        snapshots: Option<String>,
        /// Expiry of snapshots made without --expire, e.g. 7d, or `never`
        #[arg(long, allow_hyphen_values = true, value_name = "DURATION")]
        snapshot_expire: Option<String>,
        /// Snapshots per VM that `snapshot prune` keeps
        #[arg(long, allow_hyphen_values = true, value_name = "N")]
        snapshot_keep_last: Option<String>,
    },
    /// Show a user's limits and usage
    Show { user: UserId },
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    match &args.command {
        Command::Set {
            user,
            cpus,
            memory,
            disk,
            vms,
            snapshots,
            snapshot_expire,
            snapshot_keep_last,
        } => {
            let n = |what, v: &Option<String>| -> Result<Option<u64>> {
                v.as_deref()
                    .map(|s| validate::count(what, s, 1_000_000).map(u64::from))
                    .transpose()
            };
            let change = Overrides {
                cpus: n("CPU limit", cpus)?,
                memory_mib: memory
                    .as_deref()
                    .map(|s| s.parse::<Size>().map(Size::mib))
                    .transpose()?,
                disk_bytes: disk
                    .as_deref()
                    .map(|s| s.parse::<Size>().map(Size::bytes))
                    .transpose()?,
                vms: n("VM limit", vms)?,
                snapshots: n("snapshot limit", snapshots)?,
                snapshot_expire_secs: snapshot_expire
                    .as_deref()
                    .map(|s| match s {
                        "never" => Ok(0),
                        s => s.parse::<crate::validate::Span>().map(|span| span.0),
                    })
                    .transpose()?,
                // Keeping none is a policy too: prune removes every snapshot that is not new.
                snapshot_keep_last: snapshot_keep_last
                    .as_deref()
                    .map(|s| validate::whole_number("keep-last count", s))
                    .transpose()?,
            };
            if change == Overrides::default() {
                return Err(Error::invalid_with_help(
                    "nothing to change",
                    "give at least one of --cpus, --memory, --disk, --vms, --snapshots, --snapshot-expire, --snapshot-keep-last",
                ));
            }
            Ok(Report::of(&quota::set(ctx, user.as_str(), &change)?))
        }
        Command::Show { user } => Ok(Report::of(&quota::show(ctx, user.as_str())?)),
    }
}
