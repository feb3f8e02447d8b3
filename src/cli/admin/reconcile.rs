//! `basphere admin reconcile`: repair disagreements between the database and libvirt.

use crate::context::Context;
use crate::error::Result;
use crate::ops::reconcile;
use crate::output::{Human, Output, Report};

/// Find and repair what a crash left behind: interrupted creates and deletes, orphan
/// domains, disks, seeds, networks and DHCP reservations
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show what would be repaired, change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let outcomes = reconcile::reconcile(ctx, args.dry_run)?;
    let failed = outcomes.iter().any(|o| o.result.starts_with("failed"));
    let human = if outcomes.is_empty() {
        Human::Lines(vec![
            "nothing to repair: the database and libvirt agree".into()
        ])
    } else {
        let row = |o: &reconcile::Outcome| {
            let (what, target) = o.repair.describe();
            vec![what, target, o.result.clone()]
        };
        let rows = outcomes.iter().map(row).collect();
        let headers = vec!["REPAIR", "TARGET", "RESULT"];
        Human::Table { headers, rows }
    };
    Ok(Report::new(&outcomes, human).exit(failed as i32))
}
