//! `basphere admin run-jobs`: run the periodic jobs that are due (what the timer calls).

use crate::context::Context;
use crate::error::{exit, Error, Result};
use crate::ops::jobs::{self, Outcome, Selection, Status};
use crate::output::{timestamp, Human, Output, Report};

/// Run the periodic jobs that are due (mail, prune, reconcile), each under its own lock
#[derive(Debug, clap::Args)]
#[command(after_help = jobs::help())]
pub struct Args {
    /// Run this job now, due or not (repeatable; the jobs are listed below)
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,

    /// Show each job's record and when it is next due; run nothing
    #[arg(long, conflicts_with = "only")]
    pub list: bool,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let only = args
        .only
        .iter()
        .map(|name| {
            jobs::find(name).ok_or_else(|| {
                let names: Vec<_> = jobs::JOBS.iter().map(|j| j.name).collect();
                Error::invalid(format!(
                    "no job `{name}`: the jobs are {}",
                    names.join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let statuses = if args.list {
        jobs::list(ctx)?
    } else if only.is_empty() {
        jobs::run(ctx, &Selection::Due)?
    } else {
        jobs::run(ctx, &Selection::Only(&only))?
    };
    let failed = statuses
        .iter()
        .any(|s| matches!(s.outcome, Some(Outcome::Failed(_))));
    let rows = statuses.iter().map(row).collect();
    let mut headers = vec!["JOB"];
    if !args.list {
        headers.push("THIS RUN");
    }
    headers.extend([
        "LAST START",
        "LAST SUCCESS",
        "LAST ERROR",
        "DURATION",
        "NEXT DUE",
    ]);
    let mut report = Report::new(&statuses, Human::Table { headers, rows });
    // On stderr too, where cron and the journal look.
    for s in &statuses {
        match &s.outcome {
            Some(Outcome::Busy) => {
                report = report.note(format!(
                    "{}: running in another process; skipped, not waited for",
                    s.name
                ))
            }
            Some(Outcome::Failed(error)) => {
                report = report.note(format!(
                    "error: job {} failed: {}",
                    s.name,
                    crate::output::sanitize(error)
                ))
            }
            _ => {}
        }
    }
    if failed {
        report = report.exit(exit::FAILURE);
    }
    Ok(report)
}

fn row(s: &Status) -> Vec<String> {
    let time = |t: Option<i64>| t.map(timestamp).unwrap_or_else(|| "never".into());
    let mut row = vec![s.name.to_owned()];
    if let Some(outcome) = &s.outcome {
        row.push(match outcome {
            Outcome::Ok(summary) => format!("ok: {summary}"),
            Outcome::Failed(_) => "failed".to_owned(),
            Outcome::Busy => "busy".to_owned(),
            Outcome::NotDue => "not due".to_owned(),
        });
    }
    let running = s.last_start.is_some() && s.last_end < s.last_start;
    row.extend([
        time(s.last_start),
        time(s.last_success),
        s.last_error.clone().unwrap_or_default(),
        match (running, s.last_duration_ms) {
            (true, _) => "unfinished".to_owned(),
            (false, Some(ms)) => format!("{:.1}s", ms as f64 / 1000.0),
            (false, None) => String::new(),
        },
        timestamp(s.next_due),
    ]);
    row
}
