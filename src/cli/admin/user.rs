//! `basphere admin user ...`: register and manage users.

use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::input;
use crate::context::Context;
use crate::db::users::User;
use crate::error::{Error, Result};
use crate::ops::user;
use crate::ops::user::Summary;
use crate::output::{timestamp, Human, Output, Render, Report};
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
        id: UserId,
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
        /// File holding one SSH public key per line (`-` for stdin): a regular file or stdin, at most 64 KiB
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
    Show { id: UserId },
    /// Refuse a user's logins, keeping everything they own
    Disable { id: UserId },
    /// Let a disabled user log in again
    Enable { id: UserId },
    /// Remove a user who owns no VMs, with their keys and network (waits for their create-vm in progress)
    #[command(visible_alias = "rm")]
    Remove {
        id: UserId,
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
        (None, Some(path)) if path.as_os_str() == "-" => input::keys_from_stdin(out)?,
        (None, Some(path)) => input::keys_from_file(path)?,
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

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<Report> {
    match &args.command {
        Command::Add {
            id,
            email,
            key,
            key_file,
            admin,
        } => {
            let email = validate::email(email)?;
            let keys = read_keys(key.as_deref(), key_file.as_ref(), out)?;
            let user = user::add(ctx, id, &email, &keys, *admin)?;
            let line = format!("added user {} with {} key(s)", user.id, keys.len());
            Ok(Report::done(&user, line))
        }
        Command::List => {
            let users = user::list(ctx)?;
            let row = |s: &Summary| {
                vec![
                    s.user.id.clone(),
                    s.user.email.clone(),
                    s.user.role.as_str().to_owned(),
                    state(&s.user).to_owned(),
                    s.keys.to_string(),
                    s.vms.to_string(),
                ]
            };
            let rows = users.iter().map(row).collect();
            let headers = vec!["ID", "EMAIL", "ROLE", "STATE", "KEYS", "VMS"];
            Ok(Report::new(&users, Human::Table { headers, rows }))
        }
        Command::Show { id } => {
            let d = user::show(ctx, id.as_str())?;
            let mut fields = vec![
                ("id", d.user.id.clone()),
                ("email", d.user.email.clone()),
                ("role", d.user.role.as_str().to_owned()),
                ("state", state(&d.user).to_owned()),
                ("created", timestamp(d.user.created_at)),
            ];
            for k in &d.keys {
                let key = format!("{} {} {}", k.fingerprint, k.algorithm, k.comment);
                fields.push(("key", key.trim_end().to_owned()));
            }
            let names: Vec<&str> = d.vms.iter().map(|v| v.name.as_str()).collect();
            let vms = if names.is_empty() {
                "(none)".into()
            } else {
                names.join(", ")
            };
            fields.push(("vms", vms));
            let human = Human::Parts(vec![Human::Fields(fields), d.quota.human()]);
            Ok(Report::new(&d, human))
        }
        Command::Disable { id } => {
            user::set_disabled(ctx, id.as_str(), true)?;
            let done = serde_json::json!({ "user": id, "disabled": true });
            Ok(Report::done(&done, format!("disabled {id}")))
        }
        Command::Enable { id } => {
            user::set_disabled(ctx, id.as_str(), false)?;
            let done = serde_json::json!({ "user": id, "disabled": false });
            Ok(Report::done(&done, format!("enabled {id}")))
        }
        Command::Remove { id, yes } => {
            user::show(ctx, id.as_str())?;
            let prompt = format!("remove user `{id}` with their keys and network");
            if !out.confirm(&prompt, *yes)? {
                return Ok(Report::declined("nothing removed"));
            }
            user::remove(ctx, id.as_str())?;
            let done = serde_json::json!({ "removed": id });
            Ok(Report::done(&done, format!("removed {id}")))
        }
    }
}

fn state(user: &User) -> &'static str {
    if user.disabled {
        "disabled"
    } else {
        "active"
    }
}
