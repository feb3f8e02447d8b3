//! `basphere quota`: your limits and what you use.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::quota::{self, Report};
use crate::output::Output;
use crate::validate::Size;

/// Show your quota: limit, used and free for each resource
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn render(out: &mut Output, r: &Report) -> Result<()> {
    if out.json {
        return out.json(r);
    }
    let l = &r.limits;
    let u = &r.usage;
    let mem = |m: u64| Size::from_mib(m).to_string();
    let disk = |b: u64| Size::from_bytes(b).to_string();
    let free = |limit: u64, used: u64| limit.saturating_sub(used);
    let rows = vec![
        vec![
            "cpus".into(),
            l.cpus.to_string(),
            u.cpus.to_string(),
            free(l.cpus, u.cpus).to_string(),
        ],
        vec![
            "memory".into(),
            mem(l.memory_mib),
            mem(u.memory_mib),
            mem(free(l.memory_mib, u.memory_mib)),
        ],
        vec![
            "disk".into(),
            disk(l.disk_bytes),
            disk(u.disk_bytes),
            disk(free(l.disk_bytes, u.disk_bytes)),
        ],
        vec![
            "vms".into(),
            l.vms.to_string(),
            u.vms.to_string(),
            free(l.vms, u.vms).to_string(),
        ],
    ];
    out.table(&["RESOURCE", "LIMIT", "USED", "FREE"], rows)
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<i32> {
        let user = ctx.tenant()?;
        render(out, &quota::show(ctx, &user)?)?;
        Ok(0)
    }
}
