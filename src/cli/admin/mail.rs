//! `basphere admin mail`: the mail outbox.

use crate::context::Context;
use crate::db;
use crate::db::mail::Mail;
use crate::error::Result;
use crate::output::{timestamp, Human, Output, Report};

/// List the mail outbox: what waits to be sent, with the last error
#[derive(Debug, clap::Args)]
#[command(after_help = "Mail is sent by `basphere serve` and by `basphere mail flush`.")]
pub struct Args {
    /// Also show mail already sent
    #[arg(long)]
    pub all: bool,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let mails = db::mail::list(ctx.db()?, args.all)?;
    let row = |m: &Mail| {
        vec![
            m.id.to_string(),
            m.recipient.clone(),
            m.subject.clone(),
            timestamp(m.created_at),
            m.attempts.to_string(),
            match m.sent_at {
                Some(t) => format!("sent {}", timestamp(t)),
                None => format!("next {}", timestamp(m.next_attempt_at)),
            },
            m.last_error.clone().unwrap_or_default(),
        ]
    };
    let rows = mails.iter().map(row).collect();
    let headers = vec![
        "ID",
        "TO",
        "SUBJECT",
        "QUEUED",
        "ATTEMPTS",
        "STATE",
        "LAST ERROR",
    ];
    let hint = match args.all {
        true => "the outbox is empty",
        false => "no mail waits to be sent (see sent mail with --all)",
    };
    Ok(Report::new(&mails, Human::Table { headers, rows }).hint(hint))
}
