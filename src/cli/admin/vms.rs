//! `basphere admin vms`: every tenant's VMs.

use crate::context::Context;
use crate::error::Result;
use crate::ops::vm;
use crate::output::Output;

/// List every user's VMs
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this user's VMs
    #[arg(long)]
    pub user: Option<String>,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    let views = vm::list_all(ctx, args.user.as_deref())?;
    crate::cli::vm::list(out, &views, true)?;
    Ok(0)
}
