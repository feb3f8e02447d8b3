//! `basphere shell --user ID`: OpenSSH's forced command for a tenant's key.
//!
//! sshd puts what the tenant typed in `SSH_ORIGINAL_COMMAND`. It is split with shell
//! rules but never given to a shell, and then runs through the same dispatcher as the
//! terminal, as that tenant.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;

use nix::sys::signal::{SigHandler, Signal};

use crate::config::Config;
use crate::context::{Caller, Context};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::validate::Size;

/// Run a tenant's SSH command (the forced command OpenSSH runs for their key)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The user the key belongs to
    #[arg(long, value_name = "ID")]
    pub user: String,

    /// Fingerprint of the key that authenticated, for the audit log
    #[arg(long, value_name = "FINGERPRINT")]
    pub key: Option<String>,
}

/// Splits a command line the way a POSIX shell would, without running one.
pub fn split_command(line: &str) -> Result<Vec<String>> {
    if line.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
        return Err(Error::invalid(
            "the command contains a newline or NUL character",
        ));
    }
    let words = shell_words::split(line)
        .map_err(|e| Error::invalid(format!("cannot parse the command: {e}")))?;
    Ok(words)
}

/// What a tenant sees on logging in without a command: who they are, their quota,
/// their VMs and what they can run.
fn welcome(config: &Config, tenant: &Caller, out: &mut Output) -> Result<()> {
    let ctx = Context::open(config.clone(), tenant, None)?;
    let user = ctx.tenant()?;
    let report = crate::ops::quota::show(&ctx, &user)?;
    let (l, u) = (&report.limits, &report.usage);
    out.line(format!("basphere: signed in as {user}"))?;
    out.line("")?;
    out.line(format!(
        "Quota: {}/{} vCPUs, {}/{} memory, {}/{} VMs, {}/{} snapshots",
        u.cpus,
        l.cpus,
        Size::from_mib(u.memory_mib),
        Size::from_mib(l.memory_mib),
        u.vms,
        l.vms,
        report.snapshots,
        l.snapshots,
    ))?;
    out.line("")?;
    match crate::ops::vm::list_mine(&ctx) {
        Ok(vms) if vms.is_empty() => {
            out.line("You have no VMs yet: create one with `create-vm NAME`.")?
        }
        Ok(vms) => {
            out.line("Your VMs:")?;
            super::vm::list(out, &vms, false)?;
        }
        Err(e) => out.line(format!("Your VMs: cannot list them now ({e})"))?,
    }
    out.line("")?;
    commands(out)
}

/// The commands a tenant can run, one line each.
fn commands(out: &mut Output) -> Result<()> {
    out.line("Commands:")?;
    let cmd = super::command();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        // What a tenant cannot run over SSH is not offered.
        if matches!(
            name,
            "shell" | "completions" | "config" | "serve" | "mail" | "auth-keys" | "sshd-config"
        ) {
            continue;
        }
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.line(format!("  {name:<12} {about}"))?;
    }
    out.line("")?;
    if out.terminal().is_some() {
        out.line(
            "Type a command (`help` for this list, `COMMAND --help` for details), `exit` to leave.",
        )
    } else {
        out.line("Run a command with: ssh basphere@HOST COMMAND, e.g. ssh basphere@HOST vm list")
    }
}

/// The interactive prompt of a terminal session: commands run one by one until `exit`.
fn prompt(
    tenant: &Caller,
    user: &str,
    out: &mut Output,
    env: &BTreeMap<String, String>,
) -> Result<i32> {
    // Ctrl-C at the prompt drops the line typed so far instead of ending the session;
    // the terminal still delivers it as a key to confirmations and the console.
    for signal in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: ignoring a signal installs no handler.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) };
    }
    loop {
        let io = out.io();
        write!(io.stdout, "{user}@basphere> ").map_err(write_err)?;
        io.stdout.flush().map_err(write_err)?;
        let Some(line) = read_line(io.stdin)? else {
            out.line("")?;
            return Ok(0);
        };
        let line = line.trim();
        match line {
            "" => continue,
            "exit" | "quit" | "logout" => return Ok(0),
            "help" | "?" => {
                commands(out)?;
                continue;
            }
            _ => {}
        }
        let argv = match argv(line) {
            Ok(argv) => argv,
            Err(e) => {
                out.note(format!("{}", crate::error::Rendered(&e)))?;
                continue;
            }
        };
        let io = out.io();
        // The window may have changed size since the last command.
        io.terminal = crate::output::Terminal::detect();
        crate::dispatch(tenant, argv, io, env);
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("cannot write to the terminal", e)
}

/// One line from the terminal (which edits it), or `None` at end of input.
fn read_line(input: &mut (dyn Read + Send)) -> Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match input.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot read from the terminal", e)),
        }
        if line.len() > 64 * 1024 {
            return Err(Error::invalid("the command line is too long"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// A tenant's command line as arguments for the dispatcher.
fn argv(line: &str) -> Result<Vec<OsString>> {
    let mut words = split_command(line)?;
    if words.first().map(String::as_str) == Some("basphere") {
        words.remove(0);
    }
    Ok(std::iter::once("basphere".to_owned())
        .chain(words)
        .map(Into::into)
        .collect())
}

pub fn exec(
    args: &Args,
    caller: &Caller,
    config: &Config,
    out: &mut Output,
    env: &BTreeMap<String, String>,
) -> Result<i32> {
    let Caller::Local { uid } = caller else {
        return Err(Error::denied(
            "`shell` runs on the bastion for sshd, not over SSH",
        ));
    };
    let login = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    if *uid != 0 && login.as_deref() != Some(config.service_user.value.as_str()) {
        return Err(Error::denied(format!(
            "`shell` is run by sshd as the service account `{}`",
            config.service_user.value
        )));
    }
    let user: crate::validate::UserId = args.user.parse()?;
    let tenant = Caller::Ssh {
        user: user.to_string(),
        fingerprint: args.key.clone(),
    };
    let line = env.get("SSH_ORIGINAL_COMMAND").map(String::as_str);
    session(config, &tenant, line, out, env)
}

/// What a tenant's SSH session runs, whichever front door it came through: `line`, or
/// with none the welcome, then on a terminal the prompt.
pub(crate) fn session(
    config: &Config,
    tenant: &Caller,
    line: Option<&str>,
    out: &mut Output,
    env: &BTreeMap<String, String>,
) -> Result<i32> {
    let line = line.unwrap_or("").trim();
    if !line.is_empty() {
        return Ok(crate::dispatch(tenant, argv(line)?, out.io(), env));
    }
    welcome(config, tenant, out)?;
    match (out.terminal(), tenant) {
        (Some(_), Caller::Ssh { user, .. }) => prompt(tenant, user, out, env),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell_without_one() {
        assert_eq!(
            split_command("create-vm 'web 1' --cpus 2").unwrap(),
            ["create-vm", "web 1", "--cpus", "2"]
        );
        assert_eq!(
            split_command("vm list; rm -rf /").unwrap(),
            ["vm", "list;", "rm", "-rf", "/"]
        );
        assert_eq!(split_command("echo $(id)").unwrap(), ["echo", "$(id)"]);
        assert!(split_command("vm list\nwhoami").is_err());
        assert!(split_command("vm\0list").is_err());
        assert!(split_command("vm 'list").is_err());
    }
}
