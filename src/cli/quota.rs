//! `basphere quota`: your limits and what you use.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::quota;
use crate::output::{Human, Output, Render, Report};
use crate::validate::Size;

/// Show your quota: limit, used and free for each resource
#[derive(Debug, clap::Args)]
pub struct Args {}

impl Render for quota::Standing {
    fn human(&self) -> Human {
        let (l, u) = (&self.limits, &self.usage);
        let mem = |m: u64| Size::from_mib(m).to_string();
        let disk = |b: u64| Size::from_bytes(b).to_string();
        let count = |n: u64| n.to_string();
        let row = |name: &str, limit: u64, used: u64, show: &dyn Fn(u64) -> String| {
            let free = limit.saturating_sub(used);
            vec![name.to_owned(), show(limit), show(used), show(free)]
        };
        let rows = vec![
            row("cpus", l.cpus, u.cpus, &count),
            row("memory", l.memory_mib, u.memory_mib, &mem),
            row("disk", l.disk_bytes, u.disk_bytes, &disk),
            row("vms", l.vms, u.vms, &count),
        ];
        let headers = vec!["RESOURCE", "LIMIT", "USED", "FREE"];
        Human::Table { headers, rows }
    }
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        let user = ctx.tenant()?;
        Ok(Report::of(&quota::show(ctx, &user)?))
    }
}
