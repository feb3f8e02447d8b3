//! `basphere doctor`: a healthy installation, then each check's subject broken for real,
//! one at a time, and exactly that check (and those that need its subject) changes.
//!
//! Doctor runs as the service account inside a private mount namespace whose
//! /etc/ssh/sshd_config.d is a tmpfs (and /dev/kvm, where there is one, a device node
//! the test makes), so the host's /etc and /dev are never touched.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::bin::{setpriv_to, Bsp, BIN};
use crate::fixtures::free_port;
use crate::fixtures::smtp::{require_aiosmtpd, Smtp};

const SERVICE: &str = "basphere";

/// One finding, as `doctor --json` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Finding {
    status: String,
    detail: String,
    fix: Option<String>,
}

/// What one run of doctor said: its exit status and each check's finding.
#[derive(Debug)]
struct Findings {
    code: i32,
    checks: BTreeMap<String, Finding>,
    order: Vec<String>,
    elapsed: Duration,
}

impl Findings {
    #[track_caller]
    fn get(&self, name: &str) -> &Finding {
        self.checks
            .get(name)
            .unwrap_or_else(|| panic!("no check `{name}` in {:?}", self.order))
    }

    /// The checks whose status differs from `before`'s, with their new status.
    fn changed_from(&self, before: &Findings) -> Vec<(String, String)> {
        self.order
            .iter()
            .filter(|name| before.get(name).status != self.get(name).status)
            .map(|name| (name.clone(), self.get(name).status.clone()))
            .collect()
    }
}

/// A healthy installation, and how doctor is run on it.
struct Case {
    bsp: Bsp,
    /// The sshd drop-in put in the private /etc/ssh/sshd_config.d, if any.
    drop_in: Option<String>,
    /// Mode and group of the /dev/kvm node the test makes, when the host has /dev/kvm.
    kvm: Option<(u32, String)>,
    /// An address (CIDR) given to a dummy link in a new network namespace.
    route: Option<String>,
    path: Option<String>,
    nofile: Option<u64>,
}

/// Whether this test can run: it drops from root to the service account.
fn runnable() -> bool {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: doctor's tests run as root (they drop to `{SERVICE}` and make private mounts)");
        return false;
    }
    if nix::unistd::User::from_name(SERVICE)
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!("skipped: no account `{SERVICE}` (scripts/test makes it)");
        return false;
    }
    true
}

fn has_kvm() -> bool {
    Path::new("/dev/kvm").exists()
}

fn chown_tree(path: &Path, user: &str) {
    let status = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Case {
    /// An installation where every check can be ok: owned by the service account, its
    /// parents passable, `virt_type = auto`, a name that resolves, and the drop-in
    /// `basphere sshd-config` prints.
    fn healthy() -> Case {
        let mut bsp = Bsp::new();
        bsp.set_env("BASPHERE_VIRT_TYPE", "auto");
        bsp.set_env("BASPHERE_PUBLIC_HOST", "localhost");
        let drop_in = bsp.run(&["sshd-config"]).success().stdout;
        // Every job has run, as the timer makes sure of.
        bsp.run(&["admin", "run-jobs"]).success();
        chown_tree(bsp.dir.path(), SERVICE);
        chmod(bsp.dir.path(), 0o711);
        let kvm = has_kvm().then(|| (0o660, SERVICE.to_owned()));
        Case {
            bsp,
            drop_in: Some(drop_in),
            kvm,
            route: None,
            path: None,
            nofile: None,
        }
    }

    fn config_file(&self) -> PathBuf {
        self.bsp.dir.path().join("config.toml")
    }

    /// Adds `line` to the configuration file.
    fn configure(&self, line: &str) {
        let file = self.config_file();
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&file, text).unwrap();
    }

    fn db(&self) -> PathBuf {
        self.bsp.data_dir().join("basphere.db")
    }

    /// `basphere doctor --json` as the service account, in its private namespaces.
    fn doctor(&self) -> Findings {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let node = self.bsp.dir.path().join("kvm-node");
        let _ = std::fs::remove_file(&node);
        let script = r#"
            drop_in=$1 kvm=$2 node=$3 route=$4 path=$5 nofile=$6; shift 6
            dir=/etc/ssh/sshd_config.d
            if [ -d "$dir" ]; then mount -t tmpfs tmpfs "$dir"; else mount -t tmpfs tmpfs /etc/ssh; mkdir "$dir"; fi
            if [ "$drop_in" != - ]; then printf '%s' "$drop_in" > "$dir/basphere.conf"; fi
            if [ "$kvm" != - ]; then
                mknod "$node" c 10 232; chown "root:${kvm#*:}" "$node"; chmod "${kvm%:*}" "$node"
                mount --bind "$node" /dev/kvm
            fi
            if [ "$route" != - ]; then
                ip link set lo up; ip route add "$route" dev lo
            fi
            if [ "$nofile" != - ]; then set -- prlimit --nofile="$nofile:$nofile" "$@"; fi
            if [ "$path" != - ]; then export PATH="$path"; fi
            exec "$@"
        "#;
        let mut cmd = Command::new("unshare");
        cmd.arg("--mount").arg("--propagation").arg("private");
        if self.route.is_some() {
            cmd.arg("--net");
        }
        cmd.args(["sh", "-ec", script, "sh"])
            .arg(dash(self.drop_in.clone()))
            .arg(dash(self.kvm.as_ref().map(|(m, g)| format!("{m:o}:{g}"))))
            .arg(&node)
            .arg(dash(self.route.clone()))
            .arg(dash(self.path.clone()))
            .arg(dash(self.nofile.map(|n| n.to_string())))
            .arg("/usr/bin/setpriv")
            .args(setpriv_to(SERVICE))
            .args([BIN, "doctor", "--json"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.bsp.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let started = Instant::now();
        let out = cmd.output().unwrap();
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json: {e}\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut checks = BTreeMap::new();
        let mut order = Vec::new();
        for c in value["checks"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap().to_owned();
            let finding = Finding {
                status: c["status"].as_str().unwrap().to_owned(),
                detail: c["detail"].as_str().unwrap().to_owned(),
                fix: c["fix"].as_str().map(str::to_owned),
            };
            order.push(name.clone());
            assert!(checks.insert(name, finding).is_none(), "a check twice");
        }
        Findings {
            code: out.status.code().unwrap_or(-1),
            checks,
            order,
            elapsed,
        }
    }
}

/// The statuses of a healthy installation here: all ok, but what this machine lacks.
fn expected_healthy(f: &Findings) -> Vec<String> {
    let mut lacking = Vec::new();
    if nix::unistd::User::from_name("libvirt-qemu")
        .ok()
        .flatten()
        .is_none()
    {
        // Without QEMU's account there is nobody to check access for.
        assert_eq!(f.get("qemu-access").status, "skip");
        lacking.push("qemu-access".to_owned());
    }
    lacking
}

/// Breaks one thing of a healthy installation with `break_it`, and returns what doctor
/// said before and after.
fn broken(break_it: impl FnOnce(&mut Case)) -> Option<(Findings, Findings)> {
    broken_case(break_it).map(|(before, after, _)| (before, after))
}

/// [`broken`], and the installation, to look at afterwards.
fn broken_case(break_it: impl FnOnce(&mut Case)) -> Option<(Findings, Findings, Case)> {
    if !runnable() {
        return None;
    }
    let mut case = Case::healthy();
    let before = case.doctor();
    let lacking = expected_healthy(&before);
    for name in &before.order {
        if !lacking.contains(name) {
            assert_eq!(
                before.get(name).status,
                "ok",
                "{name} on a healthy installation: {:?}",
                before.get(name)
            );
        }
    }
    break_it(&mut case);
    let after = case.doctor();
    Some((before, after, case))
}

#[track_caller]
fn assert_changed(before: &Findings, after: &Findings, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    assert_eq!(
        after.changed_from(before),
        want,
        "after: {:#?}",
        after.checks
    );
}

#[track_caller]
fn assert_fix(after: &Findings, name: &str, fix: &str) {
    let finding = after.get(name);
    let has = finding.fix.as_deref().unwrap_or("");
    assert!(
        has.contains(fix),
        "{name}: fix {has:?} lacks {fix:?} ({finding:?})"
    );
}

#[test]
fn a_healthy_installation_is_all_ok_quickly_and_unchanged() {
    if !runnable() {
        return;
    }
    let case = Case::healthy();
    let db_before = std::fs::read(case.db()).unwrap();
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = walk(dir);
        names.sort();
        names
    };
    let files_before = listing(case.bsp.dir.path());
    let f = case.doctor();
    let lacking = expected_healthy(&f);
    for name in &f.order {
        if lacking.contains(name) {
            eprintln!(
                "{name}: {} (this machine cannot provide it)",
                f.get(name).detail
            );
            continue;
        }
        assert_eq!(f.get(name).status, "ok", "{name}: {:?}", f.get(name));
    }
    assert_eq!(f.code, 0, "{:#?}", f.checks);
    assert!(f.elapsed < Duration::from_secs(5), "took {:?}", f.elapsed);
    for name in [
        "config",
        "tools",
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
        "drift",
        "routes",
        "public-host",
        "open-files",
    ] {
        assert!(f.checks.contains_key(name), "no check `{name}`");
    }
    assert_eq!(
        std::fs::read(case.db()).unwrap(),
        db_before,
        "the database changed"
    );
    assert_eq!(
        listing(case.bsp.dir.path()),
        files_before,
        "files appeared or vanished"
    );

    // The same findings for people: one line each, a fix under each warning.
    let mut cmd = case.bsp.command(&["doctor"]);
    cmd.env("BASPHERE_VIRT_TYPE", "qemu");
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("ok    config ")),
        "{text}"
    );
    if has_kvm() {
        let line = text
            .lines()
            .position(|l| l.starts_with("warn  tcg "))
            .expect(&text);
        let fix = text.lines().nth(line + 1).unwrap();
        assert!(
            fix.trim_start().starts_with("fix: set `virt_type"),
            "{text}"
        );
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.ends_with("kvm-node") {
            continue;
        }
        all.push(path.display().to_string());
        if entry.file_type().unwrap().is_dir() {
            all.extend(walk(&path));
        }
    }
    all
}

#[test]
fn a_config_with_a_bad_key_fails_and_the_rest_is_skipped() {
    let Some((before, after)) = broken(|case| case.configure("colour = \"blue\"")) else {
        return;
    };
    let config = after.get("config");
    assert_eq!(config.status, "fail");
    assert!(config.detail.contains("unknown key `colour`"), "{config:?}");
    assert_fix(
        &after,
        "config",
        &before.get("config").detail.replace(" loads", ""),
    );
    for name in &after.order {
        if name != "config" && name != "tools" {
            assert_eq!(after.get(name).status, "skip", "{name}");
            assert_eq!(after.get(name).detail, "the configuration does not load");
        }
    }
    assert_eq!(after.get("tools").status, "ok");
    assert_eq!(after.code, 2);
}

#[test]
fn a_libvirt_uri_with_nothing_behind_it_fails() {
    let Some((before, after)) = broken(|case| {
        let socket = case.bsp.dir.path().join("no-libvirt-sock");
        let uri = format!("qemu+unix:///system?socket={}", socket.display());
        case.bsp.set_env("BASPHERE_LIBVIRT_URI", &uri);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("libvirt", "fail"), ("drift", "skip")]);
    assert_fix(&after, "libvirt", "virsh -c qemu+unix:///system");
    assert_eq!(after.code, 2);
}

#[test]
fn a_libvirt_that_never_answers_is_given_up_on_in_bounded_time() {
    let mut held = None;
    let Some((before, after)) = broken(|case| {
        let socket = case.bsp.dir.path().join("silent-sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        chmod(&socket, 0o777);
        // Accepts every connection and never says a word.
        held = Some(std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming() {
                open.push(stream);
            }
        }));
        let uri = format!("qemu+unix:///system?socket={}", socket.display());
        case.bsp.set_env("BASPHERE_LIBVIRT_URI", &uri);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("libvirt", "fail"), ("drift", "skip")]);
    let libvirt = after.get("libvirt");
    assert!(
        libvirt.detail.contains("did not answer within 5 s"),
        "{libvirt:?}"
    );
    assert!(
        after.elapsed < Duration::from_secs(12),
        "took {:?}",
        after.elapsed
    );
}

#[test]
fn a_kvm_node_the_service_account_cannot_open_fails() {
    if !has_kvm() {
        eprintln!("skipped: no /dev/kvm to put a private node over");
        return;
    }
    let Some((before, after)) = broken(|case| case.kvm = Some((0o600, "root".into()))) else {
        return;
    };
    assert_changed(&before, &after, &[("kvm", "fail")]);
    assert_fix(
        &after,
        "kvm",
        "chgrp kvm /dev/kvm && chmod 660 /dev/kvm && usermod -aG kvm basphere",
    );
    assert!(after.get("kvm").detail.contains("mode 600"));
}

#[test]
fn tcg_on_a_host_with_kvm_warns() {
    if !has_kvm() {
        eprintln!("skipped: no /dev/kvm, so TCG is all there is");
        return;
    }
    let Some((before, after)) = broken(|case| case.bsp.set_env("BASPHERE_VIRT_TYPE", "qemu"))
    else {
        return;
    };
    assert_changed(&before, &after, &[("tcg", "warn")]);
    assert_fix(&after, "tcg", "virt_type = \"auto\"");
    assert_eq!(after.code, 1);

    // `auto` that once chose qemu, and remembers it.
    let Some((before, after)) = broken(|case| {
        let probe = case.bsp.data_dir().join("virt-type.probe");
        std::fs::write(&probe, "test:///default\nqemu\n").unwrap();
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("tcg", "warn")]);
    assert_fix(&after, "tcg", "virt-type.probe");
}

#[test]
fn a_0700_parent_of_the_data_dir_keeps_qemu_out() {
    if nix::unistd::User::from_name("libvirt-qemu")
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!("skipped: no account libvirt-qemu (scripts/test makes it)");
        return;
    }
    let mut parent = PathBuf::new();
    let Some((before, after)) = broken(|case| {
        parent = case.bsp.dir.path().to_owned();
        chmod(&parent, 0o700);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("qemu-access", "fail")]);
    assert_fix(
        &after,
        "qemu-access",
        &format!("chmod o+x {}", parent.display()),
    );
    assert!(after.get("qemu-access").detail.contains("libvirt-qemu"));
}

#[test]
fn a_path_without_genisoimage_fails() {
    let Some((before, after)) = broken(|case| {
        let bin = case.bsp.dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["qemu-img", "dnsmasq", "iptables", "prlimit"] {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .map(|d| d.join(tool))
                .find(|p| p.exists());
            if let Some(found) = found {
                std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
            }
        }
        case.path = Some(bin.display().to_string());
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("tools", "fail")]);
    assert_eq!(after.get("tools").detail, "not found on PATH: genisoimage");
    assert_fix(&after, "tools", "apt-get install genisoimage");
}

#[test]
fn free_space_below_the_floor_fails() {
    let Some((before, after)) =
        broken(|case| case.bsp.set_env("BASPHERE_STORAGE_MIN_FREE", "100T"))
    else {
        return;
    };
    assert_changed(&before, &after, &[("free-space", "fail")]);
    assert_fix(&after, "free-space", "storage.min_free");
}

/// Writes garbage over the database's last page: a table's rows.
fn corrupt(db: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(db).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.seek(SeekFrom::Start(len - 4096 + 16)).unwrap();
    file.write_all(&[0xa5; 2000]).unwrap();
}

#[test]
fn a_corrupt_database_page_fails_integrity_check() {
    let Some((before, after)) = broken(|case| corrupt(&case.db())) else {
        return;
    };
    assert_changed(
        &before,
        &after,
        &[
            ("database", "fail"),
            ("outbox", "skip"),
            ("jobs", "skip"),
            ("drift", "skip"),
        ],
    );
    assert_fix(&after, "database", "restore");
}

fn set_schema(db: &Path, version: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

fn schema(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn a_newer_schema_fails_and_an_older_one_warns_without_being_migrated() {
    let Some((before, after)) = broken(|case| set_schema(&case.db(), 999)) else {
        return;
    };
    assert_changed(
        &before,
        &after,
        &[
            ("database", "fail"),
            ("outbox", "skip"),
            ("jobs", "skip"),
            ("drift", "skip"),
        ],
    );
    assert!(after.get("database").detail.contains("downgraded"));

    let mut older = 0;
    let Some((before, after, case)) = broken_case(|case| {
        older = schema(&case.db()) - 1;
        set_schema(&case.db(), older);
    }) else {
        return;
    };
    assert_changed(
        &before,
        &after,
        &[
            ("database", "warn"),
            ("outbox", "skip"),
            ("jobs", "skip"),
            ("drift", "skip"),
        ],
    );
    assert_fix(&after, "database", "basphere admin reconcile --dry-run");
    assert_eq!(schema(&case.db()), older, "doctor migrated the database");
}

#[test]
fn a_database_others_may_read_or_root_owns_fails() {
    let Some((before, after)) = broken(|case| chmod(&case.db(), 0o644)) else {
        return;
    };
    assert_changed(&before, &after, &[("database-mode", "fail")]);
    assert_fix(&after, "database-mode", "chmod 600");

    let Some((before, after)) = broken(|case| chown_tree(&case.db(), "root")) else {
        return;
    };
    // The service account cannot even open it now.
    assert_changed(
        &before,
        &after,
        &[
            ("database", "fail"),
            ("database-mode", "fail"),
            ("outbox", "skip"),
            ("jobs", "skip"),
            ("drift", "skip"),
        ],
    );
    assert_fix(&after, "database-mode", "chown basphere:");
}

#[test]
fn secrets_others_may_read_fail() {
    let Some((before, after)) = broken(|case| {
        let key = case.bsp.data_dir().join("ssh_host_ed25519_key");
        std::fs::write(&key, "not really a key").unwrap();
        chmod(&key, 0o644);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("secrets", "fail")]);
    assert_fix(&after, "secrets", "chmod 600");

    let Some((before, after)) = broken(|case| {
        case.configure("[smtp]\npassword = \"hunter2\"");
        chmod(&case.config_file(), 0o644);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("secrets", "fail")]);
    assert_fix(&after, "secrets", "chmod o-r");
    assert!(!after.get("secrets").detail.contains("hunter2"));
}

#[test]
fn an_sshd_drop_in_that_differs_fails_and_none_at_all_warns() {
    let Some((before, after)) = broken(|case| {
        let text = case
            .drop_in
            .take()
            .unwrap()
            .replace("PermitTTY yes", "PermitTTY no");
        case.drop_in = Some(text);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("sshd", "fail")]);
    assert_fix(
        &after,
        "sshd",
        "basphere sshd-config > /etc/ssh/sshd_config.d/basphere.conf",
    );

    let Some((before, after)) = broken(|case| case.drop_in = None) else {
        return;
    };
    assert_changed(&before, &after, &[("sshd", "warn")]);
    assert!(after
        .get("sshd")
        .detail
        .contains("tenants have no front door"));

    // With the embedded server on, no drop-in is fine.
    let Some((before, after)) = broken(|case| {
        case.drop_in = None;
        case.bsp.set_env("BASPHERE_SERVE_SSH", "127.0.0.1:2222");
    }) else {
        return;
    };
    assert_changed(&before, &after, &[]);
}

#[test]
fn an_smtp_port_nobody_listens_on_fails_and_a_real_relay_is_ok() {
    let Some((before, after)) = broken(|case| {
        let port = free_port().to_string();
        case.bsp.set_env("BASPHERE_SMTP_HOST", "127.0.0.1");
        case.bsp.set_env("BASPHERE_SMTP_PORT", &port);
        case.bsp.set_env("BASPHERE_SMTP_SECURITY", "none");
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("smtp", "fail")]);
    assert_fix(&after, "smtp", "smtp.port");

    if !require_aiosmtpd() {
        return;
    }
    let mut relay = None;
    let Some((before, after)) = broken(|case| {
        let smtp = Smtp::start(case.bsp.dir.path());
        smtp.configure(&mut case.bsp);
        relay = Some(smtp);
    }) else {
        return;
    };
    assert_changed(&before, &after, &[]);
    assert!(
        after.get("smtp").detail.contains("answers EHLO"),
        "{:?}",
        after.get("smtp")
    );
}

#[test]
fn old_mail_in_the_outbox_warns() {
    let Some((before, after)) = broken(|case| {
        let conn = rusqlite::Connection::open(case.db()).unwrap();
        let hours_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 2 * 3600;
        conn.execute(
            "INSERT INTO mail_outbox (recipient, subject, body, created_at, next_attempt_at, attempts, last_error)
             VALUES ('a@example.com', 's', 'b', ?1, ?1, 3, 'connection refused')",
            [hours_ago],
        )
        .unwrap();
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("outbox", "warn")]);
    let outbox = after.get("outbox");
    assert!(outbox.detail.starts_with("1 queued"), "{outbox:?}");
    assert!(outbox.detail.contains("connection refused"), "{outbox:?}");
    assert_fix(&after, "outbox", "basphere mail flush --now");
}

#[test]
fn a_job_failing_since_its_last_success_warns() {
    let Some((before, after)) = broken(|case| {
        let conn = rusqlite::Connection::open(case.db()).unwrap();
        conn.execute(
            "UPDATE jobs SET last_error = 'libvirt is down', consecutive_failures = 3
             WHERE name = 'prune'",
            [],
        )
        .unwrap();
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("jobs", "warn")]);
    let jobs = after.get("jobs");
    assert!(
        jobs.detail.contains("`prune` failed 3 time(s) in a row"),
        "{jobs:?}"
    );
    assert!(jobs.detail.contains("libvirt is down"), "{jobs:?}");
}

#[test]
fn a_job_that_has_not_run_for_three_intervals_is_stale() {
    let Some((before, after)) = broken(|case| {
        let conn = rusqlite::Connection::open(case.db()).unwrap();
        conn.execute(
            "UPDATE jobs SET last_success = last_success - 3 * 3600 - 301 WHERE name = 'prune'",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM jobs WHERE name = 'reconcile'", [])
            .unwrap();
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("jobs", "warn")]);
    let jobs = after.get("jobs");
    assert!(jobs.detail.contains("`prune`: last success"), "{jobs:?}");
    assert!(jobs.detail.contains("`reconcile` never ran"), "{jobs:?}");
    assert_fix(&after, "jobs", "systemctl enable --now basphere-jobs.timer");
}

#[test]
fn a_disk_no_vm_explains_is_drift() {
    let Some((before, after)) = broken(|case| {
        let disk = case
            .bsp
            .data_dir()
            .join("disks/0e0c5c3e-0000-4000-8000-000000000000.qcow2");
        std::fs::write(&disk, "").unwrap();
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("drift", "warn")]);
    assert!(after
        .get("drift")
        .detail
        .contains("0e0c5c3e-0000-4000-8000-000000000000"));
    assert_fix(&after, "drift", "basphere admin reconcile");
}

#[test]
fn a_network_pool_over_a_route_of_the_host_warns() {
    let Some((before, after)) = broken(|case| {
        let pool = case
            .bsp
            .env
            .iter()
            .find(|(k, _)| k == "BASPHERE_NETWORK_POOL")
            .map(|(_, v)| v.clone())
            .unwrap();
        // 10.N.0.0/16: doctor's own network namespace gets a route to 10.N.5.0/24.
        let second = pool.split('.').nth(1).unwrap().to_owned();
        case.route = Some(format!("10.{second}.5.0/24"));
    }) else {
        return;
    };
    assert_changed(&before, &after, &[("routes", "warn")]);
    assert!(
        after.get("routes").detail.contains(".5.0/24 (dev lo)"),
        "{:?}",
        after.get("routes")
    );
    assert_fix(&after, "routes", "network_pool");
}

#[test]
fn a_public_host_that_does_not_resolve_warns() {
    let Some((before, after)) =
        broken(|case| case.bsp.set_env("BASPHERE_PUBLIC_HOST", "bastion.invalid"))
    else {
        return;
    };
    assert_changed(&before, &after, &[("public-host", "warn")]);
    assert_fix(&after, "public-host", "public_host");
    assert!(
        after.elapsed < Duration::from_secs(10),
        "took {:?}",
        after.elapsed
    );
}

#[test]
fn an_open_file_limit_below_the_connections_warns() {
    let Some((before, after)) = broken(|case| case.nofile = Some(1024)) else {
        return;
    };
    assert_changed(&before, &after, &[("open-files", "warn")]);
    assert_fix(&after, "open-files", "LimitNOFILE");
}
