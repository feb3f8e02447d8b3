//! `basphere admin audit`: the audit log.

use crate::context::Context;
use crate::db::audit::Entry;
use crate::error::Result;
use crate::ops::audit;
use crate::output::{timestamp, Human, Output, Report};

/// Show who changed what, newest last
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries by or about this user
    #[arg(long)]
    pub user: Option<String>,

    /// How many entries
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let entries = audit::recent(ctx, args.user.as_deref(), args.limit)?;
    let row = |e: &Entry| {
        let result = match e.detail.lines().next() {
            Some(first) => format!("{}: {first}", e.result),
            None => e.result.clone(),
        };
        let (actor, via) = (e.actor.clone(), e.via.clone());
        vec![
            timestamp(e.at),
            actor,
            via,
            e.action.clone(),
            e.target.clone(),
            result,
        ]
    };
    let rows = entries.iter().map(row).collect();
    let headers = vec!["TIME", "ACTOR", "VIA", "ACTION", "TARGET", "RESULT"];
    Ok(Report::new(&entries, Human::Table { headers, rows }))
}
