//! The command line: clap definitions, one file per command, and the dispatcher.
//! Each command converts its arguments, calls an operation and renders the result.

pub mod admin;
pub mod auth_keys;
pub mod completions;
pub mod config;
pub mod console;
pub mod create_vm;
pub mod images;
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

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::context::{Caller, Context};
use crate::error::{Error, Result};
use crate::output::Output;

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

impl Global {
    fn overrides(&self) -> crate::config::Overrides {
        crate::config::Overrides {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            libvirt_uri: self.libvirt_uri.clone(),
            virt_type: self.virt_type.clone(),
        }
    }

    /// Flags that point basphere at other state; a remote caller never chooses those.
    fn names_local_state(&self) -> bool {
        self.config.is_some()
            || self.data_dir.is_some()
            || self.libvirt_uri.is_some()
            || self.virt_type.is_some()
    }
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
}

pub fn execute(
    cli: Cli,
    caller: &Caller,
    out: &mut Output,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<i32> {
    if caller.is_remote() && cli.global.names_local_state() {
        return Err(Error::denied(
            "--config, --data-dir, --libvirt-uri and --virt-type are for local administrators",
        ));
    }
    if let Command::Completions(args) = &cli.command {
        return completions::exec(args, out);
    }
    let config = Config::load(&cli.global.overrides(), env)?;
    match cli.command {
        Command::Config(args) => config::exec(&args, caller, &config, out),
        Command::Shell(args) => shell::exec(&args, caller, &config, out, env),
        Command::AuthKeys(args) => auth_keys::exec(&args, caller, &config, out),
        Command::SshdConfig(args) => sshd_config::exec(&args, caller, &config, out),
        command => {
            let ctx = Context::open(config, caller, cli.global.act_as.as_deref())?;
            match command {
                Command::CreateVm(args) => create_vm::exec(&args, &ctx, out),
                Command::Vm(args) => vm::exec(&args, &ctx, out),
                Command::Console(args) => console::exec(&args, &ctx, out),
                Command::Snapshot(args) => snapshot::exec(&args, &ctx, out),
                Command::Images(args) => images::exec(&args, &ctx, out),
                Command::Quota(args) => quota::exec(&args, &ctx, out),
                Command::Key(args) => key::exec(&args, &ctx, out),
                Command::Whoami(args) => whoami::exec(&args, &ctx, out),
                Command::Admin(args) => admin::exec(&args, &ctx, out),
                Command::Mail(args) => mail::exec(&args, &ctx, out),
                Command::Serve(args) => serve::exec(&args, &ctx, out),
                Command::Config(_)
                | Command::Completions(_)
                | Command::Shell(_)
                | Command::AuthKeys(_)
                | Command::SshdConfig(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
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
}
