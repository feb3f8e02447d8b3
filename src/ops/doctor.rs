//! `basphere doctor`: what is wrong with this installation and how to fix it, one
//! finding per check. It changes nothing: the database is opened read-only and never
//! migrated, nothing is created in libvirt, and every check that waits on something
//! else (libvirt, the SMTP relay, DNS) gives up after a few seconds.

use std::fs;
use std::net::ToSocketAddrs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use crate::config::{Config, Door, Source};
use crate::context::{Caller, Context};
use crate::db;
use crate::routes;
use crate::validate::Size;
use crate::virt::{Hypervisor, VirtTypeSetting};

/// How long libvirt, the SMTP relay and the resolver each get to answer.
const LIBVIRT_TIMEOUT: Duration = Duration::from_secs(5);
const SMTP_TIMEOUT: Duration = Duration::from_secs(5);
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Where libvirt's QEMU driver is told which account runs QEMU.
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// That account when qemu.conf names none: Debian's libvirt-daemon-system makes it.
const DEFAULT_QEMU_USER: &str = "libvirt-qemu";

/// Mail waiting longer than this, or more of it than `OUTBOX_MAX`, is a backlog.
const OUTBOX_MAX_AGE_SECS: i64 = 3600;
const OUTBOX_MAX: usize = 100;

/// The tools basphere or libvirt run, and the Debian package of each. libvirt looks for
/// dnsmasq and iptables in the sbin directories too, which the service account's PATH
/// may not hold.
const TOOLS: &[(&str, &str, bool)] = &[
    ("qemu-img", "qemu-utils", false),
    ("genisoimage", "genisoimage", false),
    ("dnsmasq", "dnsmasq-base", true),
    ("iptables", "iptables", true),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not run, because something it needs failed (the reason is the detail).
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One check's finding: what it found and, when that is wrong, the fix.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn skip(name: &'static str, reason: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Skip,
        detail: reason.into(),
        fix: None,
    }
}

/// Every finding, in the order the checks ran.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Findings {
    pub checks: Vec<Check>,
}

impl Findings {
    /// 0 when every check is ok, 1 with warnings, 2 with failures.
    pub fn exit_code(&self) -> i32 {
        let has = |s: Status| self.checks.iter().any(|c| c.status == s);
        if has(Status::Fail) {
            2
        } else if has(Status::Warn) {
            1
        } else {
            0
        }
    }
}

/// The checks that need a configuration, in the order they run.
const NEED_CONFIG: &[&str] = &[
    "account",
    "libvirt",
    "kvm",
    "tcg",
    "qemu-access",
    "free-space",
    "database",
    "database-mode",
    "secrets",
    "sshd",
    "smtp",
    "outbox",
    "jobs",
    "drift",
    "routes",
    "public-host",
    "open-files",
];

/// Runs every check. `ctx` only says who is asking; the configuration is read again
/// here, so that one that does not load is a finding rather than an error.
pub fn run(ctx: &Context) -> Findings {
    let mut checks = Vec::new();
    let config = match ctx.config.reload() {
        Ok(config) => {
            checks.push(config_loaded(&config));
            Some(config)
        }
        Err(e) => {
            let file = ctx
                .config
                .file
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_CONFIG_PATH.into());
            checks.push(fail(
                "config",
                e.to_string(),
                format!(
                    "correct `{}` or the BASPHERE_* variable named (`basphere config --template` lists every key)",
                    file.display()
                ),
            ));
            None
        }
    };
    checks.push(tools());
    let Some(config) = config else {
        for name in NEED_CONFIG {
            checks.push(skip(name, "the configuration does not load"));
        }
        return Findings { checks };
    };
    let probe = Probe::new(config, ctx);
    checks.extend(probe.checks());
    Findings { checks }
}

fn config_loaded(config: &Config) -> Check {
    match &config.file {
        Some(file) => ok("config", format!("`{}` loads", file.display())),
        None => ok(
            "config",
            "no configuration file: every setting at its default",
        ),
    }
}

/// Runs `f` on a thread of its own and waits at most `limit` for its answer; one that
/// does not come in time is left to finish unheard (the process ends soon after).
fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// A Unix account, with the groups that decide what it may open.
struct Account {
    name: String,
    uid: u32,
    groups: Vec<u32>,
}

impl Account {
    fn named(name: &str) -> Option<Account> {
        let user = nix::unistd::User::from_name(name).ok().flatten()?;
        let cname = std::ffi::CString::new(name).ok()?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![user.gid.as_raw()]);
        Some(Account {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            groups,
        })
    }

    /// Whether the mode bits of `meta` give this account all of `bits` (4 read, 2
    /// write, 1 search/execute), as the kernel decides for an account that is not root.
    fn may(&self, meta: &fs::Metadata, bits: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        granted & bits == bits
    }
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// What the checks look at, opened once: the configuration, the service account, the
/// database (to read only) and libvirt, each with why it could not be had.
struct Probe {
    ctx: Context,
    account: Option<Account>,
    libvirt: Result<(), String>,
    /// The `database` check's finding; the database is open only when that is ok.
    database: Check,
}

impl Probe {
    fn new(config: Config, asking: &Context) -> Probe {
        let uri = config.libvirt_uri.clone();
        let prefix = config.name_prefix.clone();
        let opened = bounded(LIBVIRT_TIMEOUT, move || {
            Hypervisor::open(&uri).map(|hv| hv.with_prefix(&prefix))
        });
        let (hv, libvirt) = match opened {
            Some(Ok(hv)) => (Some(hv), Ok(())),
            Some(Err(e)) => (None, Err(e.to_string())),
            None => (
                None,
                Err(format!(
                    "`{}` did not answer within {} s",
                    config.libvirt_uri,
                    LIBVIRT_TIMEOUT.as_secs()
                )),
            ),
        };
        let (db, database) = examine_database(&config.db_path());
        let account = Account::named(&config.service_user);
        let caller = Caller::current_process();
        let ctx = Context::new(Arc::new(config), &caller, None, asking.cancel.clone())
            .expect("a local caller is resolved without the database")
            .with_handles(db, hv);
        Probe {
            ctx,
            account,
            libvirt,
            database,
        }
    }

    fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// The database, when it is sound and at this basphere's schema (never opened
    /// again here: that would migrate it).
    fn db(&self) -> Option<&Connection> {
        let usable = self.database.status == Status::Ok;
        usable.then(|| self.ctx.db().ok()).flatten()
    }

    fn hypervisor(&self) -> Option<&Hypervisor> {
        self.libvirt
            .is_ok()
            .then(|| self.ctx.hypervisor().ok())
            .flatten()
    }

    fn checks(&self) -> Vec<Check> {
        vec![
            self.account(),
            self.libvirt(),
            self.kvm(),
            self.tcg(),
            self.qemu_access(),
            self.free_space(),
            self.database.clone(),
            self.database_mode(),
            self.secrets(),
            self.sshd(),
            self.smtp(),
            self.outbox(),
            self.jobs(),
            self.drift(),
            self.routes(),
            self.public_host(),
            self.open_files(),
        ]
    }

    fn service_user(&self) -> &str {
        &self.config().service_user
    }

    fn account(&self) -> Check {
        let user = self.service_user();
        match &self.account {
            Some(a) => ok("account", format!("`{user}` is uid {}", a.uid)),
            None => fail(
                "account",
                format!("no Unix account `{user}` (service_user)"),
                format!("useradd --system --home-dir /nonexistent --shell /bin/sh {user}"),
            ),
        }
    }

    fn libvirt(&self) -> Check {
        let uri = &self.config().libvirt_uri;
        match &self.libvirt {
            Ok(()) => ok("libvirt", format!("`{uri}` answers")),
            Err(e) => fail(
                "libvirt",
                e.clone(),
                format!("start libvirt (`systemctl start libvirtd`) or set `libvirt_uri` to where it runs (`virsh -c {uri} version` tells)"),
            ),
        }
    }

    fn kvm(&self) -> Check {
        let Ok(meta) = fs::metadata("/dev/kvm") else {
            return ok(
                "kvm",
                "no /dev/kvm on this host: VMs run under full emulation (TCG)",
            );
        };
        let Some(account) = &self.account else {
            return skip("kvm", format!("no account `{}`", self.service_user()));
        };
        if account.may(&meta, 6) {
            return ok("kvm", format!("`{}` may open /dev/kvm", account.name));
        }
        let group = group_name(meta.gid());
        let mode = meta.mode() & 0o777;
        // Debian's udev rule makes /dev/kvm root:kvm 0660; a node left without group
        // access needs that first.
        let fix = if mode & 0o060 == 0o060 {
            format!("usermod -aG {group} {}", account.name)
        } else {
            format!(
                "chgrp kvm /dev/kvm && chmod 660 /dev/kvm && usermod -aG kvm {}",
                account.name
            )
        };
        fail(
            "kvm",
            format!(
                "`{}` may not open /dev/kvm (mode {mode:o}, group `{group}`)",
                account.name
            ),
            fix,
        )
    }

    /// Whether VMs get TCG on a host that could give them KVM.
    fn tcg(&self) -> Check {
        let config = self.config();
        let local = config
            .libvirt_uri
            .split_once("://")
            .is_none_or(|(_, rest)| rest.starts_with('/'));
        if !local || !Path::new("/dev/kvm").exists() {
            return ok("tcg", "no /dev/kvm here: nothing faster to use");
        }
        match config.virt_type {
            VirtTypeSetting::Kvm => ok("tcg", "virt_type = kvm"),
            VirtTypeSetting::Qemu => warn(
                "tcg",
                "virt_type = qemu on a host with /dev/kvm: VMs run under TCG, many times slower",
                "set `virt_type = \"auto\"` in the configuration",
            ),
            VirtTypeSetting::Auto => {
                let cache = config.data_dir.join("virt-type.probe");
                let answer = fs::read_to_string(&cache).unwrap_or_default();
                match answer.split_once('\n') {
                    Some((uri, "qemu\n")) if uri == config.libvirt_uri => warn(
                        "tcg",
                        format!("virt_type = auto chose qemu (TCG) for `{uri}` although this host has /dev/kvm"),
                        format!("once `kvm` is ok, `rm {}` so that the next create probes again", cache.display()),
                    ),
                    Some((uri, "kvm\n")) if uri == config.libvirt_uri => {
                        ok("tcg", "virt_type = auto chose kvm")
                    }
                    _ => ok("tcg", "virt_type = auto: the first create probes for KVM"),
                }
            }
        }
    }

    /// Every directory on the way to disks, seeds and images must let QEMU's account
    /// through: libvirt hands it the files, not the path to them.
    fn qemu_access(&self) -> Check {
        let user = qemu_user(&fs::read_to_string(QEMU_CONF).unwrap_or_default());
        let Some(qemu) = Account::named(&user) else {
            return skip(
                "qemu-access",
                format!("no account `{user}` (QEMU's, from {QEMU_CONF} or the default)"),
            );
        };
        let paths = &self.ctx.paths;
        let mut dirs: Vec<PathBuf> = paths.root.ancestors().map(Path::to_path_buf).collect();
        dirs.reverse();
        dirs.extend([paths.disks(), paths.seeds(), paths.images()]);
        for dir in &dirs {
            let Ok(meta) = fs::metadata(dir) else {
                continue;
            };
            if !qemu.may(&meta, 1) {
                return fail(
                    "qemu-access",
                    format!(
                        "QEMU's account `{user}` cannot pass through `{}` (mode {:o}, owner `{}`): every VM start fails",
                        dir.display(),
                        meta.mode() & 0o777,
                        user_name(meta.uid())
                    ),
                    format!("chmod o+x {}", dir.display()),
                );
            }
        }
        ok(
            "qemu-access",
            format!("QEMU's account `{user}` reaches disks, seeds and images"),
        )
    }

    fn free_space(&self) -> Check {
        let config = self.config();
        let Some(dir) = config.data_dir.ancestors().find(|d| d.is_dir()) else {
            return skip(
                "free-space",
                "no directory of the data directory's path exists",
            );
        };
        let floor = config.storage_min_free;
        match crate::ops::quota::free_space(dir) {
            Ok(free) if free >= floor.bytes() => ok(
                "free-space",
                format!("{} free in `{}` (storage.min_free {floor})", shown_free(free), dir.display()),
            ),
            Ok(free) => fail(
                "free-space",
                format!(
                    "{} free in `{}`, below storage.min_free ({floor}): creates and snapshots are refused",
                    shown_free(free),
                    dir.display()
                ),
                "free space (old snapshots: `basphere admin prune`; unused images) or lower `storage.min_free`",
            ),
            Err(e) => fail("free-space", e.to_string(), "check the data directory's file system"),
        }
    }

    /// The database holds tenants' keys and tokens: the service account's alone.
    fn database_mode(&self) -> Check {
        let path = self.config().db_path();
        let Ok(meta) = fs::metadata(&path) else {
            return skip("database-mode", "no database");
        };
        let user = self.service_user();
        let mode = meta.permissions().mode() & 0o7777;
        if let Some(account) = &self.account {
            if meta.uid() != account.uid {
                return fail(
                    "database-mode",
                    format!(
                        "`{}` is owned by `{}`, not `{user}`",
                        path.display(),
                        user_name(meta.uid())
                    ),
                    format!("chown {user}: {}", path.display()),
                );
            }
        }
        if mode != crate::files::PRIVATE {
            return fail(
                "database-mode",
                format!("`{}` is mode {mode:o}, not 600", path.display()),
                format!("chmod 600 {}", path.display()),
            );
        }
        ok("database-mode", format!("600, owned by `{user}`"))
    }

    /// The embedded server's host key, and a configuration file that holds the SMTP
    /// password: nobody but their owner (and, for the file, its group) reads them.
    fn secrets(&self) -> Check {
        let config = self.config();
        let key = crate::ssh::host_key_path(&config.data_dir);
        let mut seen = Vec::new();
        if let Ok(meta) = fs::metadata(&key) {
            if meta.mode() & 0o077 != 0 {
                return fail(
                    "secrets",
                    format!(
                        "the SSH host key `{}` is mode {:o}: others may read it",
                        key.display(),
                        meta.mode() & 0o777
                    ),
                    format!("chmod 600 {}", key.display()),
                );
            }
            seen.push("the SSH host key");
        }
        if let (Some(file), Source::File) = (&config.file, config.source("smtp.password")) {
            if let Ok(meta) = fs::metadata(file) {
                if meta.mode() & 0o004 != 0 {
                    return fail(
                        "secrets",
                        format!(
                            "`{}` holds smtp.password and everyone may read it (mode {:o})",
                            file.display(),
                            meta.mode() & 0o777
                        ),
                        format!("chmod o-r {}", file.display()),
                    );
                }
                seen.push("the configuration file (it holds smtp.password)");
            }
        }
        if seen.is_empty() {
            ok("secrets", "no host key or password file to protect")
        } else {
            ok(
                "secrets",
                format!("others cannot read {}", seen.join(" or ")),
            )
        }
    }

    /// The host's OpenSSH is one front door, the embedded server the other.
    fn sshd(&self) -> Check {
        let config = self.config();
        let path = crate::cli::sshd_config::DROP_IN;
        let write = format!("basphere sshd-config > {path} && sshd -t && systemctl reload ssh");
        let embedded = match config.serve_ssh {
            Door::Off => None,
            Door::At(addr) => Some(addr),
        };
        let present = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match embedded {
                    Some(addr) => ok(
                        "sshd",
                        format!("no OpenSSH drop-in; the embedded server serves tenants on {addr}"),
                    ),
                    None => warn(
                        "sshd",
                        format!("no {path} and serve.ssh is off: tenants have no front door"),
                        write,
                    ),
                };
            }
            Err(e) => {
                return fail(
                    "sshd",
                    format!("cannot read {path}: {e}"),
                    format!("check {path}"),
                )
            }
        };
        let exe = match crate::cli::auth_keys::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                return fail(
                    "sshd",
                    e.to_string(),
                    "install basphere as /usr/local/bin/basphere",
                )
            }
        };
        let user = &config.service_user;
        let wanted =
            crate::cli::sshd_config::snippet(&crate::cli::sshd_config::keys_command(&exe), user);
        if present == wanted {
            ok("sshd", format!("{path} matches `basphere sshd-config`"))
        } else {
            fail(
                "sshd",
                format!("{path} differs from what `basphere sshd-config` prints"),
                write,
            )
        }
    }

    fn smtp(&self) -> Check {
        let config = self.config();
        let Some(host) = &config.smtp_host else {
            return ok(
                "smtp",
                "no smtp.host: mail is written to the spool directory",
            );
        };
        let relay = format!("{host}:{}", config.smtp_port());
        let mailer = match crate::mail::Mailer::new(config) {
            Ok(m) => m,
            Err(e) => return fail("smtp", e.to_string(), "fix the smtp.* settings"),
        };
        match bounded(SMTP_TIMEOUT, move || mailer.test_connection()) {
            Some(Ok(())) => ok("smtp", format!("{relay} answers EHLO")),
            Some(Err(e)) => fail(
                "smtp",
                format!("{relay}: {e}"),
                "check smtp.host, smtp.port and smtp.security (`basphere config`)",
            ),
            None => fail(
                "smtp",
                format!("{relay} did not answer within {} s", SMTP_TIMEOUT.as_secs()),
                "check smtp.host, smtp.port and the firewall between here and the relay",
            ),
        }
    }

    fn outbox(&self) -> Check {
        let Some(db) = self.db() else {
            return skip("outbox", NO_DATABASE);
        };
        let queued = match db::mail::list(db, false) {
            Ok(q) => q,
            Err(e) => return fail("outbox", e.to_string(), "check the database"),
        };
        let Some(oldest) = queued.iter().map(|m| m.created_at).min() else {
            return ok("outbox", "empty");
        };
        let age = crate::hooks::now() - oldest;
        let detail = format!(
            "{} queued, the oldest since {}",
            queued.len(),
            crate::output::timestamp(oldest)
        );
        if queued.len() > OUTBOX_MAX || age > OUTBOX_MAX_AGE_SECS {
            let last = queued.iter().rev().find_map(|m| m.last_error.clone());
            let detail = match last {
                Some(error) => format!("{detail}; last error: {error}"),
                None => detail,
            };
            warn(
                "outbox",
                detail,
                format!(
                    "sudo -u {} basphere mail flush --now (and see `smtp`)",
                    self.service_user()
                ),
            )
        } else {
            ok("outbox", detail)
        }
    }

    fn jobs(&self) -> Check {
        let Some(db) = self.db() else {
            return skip("jobs", NO_DATABASE);
        };
        match db::jobs::list(db) {
            Ok(jobs) => jobs_finding(&jobs, crate::hooks::now()),
            Err(e) => fail("jobs", e.to_string(), "check the database"),
        }
    }

    /// What `admin reconcile` would repair. Its plan tries the lock of each VM, which
    /// makes a missing lock file; made by another account, that file would lock the
    /// service account out, so only the data directory's owner looks.
    fn drift(&self) -> Check {
        if self.db().is_none() {
            return skip("drift", NO_DATABASE);
        }
        if self.hypervisor().is_none() {
            return skip("drift", "libvirt does not answer");
        }
        let locks = self.ctx.paths.locks();
        let owner = fs::metadata(&locks).map(|m| m.uid()).ok();
        let me = nix::unistd::geteuid().as_raw();
        if owner.is_some_and(|uid| uid != me) {
            return skip(
                "drift",
                format!(
                    "run as `{}`, the owner of the data directory, to see it",
                    user_name(owner.unwrap_or(0))
                ),
            );
        }
        match crate::ops::reconcile::drift(&self.ctx) {
            Ok(repairs) if repairs.is_empty() => {
                ok("drift", "libvirt, the files and the database agree")
            }
            Ok(repairs) => {
                let first: Vec<String> = repairs
                    .iter()
                    .take(3)
                    .map(|r| {
                        let (what, target) = r.describe();
                        format!("{what} {target}")
                    })
                    .collect();
                let more = repairs.len().saturating_sub(first.len());
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                warn(
                    "drift",
                    format!(
                        "{} repair(s) pending: {}{more}",
                        repairs.len(),
                        first.join("; ")
                    ),
                    "basphere admin reconcile --dry-run, then basphere admin reconcile",
                )
            }
            Err(e) => fail("drift", e.to_string(), "basphere admin reconcile --dry-run"),
        }
    }

    /// The pool's networks must not shadow a route the host already has.
    fn routes(&self) -> Check {
        let config = self.config();
        let pool = config.network_pool;
        let overlapping = match routes::overlapping(&pool, &config.name_prefix) {
            Ok(found) => found.into_iter().next(),
            Err(e) => return skip("routes", format!("cannot read the route table: {e}")),
        };
        match overlapping {
            None => ok("routes", format!("{}/{} overlaps no route of this host", pool.base, pool.prefix)),
            Some(r) => warn(
                "routes",
                format!(
                    "network_pool {}/{} overlaps the route to {r}: guests could not reach those addresses",
                    pool.base, pool.prefix
                ),
                "set `network_pool` to a range no route uses (`ip route` lists them)",
            ),
        }
    }

    fn public_host(&self) -> Check {
        let host = self.config().public_host();
        let port = self.config().public_port;
        let name = host.clone();
        let answer = bounded(DNS_TIMEOUT, move || {
            (name.as_str(), port).to_socket_addrs().map(|a| a.count())
        });
        let fix =
            "set `public_host` to the name tenants reach this bastion by, and make it resolve";
        match answer {
            Some(Ok(n)) if n > 0 => ok("public-host", format!("`{host}` resolves")),
            Some(Ok(_)) => warn(
                "public-host",
                format!("`{host}` resolves to no address"),
                fix,
            ),
            Some(Err(e)) => warn(
                "public-host",
                format!("`{host}` does not resolve: {e}"),
                fix,
            ),
            None => warn(
                "public-host",
                format!(
                    "`{host}` did not resolve within {} s",
                    DNS_TIMEOUT.as_secs()
                ),
                fix,
            ),
        }
    }

    /// The embedded server raises its soft limit to the hard one and keeps its
    /// connections within that.
    fn open_files(&self) -> Check {
        use nix::sys::resource::{getrlimit, Resource};
        let max = self.config().ssh_max_connections;
        let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return skip("open-files", "cannot read the open-file limit");
        };
        let room = crate::ssh::connections_within(hard);
        if room >= max {
            ok(
                "open-files",
                format!("limit {hard} holds ssh.max_connections ({max})"),
            )
        } else {
            warn(
                "open-files",
                format!("the open-file limit ({hard}) holds {room} connections, below ssh.max_connections ({max})"),
                format!("raise it to {} (LimitNOFILE= in basphere.service, or ulimit -Hn)", u64::from(max) * 2 + 128),
            )
        }
    }
}

/// Free space as people read it: whole GiB (or MiB below one GiB), rounded down.
fn shown_free(bytes: u64) -> Size {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let unit = if bytes >= GIB { GIB } else { MIB };
    Size::from_bytes(bytes / unit * unit)
}

/// A job is stale when it has not succeeded for three of its intervals and five minutes:
/// a tick or two may be missed (a reboot, a long prune) without a warning.
fn stale_after(job: &crate::ops::jobs::Job) -> i64 {
    3 * job.every + 300
}

/// The periodic jobs of the runner: each has run, succeeded within its staleness bound,
/// and is not failing since.
fn jobs_finding(jobs: &[db::jobs::Job], now: i64) -> Check {
    let name = "jobs";
    let last = |job: &db::jobs::Job| match job.last_success {
        Some(at) => format!("last success {}", crate::output::timestamp(at)),
        None => "never succeeded".to_owned(),
    };
    let (mut failing, mut stale, mut fine) = (Vec::new(), Vec::new(), Vec::new());
    for spec in crate::ops::jobs::JOBS {
        match jobs.iter().find(|j| j.name == spec.name) {
            None => stale.push(format!("`{}` never ran", spec.name)),
            Some(j) if j.consecutive_failures > 0 => {
                let error = j.last_error.as_deref().unwrap_or("no error recorded");
                failing.push(format!(
                    "`{}` failed {} time(s) in a row, {} ({error})",
                    j.name,
                    j.consecutive_failures,
                    last(j)
                ));
            }
            Some(j) if j.last_success.is_none_or(|at| now - at > stale_after(spec)) => {
                stale.push(format!("`{}`: {}", j.name, last(j)));
            }
            Some(j) => fine.push(format!("{}: {}", j.name, last(j))),
        }
    }
    if !failing.is_empty() {
        failing.extend(stale);
        return warn(
            name,
            failing.join("; "),
            "fix what the error names; the next run of the job records its success",
        );
    }
    if !stale.is_empty() {
        return warn(
            name,
            stale.join("; "),
            "the timer runs them: `systemctl enable --now basphere-jobs.timer` (or run `basphere admin run-jobs`)",
        );
    }
    ok(name, fine.join("; "))
}

/// Why a check that reads the database did not run.
const NO_DATABASE: &str = "no sound database at this basphere's schema (see `database`)";

/// The database opened to read only, when it exists, passes `integrity_check` and has this
/// basphere's schema; and the `database` check's finding.
fn examine_database(path: &Path) -> (Option<Connection>, Check) {
    let name = "database";
    let shown = path.display();
    let conn = match db::open_unmigrated(path) {
        Ok(conn) => conn,
        Err(e) if !path.exists() => {
            return (None, fail(name, e.to_string(), "basphere admin init"))
        }
        Err(e) => return (None, fail(name, e.to_string(), format!("check `{shown}`"))),
    };
    let restore = format!("stop basphere and restore `{shown}` from a backup (`sqlite3 {shown} .recover` saves what it can)");
    let integrity: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA integrity_check(5)")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
    match integrity {
        Ok(answer) if answer == ["ok"] => {}
        Ok(answer) => {
            let found = format!("integrity_check: {}", answer.join("; "));
            return (None, fail(name, found, restore));
        }
        Err(e) => return (None, fail(name, format!("cannot be read: {e}"), restore)),
    }
    let ours = db::latest_version();
    let finding = match db::schema_version(&conn) {
        Ok(v) if v == ours => ok(name, format!("`{shown}`: integrity ok, schema {v}")),
        Ok(v) if v > ours => fail(
            name,
            format!("schema {v} is newer than this basphere's ({ours}): basphere was downgraded"),
            "install the basphere that wrote it, or a newer one",
        ),
        Ok(v) => warn(
            name,
            format!("schema {v}, older than this basphere's ({ours}): the next command that opens it migrates it"),
            "basphere admin reconcile --dry-run (any command that opens it migrates it)",
        ),
        Err(e) => fail(name, e.to_string(), restore),
    };
    let sound = finding.status == Status::Ok;
    (sound.then_some(conn), finding)
}

/// The account QEMU runs as, from qemu.conf's text: its last `user = "..."` line (a
/// commented one does not count), else Debian's default.
fn qemu_user(conf: &str) -> String {
    conf.lines()
        .filter_map(|line| line.trim().strip_prefix("user"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| {
            value
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_owned()
        })
        .rfind(|user| !user.is_empty())
        .unwrap_or_else(|| DEFAULT_QEMU_USER.to_owned())
}

/// Every tool on PATH (or, for those libvirt runs, in the sbin directories).
fn tools() -> Check {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let sbin = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .filter(|(tool, _, in_sbin)| {
            let mut places = dirs.clone();
            if *in_sbin {
                places.extend(sbin.iter().cloned());
            }
            !places.iter().any(|d| is_executable(&d.join(tool)))
        })
        .map(|(tool, package, _)| (*tool, *package))
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = TOOLS.iter().map(|t| t.0).collect();
        return ok("tools", names.join(", "));
    }
    let tools: Vec<&str> = missing.iter().map(|m| m.0).collect();
    let mut packages: Vec<&str> = missing.iter().map(|m| m.1).collect();
    packages.dedup();
    fail(
        "tools",
        format!("not found on PATH: {}", tools.join(", ")),
        format!("apt-get install {}", packages.join(" ")),
    )
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_user_is_the_last_uncommented_user_line() {
        assert_eq!(qemu_user(""), "libvirt-qemu");
        assert_eq!(
            qemu_user("#user = \"root\"\ngroup = \"kvm\"\n"),
            "libvirt-qemu"
        );
        assert_eq!(qemu_user("user = \"root\"\n"), "root");
        assert_eq!(qemu_user("user=\"a\"\n  user = \"qemu\" # ours\n"), "qemu");
        assert_eq!(qemu_user("username = \"x\"\n"), "libvirt-qemu");
    }

    #[test]
    fn every_job_must_have_succeeded_lately_and_not_be_failing() {
        let job = |name: &str, success, failures, error: Option<&str>| db::jobs::Job {
            name: name.into(),
            last_start: Some(10_000),
            last_end: Some(10_001),
            last_success: success,
            last_error: error.map(str::to_owned),
            last_duration_ms: Some(5),
            runs: 3,
            consecutive_failures: failures,
        };
        let now = 10_060;
        let all = |mail: db::jobs::Job| {
            let others = crate::ops::jobs::JOBS.iter().filter(|j| j.name != "mail");
            let mut rows: Vec<_> = others.map(|j| job(j.name, Some(10_000), 0, None)).collect();
            rows.push(mail);
            rows
        };
        let none = jobs_finding(&[], now);
        assert_eq!(none.status, Status::Warn);
        assert!(none.detail.contains("`mail` never ran"), "{none:?}");
        assert!(
            none.fix
                .as_deref()
                .unwrap_or("")
                .contains("basphere-jobs.timer"),
            "{none:?}"
        );

        let fine = jobs_finding(&all(job("mail", Some(10_000), 0, None)), now);
        assert_eq!(fine.status, Status::Ok, "{fine:?}");
        assert!(
            fine.detail.contains("mail: last success 1970-01-01"),
            "{fine:?}"
        );

        // Mail runs every minute: no success for 3 minutes and 5 is stale, 8 is not yet.
        let stale = jobs_finding(&all(job("mail", Some(now - 481), 0, None)), now);
        assert_eq!(stale.status, Status::Warn);
        assert!(
            stale.detail.starts_with("`mail`: last success"),
            "{stale:?}"
        );
        let late = jobs_finding(&all(job("mail", Some(now - 479), 0, None)), now);
        assert_eq!(late.status, Status::Ok, "{late:?}");

        let failing = jobs_finding(&all(job("mail", Some(100), 2, Some("relay down"))), now);
        assert_eq!(failing.status, Status::Warn);
        assert!(
            failing.detail.contains("`mail` failed 2 time(s) in a row"),
            "{failing:?}"
        );
        assert!(failing.detail.contains("relay down"));
        assert!(!failing.detail.contains("prune"));
    }

    #[test]
    fn exit_code_is_the_worst_finding() {
        let findings = |checks| Findings { checks };
        assert_eq!(findings(vec![ok("a", ""), skip("b", "")]).exit_code(), 0);
        assert_eq!(
            findings(vec![ok("a", ""), warn("b", "", "")]).exit_code(),
            1
        );
        assert_eq!(
            findings(vec![fail("a", "", ""), warn("b", "", "")]).exit_code(),
            2
        );
    }
}
