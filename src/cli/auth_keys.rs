//! `basphere auth-keys %u %t %k`: sshd's `AuthorizedKeysCommand` in OpenSSH mode.
//!
//! sshd runs it for every key a client offers, so it does as little as it can: one
//! read-only, indexed lookup, no migrations, nothing created, no libvirt. Whatever goes
//! wrong goes to stderr; stdout holds one `authorized_keys` line or nothing.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::cli::Run;
use crate::config::Config;
use crate::context::{Allowed, Context};
use crate::error::{Error, Result};
use crate::ops::key;
use crate::output::{Output, Report};

/// Print the authorized_keys line for a key offered to sshd (its AuthorizedKeysCommand)
#[derive(Debug, clap::Args)]
#[command(after_help = "sshd_config (see `basphere sshd-config`):\n  \
AuthorizedKeysCommand /usr/local/bin/basphere auth-keys %u %t %k\n\n\
A key that `key add` (or a signup) left pending gets a line whose forced command runs \
only `key confirm CODE`. Prints nothing, and exits 0, for a key that is unknown or belongs \
to a disabled user, for any login name but the service account's, and when there is no \
database yet.")]
pub struct Args {
    /// The login name sshd is authenticating (%u)
    pub login: String,

    /// The key's type (%t), e.g. ssh-ed25519
    pub key_type: String,

    /// The key, base64-encoded (%k)
    pub key: String,

    /// Program the forced command runs [default: this executable]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
}

/// The database as it is: read-only, never created or migrated.
fn open_read_only(config: &Config) -> Result<Connection> {
    let path = config.db_path();
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| Error::DatabaseOpen {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// sshd, as root or as the service account (its `AuthorizedKeysCommandUser`).
pub const ALLOWED: Allowed = Allowed::SSHD;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn needs_database(&self) -> bool {
        false
    }

    fn speaks_json(&self) -> bool {
        false
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        if self.login != ctx.config.service_user {
            return Ok(Report::text(String::new()));
        }
        // sshd asks before an installation exists, or while its volume is not mounted:
        // no key is anyone's then, which is not a failure to log at every login.
        if !ctx.config.db_path().exists() {
            let missing = Error::NoDatabase {
                dir: ctx.config.data_dir.clone(),
            };
            return Ok(Report::text(String::new()).note(format!("{missing}: no key is authorized")));
        }
        let conn = open_read_only(&ctx.config)?;
        let exe = || match &self.exe {
            Some(exe) => Ok(exe.clone()),
            None => current_exe(),
        };
        if let Some(auth) = key::authorize(&conn, &self.key_type, &self.key)? {
            return Ok(Report::text(key::authorized_keys_line(&auth, &exe()?)?));
        }
        // A key waiting for proof may run `key confirm CODE` and nothing else.
        if let Some(fingerprint) = key::awaiting_proof(&conn, &self.key_type, &self.key)? {
            let public_key = format!("{} {}", self.key_type, self.key);
            let line = key::unconfirmed_line(&fingerprint, &public_key, &exe()?)?;
            return Ok(Report::text(line));
        }
        Ok(Report::text(String::new()))
    }
}

/// The path of the running basphere, for sshd to run.
pub fn current_exe() -> Result<String> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find the basphere executable", e))?;
    exe.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Install(format!("`{}` is not UTF-8", exe.display())))
}
