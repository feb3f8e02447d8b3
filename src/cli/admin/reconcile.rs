//! `basphere admin reconcile`: repair disagreements between the database and libvirt.

use crate::context::Context;
use crate::error::Result;
use crate::ops::reconcile;
use crate::output::Output;

/// Find and repair what a crash left behind: interrupted creates and deletes, orphan
/// domains, disks, seeds, networks and DHCP reservations
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show what would be repaired, change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    let outcomes = reconcile::reconcile(ctx, args.dry_run)?;
    if out.json {
        out.json(&outcomes)?;
    } else if outcomes.is_empty() {
        out.line("nothing to repair: the database and libvirt agree")?;
    } else {
        let rows = outcomes
            .iter()
            .map(|o| {
                let (what, target) = o.repair.describe();
                vec![what, target, o.result.clone()]
            })
            .collect();
        out.table(&["REPAIR", "TARGET", "RESULT"], rows)?;
    }
    let failed = outcomes.iter().any(|o| o.result.starts_with("failed"));
    Ok(if failed { 1 } else { 0 })
}
