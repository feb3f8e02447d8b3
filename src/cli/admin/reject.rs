//! `basphere admin reject ID --reason TEXT`: decline an account request.

use crate::context::Context;
use crate::error::Result;
use crate::ops::signup;
use crate::output::{Human, Output, Report};
use crate::validate::UserId;

/// Decline an account request and mail the reason to the applicant
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  basphere admin reject mallory --reason \"please use your company address\""
)]
pub struct Args {
    /// The user id the request asks for
    pub id: UserId,

    /// Why, in words for the applicant (sent to them)
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

pub fn exec(args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let rejected = signup::reject(ctx, args.id.as_str(), &args.reason)?;
    let mut lines = vec![format!("rejected {}", rejected.user_id)];
    lines.extend(rejected.mail.iter().map(|d| format!("rejection {d}")));
    Ok(Report::new(&rejected, Human::Lines(lines)))
}
