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
        let exe = match &self.exe {
            Some(exe) => exe.clone(),
            None => forced_command_exe()?,
        };
        let answer = answer(&ctx.config, &self.login, &self.key_type, &self.key, &exe)?;
        let report = Report::text(answer.line);
        Ok(match answer.note {
            Some(note) => report.note(note),
            None => report,
        })
    }
}

/// What sshd is told about one offered key: the `authorized_keys` line (empty for none),
/// and what is worth saying on stderr.
pub struct Answer {
    pub line: String,
    pub note: Option<String>,
}

/// The one decision behind `basphere auth-keys` and the small `basphere-auth-keys`
/// program sshd runs (which links no libvirt, so that it starts in a few milliseconds):
/// the line for `key_type key` offered to log in as `login`, with `exe` as the forced
/// command.
pub fn answer(
    config: &Config,
    login: &str,
    key_type: &str,
    key: &str,
    exe: &str,
) -> Result<Answer> {
    let none = |note| Answer {
        line: String::new(),
        note,
    };
    if login != config.service_user {
        return Ok(none(None));
    }
    // sshd asks before an installation exists, or while its volume is not mounted:
    // no key is anyone's then, which is not a failure to log at every login.
    if !config.db_path().exists() {
        let missing = Error::NoDatabase {
            dir: config.data_dir.clone(),
        };
        return Ok(none(Some(format!("{missing}: no key is authorized"))));
    }
    let conn = open_read_only(config)?;
    let line = if let Some(auth) = key::authorize(&conn, key_type, key)? {
        key::authorized_keys_line(&auth, exe)?
    } else if let Some(fingerprint) = key::awaiting_proof(&conn, key_type, key)? {
        // A key waiting for proof may run `key confirm CODE` and nothing else.
        key::unconfirmed_line(&fingerprint, &format!("{key_type} {key}"), exe)?
    } else {
        String::new()
    };
    Ok(Answer { line, note: None })
}

/// The program a forced command runs: `basphere` itself, beside which the small
/// `basphere-auth-keys` is installed.
pub fn forced_command_exe() -> Result<String> {
    let exe = current_exe()?;
    Ok(match exe.strip_suffix("-auth-keys") {
        Some(main) => main.to_owned(),
        None => exe,
    })
}

/// The path of the running basphere, for sshd to run.
pub fn current_exe() -> Result<String> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find the basphere executable", e))?;
    exe.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Install(format!("`{}` is not UTF-8", exe.display())))
}
