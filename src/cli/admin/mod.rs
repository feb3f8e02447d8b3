//! `basphere admin ...`: commands for administrators.

pub mod audit;
pub mod image;
pub mod quota;
pub mod reconcile;
pub mod user;
pub mod vms;

use clap::Subcommand;

use crate::context::Context;
use crate::error::Result;
use crate::output::Output;

/// Administer users, images, quotas and the host
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    User(user::Args),
    Image(image::Args),
    Quota(quota::Args),
    Vms(vms::Args),
    Reconcile(reconcile::Args),
    Audit(audit::Args),
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    ctx.require_admin()?;
    match &args.command {
        Command::User(a) => user::exec(a, ctx, out),
        Command::Image(a) => image::exec(a, ctx, out),
        Command::Quota(a) => quota::exec(a, ctx, out),
        Command::Vms(a) => vms::exec(a, ctx, out),
        Command::Reconcile(a) => reconcile::exec(a, ctx, out),
        Command::Audit(a) => audit::exec(a, ctx, out),
    }
}
