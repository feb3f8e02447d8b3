//! `basphere admin audit`: the audit log.

use crate::context::Context;
use crate::error::Result;
use crate::ops::audit;
use crate::output::{timestamp, Output};

/// Show who changed what, newest last
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries by or about this user
    #[arg(long)]
    pub user: Option<String>,

    /// How many entries
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    let entries = audit::recent(ctx, args.user.as_deref(), args.limit)?;
    if out.json {
        out.json(&entries)?;
        return Ok(0);
    }
    let rows = entries
        .iter()
        .map(|e| {
            let result = if e.detail.is_empty() {
                e.result.clone()
            } else {
                format!("{}: {}", e.result, e.detail.lines().next().unwrap_or(""))
            };
            vec![
                timestamp(e.at),
                e.actor.clone(),
                e.via.clone(),
                e.action.clone(),
                e.target.clone(),
                result,
            ]
        })
        .collect();
    out.table(
        &["TIME", "ACTOR", "VIA", "ACTION", "TARGET", "RESULT"],
        rows,
    )?;
    Ok(0)
}
