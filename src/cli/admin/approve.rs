//! `basphere admin approve ID`: turn an account request into a user.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::signup;
use crate::output::{sanitize, Output};

/// Approve an account request: create the user with its key and send the welcome mail
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  basphere admin signups\n  basphere admin approve alice")]
pub struct Args {
    /// The user id the request asks for
    pub id: String,

    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,

    /// Approve even though the email address is not confirmed
    #[arg(long)]
    pub force: bool,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    let pending = signup::list(ctx, false)?;
    let Some(found) = pending.iter().find(|l| l.signup.user_id == args.id) else {
        // Not pending: let the operation say why (unknown, already approved, rejected).
        return approve(args, ctx, out);
    };
    let s = &found.signup;
    if !out.json && out.terminal().is_some() {
        out.fields(&[
            ("id", s.user_id.clone()),
            ("email", s.email.clone()),
            ("key", format!("{} {}", s.fingerprint, s.algorithm)),
            ("reason", s.reason.clone()),
            (
                "confirmed",
                if found.email_confirmed { "yes" } else { "no" }.to_owned(),
            ),
        ])?;
    }
    if !out.confirm(
        &format!(
            "create user `{}` <{}> with key {}",
            s.user_id,
            sanitize(&s.email),
            s.fingerprint
        ),
        args.yes,
    )? {
        out.note("nothing approved")?;
        return Ok(1);
    }
    approve(args, ctx, out)
}

fn approve(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    if args.id.len() > 64 {
        return Err(Error::invalid("user id is too long"));
    }
    let approved = signup::approve(ctx, &args.id, args.force)?;
    if out.json {
        out.json(&approved)?;
        return Ok(0);
    }
    out.line(format!(
        "approved {}: user created with key {}",
        approved.user.id, approved.fingerprint
    ))?;
    for d in &approved.mail {
        out.line(format!("welcome {d}"))?;
    }
    Ok(0)
}
