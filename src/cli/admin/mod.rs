//! `basphere admin ...`: commands for administrators.

pub mod adopt;
pub mod approve;
pub mod audit;
pub mod image;
pub mod init;
pub mod mail;
pub mod quota;
pub mod reconcile;
pub mod reject;
pub mod run_jobs;
pub mod signups;
pub mod user;
pub mod vms;

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::output::{Output, Report};

/// Administer users, images, quotas and the host
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    User(user::Args),
    Image(image::Args),
    Quota(quota::Args),
    Vms(vms::Args),
    Reconcile(reconcile::Args),
    Adopt(adopt::Args),
    Audit(audit::Args),
    Signups(signups::Args),
    Approve(approve::Args),
    Reject(reject::Args),
    Mail(mail::Args),
    RunJobs(run_jobs::Args),
}

impl Args {
    /// `admin init` (but not `--database-only`) and `admin adopt` change the host itself,
    /// so root runs them as root; see `crate::sudo`.
    pub fn needs_root(&self) -> bool {
        self.writes_config() || matches!(self.command, Command::Adopt(_))
    }

    /// `admin init` (but not `--database-only`) writes the configuration file.
    pub fn writes_config(&self) -> bool {
        matches!(&self.command, Command::Init(init) if !init.database_only)
    }
}

/// Administrators, on the bastion or over SSH.
pub const ALLOWED: Allowed = Allowed::ADMINS;

/// Setting the host up: administrators on the bastion, and the service account that
/// owns the data directory.
pub const INIT: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

/// The periodic jobs: administrators on the bastion, and the service account the timer
/// runs them as (like `serve`, which runs them too).
pub const RUN_JOBS: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        match &self.command {
            Command::Init(_) => INIT,
            Command::RunJobs(_) => RUN_JOBS,
            Command::Adopt(_) => adopt::ALLOWED,
            _ => ALLOWED,
        }
    }

    fn needs_database(&self) -> bool {
        !matches!(self.command, Command::Init(_))
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        match &self.command {
            Command::Init(a) => init::exec(a, ctx, out),
            Command::User(a) => user::exec(a, ctx, out),
            Command::Image(a) => image::exec(a, ctx, out),
            Command::Quota(a) => quota::exec(a, ctx, out),
            Command::Vms(a) => vms::exec(a, ctx, out),
            Command::Reconcile(a) => reconcile::exec(a, ctx, out),
            Command::Adopt(a) => adopt::exec(a, ctx, out),
            Command::Audit(a) => audit::exec(a, ctx, out),
            Command::Signups(a) => signups::exec(a, ctx, out),
            Command::Approve(a) => approve::exec(a, ctx, out),
            Command::Reject(a) => reject::exec(a, ctx, out),
            Command::Mail(a) => mail::exec(a, ctx, out),
            Command::RunJobs(a) => run_jobs::exec(a, ctx, out),
        }
    }
}
