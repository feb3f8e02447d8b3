//! `basphere mail flush`: deliver the mail outbox now, by hand.

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::mail::{self, Mailer};
use crate::output::{timestamp, Human, Output, Report};

/// Deliver queued mail
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send the outbox mail that is due; failures stay queued with their error
    #[command(
        after_help = "Exit status 1 when some mail could not be sent; it stays in the outbox and is retried.\n\n`serve` sends mail as it is queued, and the job runner every minute (`basphere admin run-jobs`, from basphere-jobs.timer); this sends it by hand."
    )]
    Flush {
        /// Also retry mail whose next attempt is not due yet
        #[arg(long)]
        now: bool,
    },
}

/// Administrators, and the service account (cron, timers).
pub const ALLOWED: Allowed = Allowed::ADMINS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        match &self.command {
            Command::Flush { now } => {
                let mailer = Mailer::new(&ctx.config)?;
                let report = mail::flush(ctx.db()?, &mailer, *now, None)?;
                let sent = (report.sent.iter())
                    .map(|s| format!("sent #{} to {}: {}", s.id, s.recipient, s.subject));
                let failed = report.failed.iter().map(|f| {
                    let next = timestamp(f.next_attempt_at);
                    format!(
                        "failed #{} to {}: {} (next attempt {next})",
                        f.id, f.recipient, f.error
                    )
                });
                let lines = sent.chain(failed).collect();
                let note = format!(
                    "{} sent, {} failed, through the {}",
                    report.sent.len(),
                    report.failed.len(),
                    mailer.destination()
                );
                let code = i32::from(!report.failed.is_empty());
                Ok(Report::new(&report, Human::Lines(lines))
                    .note(note)
                    .exit(code))
            }
        }
    }
}
