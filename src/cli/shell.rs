//! `basphere shell --user ID`: OpenSSH's forced command for a tenant's key.
//!
//! sshd puts what the tenant typed in `SSH_ORIGINAL_COMMAND`. It is split with shell
//! rules but never given to a shell, and then runs through the same dispatcher as the
//! terminal, as that tenant.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::context::Caller;
use crate::error::{Error, Result};
use crate::output::Output;

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

pub(crate) fn welcome(user: &str, out: &mut Output) -> Result<()> {
    out.line(format!("basphere: signed in as {user}"))?;
    out.line("")?;
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
    out.line("Run a command with: ssh basphere@HOST COMMAND, e.g. ssh basphere@HOST vm list")?;
    Ok(())
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
    let line = env
        .get("SSH_ORIGINAL_COMMAND")
        .map(String::as_str)
        .unwrap_or("")
        .trim();
    if line.is_empty() {
        welcome(user.as_str(), out)?;
        return Ok(0);
    }
    let mut words = split_command(line)?;
    if words.first().map(String::as_str) == Some("basphere") {
        words.remove(0);
    }
    let argv = std::iter::once("basphere".to_owned())
        .chain(words)
        .map(Into::into)
        .collect();
    Ok(crate::dispatch(&tenant, argv, out.io(), env))
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
