//! Moving an installation from the old layout (the data directory root's, QEMU run as
//! root by the `user = "root"` and `group = "root"` lines the old `scripts/run` wrote in
//! `qemu.conf`) to the service layout: the service account owns the data, QEMU runs as
//! libvirt's own account.
//!
//! Every step looks at what is there and does only what is still missing, so a second
//! run changes nothing and a run killed at any step is finished by the next one.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::files;

/// The lines the old `scripts/run` wrote, exactly; no other line is touched.
const ROOT_LINES: [&str; 2] = [r#"user = "root""#, r#"group = "root""#];

/// The groups the service account joins when the host has them: it creates and runs
/// VMs through libvirt, and `virt_type = auto` opens `/dev/kvm` in its own process.
const SERVICE_GROUPS: [&str; 2] = ["libvirt", "kvm"];

/// What a run did.
#[derive(Debug, serde::Serialize)]
pub struct Adopted {
    pub service_user: String,
    /// Made by this run.
    pub account_created: bool,
    pub admin_group_created: bool,
    /// Groups the account joined in this run.
    pub groups_joined: Vec<String>,
    /// Files and directories handed from root to the service account, or given their
    /// mode, in this run.
    pub entries_changed: u64,
    /// Owned by another account (QEMU's, while a VM runs), or a file with more than one
    /// link: left as they are.
    pub entries_left_alone: Vec<PathBuf>,
    pub qemu_conf: QemuConf,
}

#[derive(Debug, serde::Serialize)]
pub struct QemuConf {
    pub path: PathBuf,
    /// The root lines removed in this run.
    pub lines_removed: Vec<String>,
    /// The copy of the file as it was, when this run changed it.
    pub backup: Option<PathBuf>,
    pub missing: bool,
}

/// Moves the installation `ctx` works on to the service layout.
pub fn adopt(ctx: &Context) -> Result<Adopted> {
    let outcome = adopt_steps(ctx);
    ctx.audit(
        "admin adopt",
        &ctx.paths.root.display().to_string(),
        &outcome,
    );
    outcome
}

fn adopt_steps(ctx: &Context) -> Result<Adopted> {
    let config = &ctx.config;
    let account_created = ensure_account(&config.service_user, &ctx.paths.root)?;
    let admin_group_created = ensure_group(&config.admin_group)?;
    let groups_joined = join_groups(&config.service_user)?;
    let user = User::from_name(&config.service_user)
        .ok()
        .flatten()
        .ok_or_else(|| Error::not_found("account", &config.service_user))?;
    crate::hooks::crash_point("adopt-account");
    let tree = hand_over(ctx, &user)?;
    crate::hooks::crash_point("adopt-tree");
    let qemu_conf = run_qemu_as_its_own_account(&crate::hooks::qemu_conf())?;
    Ok(Adopted {
        service_user: config.service_user.clone(),
        account_created,
        admin_group_created,
        groups_joined,
        entries_changed: tree.changed,
        entries_left_alone: tree.left_alone,
        qemu_conf,
    })
}

/// What [`hand_over`] did.
pub struct HandedOver {
    /// Files and directories given to the account, or given their mode.
    pub changed: u64,
    /// Owned by another account, or a file with more than one link: left as they are.
    pub left_alone: Vec<PathBuf>,
}

/// Gives the data directory, and what root made in it, to `account`, with the modes of
/// `files`. Also what `admin init` does, run by root, once the service account exists.
pub fn hand_over(ctx: &Context, account: &User) -> Result<HandedOver> {
    let mut tree = Tree {
        root: ctx.paths.root.clone(),
        traversable: [
            ctx.paths.root.clone(),
            ctx.paths.disks(),
            ctx.paths.seeds(),
            ctx.paths.images(),
        ],
        owner: (account.uid, account.gid),
        changed: 0,
        left_alone: Vec::new(),
    };
    tree.adopt()?;
    Ok(HandedOver {
        changed: tree.changed,
        left_alone: tree.left_alone,
    })
}

/// Runs a tool that changes the host's accounts; its failure is the command's.
fn account_tool(tool: &str, args: &[&str]) -> Result<()> {
    let run = Command::new(tool).args(args).output();
    let output = run.map_err(|e| Error::io(format!("cannot run `{tool}`"), e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Install(format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            stderr.trim()
        )));
    }
    Ok(())
}

/// Makes the service account if the host has none: a system account whose home is the
/// data directory, with a real shell (sshd runs the forced command with it).
fn ensure_account(name: &str, home: &Path) -> Result<bool> {
    if User::from_name(name).ok().flatten().is_some() {
        return Ok(false);
    }
    let home = home
        .to_str()
        .ok_or_else(|| Error::invalid(format!("data_dir `{}` is not UTF-8", home.display())))?;
    let args = ["--system", "--user-group", "--home-dir", home];
    let args = [&args[..], &["--no-create-home", "--shell", "/bin/sh", name]].concat();
    account_tool("useradd", &args)?;
    Ok(true)
}

/// Makes the administrators' group if the host has none.
fn ensure_group(name: &str) -> Result<bool> {
    if Group::from_name(name).ok().flatten().is_some() {
        return Ok(false);
    }
    account_tool("groupadd", &["--system", name])?;
    Ok(true)
}

/// Adds the service account to those of [`SERVICE_GROUPS`] the host has and it is not in.
fn join_groups(name: &str) -> Result<Vec<String>> {
    let user = User::from_name(name).ok().flatten();
    let user = user.ok_or_else(|| Error::not_found("account", name))?;
    let cname = std::ffi::CString::new(name).map_err(|_| Error::invalid("bad account name"))?;
    let member_of = nix::unistd::getgrouplist(&cname, user.gid).unwrap_or_default();
    let missing: Vec<String> = SERVICE_GROUPS
        .iter()
        .filter_map(|g| Group::from_name(g).ok().flatten())
        .filter(|g| !member_of.contains(&g.gid))
        .map(|g| g.name)
        .collect();
    if !missing.is_empty() {
        account_tool(
            "usermod",
            &["--append", "--groups", &missing.join(","), name],
        )?;
    }
    Ok(missing)
}

/// The data directory handed to the service account. It is walked through file
/// descriptors, never by path, and without following symbolic links: after a first run
/// the service account owns these directories, and must not be able to point root's
/// `chown` at another file by swapping a directory for a link while a second run walks.
struct Tree {
    root: PathBuf,
    /// The directories QEMU passes through (see `files`); every other one is private.
    traversable: [PathBuf; 4],
    owner: (Uid, Gid),
    changed: u64,
    left_alone: Vec<PathBuf>,
}

impl Tree {
    fn adopt(&mut self) -> Result<()> {
        let root = self.root.clone();
        let dir = open_nofollow(None, root.as_os_str(), OFlag::O_DIRECTORY)
            .map_err(|e| Error::io(format!("cannot open `{}`", root.display()), e))?;
        self.directory(dir, &root)
    }

    fn directory(&mut self, dir: File, path: &Path) -> Result<()> {
        let mode = match self.traversable.iter().any(|p| p == path) {
            true => files::TRAVERSABLE_DIR,
            false => files::PRIVATE_DIR,
        };
        self.entry(&dir, path, mode)?;
        let at = |e: io::Error| Error::io(format!("cannot read `{}`", path.display()), e);
        let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        for entry in listing.map_err(at)? {
            let entry = entry.map_err(at)?;
            let kind = entry.file_type().map_err(at)?;
            let name = entry.file_name();
            let child = path.join(&name);
            // Links, sockets and devices basphere never makes: left alone.
            let flag = match (kind.is_dir(), kind.is_file()) {
                (true, _) => OFlag::O_DIRECTORY,
                (_, true) => OFlag::empty(),
                _ => {
                    self.left_alone.push(child);
                    continue;
                }
            };
            let opened = open_nofollow(Some(&dir), &name, flag)
                .map_err(|e| Error::io(format!("cannot open `{}`", child.display()), e))?;
            let is_dir = opened.metadata().map_err(at)?.is_dir();
            match (kind.is_dir(), is_dir) {
                (true, true) => self.directory(opened, &child)?,
                (false, false) => self.entry(&opened, &child, files::PRIVATE)?,
                // Replaced while we looked: the next run sees it as it is.
                _ => self.left_alone.push(child),
            }
        }
        Ok(())
    }

    /// Gives one open file or directory to the service account if root owns it, then
    /// its mode if the service account owns it.
    fn entry(&mut self, file: &File, path: &Path, mode: u32) -> Result<()> {
        let at = |e: io::Error| Error::io(format!("cannot adopt `{}`", path.display()), e);
        let meta = file.metadata().map_err(at)?;
        let (uid, gid) = self.owner;
        let mut changed = false;
        if meta.uid() == 0 {
            // A second link may be a file outside the data directory.
            if meta.is_file() && meta.nlink() > 1 {
                self.left_alone.push(path.to_owned());
                return Ok(());
            }
            nix::unistd::fchown(file.as_raw_fd(), Some(uid), Some(gid))
                .map_err(|e| at(e.into()))?;
            changed = true;
        } else if meta.uid() != uid.as_raw() {
            self.left_alone.push(path.to_owned());
            return Ok(());
        }
        if meta.permissions().mode() & 0o7777 != mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(at)?;
            changed = true;
        }
        self.changed += u64::from(changed);
        Ok(())
    }
}

/// Opens `name` (in `dir`, if given) read-only without following a final symbolic link.
fn open_nofollow(dir: Option<&File>, name: &OsStr, flag: OFlag) -> io::Result<File> {
    let flags = flag | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let flags = flags | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = openat(dir.map(|d| d.as_raw_fd()), name, flags, Mode::empty())?;
    // SAFETY: `openat` just returned this descriptor, which nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes the root lines from `qemu.conf` at `path`, keeping a dated copy of the file
/// as it was. The new text replaces the file in one rename.
fn run_qemu_as_its_own_account(path: &Path) -> Result<QemuConf> {
    let mut conf = QemuConf {
        path: path.to_owned(),
        lines_removed: Vec::new(),
        backup: None,
        missing: false,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            conf.missing = true;
            return Ok(conf);
        }
        Err(e) => return Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    };
    let is_root_line = |line: &str| ROOT_LINES.contains(&line.trim_end());
    conf.lines_removed = text
        .lines()
        .filter(|l| is_root_line(l))
        .map(str::to_owned)
        .collect();
    if conf.lines_removed.is_empty() {
        return Ok(conf);
    }
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| !is_root_line(l.trim_end_matches('\n')))
        .collect();
    let at = |e: io::Error| Error::io(format!("cannot rewrite `{}`", path.display()), e);
    let stamp = jiff::Timestamp::from_second(crate::hooks::now())
        .map_err(|e| Error::Install(format!("the clock: {e}")))?
        .strftime("%Y%m%dT%H%M%SZ");
    let backup = suffixed(path, &format!(".before-adopt.{stamp}"));
    std::fs::copy(path, &backup).map_err(at)?;
    crate::hooks::crash_point("adopt-qemu-conf-copied");
    let mode = std::fs::metadata(path).map_err(at)?.permissions();
    let new = suffixed(path, ".adopt-new");
    let mut file = File::create(&new).map_err(at)?;
    file.set_permissions(mode).map_err(at)?;
    file.write_all(kept.as_bytes()).map_err(at)?;
    file.sync_all().map_err(at)?;
    std::fs::rename(&new, path).map_err(at)?;
    conf.backup = Some(backup);
    Ok(conf)
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_root_lines_leave_qemu_conf() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("qemu.conf");
        let text = "#user = \"libvirt-qemu\"\nuser = \"root\"\n  user = \"root\"\ngroup = \"root\"\ngroup = \"kvm\"\nvnc_listen = \"0.0.0.0\"\n";
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = run_qemu_as_its_own_account(&path).unwrap();
        assert_eq!(conf.lines_removed, ["user = \"root\"", "group = \"root\""]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#user = \"libvirt-qemu\"\n  user = \"root\"\ngroup = \"kvm\"\nvnc_listen = \"0.0.0.0\"\n"
        );
        let backup = conf.backup.unwrap();
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), text);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let again = run_qemu_as_its_own_account(&path).unwrap();
        assert!(again.lines_removed.is_empty() && again.backup.is_none());
        let missing = run_qemu_as_its_own_account(&tmp.path().join("none")).unwrap();
        assert!(missing.missing);
    }
}
