//! Disk space: what snapshots hold against the disk quota, and the floor of free space
//! below which nothing new is written to the data directory. Run through the real
//! dispatcher in this process, on libvirt's `test:///default` driver (its state is
//! shared by the connections of this process while one stays open).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use basphere::config::{Config, Overrides};
use basphere::virt::Hypervisor;
use basphere::Caller;

use crate::fixtures::dispatch::{self, Ran};
use crate::fixtures::{bin, unique};

const QUOTA_EXCEEDED: i32 = 5;
const CONFLICT: i32 = 6;
const GIB: u64 = 1 << 30;
const ROOT: Caller = Caller::Local { uid: 0 };

/// An installation of its own with user alice and a blank image, run in this process.
struct Install {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Install {
    fn new() -> Install {
        let dir = tempfile::Builder::new()
            .prefix("bsp-storage-")
            .tempdir()
            .unwrap();
        let n = unique();
        let prefix = format!("s{:04}{:02}", std::process::id() % 10_000, n % 100);
        let file = dir.path().join("config.toml");
        std::fs::write(&file, format!("name_prefix = \"{prefix}\"\n")).unwrap();
        let env = [
            ("BASPHERE_CONFIG", file.display().to_string()),
            (
                "BASPHERE_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("BASPHERE_LIBVIRT_URI", "test:///default".to_owned()),
            ("BASPHERE_VIRT_TYPE", "qemu".to_owned()),
            (
                "BASPHERE_NETWORK_POOL",
                format!("10.{}.0.0/16", 60 + (std::process::id() + n) % 40),
            ),
            ("BASPHERE_PUBLIC_HOST", "bastion.test".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let install = Install { dir, env };
        install.ok(&["admin", "init", "--database-only"]);
        let key = bin::public_key(&bin::keygen(install.dir.path(), "alice", "ed25519", None));
        install.ok(&[
            "admin",
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.com",
            "--key",
            &key,
        ]);
        let image = install.dir.path().join("blank.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("16M")
            .status()
            .unwrap();
        assert!(made.success(), "qemu-img create failed");
        install.ok(&[
            "admin",
            "image",
            "add",
            "blank",
            image.to_str().unwrap(),
            "--os-user",
            "debian",
        ]);
        install
    }

    /// The configuration with `extra` settings on top.
    fn config(&self, extra: &[(&str, &str)]) -> Arc<Config> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Arc::new(Config::load(&Overrides::default(), &env).unwrap())
    }

    fn run_with(&self, extra: &[(&str, &str)], argv: &[&str]) -> Ran {
        dispatch::run(&self.config(extra), &ROOT, argv)
    }

    fn run(&self, argv: &[&str]) -> Ran {
        self.run_with(&[], argv)
    }

    #[track_caller]
    fn ok(&self, argv: &[&str]) -> Ran {
        let ran = self.run(argv);
        assert_eq!(
            ran.code,
            0,
            "`{}`:\nstdout: {}\nstderr: {}",
            argv.join(" "),
            ran.stdout,
            ran.stderr
        );
        ran
    }

    /// Alice's disk usage as `quota --json` reports it, in bytes.
    fn disk_used(&self) -> u64 {
        let ran = self.ok(&["--json", "--as", "alice", "quota"]);
        let quota: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
        quota["usage"]["disk_bytes"].as_u64().unwrap()
    }
}

/// A snapshot of a running VM stores the guest's RAM in the qcow2 overlay, and that
/// was outside every quota: a tenant could fill the bastion's disk with snapshots.
/// Such a snapshot now holds the VM's memory size against the disk quota.
#[test]
fn snapshots_of_running_vms_hold_their_memory_against_the_disk_quota() {
    let _keep = Hypervisor::open("test:///default").expect("libvirt test driver");
    let install = Install::new();
    install.ok(&["admin", "quota", "set", "alice", "--disk", "3G"]);
    let alice = |args: &[&str]| {
        let mut argv = vec!["--as", "alice"];
        argv.extend_from_slice(args);
        argv.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: &[&str]| {
        let argv = alice(args);
        install.run(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = |args: &[&str]| {
        let ran = run(args);
        assert_eq!(ran.code, 0, "{args:?}: {}{}", ran.stdout, ran.stderr);
    };
    ok(&["create-vm", "web1", "--memory", "1G", "--disk", "1G"]);
    assert_eq!(install.disk_used(), GIB);

    ok(&["snapshot", "create", "web1", "s1"]);
    assert_eq!(
        install.disk_used(),
        2 * GIB,
        "the disk and one snapshot's RAM"
    );
    ok(&["snapshot", "create", "web1", "s2"]);
    assert_eq!(install.disk_used(), 3 * GIB);
    let refused = run(&["snapshot", "create", "web1", "s3"]);
    assert_eq!(refused.code, QUOTA_EXCEEDED, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("quota exceeded: disk: limit 3G, used 3G, requested 1G"),
        "{}",
        refused.stderr
    );
    let listed = run(&["--json", "snapshot", "list", "web1"]);
    let names: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(
        names.as_array().unwrap().len(),
        2,
        "nothing was made: {names}"
    );

    // A snapshot of a stopped VM holds no memory.
    ok(&["vm", "stop", "web1", "--force"]);
    ok(&["snapshot", "create", "web1", "s3"]);
    assert_eq!(install.disk_used(), 3 * GIB);

    // What a snapshot holds counts for new VMs too, and comes back when it goes.
    let big = run(&["create-vm", "web2", "--memory", "128M", "--disk", "1G"]);
    assert_eq!(big.code, QUOTA_EXCEEDED, "{}", big.stderr);
    assert!(
        big.stderr.contains("disk: limit 3G, used 3G"),
        "{}",
        big.stderr
    );
    ok(&["snapshot", "delete", "web1", "s1"]);
    assert_eq!(install.disk_used(), 2 * GIB);
    ok(&[
        "create-vm",
        "web2",
        "--memory",
        "128M",
        "--disk",
        "1G",
        "--no-start",
    ]);
    assert_eq!(install.disk_used(), 3 * GIB);
}

/// The data directory could fill up until qemu paused every guest. `create-vm` and
/// `snapshot create` are refused, with a message that says why, while its free space
/// is below `storage.min_free`.
#[test]
fn nothing_new_is_written_below_the_free_space_floor() {
    let _keep = Hypervisor::open("test:///default").expect("libvirt test driver");
    let install = Install::new();
    // More free space than any disk has.
    let floor = [("BASPHERE_STORAGE_MIN_FREE", "1024T")];
    let create = [
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--memory",
        "128M",
        "--disk",
        "1G",
    ];
    let refused = install.run_with(&floor, &create);
    assert_eq!(
        refused.code, CONFLICT,
        "{}{}",
        refused.stdout, refused.stderr
    );
    for part in ["free", "1024T", "storage.min_free"] {
        assert!(refused.stderr.contains(part), "{part}: {}", refused.stderr);
    }
    let vms = install.ok(&["--json", "--as", "alice", "vm", "list"]);
    assert_eq!(vms.stdout.trim(), "[]", "nothing was made");
    assert_eq!(install.disk_used(), 0);

    // Under the default floor (5G; this machine has more) it works.
    install.ok(&create);
    let snapshot = ["--as", "alice", "snapshot", "create", "web1", "s1"];
    let refused = install.run_with(&floor, &snapshot);
    assert_eq!(refused.code, CONFLICT, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("storage.min_free"),
        "{}",
        refused.stderr
    );
    let listed = install.ok(&["--json", "--as", "alice", "snapshot", "list"]);
    assert_eq!(listed.stdout.trim(), "[]", "nothing was made");
    install.ok(&snapshot);
}
