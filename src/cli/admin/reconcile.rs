//! `basphere admin reconcile`: repair disagreements between the database and libvirt.

use crate::context::Context;
use crate::error::{exit, Result};
use crate::ops::reconcile::{self, MAX_REMOVALS_UNFORCED};
use crate::output::{Human, Output, Report};

/// Find and repair what a crash left behind: interrupted creates and deletes, orphan
/// domains, disks, seeds, networks and DHCP reservations
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Only libvirt objects that carry this installation's id are \
judged; others with basphere's name prefix (another installation's, or made by hand) are \
listed and left alone. A plan that removes more than 3 objects (domains, networks, disks, \
records of VMs or snapshots), or more than it keeps, is printed and not applied without \
--force."
)]
pub struct Args {
    /// Show what would be repaired, change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Apply a plan that removes more than 3 objects, or more than it keeps
    #[arg(long)]
    pub force: bool,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let done = reconcile::reconcile(ctx, args.dry_run, args.force)?;
    let mut parts = Vec::new();
    if done.repairs.is_empty() {
        parts.push(Human::Lines(vec![
            "nothing to repair: the database and libvirt agree".into(),
        ]));
    } else {
        let row = |o: &reconcile::Outcome| {
            let (what, target) = o.repair.describe();
            vec![what, target, o.result.clone()]
        };
        let rows = done.repairs.iter().map(row).collect();
        let headers = vec!["REPAIR", "TARGET", "RESULT"];
        parts.push(Human::Table { headers, rows });
    }
    if !done.left_alone.is_empty() {
        let rows = done
            .left_alone
            .iter()
            .map(|f| {
                let whose = match &f.installation {
                    Some(id) => format!("installation {id}"),
                    None => "no installation id, and no row of ours".to_owned(),
                };
                vec![f.object.to_owned(), f.name.clone(), whose]
            })
            .collect();
        let headers = vec!["LEFT ALONE", "NAME", "WHOSE"];
        parts.push(Human::Table { headers, rows });
    }
    let failed = done.repairs.iter().any(|o| o.result.starts_with("failed"));
    let sizes = format!(
        "it removes {} object(s) and keeps {} VM(s) and network(s)",
        done.removals, done.kept
    );
    let mut report = Report::new(&done, Human::Parts(parts));
    if done.needs_force && args.dry_run {
        report = report.note(format!("note: applying this plan needs --force: {sizes}"));
    } else if done.needs_force && !done.applied {
        report = report
            .note(format!(
                "error: nothing was changed: {sizes}; more than {MAX_REMOVALS_UNFORCED} removals, or more removals than objects kept, need --force"
            ))
            .note("help: check the plan (is this the right data directory, and the right libvirt?), then run `basphere admin reconcile --force`")
            .exit(exit::CONFLICT);
    }
    if failed {
        report = report.exit(exit::FAILURE);
    }
    Ok(report)
}
