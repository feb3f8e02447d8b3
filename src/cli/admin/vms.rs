//! `basphere admin vms`: every tenant's VMs.

use crate::cli::vm::Vms;
use crate::context::Context;
use crate::error::Result;
use crate::ops::vm;
use crate::output::{Output, Report};
use crate::validate::UserId;

/// List every user's VMs
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this user's VMs
    #[arg(long)]
    pub user: Option<UserId>,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let user = args.user.as_ref().map(UserId::as_str);
    let views = vm::list_all(ctx, user)?;
    Ok(Vms {
        views,
        with_owner: true,
    }
    .report())
}
