//! `basphere admin approve ID`: turn an account request into a user.

use crate::context::Context;
use crate::error::Result;
use crate::ops::signup;
use crate::output::{sanitize, Human, Output, Report};
use crate::validate::UserId;

/// Approve an account request: create the user with its key and send the welcome mail
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  basphere admin signups\n  basphere admin approve alice")]
pub struct Args {
    /// The user id the request asks for
    pub id: UserId,

    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,

    /// Approve even though the email address is not confirmed
    #[arg(long)]
    pub force: bool,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<Report> {
    let pending = signup::list(ctx, false)?;
    let Some(found) = pending
        .iter()
        .find(|l| l.signup.user_id == args.id.as_str())
    else {
        // Not pending: let the operation say why (unknown, already approved, rejected).
        return approve(args, ctx);
    };
    let s = &found.signup;
    let confirmed = if found.email_confirmed { "yes" } else { "no" };
    out.preview(Human::Fields(vec![
        ("id", s.user_id.clone()),
        ("email", s.email.clone()),
        ("key", format!("{} {}", s.fingerprint, s.algorithm)),
        ("reason", s.reason.clone()),
        ("confirmed", confirmed.to_owned()),
    ]))?;
    let (id, email) = (&s.user_id, sanitize(&s.email));
    let prompt = format!("create user `{id}` <{email}> with key {}", s.fingerprint);
    if !out.confirm(&prompt, args.yes)? {
        return Ok(Report::declined("nothing approved"));
    }
    approve(args, ctx)
}

fn approve(args: &Args, ctx: &Context) -> Result<Report> {
    let approved = signup::approve(ctx, args.id.as_str(), args.force)?;
    let mut lines = vec![format!(
        "approved {}: user created with key {}",
        approved.user.id, approved.fingerprint
    )];
    lines.extend(approved.mail.iter().map(|d| format!("welcome {d}")));
    Ok(Report::new(&approved, Human::Lines(lines)))
}
