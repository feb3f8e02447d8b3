//! `basphere key ...`: a tenant manages the SSH keys that sign them in.

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::db::users::{Key, PendingKey};
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
    /// Prove you hold a key `key add` left pending: run this connected with that key
    #[command(after_help = "Example:\n  ssh -i ~/.ssh/laptop basphere@HOST key confirm ABCD-EFGH")]
    Confirm {
        /// The code `key add` printed (or the signup page showed)
        code: String,
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

/// One row of `key list`: a key that logs in, or one waiting for proof until `expires_at`.
#[derive(Debug, serde::Serialize)]
struct Listed {
    fingerprint: String,
    algorithm: String,
    comment: String,
    state: &'static str,
    created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

impl Listed {
    fn active(k: &Key) -> Listed {
        Listed {
            fingerprint: k.fingerprint.clone(),
            algorithm: k.algorithm.clone(),
            comment: k.comment.clone(),
            state: "active",
            created_at: k.created_at,
            expires_at: None,
        }
    }

    fn pending(k: &PendingKey) -> Listed {
        Listed {
            fingerprint: k.fingerprint.clone(),
            algorithm: k.algorithm.clone(),
            comment: k.comment.clone(),
            state: "pending",
            created_at: k.created_at,
            expires_at: Some(k.expires_at),
        }
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
                let listed = key::list(ctx)?;
                let current = ctx.actor.fingerprint.as_deref();
                let mut views: Vec<Listed> = listed.keys.iter().map(Listed::active).collect();
                views.extend(listed.pending.iter().map(Listed::pending));
                let row = |k: &Listed| {
                    let this = Some(k.fingerprint.as_str()) == current;
                    let mark = if this { " (this session)" } else { "" };
                    let state = match k.expires_at {
                        None => "active".to_owned(),
                        Some(at) => format!("pending until {}", timestamp(at)),
                    };
                    vec![
                        format!("{}{mark}", k.fingerprint),
                        k.algorithm.clone(),
                        k.comment.clone(),
                        state,
                        timestamp(k.created_at),
                    ]
                };
                let rows = views.iter().map(row).collect();
                let headers = vec!["FINGERPRINT", "TYPE", "COMMENT", "STATE", "ADDED"];
                Ok(Report::new(&views, Human::Table { headers, rows }))
            }
            Command::Add { key: words } => {
                let public = read_key(words, out)?;
                let added = key::add(ctx, &public)?;
                let lines = match &added {
                    key::Added::Confirmed { key } => {
                        vec![format!("added key {} ({})", key.fingerprint, key.algorithm)]
                    }
                    key::Added::Pending { key, code } => vec![
                        format!(
                            "added key {} ({}), pending: it logs in once you prove you hold it",
                            key.fingerprint, key.algorithm
                        ),
                        String::new(),
                        "Within an hour, connect with that key and confirm it:".to_owned(),
                        format!(
                            "  {} -i PATH-TO-THE-PRIVATE-KEY key confirm {code}",
                            ctx.config.ssh_command()
                        ),
                    ],
                };
                Ok(Report::new(&added, Human::Lines(lines)))
            }
            Command::Confirm { code } => {
                let confirmed = key::confirm_for(ctx, code)?;
                let line = match &confirmed {
                    key::Confirmed::Key { user, fingerprint }
                    | key::Confirmed::Signup { user, fingerprint } => {
                        format!("confirmed key {fingerprint}: it logs in to `{user}` now")
                    }
                };
                Ok(Report::done(&confirmed, line))
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
