//! Snapshots on a real libvirtd (qemu, full emulation): create on running and
//! stopped VMs, restore, delete, expiry and keep-last with a controlled clock, prunes
//! that run together or are killed, isolation, bad input, and reconcile.

use std::process::Command;

use crate::fixtures::bin::{Bsp, Run, BIN};
use crate::fixtures::libvirt::{require_libvirt, virsh, Cleanup};

const NOT_FOUND: i32 = 3;
const DENIED: i32 = 4;
const QUOTA: i32 = 5;
const CONFLICT: i32 = 6;
const USAGE: i32 = 2;

/// A fixed clock for the tests: 2030-01-01T00:00:00Z.
const T0: i64 = 1_893_456_000;

/// libvirt's snapshot names of a VM, sorted.
fn live_snapshots(bsp: &Bsp, owner: &str, vm: &str) -> Vec<String> {
    let mut names: Vec<String> = virsh(
        &bsp.uri,
        &[
            "snapshot-list",
            &format!("{}.{owner}.{vm}", bsp.prefix),
            "--name",
        ],
    )
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| l.trim().to_owned())
    .collect();
    names.sort();
    names
}

/// basphere's record of a VM's snapshots, sorted.
fn recorded(bsp: &Bsp, owner: &str, vm: &str) -> Vec<String> {
    let list = bsp.json(&["--as", owner, "snapshot", "list", vm]);
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn setup(uri: &str, users: &[&str]) -> (Bsp, Cleanup) {
    let bsp = Bsp::with_uri(uri);
    for u in users {
        bsp.add_user(u);
    }
    bsp.add_blank_image("blank");
    let cleanup = Cleanup::new(&bsp);
    (bsp, cleanup)
}

fn create_vm(bsp: &Bsp, owner: &str, name: &str, start: bool) {
    let mut args = vec![
        "--as",
        owner,
        "create-vm",
        name,
        "--memory",
        "128M",
        "--disk",
        "1G",
    ];
    if !start {
        args.push("--no-start");
    }
    bsp.run(&args).success();
}

#[test]
fn snapshots_of_running_and_stopped_vms() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (mut bsp, _c) = setup(&uri, &["alice"]);
    create_vm(&bsp, "alice", "web", true);
    create_vm(&bsp, "alice", "db", false);
    bsp.set_env("BASPHERE_NOW", &T0.to_string());

    let s = bsp.json(&["--as", "alice", "snapshot", "create", "web"]);
    assert_eq!(s["name"], "20300101-000000", "default name is the time");
    assert_eq!(
        s["expires_at"],
        T0 + 30 * 86_400,
        "default expiry from the policy"
    );
    let s = bsp.json(&[
        "--as",
        "alice",
        "snapshot",
        "create",
        "web",
        "pre-upgrade",
        "--expire",
        "7d",
        "--description",
        "before apt upgrade",
    ]);
    assert_eq!(s["expires_at"], T0 + 7 * 86_400);
    assert_eq!(s["description"], "before apt upgrade");
    bsp.run(&["--as", "alice", "snapshot", "create", "db", "cold"])
        .success();
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "pre-upgrade"])
        .code(CONFLICT)
        .stderr_has("snapshot `pre-upgrade` already exists");

    assert_eq!(
        live_snapshots(&bsp, "alice", "web"),
        ["20300101-000000", "pre-upgrade"]
    );
    assert_eq!(
        recorded(&bsp, "alice", "web"),
        live_snapshots(&bsp, "alice", "web")
    );
    let all = bsp.json(&["--as", "alice", "snapshot", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let plain = bsp
        .run(&["--as", "alice", "snapshot", "list"])
        .success()
        .stdout;
    assert!(
        plain.starts_with("VM   SNAPSHOT") && plain.contains("before apt upgrade"),
        "{plain}"
    );

    // Restore: the running VM comes back running, the stopped one stays stopped.
    bsp.run(&["--as", "alice", "snapshot", "restore", "web", "pre-upgrade"])
        .code(USAGE)
        .stderr_has("--yes");
    bsp.run(&["--as", "alice", "vm", "stop", "web", "--force"])
        .success();
    bsp.run(&[
        "--as",
        "alice",
        "snapshot",
        "restore",
        "web",
        "pre-upgrade",
        "--yes",
    ])
    .success();
    assert_eq!(
        bsp.json(&["--as", "alice", "vm", "show", "web"])["state"],
        "running"
    );
    bsp.run(&[
        "--as", "alice", "snapshot", "restore", "db", "cold", "--yes",
    ])
    .success();
    assert_eq!(
        bsp.json(&["--as", "alice", "vm", "show", "db"])["state"],
        "shut_off"
    );

    bsp.run(&["--as", "alice", "snapshot", "delete", "web", "pre-upgrade"])
        .success();
    bsp.run(&["--as", "alice", "snapshot", "delete", "web", "pre-upgrade"])
        .code(NOT_FOUND);
    assert_eq!(live_snapshots(&bsp, "alice", "web"), ["20300101-000000"]);

    // The snapshot count is part of the quota.
    bsp.run(&["admin", "quota", "set", "alice", "--snapshots", "2"])
        .success();
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "third"])
        .code(QUOTA)
        .stderr_has("quota exceeded: snapshots: limit 2, used 2, requested 1");
    let q = bsp.json(&["--as", "alice", "quota"]);
    assert_eq!(q["snapshots"], 2);

    // Deleting a VM deletes its snapshots.
    bsp.run(&["--as", "alice", "vm", "delete", "web", "--yes"])
        .success();
    assert_eq!(
        bsp.json(&["--as", "alice", "snapshot", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    bsp.run(&["admin", "reconcile", "--dry-run"])
        .success()
        .stdout_has("nothing to repair");
    let actions: Vec<String> = bsp
        .json(&["admin", "audit", "--user", "alice"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for a in ["snapshot.create", "snapshot.restore", "snapshot.delete"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

#[test]
fn prune_deletes_by_expiry_then_keep_last_across_users() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (mut bsp, _c) = setup(&uri, &["alice", "bob"]);
    create_vm(&bsp, "alice", "a1", false);
    create_vm(&bsp, "alice", "a2", false);
    create_vm(&bsp, "bob", "b1", false);
    bsp.run(&[
        "admin",
        "quota",
        "set",
        "alice",
        "--snapshot-keep-last",
        "2",
        "--snapshot-expire",
        "never",
    ])
    .success();
    let at = |bsp: &mut Bsp, t: i64| bsp.set_env("BASPHERE_NOW", &t.to_string());
    // alice/a1: four without expiry an hour apart, one expiring after an hour.
    for (i, name) in ["h0", "h1", "h2", "h3"].iter().enumerate() {
        at(&mut bsp, T0 + i as i64 * 3600);
        bsp.run(&["--as", "alice", "snapshot", "create", "a1", name])
            .success();
    }
    at(&mut bsp, T0);
    bsp.run(&[
        "--as", "alice", "snapshot", "create", "a1", "short", "--expire", "1h",
    ])
    .success();
    bsp.run(&["--as", "alice", "snapshot", "create", "a2", "only"])
        .success();
    // bob/b1: his default policy (expire 30d, keep 10).
    bsp.run(&["--as", "bob", "snapshot", "create", "b1", "old"])
        .success();
    at(&mut bsp, T0 + 3600);
    bsp.run(&[
        "--as", "bob", "snapshot", "create", "b1", "fresh", "--expire", "90d",
    ])
    .success();

    // 31 days later: alice's `short` expired and a1 keeps its newest two; bob's `old` expired.
    at(&mut bsp, T0 + 31 * 86_400);
    let plan = bsp.json(&["snapshot", "prune", "--all", "--dry-run"]);
    let pick = |v: &serde_json::Value, action: &str| {
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["action"] == action)
            .map(|o| {
                format!(
                    "{}/{}/{}",
                    o["owner"].as_str().unwrap(),
                    o["vm"].as_str().unwrap(),
                    o["snapshot"].as_str().unwrap()
                )
            })
            .collect();
        names.sort();
        names
    };
    let expected = ["alice/a1/h0", "alice/a1/h1", "alice/a1/short", "bob/b1/old"];
    assert_eq!(pick(&plan, "delete"), expected);
    assert!(plan
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["result"] == "planned" || o["result"] == "kept"));
    assert_eq!(
        live_snapshots(&bsp, "alice", "a1").len(),
        5,
        "a dry run deleted something"
    );

    let done = bsp.json(&["snapshot", "prune", "--all"]);
    assert_eq!(
        pick(&done, "delete"),
        expected,
        "the run differs from its dry run"
    );
    assert!(done
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "delete")
        .all(|o| o["result"] == "deleted"));
    assert_eq!(live_snapshots(&bsp, "alice", "a1"), ["h2", "h3"]);
    assert_eq!(live_snapshots(&bsp, "alice", "a2"), ["only"]);
    assert_eq!(live_snapshots(&bsp, "bob", "b1"), ["fresh"]);
    for (u, vm) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")] {
        assert_eq!(recorded(&bsp, u, vm), live_snapshots(&bsp, u, vm));
    }
    // Flags override the policy; a user prunes their own.
    bsp.run(&["--as", "alice", "snapshot", "prune", "--keep-last", "1"])
        .success();
    assert_eq!(live_snapshots(&bsp, "alice", "a1"), ["h3"]);
    assert_eq!(
        live_snapshots(&bsp, "bob", "b1"),
        ["fresh"],
        "alice's prune touched bob"
    );
    let empty = bsp.json(&["snapshot", "prune", "--all"]);
    assert!(empty
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["action"] == "keep"));
}

#[test]
fn concurrent_and_killed_prunes_leave_no_trace() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (mut bsp, _c) = setup(&uri, &["alice"]);
    create_vm(&bsp, "alice", "vm", false);
    bsp.run(&[
        "admin",
        "quota",
        "set",
        "alice",
        "--snapshot-keep-last",
        "0",
    ])
    .success();
    for i in 0..8 {
        bsp.run(&[
            "--as",
            "alice",
            "snapshot",
            "create",
            "vm",
            &format!("s{i}"),
        ])
        .success();
    }
    // Two prunes at once: each snapshot deleted once, neither fails.
    let children: Vec<_> = (0..2)
        .map(|_| {
            bsp.command(&["snapshot", "prune", "--all", "--json"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut deleted = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        deleted += v
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["result"] == "deleted")
            .count();
    }
    assert_eq!(deleted, 8);
    assert!(live_snapshots(&bsp, "alice", "vm").is_empty());
    let audit = bsp.json(&["admin", "audit", "--limit", "100"]);
    let prunes: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "snapshot.prune")
        .collect();
    assert_eq!(prunes.len(), 8);
    assert!(prunes.iter().all(|e| e["result"] == "ok"));

    // A prune killed between marking and deleting: the next one finishes the job.
    for i in 0..3 {
        bsp.run(&[
            "--as",
            "alice",
            "snapshot",
            "create",
            "vm",
            &format!("k{i}"),
        ])
        .success();
    }
    bsp.set_env("BASPHERE_CRASH_AT", "snapshot-deleting");
    assert_eq!(
        bsp.run(&["snapshot", "prune", "--all"]).code,
        -1,
        "expected death by SIGKILL"
    );
    bsp.set_env("BASPHERE_CRASH_AT", "");
    assert_eq!(live_snapshots(&bsp, "alice", "vm").len(), 3);
    let rerun = bsp.json(&["snapshot", "prune", "--all"]);
    assert!(
        rerun
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["reason"] == "delete interrupted earlier"),
        "{rerun}"
    );
    assert!(
        rerun
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] == "deleted"),
        "{rerun}"
    );
    assert!(live_snapshots(&bsp, "alice", "vm").is_empty());
    assert!(recorded(&bsp, "alice", "vm").is_empty());

    // The cron entry runs the same prune.
    bsp.run(&["--as", "alice", "snapshot", "create", "vm", "cron"])
        .success();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bin/basphere-prune");
    let out = Command::new(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(bsp.env.iter().map(|(k, v)| (k, v)))
        .env("BASPHERE", BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted"));
    assert!(live_snapshots(&bsp, "alice", "vm").is_empty());
}

/// Runs a command line as tenant `user` through the forced command, as sshd would.
fn as_tenant(bsp: &mut Bsp, user: &str, line: &str) -> Run {
    bsp.forced_command(user, line)
}

#[test]
fn users_cannot_touch_each_others_snapshots() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (mut bsp, _c) = setup(&uri, &["alice", "bob"]);
    create_vm(&bsp, "alice", "web", false);
    as_tenant(&mut bsp, "alice", "snapshot create web mine").success();
    as_tenant(&mut bsp, "bob", "snapshot list web").code(NOT_FOUND);
    assert_eq!(
        as_tenant(&mut bsp, "bob", "snapshot list --json")
            .stdout
            .trim(),
        "[]"
    );
    as_tenant(&mut bsp, "bob", "snapshot restore web mine --yes").code(NOT_FOUND);
    as_tenant(&mut bsp, "bob", "snapshot delete web mine").code(NOT_FOUND);
    as_tenant(&mut bsp, "bob", "snapshot create web theirs").code(NOT_FOUND);
    as_tenant(&mut bsp, "bob", "snapshot prune --user alice").code(DENIED);
    as_tenant(&mut bsp, "bob", "snapshot prune --all").code(DENIED);
    as_tenant(&mut bsp, "bob", "snapshot prune --keep-last 0").success();
    assert_eq!(live_snapshots(&bsp, "alice", "web"), ["mine"]);
    as_tenant(&mut bsp, "alice", "snapshot prune --keep-last 0 --dry-run")
        .success()
        .stdout_has("planned");
    assert_eq!(live_snapshots(&bsp, "alice", "web"), ["mine"]);
}

#[test]
fn bad_snapshot_input_is_refused_and_changes_nothing() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (bsp, _c) = setup(&uri, &["alice"]);
    create_vm(&bsp, "alice", "web", false);
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "good"])
        .success();
    let before = (
        bsp.state(),
        recorded(&bsp, "alice", "web"),
        live_snapshots(&bsp, "alice", "web"),
    );
    let long = "a".repeat(200);
    for name in [
        "a/b",
        "..",
        "../x",
        "a'b",
        "a\"b",
        "<x>",
        "a&b",
        long.as_str(),
        "sn\u{e4}p",
        "\x1b[31m",
        "-x",
    ] {
        let run = bsp.run(&["--as", "alice", "snapshot", "create", "web", name]);
        assert_eq!(run.code, USAGE, "{name:?}: {}", run.stderr);
    }
    for d in ["0", "-1d", "7x", "99999999d", "1.5h", "7"] {
        bsp.run(&[
            "--as", "alice", "snapshot", "create", "web", "x", "--expire", d,
        ])
        .code(USAGE)
        .stderr_has("invalid duration");
        bsp.run(&["snapshot", "prune", "--all", "--older-than", d])
            .code(USAGE);
    }
    bsp.run(&[
        "--as",
        "alice",
        "snapshot",
        "create",
        "web",
        "x",
        "--description",
        "two\nlines",
    ])
    .code(USAGE);
    bsp.run(&["snapshot", "prune", "--all", "--keep-last", "-1"])
        .code(USAGE);
    bsp.run(&[
        "admin",
        "quota",
        "set",
        "alice",
        "--snapshot-expire",
        "soon",
    ])
    .code(USAGE);
    let after = (
        bsp.state(),
        recorded(&bsp, "alice", "web"),
        live_snapshots(&bsp, "alice", "web"),
    );
    assert_eq!(before, after);
}

#[test]
fn reconcile_keeps_snapshot_rows_in_step_with_libvirt() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (bsp, _c) = setup(&uri, &["alice"]);
    create_vm(&bsp, "alice", "web", false);
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "kept"])
        .success();
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "vanished"])
        .success();
    let dom = format!("{}.alice.web", bsp.prefix);
    virsh(&uri, &["snapshot-delete", &dom, "vanished"]);
    virsh(&uri, &["snapshot-create-as", &dom, "by-hand"]);
    let plan = bsp.json(&["admin", "reconcile", "--dry-run"]);
    let kinds: Vec<&str> = plan["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"forget_snapshot") && kinds.contains(&"adopt_snapshot"),
        "{kinds:?}"
    );
    bsp.run(&["admin", "reconcile"]).success();
    assert_eq!(recorded(&bsp, "alice", "web"), ["by-hand", "kept"]);
    assert_eq!(
        recorded(&bsp, "alice", "web"),
        live_snapshots(&bsp, "alice", "web")
    );
    bsp.run(&["admin", "reconcile", "--dry-run"])
        .success()
        .stdout_has("nothing to repair");
}

/// A domain basphere undefines (as `admin reconcile` does one it removes) keeps its
/// snapshots' XML beside the disk; the reconcile that defines the domain again defines
/// them too, and qemu restores from them as before.
#[test]
fn snapshots_saved_when_a_domain_is_undefined_come_back_with_it() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (bsp, _c) = setup(&uri, &["alice"]);
    create_vm(&bsp, "alice", "web", true);
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "running"])
        .success();
    bsp.run(&["--as", "alice", "vm", "stop", "web", "--force"])
        .success();
    bsp.run(&["--as", "alice", "snapshot", "create", "web", "stopped"])
        .success();
    let plan = bsp.json(&["admin", "reconcile", "--dry-run"]);
    let installation = plan["installation"].as_str().unwrap().to_owned();
    let vm = bsp.json(&["--as", "alice", "vm", "show", "web"]);
    let uuid = uuid::Uuid::parse_str(vm["id"].as_str().unwrap()).unwrap();
    let saved = bsp.data_dir().join(format!("disks/{uuid}.snapshots.xml"));

    let hv = basphere::virt::Hypervisor::open(&uri).unwrap();
    hv.undefine(uuid, &installation, &saved).unwrap();
    assert!(saved.exists());
    assert!(live_snapshots(&bsp, "alice", "web").is_empty());

    bsp.run(&["admin", "reconcile"])
        .success()
        .stdout_has("define missing domain");
    assert_eq!(live_snapshots(&bsp, "alice", "web"), ["running", "stopped"]);
    assert!(!saved.exists());
    bsp.run(&[
        "--as", "alice", "snapshot", "restore", "web", "running", "--yes",
    ])
    .success();
    assert_eq!(
        bsp.json(&["--as", "alice", "vm", "show", "web"])["state"],
        "running"
    );
    assert_eq!(recorded(&bsp, "alice", "web"), ["running", "stopped"]);
    bsp.run(&["admin", "reconcile", "--dry-run"])
        .success()
        .stdout_has("nothing to repair");
}
