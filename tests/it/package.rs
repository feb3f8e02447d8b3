//! The Debian package (`scripts/package`): lintian on the .deb, then `apt-get install`
//! into a fresh minimal Debian 12 chroot, `remove` and `purge` there, checking what the
//! README says the package does.
//!
//! `scripts/test` builds the package once per run and names it in `BASPHERE_TEST_DEB`,
//! and the cached chroot (`scripts/build-test-chroot`) in
//! `BASPHERE_TEST_CHROOT`; without them the tests are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn setting(name: &str) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        eprintln!("skipped: {name} is not set (scripts/test builds the package and the chroot and sets it)");
    }
    value
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

#[test]
fn lintian_finds_no_error_and_nothing_is_overridden() {
    let Some(deb) = setting("BASPHERE_TEST_DEB") else {
        return;
    };
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0", "--info"])
        .arg(&deb)
        .output()
        .expect("lintian runs");
    let report = succeeded("lintian --fail-on error", out);
    assert!(
        !report.lines().any(|l| l.starts_with("E: ")),
        "lintian errors:\n{report}"
    );
    // No override can hide an error: the package ships none at all.
    let contents = succeeded(
        "dpkg-deb --contents",
        Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    assert!(
        !contents.contains("lintian/overrides"),
        "the package ships lintian overrides:\n{contents}"
    );
}

/// A fresh Debian 12 root file system: an overlay whose lower layer is the cached
/// chroot, never written, and whose upper layer is a directory of this test, removed
/// on drop.
struct Chroot {
    lower: PathBuf,
    dir: tempfile::TempDir,
}

impl Chroot {
    fn over(cache: &str) -> Chroot {
        let dir = tempfile::Builder::new()
            .prefix("bsp-package.")
            .tempdir_in("/var/tmp")
            .unwrap();
        for sub in ["upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Chroot {
            lower: PathBuf::from(cache),
            dir,
        }
    }

    /// Runs `script` with `sh -ec` inside. The overlay, /proc and /dev are mounted in
    /// a mount namespace of the command's own: they go with it, whatever happens.
    fn sh(&self, script: &str) -> Output {
        let inner = r#"set -e
            lower=$1 dir=$2 script=$3
            root=$dir/root
            mount -t overlay overlay \
                -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$root"
            mount -t proc proc "$root/proc"
            mount --bind /dev "$root/dev"
            exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 /bin/sh -ec "$script""#;
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-ec",
                inner,
                "chroot-sh",
            ])
            .arg(&self.lower)
            .arg(self.dir.path())
            .arg(script)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, script: &str) -> String {
        succeeded(script, self.sh(script))
    }

    /// What `script` printed on stdout alone.
    #[track_caller]
    fn stdout(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e {path} || test -L {path}"))
            .status
            .success()
    }

    /// Mode, owner and group names of `path` inside.
    #[track_caller]
    fn stat(&self, path: &str) -> String {
        self.stdout(&format!("stat -c '%a %U:%G' {path}"))
            .trim()
            .to_owned()
    }

    /// Puts the file `from` of this host at `to` inside.
    fn copy_in(&self, from: &str, to: &str) {
        let upper = self
            .dir
            .path()
            .join("upper")
            .join(to.trim_start_matches('/'));
        std::fs::create_dir_all(upper.parent().unwrap()).unwrap();
        std::fs::copy(from, upper).unwrap();
    }
}

/// The users of `group` inside, from /etc/group.
fn members(chroot: &Chroot, group: &str) -> Vec<String> {
    let line = chroot.stdout(&format!("getent group {group}"));
    let users = line.trim().rsplit(':').next().unwrap_or("");
    users
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn installs_into_a_fresh_debian_then_remove_keeps_data_and_purge_keeps_only_the_database() {
    let (Some(deb), Some(cache)) = (
        setting("BASPHERE_TEST_DEB"),
        setting("BASPHERE_TEST_CHROOT"),
    ) else {
        return;
    };
    let chroot = Chroot::over(&cache);
    chroot.copy_in(&deb, "/tmp/basphere.deb");
    let install = "apt-get install -y -q --no-install-recommends /tmp/basphere.deb";

    chroot.ok(install);

    // The account sshd logs tenants in as, its group, and the administrators' group.
    let passwd = chroot.stdout("getent passwd basphere");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/basphere", "home: {passwd}");
    assert_eq!(fields[6], "/bin/sh", "shell: {passwd}");
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system account: {passwd}");
    let group = chroot.stdout("id -gn basphere");
    assert_eq!(group.trim(), "basphere");
    let admins = chroot.stdout("getent group basphere-admin");
    let gid: u32 = admins.trim().split(':').nth(2).unwrap().parse().unwrap();
    assert!(gid < 1000, "not a system group: {admins}");
    // No libvirt in this chroot (--no-install-recommends): no group to join.
    assert!(chroot.sh("getent group libvirt").status.code() == Some(2));

    // Files and modes, as the README lists them.
    assert_eq!(chroot.stat("/var/lib/basphere"), "711 basphere:basphere");
    assert_eq!(chroot.stat("/usr/bin/basphere"), "755 root:root");
    assert_eq!(chroot.stat("/usr/bin/basphere-auth-keys"), "755 root:root");
    assert_eq!(chroot.stat("/etc/basphere/config.toml"), "644 root:root");
    for path in [
        "/usr/share/man/man1/basphere.1.gz",
        "/usr/share/man/man1/basphere-auth-keys.1.gz",
        "/usr/share/man/man1/basphere-admin-init.1.gz",
        "/usr/share/bash-completion/completions/basphere",
        "/usr/share/zsh/vendor-completions/_basphere",
        "/usr/share/fish/vendor_completions.d/basphere.fish",
        "/usr/libexec/basphere/basphere-prune",
        "/usr/libexec/basphere/basphere-reconcile",
        "/usr/share/doc/basphere/copyright",
    ] {
        assert!(chroot.exists(path), "{path} is not installed");
    }
    let units: Vec<String> = std::fs::read_dir("templates/systemd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!units.is_empty());
    for unit in &units {
        let path = format!("/usr/lib/systemd/system/{unit}");
        assert_eq!(chroot.stat(&path), "644 root:root", "{path}");
    }
    if Path::new("templates/sudoers/basphere").exists() {
        assert_eq!(chroot.stat("/etc/sudoers.d/basphere"), "440 root:root");
    }
    let conffiles = chroot.stdout("dpkg-query -W -f='${Conffiles}' basphere");
    assert!(
        conffiles.contains("/etc/basphere/config.toml"),
        "config.toml is not a conffile: {conffiles}"
    );
    // The configuration file is the template, every setting commented at its default.
    let template = chroot.sh("basphere config --template");
    assert!(template.status.success(), "{}", text(&template.stderr));
    let shipped = chroot.stdout("cat /etc/basphere/config.toml");
    assert_eq!(shipped, text(&template.stdout));
    let version = chroot.stdout("basphere --version");
    assert_eq!(
        version.trim(),
        format!("basphere {}", env!("CARGO_PKG_VERSION"))
    );
    // Not enabled, not started: `basphere admin init` does that.
    let wants = chroot.ok("ls /etc/systemd/system/*.wants 2>/dev/null || true");
    assert!(!wants.contains("basphere"), "a unit was enabled: {wants}");

    // doctor, before `admin init` and with no libvirt: exit 2, and the failures named,
    // each with its fix. (`kvm` fails too where the host has a /dev/kvm this chroot
    // has no group for.)
    let doctor = chroot.sh("basphere doctor --json");
    assert_eq!(doctor.status.code(), Some(2), "{}", text(&doctor.stderr));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["tools", "libvirt", "database"] {
        assert!(failed.contains(&name), "{name} did not fail: {report}");
    }
    assert!(
        failed
            .iter()
            .all(|n| ["tools", "libvirt", "database", "kvm"].contains(n)),
        "{report}"
    );
    for check in checks.iter().filter(|c| c["status"] == "fail") {
        assert!(check["fix"].is_string(), "no fix: {check}");
    }
    let config = checks.iter().find(|c| c["name"] == "config").unwrap();
    assert_eq!(config["status"], "ok", "{report}");

    // libvirt and kvm installed later: a reconfigure makes the account join them.
    chroot.ok("addgroup --system libvirt && addgroup --system kvm && dpkg-reconfigure basphere");
    assert_eq!(members(&chroot, "libvirt"), ["basphere"]);
    assert_eq!(members(&chroot, "kvm"), ["basphere"]);

    // The service account makes the database; an upgrade (the same version again)
    // migrates it as that account and changes nothing else.
    chroot.ok("runuser -u basphere -- basphere admin init --database-only");
    assert_eq!(
        chroot.stat("/var/lib/basphere/basphere.db"),
        "600 basphere:basphere"
    );
    let upgrade = chroot.ok(&format!("{install} --reinstall"));
    assert!(
        upgrade.contains("already exists") && upgrade.contains("nothing changed"),
        "the upgrade did not migrate the database: {upgrade}"
    );
    assert_eq!(chroot.stat("/var/lib/basphere"), "711 basphere:basphere");
    assert_eq!(members(&chroot, "libvirt"), ["basphere"]);

    // What `admin init` writes in OpenSSH mode, for the purge below.
    chroot.ok("basphere sshd-config > /tmp/drop-in");
    let first = chroot.stdout("head -n 1 /tmp/drop-in");
    let postrm = std::fs::read_to_string("debian/postrm").unwrap();
    assert!(
        postrm.contains(&format!("DROP_IN_FIRST_LINE='{}'", first.trim_end())),
        "debian/postrm does not know the drop-in's first line: {first}"
    );

    // remove: the programs go, data and configuration stay.
    chroot.ok("apt-get remove -y -q basphere");
    assert!(!chroot.exists("/usr/bin/basphere"));
    assert!(chroot.exists("/etc/basphere/config.toml"));
    assert!(chroot.exists("/var/lib/basphere/basphere.db"));
    chroot.ok("getent passwd basphere");

    // purge: /etc/basphere goes, and the sshd drop-in `admin init` wrote (not one
    // written by hand); the data directory, holding a database, stays and its path is
    // printed.
    chroot.ok(
        "mkdir -p /etc/ssh/sshd_config.d && cp /tmp/drop-in /etc/ssh/sshd_config.d/basphere.conf",
    );
    chroot.ok("echo '# by hand' > /etc/ssh/sshd_config.d/other.conf");
    let purge = chroot.ok("apt-get purge -y -q basphere");
    assert!(
        purge.contains("removed /etc/ssh/sshd_config.d/basphere.conf"),
        "{purge}"
    );
    assert!(!chroot.exists("/etc/ssh/sshd_config.d/basphere.conf"));
    assert!(chroot.exists("/etc/ssh/sshd_config.d/other.conf"));
    assert!(
        purge.contains("kept /var/lib/basphere"),
        "purge did not say what it kept: {purge}"
    );
    assert!(!chroot.exists("/etc/basphere"));
    assert!(!chroot.exists("/etc/sudoers.d/basphere"));
    assert_eq!(
        chroot.stat("/var/lib/basphere/basphere.db"),
        "600 basphere:basphere"
    );

    // Installed again over the account left behind, and purged with no database: the
    // data directory goes.
    chroot.ok("rm -rf /var/lib/basphere");
    chroot.ok(install);
    assert_eq!(chroot.stat("/var/lib/basphere"), "711 basphere:basphere");
    let again = chroot.stdout("getent passwd basphere");
    assert_eq!(again, passwd, "the account changed on a second install");
    chroot.ok("apt-get purge -y -q basphere");
    assert!(!chroot.exists("/var/lib/basphere"));
    assert!(!chroot.exists("/etc/basphere"));
}
