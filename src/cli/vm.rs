//! `basphere vm ...`: list, show, start, stop, reboot and delete your VMs.

use std::time::Duration;

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::vm::{self, Power, View};
use crate::output::{timestamp, Output};
use crate::validate::Size;

/// Manage your virtual machines
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List your VMs
    #[command(visible_alias = "ls")]
    List,
    /// Show one VM
    Show { name: String },
    /// Start a stopped VM
    Start { name: String },
    /// Shut a VM down (ACPI), or power it off with --force
    Stop {
        name: String,
        /// Power off at once, like pulling the plug
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest to shut down
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Reboot a running VM
    Reboot { name: String },
    /// Delete a VM with its disk; frees its quota and address
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
}

pub fn rows(views: &[View], with_owner: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut headers = vec!["NAME", "STATE", "IP", "CPUS", "MEMORY", "DISK", "IMAGE"];
    if with_owner {
        headers.insert(0, "OWNER");
    }
    let rows = views
        .iter()
        .map(|v| {
            let mut row = vec![
                v.name.clone(),
                v.state.clone(),
                v.ip.clone(),
                v.cpus.to_string(),
                Size::from_mib(v.memory_mib).to_string(),
                Size::from_bytes(v.disk_bytes).to_string(),
                v.image.clone(),
            ];
            if with_owner {
                row.insert(0, v.owner.clone());
            }
            row
        })
        .collect();
    (headers, rows)
}

pub fn list(out: &mut Output, views: &[View], with_owner: bool) -> Result<()> {
    if out.json {
        return out.json(views);
    }
    if views.is_empty() && out.terminal().is_some() {
        return out.note("no VMs yet; create one with `basphere create-vm NAME`");
    }
    let (headers, rows) = rows(views, with_owner);
    out.table(&headers, rows)
}

pub fn show_view(out: &mut Output, v: &View) -> Result<()> {
    out.fields(&[
        ("name", v.name.clone()),
        ("owner", v.owner.clone()),
        ("state", v.state.clone()),
        ("ip", v.ip.clone()),
        ("cpus", v.cpus.to_string()),
        ("memory", Size::from_mib(v.memory_mib).to_string()),
        ("disk", Size::from_bytes(v.disk_bytes).to_string()),
        ("image", v.image.clone()),
        ("created", timestamp(v.created_at)),
        ("ssh", v.ssh.clone()),
    ])
}

fn one(out: &mut Output, v: &View) -> Result<i32> {
    if out.json {
        out.json(v)?;
    } else {
        show_view(out, v)?;
    }
    Ok(0)
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<i32> {
        match &self.command {
            Command::List => list(out, &vm::list_mine(ctx)?, false).map(|_| 0),
            Command::Show { name } => one(out, &vm::show(ctx, name)?),
            Command::Start { name } => one(out, &vm::power(ctx, name, Power::Start)?),
            Command::Stop {
                name,
                force,
                timeout,
            } => {
                let op = Power::Stop {
                    force: *force,
                    timeout: Duration::from_secs(*timeout),
                };
                let spinner = out.spinner();
                spinner.set_message(format!("stopping {name}"));
                let result = vm::power(ctx, name, op);
                spinner.finish_and_clear();
                one(out, &result?)
            }
            Command::Reboot { name } => one(out, &vm::power(ctx, name, Power::Reboot)?),
            Command::Delete { name, yes } => {
                let v = vm::get_mine(ctx, name)?;
                let prompt = if v.state == "running" {
                    format!("VM `{name}` is running; power it off and delete it with its disk")
                } else {
                    format!("delete VM `{name}` and its disk")
                };
                if !out.confirm(&prompt, *yes)? {
                    out.note("nothing deleted")?;
                    return Ok(1);
                }
                vm::delete(ctx, name)?;
                if out.json {
                    out.json(&serde_json::json!({ "deleted": name }))?;
                } else {
                    out.line(format!("deleted {name}"))?;
                }
                Ok(0)
            }
        }
    }
}
