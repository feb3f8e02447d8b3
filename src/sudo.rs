//! Administrators who are not root. The database is the service account's (0600, in a
//! 0711 directory), so a member of `admin_group` cannot open it; basphere run by a member
//! re-executes itself through sudo as the service account, with the same arguments, and
//! the new process acts as, and audits, the member (see `context::Caller::Sudo`). The
//! rule sudo needs ships as `templates/sudoers/basphere`, installed as [`SUDOERS`].
//!
//! Root, where the service account owns the data directory, becomes that account in
//! its own process for every command that does not change the host itself (`admin
//! init`, `admin adopt`), so that nothing root makes there (a lock file, a disk, a
//! seed) is root's and then refused to the service. It stays root in the audit log.
//!
//! Why sudo rather than a Unix socket to `serve` with peer credentials: it works while
//! `serve` is down, which is when an administrator most needs it; it needs no second
//! protocol; and every command keeps one code path.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::context::{local_role, Role};
use crate::error::{Error, Result};

/// Where the rule that lets members run basphere as the service account lives.
pub const SUDOERS: &str = "/etc/sudoers.d/basphere";

/// `config` back once this process works on the data directory as it should: root
/// (unless `needs_root`) as the service account that owns it, a member of
/// `admin_group` kept out of it through `sudo -u SERVICE_USER basphere ARGS...`, which
/// replaces this process (only the error that stopped it is returned), anyone else as
/// they are.
pub fn reach_data_dir(config: Config, needs_root: bool) -> Result<Config> {
    if nix::unistd::getuid().is_root() {
        if let Some(service) = owning_service_account(&config).filter(|_| !needs_root) {
            become_account(&service)?;
        }
        return Ok(config);
    }
    if !kept_out(&config) {
        return Ok(config);
    }
    Err(reexec(&config))
}

/// The service account, when it exists, is not root, and owns the data directory.
fn owning_service_account(config: &Config) -> Option<nix::unistd::User> {
    let service = nix::unistd::User::from_name(&config.service_user).ok()??;
    let owner = std::fs::metadata(&config.data_dir).ok()?.uid();
    (owner == service.uid.as_raw() && !service.uid.is_root()).then_some(service)
}

/// Gives up root for `account`, its groups included, for good. Called before this
/// process starts a thread.
fn become_account(account: &nix::unistd::User) -> Result<()> {
    let failed = |e: nix::errno::Errno| {
        Error::io(
            format!("cannot become the service account `{}`", account.name),
            e.into(),
        )
    };
    let name = std::ffi::CString::new(account.name.clone())
        .map_err(|_| Error::invalid("bad account name"))?;
    nix::unistd::initgroups(&name, account.gid).map_err(failed)?;
    nix::unistd::setgid(account.gid).map_err(failed)?;
    nix::unistd::setuid(account.uid).map_err(failed)?;
    Ok(())
}

/// Whether this process is a member's, and the service account's data directory or
/// database refuses it. Root, the service account and strangers go on as they are:
/// sudo would give them nothing (strangers get the usual refusal).
fn kept_out(config: &Config) -> bool {
    let uid = nix::unistd::getuid();
    if uid.is_root() || local_role(uid.as_raw(), config) != Role::LocalAdmin {
        return false;
    }
    let owner = std::fs::metadata(&config.data_dir).map(|m| m.uid());
    let service = nix::unistd::User::from_name(&config.service_user);
    if !matches!((owner, service), (Ok(o), Ok(Some(s))) if o == s.uid.as_raw()) {
        return false;
    }
    let db = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(config.db_path());
    match db {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => true,
        // `admin init` on a directory the service account owns.
        Err(e) if e.kind() == ErrorKind::NotFound => nix::unistd::access(
            &config.data_dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_err_and(|e| e == nix::errno::Errno::EACCES),
        _ => false,
    }
}

/// Replaces this process with `sudo -n -u SERVICE_USER -- EXE ARGS...`: the same
/// arguments, the same streams and terminal, and sudo's exit code (which is the
/// command's) as this one's. Returns only on failure.
fn reexec(config: &Config) -> Error {
    // This binary's own path: `/proc/self/exe` given to sudo would name sudo.
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Error::io("cannot find the path of basphere itself", e),
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut sudo = Command::new("sudo");
    sudo.arg("-n");
    // sudo resets the environment. The configuration variables are named, so that a
    // rule without `env_keep += "BASPHERE_*"` makes sudo refuse rather than drop them
    // and run the command against another configuration.
    let keep = configuration_variables();
    if !keep.is_empty() {
        sudo.arg(format!("--preserve-env={}", keep.join(",")));
    }
    sudo.args(["-u", &config.service_user, "--"]);
    let allowed = Command::new("sudo")
        .args(["-n", "-l", "-u", &config.service_user, "--"])
        .arg(&exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let refused = match allowed {
        Ok(status) if status.success() => {
            let e = sudo.arg(&exe).args(&args).exec();
            return Error::io("cannot run sudo", e);
        }
        Ok(_) => "sudo does not allow it without a password",
        Err(e) if e.kind() == ErrorKind::NotFound => "sudo is not installed",
        Err(_) => "sudo cannot run",
    };
    Error::Install(format!(
        "members of `{group}` reach the database as `{user}` through sudo, and {refused}: \
         install basphere's rule as {SUDOERS} (mode 0440), which lets `%{group}` run `{exe}` \
         as `{user}`; check it with `visudo -cf {SUDOERS}`",
        group = config.admin_group,
        user = config.service_user,
        exe = exe.display(),
    ))
}

/// The `BASPHERE_*` variables set in this process, which the command reads as
/// configuration (and tests as hooks).
fn configuration_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.starts_with("BASPHERE_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}
