//! `basphere admin user ...`: register and manage users.

use std::path::PathBuf;

use clap::Subcommand;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::user;
use crate::output::{timestamp, Output};
use crate::validate::{self, PublicKey, UserId};

/// Register and manage users
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a user with an SSH public key
    #[command(
        after_help = "Example:\n  basphere admin user add alice --email alice@example.com --key-file alice.pub"
    )]
    Add {
        /// User id: 3 to 32 characters, a lowercase letter, then lowercase letters, digits or `-`
        id: String,
        #[arg(long)]
        email: String,
        /// SSH public key, e.g. "ssh-ed25519 AAAA... alice@laptop"
        #[arg(
            long,
            required_unless_present = "key_file",
            conflicts_with = "key_file",
            allow_hyphen_values = true
        )]
        key: Option<String>,
        /// File holding one SSH public key per line (`-` for stdin)
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Give the user the admin role
        #[arg(long)]
        admin: bool,
    },
    /// List users
    #[command(visible_alias = "ls")]
    List,
    /// Show a user with keys, quota and VMs
    Show { id: String },
    /// Refuse a user's logins, keeping everything they own
    Disable { id: String },
    /// Let a disabled user log in again
    Enable { id: String },
    /// Remove a user who owns no VMs, with their keys and network
    #[command(visible_alias = "rm")]
    Remove {
        id: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
}

fn read_keys(
    key: Option<&str>,
    file: Option<&PathBuf>,
    out: &mut Output,
) -> Result<Vec<PublicKey>> {
    let text = match (key, file) {
        (Some(k), _) => k.to_owned(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            out.stdin()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(|e| Error::io("cannot read keys from stdin", e))?;
            text
        }
        (None, Some(path)) => {
            let meta = std::fs::metadata(path)
                .map_err(|e| Error::io(format!("cannot read `{}`", path.display()), e))?;
            if meta.len() > 64 * 1024 {
                return Err(Error::invalid(format!(
                    "`{}` is too large for a key file",
                    path.display()
                )));
            }
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("cannot read `{}`", path.display()), e))?
        }
        (None, None) => return Err(Error::invalid("give --key or --key-file")),
    };
    if text.contains("PRIVATE KEY") {
        return Err(text.parse::<PublicKey>().unwrap_err());
    }
    let keys: Vec<PublicKey> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::parse)
        .collect::<Result<_>>()?;
    if keys.is_empty() {
        return Err(Error::invalid("no SSH public key found"));
    }
    Ok(keys)
}

use std::io::Read;

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    match &args.command {
        Command::Add {
            id,
            email,
            key,
            key_file,
            admin,
        } => {
            let id: UserId = id.parse()?;
            let email = validate::email(email)?;
            let keys = read_keys(key.as_deref(), key_file.as_ref(), out)?;
            let user = user::add(ctx, &id, &email, &keys, *admin)?;
            if out.json {
                out.json(&user)?;
            } else {
                out.line(format!("added user {} with {} key(s)", user.id, keys.len()))?;
            }
        }
        Command::List => {
            let users = user::list(ctx)?;
            if out.json {
                out.json(&users)?;
            } else {
                let rows = users
                    .iter()
                    .map(|s| {
                        vec![
                            s.user.id.clone(),
                            s.user.email.clone(),
                            s.user.role.as_str().to_owned(),
                            if s.user.disabled {
                                "disabled"
                            } else {
                                "active"
                            }
                            .to_owned(),
                            s.keys.to_string(),
                            s.vms.to_string(),
                        ]
                    })
                    .collect();
                out.table(&["ID", "EMAIL", "ROLE", "STATE", "KEYS", "VMS"], rows)?;
            }
        }
        Command::Show { id } => {
            let d = user::show(ctx, id)?;
            if out.json {
                out.json(&d)?;
            } else {
                let mut fields = vec![
                    ("id", d.user.id.clone()),
                    ("email", d.user.email.clone()),
                    ("role", d.user.role.as_str().to_owned()),
                    (
                        "state",
                        if d.user.disabled {
                            "disabled"
                        } else {
                            "active"
                        }
                        .to_owned(),
                    ),
                    ("created", timestamp(d.user.created_at)),
                ];
                for k in &d.keys {
                    fields.push((
                        "key",
                        format!("{} {} {}", k.fingerprint, k.algorithm, k.comment)
                            .trim_end()
                            .to_owned(),
                    ));
                }
                let names: Vec<&str> = d.vms.iter().map(|v| v.name.as_str()).collect();
                fields.push((
                    "vms",
                    if names.is_empty() {
                        "(none)".into()
                    } else {
                        names.join(", ")
                    },
                ));
                out.fields(&fields)?;
                out.line("")?;
                crate::cli::quota::render(out, &d.quota)?;
            }
        }
        Command::Disable { id } => {
            user::set_disabled(ctx, id, true)?;
            out.line(format!("disabled {id}"))?;
        }
        Command::Enable { id } => {
            user::set_disabled(ctx, id, false)?;
            out.line(format!("enabled {id}"))?;
        }
        Command::Remove { id, yes } => {
            user::show(ctx, id)?;
            if !out.confirm(
                &format!("remove user `{id}` with their keys and network"),
                *yes,
            )? {
                out.note("nothing removed")?;
                return Ok(1);
            }
            user::remove(ctx, id)?;
            out.line(format!("removed {id}"))?;
        }
    }
    Ok(0)
}
