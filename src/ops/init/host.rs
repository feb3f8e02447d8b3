//! What `admin init` changes on the host beside basphere's own state: files written
//! atomically, the sshd drop-in (checked with `sshd -t`, then sshd reloaded), membership
//! of the administrators' group, the systemd units, and the host's routes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The units `admin init` enables and starts where systemd runs the host.
pub const UNITS: &[&str] = &[
    "basphere.service",
    "basphere-jobs.timer",
    "basphere-reconcile.service",
];

/// Where systemd, running the host, says so (sd_booted(3)).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// Where a running sshd keeps its pid (OpenSSH's default `PidFile`).
const SSHD_PIDFILE: &str = "/run/sshd.pid";

/// Writes `contents` to `path` through a temporary file beside it and a rename, so a
/// reader (or a crash) sees the old file or the new one, never part of either. The file
/// gets `mode`, and group `group` when given (this process must be root for that).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32, group: Option<u32>) -> Result<()> {
    let io = |e| Error::io(format!("cannot write `{}`", path.display()), e);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    // A directory made here is one others look into (`/etc/basphere`); one that exists
    // keeps its mode.
    if !dir.exists() {
        crate::files::dir(dir, 0o755).map_err(io)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            std::os::unix::fs::fchown(&file, Some(0), Some(gid))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.map_err(io)
}

/// A copy of `path` beside it, named for the time `now`: `config.toml.2026-12-03T134501`.
pub fn keep_copy(path: &Path, now: i64) -> Result<PathBuf> {
    let stamp = jiff::Timestamp::from_second(now)
        .map(|t| t.strftime("%Y-%m-%dT%H%M%S").to_string())
        .unwrap_or_else(|_| now.to_string());
    let mut copy = path.as_os_str().to_owned();
    copy.push(format!(".{stamp}"));
    let copy = PathBuf::from(copy);
    let contents =
        fs::read(path).map_err(|e| Error::io(format!("cannot read `{}`", path.display()), e))?;
    // It may hold the SMTP password: private, whatever the original's mode.
    write_atomic(&copy, &contents, crate::files::PRIVATE, None)?;
    Ok(copy)
}

/// The mode and group of the configuration file: readable by the service account's group
/// when it exists (the file may hold the SMTP password, so never by others); private to
/// its owner otherwise, or when this process cannot give files away.
pub fn config_owner(service_group: &str) -> (u32, Option<u32>) {
    let group = nix::unistd::Group::from_name(service_group).ok().flatten();
    match group {
        Some(group) if nix::unistd::geteuid().is_root() => (0o640, Some(group.gid.as_raw())),
        _ => (crate::files::PRIVATE, None),
    }
}

/// What a file holds, `None` when there is none.
pub fn read_if_any(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    }
}

/// The previous drop-in, kept beside it while a new one is checked, so that a run killed
/// before the check can still put it back.
fn previous_path(drop_in: &Path) -> PathBuf {
    let mut path = drop_in.as_os_str().to_owned();
    path.push(".previous");
    PathBuf::from(path)
}

/// Puts `contents` at `drop_in`, checks sshd's whole configuration with `sshd -t`, and
/// puts the previous drop-in back (or none, if there was none) when the check fails.
pub fn install_drop_in(drop_in: &Path, contents: &str) -> Result<()> {
    let previous = previous_path(drop_in);
    // A `.previous` left by a killed run is the drop-in from before that run.
    if !previous.exists() {
        if let Some(old) = read_if_any(drop_in)? {
            write_atomic(&previous, old.as_bytes(), 0o644, None)?;
        }
    }
    crate::hooks::crash_point("init-drop-in-kept");
    write_atomic(drop_in, contents.as_bytes(), 0o644, None)?;
    crate::hooks::crash_point("init-drop-in-written");
    if let Err(e) = sshd_check() {
        match read_if_any(&previous)? {
            Some(old) => write_atomic(drop_in, old.as_bytes(), 0o644, None)?,
            None => remove_if_any(drop_in)?,
        }
        remove_if_any(&previous)?;
        return Err(e);
    }
    remove_if_any(&previous)
}

/// Whether a run was killed between keeping the previous drop-in and checking the new one.
pub fn drop_in_unchecked(drop_in: &Path) -> bool {
    previous_path(drop_in).exists()
}

fn remove_if_any(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove `{}`", path.display()), e)),
    }
}

fn sshd() -> Result<&'static str> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            Error::Install("OpenSSH's sshd is not installed (apt install openssh-server)".into())
        })
}

/// Whether sshd, deciding for a login as `service_user`, runs the `AuthorizedKeysCommand`
/// of `drop_in` (`sshd -T`): not when its sshd_config includes no `sshd_config.d/*.conf`.
pub fn sshd_reads(drop_in: &str, service_user: &str) -> Result<bool> {
    let wanted = drop_in
        .lines()
        .find_map(|l| l.trim().strip_prefix("AuthorizedKeysCommand "))
        .unwrap_or_default()
        .trim();
    let spec = format!("user={service_user},host=localhost,addr=127.0.0.1");
    let shown = Command::new(sshd()?)
        .args(["-T", "-C", &spec])
        .output()
        .map_err(|e| Error::io("cannot run `sshd -T`", e))?;
    let text = String::from_utf8_lossy(&shown.stdout);
    Ok(text
        .lines()
        .any(|l| l.strip_prefix("authorizedkeyscommand ") == Some(wanted)))
}

/// `sshd -t`: sshd reads its whole configuration, drop-ins included, and says what is wrong.
fn sshd_check() -> Result<()> {
    let checked = Command::new(sshd()?)
        .arg("-t")
        .output()
        .map_err(|e| Error::io("cannot run `sshd -t`", e))?;
    if checked.status.success() {
        return Ok(());
    }
    Err(Error::Conflict {
        message: format!(
            "`sshd -t` refused the configuration, so the previous drop-in was put back: {}",
            String::from_utf8_lossy(&checked.stderr).trim()
        ),
        help: Some("fix what sshd names, then run `basphere admin init` again".into()),
    })
}

/// Whether systemd runs this host, as sd_booted(3) tells.
pub fn systemd_running() -> bool {
    Path::new(SYSTEMD_RUNNING).is_dir()
}

/// Tells sshd to read its configuration again: through systemd when it runs the host,
/// else by SIGHUP to the sshd its pidfile names. Says which it did.
pub fn reload_sshd() -> Result<String> {
    if systemd_running() {
        run("systemctl", &["reload", "ssh"])?;
        return Ok("reloaded sshd (`systemctl reload ssh`)".into());
    }
    let pid = read_if_any(Path::new(SSHD_PIDFILE))?
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 1);
    let Some(pid) = pid else {
        return Ok(format!(
            "sshd is not running (no {SSHD_PIDFILE}): it reads the drop-in when it starts"
        ));
    };
    // A stale pidfile may name another program by now.
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "sshd" {
        return Ok(format!(
            "{SSHD_PIDFILE} names process {pid}, which is not sshd: start sshd yourself"
        ));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| Error::io("cannot signal sshd", e.into()))?;
    Ok(format!("reloaded sshd (SIGHUP to process {pid})"))
}

/// The command that enables and starts the units.
pub fn units_command() -> String {
    format!("systemctl enable --now {}", UNITS.join(" "))
}

/// Enables and starts the units where systemd runs the host; says what it did, or what
/// to run where it does not.
pub fn start_units(systemd: bool) -> Result<String> {
    if !systemd {
        return Ok(format!(
            "systemd is not running: start the units yourself: {}",
            units_command()
        ));
    }
    let mut args = vec!["enable", "--now"];
    args.extend(UNITS);
    run("systemctl", &args)?;
    Ok(format!("enabled and started {}", UNITS.join(", ")))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let done = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("cannot run `{program}`"), e))?;
    if done.status.success() {
        return Ok(());
    }
    Err(Error::Install(format!(
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&done.stderr).trim()
    )))
}

/// The Unix account `name` and group `group`, which must exist, and whether the account
/// is already a member.
pub fn membership(name: &str, group: &str) -> Result<bool> {
    let user = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| Error::invalid(format!("there is no Unix account `{name}` on this host")))?;
    let group = nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .ok_or_else(|| {
            Error::invalid_with_help(
                format!("there is no Unix group `{group}` on this host"),
                format!("the package makes it; otherwise `groupadd --system {group}`"),
            )
        })?;
    let c_name = std::ffi::CString::new(name).map_err(|_| Error::invalid("bad account name"))?;
    let groups = nix::unistd::getgrouplist(&c_name, user.gid)
        .map_err(|e| Error::io(format!("cannot read the groups of `{name}`"), e.into()))?;
    Ok(groups.contains(&group.gid))
}

/// Adds the Unix account `name` to `group` (`usermod -a -G`).
pub fn join_group(name: &str, group: &str) -> Result<()> {
    run("usermod", &["-a", "-G", group, name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_keep_copies_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/config.toml");
        write_atomic(&path, b"one", 0o640, None).unwrap();
        write_atomic(&path, b"two", 0o600, None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let copy = keep_copy(&path, 1_796_305_501).unwrap();
        assert!(copy
            .display()
            .to_string()
            .ends_with("config.toml.2026-12-03T134501"));
        assert_eq!(fs::read_to_string(&copy).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }
}
