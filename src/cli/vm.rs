//! `basphere vm ...`: list, show, start, stop, reboot and delete your VMs.

use std::time::Duration;

use clap::Subcommand;

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::vm::{self, Power, View, VmState};
use crate::output::{timestamp, Human, Output, Render, Report};
use crate::validate::{Size, VmName};
use crate::virt::PowerState;

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
    Show { name: VmName },
    /// Start a stopped VM
    Start { name: VmName },
    /// Shut a VM down (ACPI), or power it off with --force
    Stop {
        name: VmName,
        /// Power off at once, like pulling the plug
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest to shut down, at most a day
        #[arg(long, default_value_t = 60, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: u64,
    },
    /// Reboot a running VM
    Reboot { name: VmName },
    /// Delete a VM with its disk; frees its quota and address
    #[command(visible_alias = "rm")]
    Delete {
        name: VmName,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
}

/// VMs as a table; administrators see whose each one is.
#[derive(serde::Serialize)]
#[serde(transparent)]
pub struct Vms {
    pub views: Vec<View>,
    #[serde(skip)]
    pub with_owner: bool,
}

impl Render for Vms {
    fn human(&self) -> Human {
        let mut headers = vec!["NAME", "STATE", "IP", "CPUS", "MEMORY", "DISK", "IMAGE"];
        if self.with_owner {
            headers.insert(0, "OWNER");
        }
        let row = |v: &View| {
            let mut row = vec![
                v.name.clone(),
                v.state.to_string(),
                v.ip.clone(),
                v.cpus.to_string(),
                Size::from_mib(v.memory_mib).to_string(),
                Size::from_bytes(v.disk_bytes).to_string(),
                v.image.clone(),
            ];
            if self.with_owner {
                row.insert(0, v.owner.clone());
            }
            row
        };
        let rows = self.views.iter().map(row).collect();
        Human::Table { headers, rows }
    }
}

impl Vms {
    pub fn report(self) -> Report {
        Report::of(&self).hint("no VMs yet; create one with `basphere create-vm NAME`")
    }
}

impl Render for View {
    fn human(&self) -> Human {
        Human::Fields(vec![
            ("name", self.name.clone()),
            ("owner", self.owner.clone()),
            ("state", self.state.to_string()),
            ("ip", self.ip.clone()),
            ("cpus", self.cpus.to_string()),
            ("memory", Size::from_mib(self.memory_mib).to_string()),
            ("disk", Size::from_bytes(self.disk_bytes).to_string()),
            ("image", self.image.clone()),
            ("created", timestamp(self.created_at)),
            ("ssh", self.ssh.clone()),
        ])
    }
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        let power = |name: &VmName, op| Ok(Report::of(&vm::power(ctx, name.as_str(), op)?));
        match &self.command {
            Command::List => {
                let views = vm::list_mine(ctx)?;
                Ok(Vms {
                    views,
                    with_owner: false,
                }
                .report())
            }
            Command::Show { name } => Ok(Report::of(&vm::show(ctx, name.as_str())?)),
            Command::Start { name } => power(name, Power::Start),
            Command::Stop {
                name,
                force,
                timeout,
            } => {
                let op = Power::Stop {
                    force: *force,
                    timeout: Duration::from_secs(*timeout),
                };
                out.working(&format!("stopping {name}"), |_| power(name, op))
            }
            Command::Reboot { name } => power(name, Power::Reboot),
            Command::Delete { name, yes } => {
                let v = vm::get_mine(ctx, name.as_str())?;
                let prompt = if v.state == VmState::Power(PowerState::Running) {
                    format!("VM `{name}` is running; power it off and delete it with its disk")
                } else {
                    format!("delete VM `{name}` and its disk")
                };
                if !out.confirm(&prompt, *yes)? {
                    return Ok(Report::declined("nothing deleted"));
                }
                vm::delete(ctx, name.as_str())?;
                let done = serde_json::json!({ "deleted": name });
                Ok(Report::done(&done, format!("deleted {name}")))
            }
        }
    }
}
