//! `basphere snapshot ...`: create, list, restore, delete and prune snapshots.

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::db::snapshots::Snapshot;
use crate::error::Result;
use crate::ops::snapshot::{self, CreateRequest, PruneRequest, Scope};
use crate::output::{timestamp, Output};
use crate::validate::{self, SnapshotName, Span};

/// Protect VMs with snapshots and roll them back
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Snapshot a VM (with memory state when it runs)
    #[command(
        after_help = "Examples:\n  basphere snapshot create web1 pre-upgrade --expire 7d\n  basphere snapshot create web1"
    )]
    Create {
        vm: String,
        /// Snapshot name [default: the time, e.g. 20261121-101500]
        name: Option<String>,
        /// Delete it after this long: 90m, 12h, 7d, 4w [default: your policy]
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expire: Option<String>,
        /// A note for later
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List your snapshots, of one VM or all
    #[command(visible_alias = "ls")]
    List { vm: Option<String> },
    /// Return a VM to a snapshot: running if it was taken running
    Restore {
        vm: String,
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
    /// Delete a snapshot
    #[command(visible_alias = "rm")]
    Delete { vm: String, name: String },
    /// Delete expired snapshots, then those beyond the keep-last policy (for cron)
    #[command(
        after_help = "Examples:\n  basphere snapshot prune --all            # cron, as root or the service account\n  basphere snapshot prune --dry-run        # your own snapshots, change nothing"
    )]
    Prune {
        /// Every user's snapshots (administrators and the service account)
        #[arg(long, conflicts_with = "user")]
        all: bool,
        /// One user's snapshots (administrators and the service account)
        #[arg(long)]
        user: Option<String>,
        /// Also delete snapshots older than this
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        older_than: Option<String>,
        /// Keep this many per VM instead of the owner's policy
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        keep_last: Option<String>,
        /// Show the plan, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
}

fn expires(s: &Snapshot) -> String {
    s.expires_at.map_or_else(|| "never".to_owned(), timestamp)
}

fn show(out: &mut Output, s: &Snapshot) -> Result<()> {
    if out.json {
        return out.json(s);
    }
    out.fields(&[
        ("snapshot", s.name.clone()),
        ("vm", s.vm.clone()),
        ("created", timestamp(s.created_at)),
        ("expires", expires(s)),
        ("description", s.description.clone()),
    ])
}

fn span(s: &Option<String>) -> Result<Option<Span>> {
    s.as_deref().map(str::parse).transpose()
}

/// Tenants, administrators, and the service account.
pub const ALLOWED: Allowed = Allowed::USERS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        match &self.command {
            Command::Prune { all, user, .. } if *all || user.is_some() => {
                Allowed::ADMINS.and(Allowed::SERVICE)
            }
            _ => Allowed::USERS,
        }
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<i32> {
        match &self.command {
            Command::Create {
                vm,
                name,
                expire,
                description,
            } => {
                let req = CreateRequest {
                    vm,
                    name: name
                        .as_deref()
                        .map(str::parse::<SnapshotName>)
                        .transpose()?,
                    expire: span(expire)?,
                    description: validate::description(description.as_deref().unwrap_or(""))?,
                };
                let spinner = out.spinner();
                spinner.set_message(format!("snapshotting {vm}"));
                let created = snapshot::create(ctx, &req);
                spinner.finish_and_clear();
                show(out, &created?)?;
            }
            Command::List { vm } => {
                let snaps = snapshot::list(ctx, vm.as_deref())?;
                if out.json {
                    out.json(&snaps)?;
                } else {
                    let rows = snaps
                        .iter()
                        .map(|s| {
                            vec![
                                s.vm.clone(),
                                s.name.clone(),
                                timestamp(s.created_at),
                                expires(s),
                                s.description.clone(),
                            ]
                        })
                        .collect();
                    out.table(
                        &["VM", "SNAPSHOT", "CREATED", "EXPIRES", "DESCRIPTION"],
                        rows,
                    )?;
                }
            }
            Command::Restore { vm, name, yes } => {
                snapshot::get(ctx, vm, name)?;
                let prompt = format!("return `{vm}` to snapshot `{name}`, losing everything since");
                if !out.confirm(&prompt, *yes)? {
                    out.note("nothing restored")?;
                    return Ok(1);
                }
                let spinner = out.spinner();
                spinner.set_message(format!("restoring {vm}"));
                let restored = snapshot::restore(ctx, vm, name);
                spinner.finish_and_clear();
                restored?;
                out.line(format!("restored {vm} to {name}"))?;
            }
            Command::Delete { vm, name } => {
                snapshot::delete(ctx, vm, name)?;
                out.line(format!("deleted snapshot {name} of {vm}"))?;
            }
            Command::Prune {
                all,
                user,
                older_than,
                keep_last,
                dry_run,
            } => {
                let scope = match (all, user) {
                    (true, _) => Scope::All,
                    (false, Some(u)) => Scope::User(u.clone()),
                    (false, None) => Scope::Mine,
                };
                let keep_last = keep_last
                    .as_deref()
                    .map(|s| validate::whole_number("keep-last count", s))
                    .transpose()?;
                let req = PruneRequest {
                    scope,
                    older_than: span(older_than)?,
                    keep_last,
                    dry_run: *dry_run,
                };
                let outcomes = snapshot::prune(ctx, &req)?;
                let failed = outcomes.iter().any(|o| o.result.starts_with("failed"));
                if out.json {
                    out.json(&outcomes)?;
                } else {
                    let rows = outcomes
                        .iter()
                        .map(|o| {
                            vec![
                                o.owner.clone(),
                                o.vm.clone(),
                                o.snapshot.clone(),
                                o.action.to_owned(),
                                o.reason.clone(),
                                o.result.clone(),
                            ]
                        })
                        .collect();
                    out.table(
                        &["OWNER", "VM", "SNAPSHOT", "ACTION", "REASON", "RESULT"],
                        rows,
                    )?;
                }
                return Ok(if failed { 1 } else { 0 });
            }
        }
        Ok(0)
    }
}
