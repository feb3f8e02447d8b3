//! `basphere snapshot ...`: create, list, restore, delete and prune snapshots.

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::db::snapshots::Snapshot;
use crate::error::Result;
use crate::ops::snapshot::{self, CreateRequest, PruneOutcome, PruneRequest, Scope};
use crate::output::{timestamp, Human, Output, Render, Report};
use crate::validate::{self, SnapshotName, Span, UserId, VmName};

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
        after_help = "A snapshot of a running VM stores its memory on the bastion's disk: it counts the VM's memory size against your disk quota until it is deleted (see `quota`).\n\nExamples:\n  basphere snapshot create web1 pre-upgrade --expire 7d\n  basphere snapshot create web1"
    )]
    Create {
        vm: VmName,
        /// Snapshot name [default: the time, e.g. 20261121-101500]
        name: Option<SnapshotName>,
        /// Delete it after this long: 90m, 12h, 7d, 4w [default: your policy]
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expire: Option<String>,
        /// A note for later
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List your snapshots, of one VM or all
    #[command(visible_alias = "ls")]
    List { vm: Option<VmName> },
    /// Return a VM to a snapshot: running if it was taken running
    Restore {
        vm: VmName,
        name: SnapshotName,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
    /// Delete a snapshot
    #[command(visible_alias = "rm")]
    Delete { vm: VmName, name: SnapshotName },
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
        user: Option<UserId>,
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

impl Render for Snapshot {
    fn human(&self) -> Human {
        Human::Fields(vec![
            ("snapshot", self.name.clone()),
            ("vm", self.vm.clone()),
            ("created", timestamp(self.created_at)),
            ("expires", expires(self)),
            ("description", self.description.clone()),
        ])
    }
}

impl Render for Vec<Snapshot> {
    fn human(&self) -> Human {
        let row = |s: &Snapshot| {
            let (created, description) = (timestamp(s.created_at), s.description.clone());
            vec![
                s.vm.clone(),
                s.name.clone(),
                created,
                expires(s),
                description,
            ]
        };
        Human::Table {
            headers: vec!["VM", "SNAPSHOT", "CREATED", "EXPIRES", "DESCRIPTION"],
            rows: self.iter().map(row).collect(),
        }
    }
}

impl Render for Vec<PruneOutcome> {
    fn human(&self) -> Human {
        let row = |o: &PruneOutcome| {
            vec![
                o.owner.clone(),
                o.vm.clone(),
                o.snapshot.clone(),
                o.action.to_owned(),
                o.reason.clone(),
                o.result.clone(),
            ]
        };
        Human::Table {
            headers: vec!["OWNER", "VM", "SNAPSHOT", "ACTION", "REASON", "RESULT"],
            rows: self.iter().map(row).collect(),
        }
    }
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

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        match &self.command {
            Command::Create {
                vm,
                name,
                expire,
                description,
            } => {
                let req = CreateRequest {
                    vm: vm.as_str(),
                    name: name.clone(),
                    expire: span(expire)?,
                    description: validate::description(description.as_deref().unwrap_or(""))?,
                };
                let created = out.working(&format!("snapshotting {vm}"), |_| {
                    snapshot::create(ctx, &req)
                });
                Ok(Report::of(&created?))
            }
            Command::List { vm } => {
                let snaps = snapshot::list(ctx, vm.as_ref().map(VmName::as_str))?;
                Ok(Report::of(&snaps))
            }
            Command::Restore { vm, name, yes } => {
                let (vm, name) = (vm.as_str(), name.as_str());
                snapshot::get(ctx, vm, name)?;
                let prompt = format!("return `{vm}` to snapshot `{name}`, losing everything since");
                if !out.confirm(&prompt, *yes)? {
                    return Ok(Report::declined("nothing restored"));
                }
                let restored = out.working(&format!("restoring {vm}"), |_| {
                    snapshot::restore(ctx, vm, name)
                });
                restored?;
                let done = serde_json::json!({ "vm": vm, "restored": name });
                Ok(Report::done(&done, format!("restored {vm} to {name}")))
            }
            Command::Delete { vm, name } => {
                snapshot::delete(ctx, vm.as_str(), name.as_str())?;
                let done = serde_json::json!({ "vm": vm, "deleted": name });
                Ok(Report::done(
                    &done,
                    format!("deleted snapshot {name} of {vm}"),
                ))
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
                    (false, Some(u)) => Scope::User(u.to_string()),
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
                Ok(Report::of(&outcomes).exit(failed as i32))
            }
        }
    }
}
