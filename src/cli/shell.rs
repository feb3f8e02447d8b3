//! `basphere shell --user ID --key FINGERPRINT`: OpenSSH's forced command for a tenant's
//! key. Every command it runs first checks that the key is still that user's.
//!
//! sshd puts what the tenant typed in `SSH_ORIGINAL_COMMAND`; the session runs it (see
//! `crate::session`) with the configuration this process loaded.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::context::{Binding, Caller};
use crate::error::Result;
use crate::output::{Output, Report};
use crate::session;

/// Run a tenant's SSH command (the forced command OpenSSH runs for their key)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The user the key belongs to
    #[arg(long, value_name = "ID", required_unless_present = "unconfirmed")]
    pub user: Option<String>,

    /// Fingerprint of the key that authenticated; refused once it is not the user's
    #[arg(long, value_name = "FINGERPRINT")]
    pub key: String,

    /// The user's serial when the key authenticated; refused once the user was removed,
    /// even if made again under the same id
    #[arg(long, value_name = "N", conflicts_with = "unconfirmed")]
    pub serial: Option<i64>,

    /// The key logs in to no account yet: run only `key confirm CODE`, which proves it
    #[arg(long, conflicts_with = "user")]
    pub unconfirmed: bool,
}

/// sshd, as root or as the service account it runs the forced command as.
pub const ALLOWED: Allowed = Allowed::SSHD;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn speaks_json(&self) -> bool {
        false
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        let line = std::env::var("SSH_ORIGINAL_COMMAND").ok();
        let Some(user) = &self.user else {
            let fingerprint = crate::ops::key::parse_fingerprint(&self.key)?;
            let answer =
                session::unregistered(ctx.db()?, &ctx.config, &fingerprint, line.as_deref());
            let io = out.io();
            let _ = io.stdout.write_all(answer.stdout.as_bytes());
            let _ = io.stderr.write_all(answer.stderr.as_bytes());
            return Ok(Report::streamed(answer.code));
        };
        let user: crate::validate::UserId = user.parse()?;
        let tenant = Caller::Ssh(Binding {
            user: user.to_string(),
            fingerprint: crate::ops::key::parse_fingerprint(&self.key)?,
            serial: self.serial,
        });
        Ok(Report::streamed(session::run(
            &ctx.config,
            &tenant,
            line.as_deref(),
            out.io(),
            &ctx.cancel,
        )))
    }
}
