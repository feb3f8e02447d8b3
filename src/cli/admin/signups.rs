//! `basphere admin signups`: account requests from the web form.

use clap::Subcommand;

use crate::context::Context;
use crate::error::Result;
use crate::ops::signup;
use crate::ops::signup::Listed;
use crate::output::{timestamp, Human, Output, Report};
use crate::validate::Span;

/// List account requests from the web form, or prune stale ones
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Also show approved and rejected requests
    #[arg(long)]
    pub all: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Delete requests whose email address was never confirmed
    #[command(after_help = "Example:\n  basphere admin signups prune --older-than 30d")]
    Prune {
        /// Age of the requests to delete: 90m, 12h, 7d, 4w
        #[arg(long, value_name = "AGE")]
        older_than: Span,
    },
}

/// "3h", "2d": how long ago, for a table.
pub fn age(since: i64) -> String {
    let secs = (crate::hooks::now() - since).max(0);
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// At most `n` characters on one line.
fn short(text: &str, n: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > n {
        format!("{}…", one_line.chars().take(n - 1).collect::<String>())
    } else {
        one_line
    }
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    if let Some(Command::Prune { older_than }) = &args.command {
        let removed = signup::prune(ctx, *older_than)?;
        let line = match removed.as_slice() {
            [] => format!("no unconfirmed request is older than {older_than}"),
            ids => format!(
                "removed {} unconfirmed request(s): {}",
                ids.len(),
                ids.join(", ")
            ),
        };
        return Ok(Report::done(&removed, line));
    }
    let list = signup::list(ctx, args.all)?;
    // Everything below came from a stranger's form; the table neutralises control
    // characters and escapes in every cell.
    let row = |l: &Listed| {
        let s = &l.signup;
        let state = if l.expired {
            "link expired".to_owned()
        } else {
            s.state.as_str().replace('_', " ")
        };
        vec![
            s.user_id.clone(),
            s.email.clone(),
            format!("{} {}", s.fingerprint, s.algorithm),
            short(&s.reason, 60),
            age(s.created_at),
            if l.email_confirmed { "yes" } else { "no" }.to_owned(),
            state,
        ]
    };
    let rows = list.iter().map(row).collect();
    let headers = vec!["ID", "EMAIL", "KEY", "REASON", "AGE", "CONFIRMED", "STATE"];
    let hint = match args.all {
        true => "no account requests",
        false => "no pending account requests (see all with --all)",
    };
    let mut report = Report::new(&list, Human::Table { headers, rows }).hint(hint);
    if let Some(oldest) = list.iter().map(|l| l.signup.created_at).min() {
        report = report.note(format!("oldest request: {}", timestamp(oldest)));
    }
    Ok(report)
}
