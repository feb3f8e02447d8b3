//! `basphere admin mail`: the mail outbox.

use crate::context::Context;
use crate::db;
use crate::error::Result;
use crate::output::{timestamp, Output};

/// List the mail outbox: what waits to be sent, with the last error
#[derive(Debug, clap::Args)]
#[command(after_help = "Mail is sent by `basphere serve` and by `basphere mail flush`.")]
pub struct Args {
    /// Also show mail already sent
    #[arg(long)]
    pub all: bool,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    let mails = db::mail::list(ctx.db()?, args.all)?;
    if out.json {
        out.json(&mails)?;
        return Ok(0);
    }
    if mails.is_empty() {
        out.note(if args.all {
            "the outbox is empty"
        } else {
            "no mail waits to be sent (see sent mail with --all)"
        })?;
        return Ok(0);
    }
    let rows = mails
        .iter()
        .map(|m| {
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
        })
        .collect();
    out.table(
        &[
            "ID",
            "TO",
            "SUBJECT",
            "QUEUED",
            "ATTEMPTS",
            "STATE",
            "LAST ERROR",
        ],
        rows,
    )?;
    Ok(0)
}
