//! `basphere key ...`: a tenant manages the SSH keys that sign them in.

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::db::users::Key;
use crate::error::{Error, Result};
use crate::ops::key;
use crate::output::{timestamp, Human, Output, Report};
use crate::validate::PublicKey;

/// Manage your SSH keys
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List your SSH keys
    #[command(visible_alias = "ls")]
    List,
    /// Add an SSH public key, from the argument or from stdin
    #[command(
        after_help = "Examples:\n  ssh basphere@HOST key add < ~/.ssh/id_ed25519.pub\n  \
cat laptop.pub | ssh basphere@HOST key add\n  ssh basphere@HOST key add \"$(cat laptop.pub)\""
    )]
    Add {
        /// The public key line, e.g. "ssh-ed25519 AAAA... me@laptop" [default: read from stdin]
        #[arg(
            value_name = "KEY",
            num_args = 0..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        key: Vec<String>,
    },
    /// Remove one of your keys (never the last one)
    #[command(visible_alias = "rm")]
    Remove {
        /// The key's fingerprint, as `key list` shows it (SHA256:...)
        fingerprint: String,
    },
}

/// The one key given as arguments (joined, since `ssh HOST key add $(cat k.pub)` splits
/// it into words) or on stdin.
fn read_key(words: &[String], out: &mut Output) -> Result<PublicKey> {
    let text = if words.is_empty() {
        crate::cli::input::keys_from_stdin(out)?
    } else {
        words.join(" ")
    };
    if text.contains("PRIVATE KEY") {
        return Err(text.parse::<PublicKey>().unwrap_err());
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [] => Err(Error::invalid_with_help(
            "no SSH public key given",
            "pass the key as an argument or on stdin: `ssh basphere@HOST key add < ~/.ssh/id_ed25519.pub`",
        )),
        [line] => line.parse(),
        _ => Err(Error::invalid("give one SSH public key at a time")),
    }
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        match &self.command {
            Command::List => {
                let keys = key::list(ctx)?;
                let current = ctx.actor.fingerprint.as_deref();
                let row = |k: &Key| {
                    let this = Some(k.fingerprint.as_str()) == current;
                    let mark = if this { " (this session)" } else { "" };
                    vec![
                        format!("{}{mark}", k.fingerprint),
                        k.algorithm.clone(),
                        k.comment.clone(),
                        timestamp(k.created_at),
                    ]
                };
                let rows = keys.iter().map(row).collect();
                let headers = vec!["FINGERPRINT", "TYPE", "COMMENT", "ADDED"];
                Ok(Report::new(&keys, Human::Table { headers, rows }))
            }
            Command::Add { key: words } => {
                let public = read_key(words, out)?;
                let added = key::add(ctx, &public)?;
                let line = format!("added key {} ({})", added.fingerprint, added.algorithm);
                Ok(Report::done(&added, line))
            }
            Command::Remove { fingerprint } => {
                let fingerprint = key::parse_fingerprint(fingerprint)?;
                key::remove(ctx, &fingerprint)?;
                let done = serde_json::json!({ "removed": fingerprint });
                Ok(Report::done(&done, format!("removed key {fingerprint}")))
            }
        }
    }
}
