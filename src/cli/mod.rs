//! The command line: clap definitions, one file per command, and the dispatcher.
//! Each command converts its arguments, calls an operation and renders the result.

pub mod admin;
pub mod auth_keys;
pub mod completions;
pub mod config;
pub mod console;
pub mod create_vm;
pub mod doctor;
pub mod images;
pub mod input;
pub mod key;
pub mod mail;
pub mod quota;
pub mod serve;
pub mod shell;
pub mod snapshot;
pub mod sshd_config;
pub mod vm;
pub mod whoami;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::cancel::Cancel;
use crate::config::{Config, Overrides};
use crate::context::{Allowed, Caller, Context, Role};
use crate::error::{Error, Result};
use crate::output::{Output, Report};

#[derive(Debug, Parser)]
#[command(
    name = "basphere",
    version,
    about = "Self-service virtual machines on a libvirt host, reached over SSH",
    long_about = "basphere turns one Linux host into a self-service VM platform. Tenants, identified by \
their SSH key, create and manage KVM/QEMU virtual machines within a quota; administrators manage \
users, images and quotas from a terminal on the bastion.",
    after_help = "Exit status: 0 ok, 1 failure, 2 usage error, 3 not found, 4 permission denied, \
5 quota exceeded, 6 conflict (already exists, in use, wrong state), 7 libvirt unavailable.",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: /etc/basphere/config.toml; env: BASPHERE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the database, disks and seeds [env: BASPHERE_DATA_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// libvirt connection URI [env: BASPHERE_LIBVIRT_URI]
    #[arg(long, global = true, value_name = "URI")]
    pub libvirt_uri: Option<String>,

    /// Virtualisation type: auto, kvm or qemu [env: BASPHERE_VIRT_TYPE]
    #[arg(long, global = true, value_name = "TYPE")]
    pub virt_type: Option<String>,

    /// Act for USER (administrators only)
    #[arg(long = "as", global = true, value_name = "USER")]
    pub act_as: Option<String>,

    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
}

impl Cli {
    /// Whether the command works on the data directory, which a member of `admin_group`
    /// reaches only as the service account (see `crate::sudo`).
    pub fn uses_data_dir(&self) -> bool {
        let init = matches!(&self.command, Command::Admin(a) if matches!(a.command, admin::Command::Init(_)));
        init || self.command.run().needs_database()
    }
}

impl Global {
    /// What the flags set, by configuration key.
    pub fn overrides(&self) -> Overrides {
        let keys = [
            (
                "data_dir",
                self.data_dir.as_ref().map(|p| p.display().to_string()),
            ),
            ("libvirt_uri", self.libvirt_uri.clone()),
            ("virt_type", self.virt_type.clone()),
        ];
        Overrides {
            file: self.config.clone(),
            keys: keys
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
            may_be_missing: false,
        }
    }

    /// Flags that point basphere at other state; a remote caller never chooses those.
    pub fn names_local_state(&self) -> bool {
        self.config.is_some()
            || self.data_dir.is_some()
            || self.libvirt_uri.is_some()
            || self.virt_type.is_some()
    }
}

/// A command: who may run it, declared next to its arguments, and what it does.
pub trait Run {
    /// The roles that may run this command line.
    fn allowed(&self) -> Allowed;

    /// Whether `--json` applies: a command that streams a terminal or writes a format
    /// for another program says no, and `--json` is refused before it runs.
    fn speaks_json(&self) -> bool {
        true
    }

    /// Whether the command works on an installation's database. It is opened before the
    /// command runs, so that a missing one stops it before anything is touched; only
    /// `admin init` creates one.
    fn needs_database(&self) -> bool {
        true
    }

    /// Runs the command; what it returns is written by `Output` in the caller's mode.
    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report>;
}

#[derive(Debug, Subcommand)]
pub enum Command {
    CreateVm(create_vm::Args),
    Vm(vm::Args),
    Console(console::Args),
    Snapshot(snapshot::Args),
    Images(images::Args),
    Quota(quota::Args),
    Key(key::Args),
    Whoami(whoami::Args),
    Admin(admin::Args),
    Mail(mail::Args),
    Serve(serve::Args),
    Config(config::Args),
    Completions(completions::Args),
    Shell(shell::Args),
    AuthKeys(auth_keys::Args),
    SshdConfig(sshd_config::Args),
    Doctor(doctor::Args),
}

impl Command {
    /// Whether root runs the command as root even where the service account owns the
    /// data directory (see `crate::sudo`).
    pub fn needs_root(&self) -> bool {
        matches!(self, Command::Admin(admin) if admin.needs_root())
    }

    /// Whether the command writes the configuration file, which may then be missing.
    pub fn writes_config(&self) -> bool {
        matches!(self, Command::Admin(admin) if admin.writes_config())
    }

    fn run(&self) -> &dyn Run {
        match self {
            Command::CreateVm(a) => a,
            Command::Vm(a) => a,
            Command::Console(a) => a,
            Command::Snapshot(a) => a,
            Command::Images(a) => a,
            Command::Quota(a) => a,
            Command::Key(a) => a,
            Command::Whoami(a) => a,
            Command::Admin(a) => a,
            Command::Mail(a) => a,
            Command::Serve(a) => a,
            Command::Config(a) => a,
            Command::Completions(a) => a,
            Command::Shell(a) => a,
            Command::AuthKeys(a) => a,
            Command::SshdConfig(a) => a,
            Command::Doctor(a) => a,
        }
    }
}

/// Who may run some form of each command, for the command lists people are shown.
pub const OFFERED: &[(&str, Allowed)] = &[
    ("create-vm", create_vm::ALLOWED),
    ("vm", vm::ALLOWED),
    ("console", console::ALLOWED),
    ("snapshot", snapshot::ALLOWED),
    ("images", images::ALLOWED),
    ("quota", quota::ALLOWED),
    ("key", key::ALLOWED),
    ("whoami", whoami::ALLOWED),
    ("admin", admin::ALLOWED),
    ("mail", mail::ALLOWED),
    ("serve", serve::ALLOWED),
    ("config", config::ALLOWED),
    ("completions", completions::ALLOWED),
    ("shell", shell::ALLOWED),
    ("auth-keys", auth_keys::ALLOWED),
    ("sshd-config", sshd_config::ALLOWED),
    ("doctor", doctor::ALLOWED),
];

/// The commands `role` may run, with their one-line help, in the order of `--help`.
pub fn offered_to(role: Role) -> Vec<(String, String)> {
    command()
        .get_subcommands()
        .filter(|sub| {
            OFFERED
                .iter()
                .any(|(name, allowed)| *name == sub.get_name() && allowed.permits(role))
        })
        .map(|sub| {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            (sub.get_name().to_owned(), about)
        })
        .collect()
}

/// Runs a parsed command line: the caller is resolved, checked once against what the
/// command admits, and the command runs.
pub fn execute(
    cli: &Cli,
    name: &str,
    caller: &Caller,
    config: Arc<Config>,
    cancel: Cancel,
    out: &mut Output,
) -> Result<Report> {
    if caller.is_remote() && cli.global.names_local_state() {
        return Err(Error::denied(
            "--config, --data-dir, --libvirt-uri and --virt-type are for local administrators",
        ));
    }
    let command = cli.command.run();
    if cli.global.json && !command.speaks_json() {
        return Err(Error::invalid(format!("`{name}` has no JSON output")));
    }
    let ctx = Context::new(config, caller, cli.global.act_as.as_deref(), cancel)?;
    let role = ctx.actor.role;
    if !command.allowed().permits(role) {
        return Err(refusal(name, command.allowed(), role, &ctx.config));
    }
    if command.needs_database() {
        ctx.db()?;
    }
    command.exec(&ctx, out)
}

/// Why `role` may not run `name`, naming who may.
fn refusal(name: &str, allowed: Allowed, role: Role, config: &Config) -> Error {
    if role == Role::Stranger {
        return Error::denied(format!(
            "local use of basphere is for root and members of the `{}` group; tenants connect with `ssh {}@{}`",
            config.admin_group, config.service_user, config.public_host()
        ));
    }
    let mut who = Vec::new();
    if Allowed::ADMINS.and(allowed) == allowed {
        who.push("administrators".to_owned());
    } else if Allowed::LOCAL_ADMINS.and(allowed) == allowed {
        who.push("administrators on the bastion".to_owned());
    } else if allowed.permits(Role::Root) {
        who.push("root".to_owned());
    }
    if allowed.permits(Role::Service) {
        who.push(format!("the service account `{}`", config.service_user));
    }
    if allowed.permits(Role::Tenant) {
        who.push("tenants".to_owned());
    }
    let who = match who.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => "nobody".to_owned(),
    };
    Error::denied(format!("`{name}` is for {who}"))
}

/// `Cli::command()`, for man pages, completions and tests.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definitions_are_consistent() {
        super::command().debug_assert();
    }

    #[test]
    fn every_command_is_offered_to_someone() {
        let names: Vec<_> = super::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let offered: Vec<_> = super::OFFERED.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, offered);
    }
}
