//! `basphere admin reject ID --reason TEXT`: decline an account request.

use crate::context::Context;
use crate::error::Result;
use crate::ops::signup;
use crate::output::Output;

/// Decline an account request and mail the reason to the applicant
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  basphere admin reject mallory --reason \"please use your company address\""
)]
pub struct Args {
    /// The user id the request asks for
    pub id: String,

    /// Why, in words for the applicant (sent to them)
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    let rejected = signup::reject(ctx, &args.id, &args.reason)?;
    if out.json {
        out.json(&rejected)?;
        return Ok(0);
    }
    out.line(format!("rejected {}", rejected.user_id))?;
    for d in &rejected.mail {
        out.line(format!("rejection {d}"))?;
    }
    Ok(0)
}
