//! The job runner: every periodic job basphere has, with its interval, and the one way
//! they run (`admin run-jobs` from the timer, and `serve` in-process on its tick).
//!
//! Each run of a job holds its own lock (`DATA_DIR/locks/job-NAME.lock`, a flock the
//! kernel drops when the process dies) and is recorded in the jobs table. A job that
//! another process is running is skipped, not waited for. A run killed half way leaves
//! its row started and not ended, which makes the job due at once for the next run.

use std::time::Instant;

use crate::context::Context;
use crate::db;
use crate::error::Result;
use crate::mail::{self, Mailer};
use crate::ops::lock;
use crate::ops::reconcile::MAX_REMOVALS_UNFORCED;
use crate::ops::snapshot::{self, PruneRequest, Scope};

/// One periodic job. Adding a job is one entry in [`JOBS`].
pub struct Job {
    /// Its name: in the jobs table, its lock file, `--only` and the output.
    pub name: &'static str,
    /// Seconds from the start of one run to the next.
    pub every: i64,
    /// What it does, for `admin run-jobs --help` and people reading the table.
    pub about: &'static str,
    /// Whether `serve` runs it on its own tick too (mail: so that a signup's mail goes
    /// out at once, and on hosts without the timer).
    pub in_serve: bool,
    /// The work: a one-line summary of what it did, or why it failed.
    run: fn(&Context) -> Ran,
}

/// What one run did: a summary, or the error that is recorded as `last_error`.
type Ran = std::result::Result<String, String>;

/// Every job, in the order a run takes them.
///
/// - `mail` every minute: a mail that failed waits at least a minute before its retry
///   (`mail::backoff`), and `serve` sends new mail at once anyway.
/// - `prune` hourly, as the cron line and timer it replaces did: expiries are days.
/// - `reconcile` hourly: what a crash leaves (a VM stuck in `creating`, its quota, an
///   orphan domain) is repaired within the hour; it lists every domain and network, so
///   not more often. It never applies a plan that needs `--force`: that fails the job,
///   for a person to check. At boot `basphere-reconcile.service` runs it at once.
pub const JOBS: &[Job] = &[
    Job {
        name: "mail",
        every: 60,
        about: "send the mail in the outbox that is due",
        in_serve: true,
        run: mail_flush,
    },
    Job {
        name: "prune",
        every: 3600,
        about: "delete expired snapshots and those beyond each user's keep-last",
        in_serve: false,
        run: prune,
    },
    Job {
        name: "reconcile",
        every: 3600,
        about: "repair what a crash left between the database and libvirt (never a plan that needs --force)",
        in_serve: false,
        run: reconcile,
    },
];

/// A tick comes a little early or late; a job due within this many seconds of a tick
/// runs at it, so a job every minute runs every minute and not every other one.
const TICK_SLACK: i64 = 5;

/// The jobs and their intervals, and how they run, for `admin run-jobs --help`.
pub fn help() -> String {
    let mut text = String::from("The jobs:\n");
    for job in JOBS {
        let every = match job.every {
            60 => "every minute".to_owned(),
            3600 => "hourly".to_owned(),
            86_400 => "daily".to_owned(),
            secs => format!("every {} min", secs / 60),
        };
        text.push_str(&format!("  {:<10} {every}: {}\n", job.name, job.about));
    }
    text.push_str(
        "\nThe timer basphere-jobs.timer runs this every minute, as the service account; `serve` \
runs the mail job itself too. A job that another process is running is skipped (`busy`), not \
waited for. Each run is recorded: the table shows each job's last start, last success, last \
error, duration and when it is next due. Exit status 1 when a job that ran failed.",
    );
    text
}

/// The job named `name`.
pub fn find(name: &str) -> Option<&'static Job> {
    JOBS.iter().find(|j| j.name == name)
}

/// Which jobs a run takes.
pub enum Selection<'a> {
    /// Those that are due.
    Due,
    /// Those that are due, of the ones `serve` runs.
    DueInServe,
    /// These, due or not.
    Only(&'a [&'static Job]),
}

/// What became of one job in one run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum Outcome {
    /// It ran and succeeded: what it did.
    Ok(String),
    /// It ran and failed: why.
    Failed(String),
    /// Another process is running it: skipped, not waited for.
    Busy,
    /// Not due yet, and not asked for.
    NotDue,
}

/// One job after a run: its outcome, its record and when it is due next.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub name: &'static str,
    pub every_secs: i64,
    /// What this run did with it; `None` when only listing.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    pub last_start: Option<i64>,
    pub last_end: Option<i64>,
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub runs: i64,
    pub consecutive_failures: i64,
    /// Unix seconds; a job never run, or whose last run never ended, is due now.
    pub next_due: i64,
}

/// When `job` is next due, from its record: at once if it never ran or its last run
/// never ended (killed, or still running elsewhere), else its interval after that start.
pub fn next_due(job: &Job, record: Option<&db::jobs::Job>, now: i64) -> i64 {
    match record.and_then(|r| r.last_start.map(|s| (s, r.last_end))) {
        Some((start, Some(end))) if end >= start => start + job.every,
        _ => now,
    }
}

fn is_due(job: &Job, record: Option<&db::jobs::Job>, now: i64) -> bool {
    next_due(job, record, now) <= now + TICK_SLACK
}

/// Runs the jobs `selection` names, one after another, each under its own lock.
pub fn run(ctx: &Context, selection: &Selection) -> Result<Vec<Status>> {
    let mut statuses = Vec::new();
    for job in JOBS {
        let chosen = match selection {
            Selection::Due => true,
            Selection::DueInServe => job.in_serve,
            Selection::Only(jobs) => jobs.iter().any(|j| j.name == job.name),
        };
        if !chosen {
            continue;
        }
        let forced = matches!(selection, Selection::Only(_));
        let outcome = run_one(ctx, job, forced)?;
        statuses.push(status(ctx, job, Some(outcome))?);
    }
    Ok(statuses)
}

/// Every job's record, running nothing.
pub fn list(ctx: &Context) -> Result<Vec<Status>> {
    JOBS.iter().map(|job| status(ctx, job, None)).collect()
}

fn status(ctx: &Context, job: &'static Job, outcome: Option<Outcome>) -> Result<Status> {
    let record = db::jobs::get(ctx.db()?, job.name)?;
    let now = crate::hooks::now();
    let next_due = next_due(job, record.as_ref(), now);
    let r = record.unwrap_or(db::jobs::Job {
        name: job.name.to_owned(),
        last_start: None,
        last_end: None,
        last_success: None,
        last_error: None,
        last_duration_ms: None,
        runs: 0,
        consecutive_failures: 0,
    });
    Ok(Status {
        name: job.name,
        every_secs: job.every,
        outcome,
        last_start: r.last_start,
        last_end: r.last_end,
        last_success: r.last_success,
        last_error: r.last_error,
        last_duration_ms: r.last_duration_ms,
        runs: r.runs,
        consecutive_failures: r.consecutive_failures,
        next_due,
    })
}

fn run_one(ctx: &Context, job: &Job, forced: bool) -> Result<Outcome> {
    let conn = ctx.db()?;
    let Some(_lock) = lock::try_exclusive(&ctx.paths.lock(&format!("job-{}", job.name)))? else {
        tracing::info!(job = job.name, "job is running in another process: skipped");
        return Ok(Outcome::Busy);
    };
    // Read under the lock: a run that just ended elsewhere has made it not due.
    let record = db::jobs::get(conn, job.name)?;
    if !forced && !is_due(job, record.as_ref(), crate::hooks::now()) {
        return Ok(Outcome::NotDue);
    }
    db::jobs::started(conn, job.name, crate::hooks::now())?;
    crate::hooks::pause_point(&format!("job-{}", job.name));
    let started = Instant::now();
    let ran = (job.run)(ctx);
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let error = ran.as_ref().err().map(String::as_str);
    db::jobs::finished(conn, job.name, crate::hooks::now(), duration_ms, error)?;
    match ran {
        Ok(summary) => {
            tracing::info!(job = job.name, duration_ms, summary, "job done");
            Ok(Outcome::Ok(summary))
        }
        Err(error) => {
            tracing::warn!(job = job.name, duration_ms, error, "job failed");
            Ok(Outcome::Failed(error))
        }
    }
}

fn mail_flush(ctx: &Context) -> Ran {
    let mailer = Mailer::new(&ctx.config).map_err(|e| e.with_help())?;
    let flushed = mail::flush(ctx.db().map_err(|e| e.to_string())?, &mailer, false, None)
        .map_err(|e| e.to_string())?;
    let sent = flushed.sent.len();
    match flushed.failed.first() {
        None => Ok(format!("{sent} sent")),
        Some(first) => Err(format!(
            "{sent} sent, {} not sent (kept for a retry), the first to {}: {}",
            flushed.failed.len(),
            first.recipient,
            first.error
        )),
    }
}

fn prune(ctx: &Context) -> Ran {
    let req = PruneRequest {
        scope: Scope::All,
        older_than: None,
        keep_last: None,
        dry_run: false,
    };
    let outcomes = snapshot::prune(ctx, &req).map_err(|e| e.with_help())?;
    let count = |result: &str| outcomes.iter().filter(|o| o.result == result).count();
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.result.starts_with("failed"))
        .collect();
    let summary = format!("{} deleted, {} kept", count("deleted"), count("kept"));
    match failed.first() {
        None => Ok(summary),
        Some(first) => Err(format!(
            "{summary}, {} not deleted, the first {}/{}: {}",
            failed.len(),
            first.vm,
            first.snapshot,
            first.result
        )),
    }
}

fn reconcile(ctx: &Context) -> Ran {
    let done = crate::ops::reconcile::reconcile(ctx, false, false).map_err(|e| e.with_help())?;
    if done.needs_force && !done.applied {
        return Err(format!(
            "nothing was changed: the plan removes {} object(s) and keeps {} (more than {MAX_REMOVALS_UNFORCED} removals, or more than it keeps, need --force); check it with `basphere admin reconcile --dry-run`",
            done.removals, done.kept
        ));
    }
    let failed: Vec<_> = done
        .repairs
        .iter()
        .filter(|o| o.result.starts_with("failed"))
        .collect();
    let summary = format!("{} repair(s)", done.repairs.len() - failed.len());
    match failed.first() {
        None => Ok(summary),
        Some(first) => {
            let (what, target) = first.repair.describe();
            Err(format!(
                "{summary} done, {} failed, the first {what} {target}: {}",
                failed.len(),
                first.result
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start: Option<i64>, end: Option<i64>) -> db::jobs::Job {
        db::jobs::Job {
            name: "mail".into(),
            last_start: start,
            last_end: end,
            last_success: end,
            last_error: None,
            last_duration_ms: Some(1),
            runs: 1,
            consecutive_failures: 0,
        }
    }

    #[test]
    fn a_job_is_due_at_first_after_its_interval_and_after_a_run_that_never_ended() {
        let mail = find("mail").unwrap();
        assert!(is_due(mail, None, 1000));
        let done = record(Some(1000), Some(1001));
        assert!(!is_due(mail, Some(&done), 1030));
        // A tick a moment early still runs it: every minute, not every other one.
        assert!(is_due(mail, Some(&done), 1058));
        assert_eq!(next_due(mail, Some(&done), 1030), 1060);
        // Killed half way: started, never ended.
        let killed = record(Some(1000), Some(900));
        assert!(is_due(mail, Some(&killed), 1001));
        assert!(is_due(mail, Some(&record(Some(1000), None)), 1001));
    }

    #[test]
    fn job_names_are_unique_and_fit_a_lock_file_name() {
        for (i, job) in JOBS.iter().enumerate() {
            assert!(job.name.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
            assert!(JOBS[..i].iter().all(|j| j.name != job.name));
            assert!(job.every >= 60, "the timer ticks every minute");
        }
    }
}
