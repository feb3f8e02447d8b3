//! VMs on a real libvirtd (qemu, full emulation) in the test run's own network
//! namespace: lifecycle, isolation between users, quota under concurrency, crash
//! recovery with `admin reconcile`, and a libvirtd that is not running.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixtures::bin::Bsp;
use crate::fixtures::libvirt::{libvirt_objects, require_libvirt, virsh, Cleanup};
use crate::fixtures::ssh::SshServer;

const NOT_FOUND: i32 = 3;
const QUOTA: i32 = 5;
const CONFLICT: i32 = 6;
const UNAVAILABLE: i32 = 7;

fn setup(uri: &str) -> Bsp {
    let bsp = Bsp::with_uri(uri);
    bsp.add_user("alice");
    bsp.add_blank_image("blank");
    bsp
}

fn files(bsp: &Bsp, sub: &str) -> usize {
    std::fs::read_dir(bsp.data_dir().join(sub)).map_or(0, |d| d.count())
}

#[test]
fn vm_lifecycle() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = setup(&uri);
    let _cleanup = Cleanup::new(&bsp);

    let vm = bsp.json(&[
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--cpus",
        "2",
        "--memory",
        "256M",
        "--disk",
        "2G",
    ]);
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["cpus"], 2);
    assert_eq!(vm["memory_mib"], 256);
    let ip = vm["ip"].as_str().unwrap().to_owned();
    assert!(ip.ends_with(".10"), "{ip}");
    assert_eq!(
        vm["ssh"],
        format!("ssh -J basphere@bastion.test debian@{ip}")
    );
    assert_eq!(vm["domain"], format!("{}.alice.web1", bsp.prefix));

    // The disk is a qcow2 overlay on the image, grown to the requested size.
    let disk = bsp
        .data_dir()
        .join(format!("disks/{}.qcow2", vm["id"].as_str().unwrap()));
    let info = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 2u64 << 30);
    assert!(info["backing-filename"]
        .as_str()
        .unwrap()
        .ends_with("images/blank.qcow2"));
    // The libvirt side: the address is reserved for the VM's MAC, the seed attached read-only.
    let net = format!("{}-alice", bsp.prefix);
    let mac = vm["mac"].as_str().unwrap().to_owned();
    assert!(mac.starts_with("52:54:00:"), "{mac}");
    assert!(virsh(&uri, &["net-dumpxml", &net]).contains(&format!("<host mac='{mac}' ip='{ip}'/>")));
    let xml = virsh(&uri, &["dumpxml", &format!("{}.alice.web1", bsp.prefix)]);
    assert!(
        xml.contains("<readonly/>")
            && xml.contains("virtio")
            && xml.contains("org.qemu.guest_agent.0"),
        "{xml}"
    );

    bsp.run(&["--as", "alice", "create-vm", "web1"])
        .code(CONFLICT)
        .stderr_has("VM `web1` already exists");
    let list = bsp.json(&["--as", "alice", "vm", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let plain = bsp.run(&["--as", "alice", "vm", "list"]).success().stdout;
    assert!(plain.starts_with("NAME  STATE    IP"), "{plain}");

    bsp.run(&["--as", "alice", "vm", "start", "web1"])
        .code(CONFLICT)
        .stderr_has("already running");
    bsp.run(&["--as", "alice", "vm", "reboot", "web1"])
        .success();
    bsp.run(&["--as", "alice", "vm", "stop", "web1", "--force"])
        .success()
        .stdout_has("shut off");
    bsp.run(&["--as", "alice", "vm", "stop", "web1"])
        .code(CONFLICT)
        .stderr_has("not running");
    bsp.run(&["--as", "alice", "vm", "start", "web1"])
        .success()
        .stdout_has("running");
    // A guest without an OS ignores ACPI: a graceful stop times out with advice.
    bsp.run(&["--as", "alice", "vm", "stop", "web1", "--timeout", "1"])
        .code(CONFLICT)
        .stderr_has("--force");

    let q = bsp.json(&["--as", "alice", "quota"]);
    assert_eq!(q["usage"]["cpus"], 2);
    assert_eq!(q["usage"]["disk_bytes"], 2u64 << 30);

    bsp.run(&["--as", "alice", "vm", "delete", "web1"])
        .code(2)
        .stderr_has("--yes");
    bsp.run(&["--as", "alice", "vm", "delete", "web1", "--yes"])
        .success();
    bsp.run(&["--as", "alice", "vm", "show", "web1"])
        .code(NOT_FOUND);
    let q = bsp.json(&["--as", "alice", "quota"]);
    assert_eq!(q["usage"]["vms"], 0);
    assert_eq!(files(&bsp, "disks") + files(&bsp, "seeds"), 0);
    let (domains, networks) = libvirt_objects(&bsp);
    assert!(domains.is_empty());
    assert_eq!(networks, [net], "deleting the last VM keeps the network");

    // The address is free again.
    let again = bsp.json(&[
        "--as",
        "alice",
        "create-vm",
        "web2",
        "--no-start",
        "--memory",
        "256M",
    ]);
    assert_eq!(again["ip"], ip);
    assert_eq!(again["state"], "shut_off");
    bsp.run(&["--as", "alice", "vm", "delete", "web2", "--yes"])
        .success();

    let audit = bsp.json(&["admin", "audit", "--user", "alice"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"vm.create")
            && actions.contains(&"vm.delete")
            && actions.contains(&"vm.stop"),
        "{actions:?}"
    );
}

#[test]
fn users_are_isolated() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = setup(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.add_user("bob");
    let a = bsp.json(&[
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--no-start",
        "--memory",
        "256M",
    ]);
    let b = bsp.json(&[
        "--as",
        "bob",
        "create-vm",
        "web1",
        "--no-start",
        "--memory",
        "256M",
    ]);
    assert_ne!(a["domain"], b["domain"]);
    let subnet = |v: &serde_json::Value| {
        v["ip"]
            .as_str()
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .0
            .to_owned()
    };
    assert_ne!(subnet(&a), subnet(&b), "each user has their own /24");

    let bobs = bsp.json(&["--as", "bob", "vm", "list"]);
    assert_eq!(bobs.as_array().unwrap().len(), 1);
    assert_eq!(bobs[0]["id"], b["id"]);
    bsp.run(&["--as", "bob", "vm", "delete", "web1", "--yes"])
        .success();
    for args in [
        ["vm", "show", "web1"],
        ["vm", "start", "web1"],
        ["vm", "stop", "web1"],
    ] {
        let mut all = vec!["--as", "bob"];
        all.extend(args);
        bsp.run(&all).code(NOT_FOUND);
    }
    bsp.run(&["--as", "bob", "vm", "delete", "web1", "--yes"])
        .code(NOT_FOUND);
    assert_eq!(
        bsp.json(&["--as", "alice", "vm", "list"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "bob touched alice's VM"
    );
    let all = bsp.json(&["admin", "vms"]);
    assert_eq!(all.as_array().unwrap().len(), 1);
    bsp.run(&["--as", "alice", "vm", "delete", "web1", "--yes"])
        .success();
    bsp.run(&["admin", "image", "remove", "blank"]).success();
}

#[test]
fn image_in_use_cannot_be_removed() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = setup(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.run(&[
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--no-start",
        "--memory",
        "256M",
    ])
    .success();
    bsp.run(&["admin", "image", "remove", "blank"])
        .code(CONFLICT)
        .stderr_has("used by 1 VM");
    bsp.run(&["admin", "user", "remove", "alice", "--yes"])
        .code(CONFLICT)
        .stderr_has("still owns 1 VM");
    bsp.run(&["--as", "alice", "vm", "delete", "web1", "--yes"])
        .success();
    bsp.run(&["admin", "image", "remove", "blank"]).success();
    bsp.run(&["admin", "user", "remove", "alice", "--yes"])
        .success();
    let (domains, networks) = libvirt_objects(&bsp);
    assert!(
        domains.is_empty() && networks.is_empty(),
        "{domains:?} {networks:?}"
    );
}

#[test]
fn twenty_parallel_creates_within_a_quota_for_eight() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = setup(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "8"])
        .success();
    let children: Vec<_> = (0..20)
        .map(|i| {
            bsp.command(&[
                "--as",
                "alice",
                "create-vm",
                &format!("vm{i}"),
                "--cpus",
                "1",
                "--memory",
                "128M",
                "--disk",
                "1G",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut ok = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => ok += 1,
            Some(QUOTA) => assert!(
                stderr.contains("quota exceeded: cpus: limit 8, used 8, requested 1"),
                "{stderr}"
            ),
            other => panic!("unexpected exit {other:?}: {stderr}"),
        }
    }
    assert_eq!(ok, 8);
    let vms = bsp.json(&["--as", "alice", "vm", "list"]);
    assert_eq!(vms.as_array().unwrap().len(), 8);
    assert!(vms
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["state"] == "running"));
    let ips: HashSet<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 8, "addresses must be unique");
    assert_eq!(libvirt_objects(&bsp).0.len(), 8);
    for v in vms.as_array().unwrap() {
        bsp.run(&[
            "--as",
            "alice",
            "vm",
            "delete",
            v["name"].as_str().unwrap(),
            "--yes",
        ])
        .success();
    }
}

/// After `admin reconcile`, the database and libvirt agree exactly.
#[track_caller]
fn assert_consistent(bsp: &Bsp) {
    let rows = bsp.json(&["admin", "vms"]);
    let rows = rows.as_array().unwrap();
    let (domains, _) = libvirt_objects(bsp);
    let mut names: Vec<String> = rows
        .iter()
        .map(|v| v["domain"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    let mut domains = domains;
    domains.sort();
    assert_eq!(names, domains, "rows and domains differ");
    assert!(
        rows.iter().all(|v| v["state"] != "creating"
            && v["state"] != "deleting"
            && v["state"] != "missing"),
        "{rows:?}"
    );
    let q = bsp.json(&["--as", "alice", "quota"]);
    assert_eq!(
        q["usage"]["vms"].as_u64().unwrap() as usize,
        domains.len(),
        "usage differs from libvirt"
    );
    assert_eq!(files(bsp, "disks"), domains.len(), "orphan disks");
    assert_eq!(files(bsp, "seeds"), domains.len(), "orphan seeds");
    bsp.run(&["admin", "reconcile", "--dry-run"])
        .success()
        .stdout_has("nothing to repair");
}

#[test]
fn a_create_killed_at_any_step_is_repaired_by_reconcile() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let mut bsp = setup(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.run(&[
        "--as",
        "alice",
        "create-vm",
        "keep",
        "--no-start",
        "--memory",
        "128M",
    ])
    .success();
    for step in ["reserved", "disk", "seed", "network", "domain", "start"] {
        bsp.set_env("BASPHERE_CRASH_AT", step);
        let run = bsp.run(&[
            "--as",
            "alice",
            "create-vm",
            &format!("crash-{step}"),
            "--memory",
            "128M",
        ]);
        assert_eq!(
            run.code, -1,
            "step {step}: expected death by SIGKILL: {}",
            run.stderr
        );
        bsp.set_env("BASPHERE_CRASH_AT", "");
        let q = bsp.json(&["--as", "alice", "quota"]);
        assert_eq!(
            q["usage"]["vms"], 2,
            "the killed create still holds its reservation"
        );
        let plan = bsp.json(&["admin", "reconcile", "--dry-run"]);
        assert!(
            plan["repairs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["kind"] == "roll_back_create"),
            "{step}: {plan}"
        );
        bsp.run(&["admin", "reconcile"]).success();
        assert_consistent(&bsp);
    }
    bsp.set_env("BASPHERE_CRASH_AT", "");

    // Kills at arbitrary moments, then one repair.
    for (i, delay) in [0u64, 15, 30, 60, 90, 120, 200, 400]
        .into_iter()
        .enumerate()
    {
        let mut child = bsp
            .command(&[
                "--as",
                "alice",
                "create-vm",
                &format!("rand{i}"),
                "--memory",
                "128M",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    bsp.run(&["admin", "reconcile"]).success();
    assert_consistent(&bsp);

    // Objects with the prefix but without this installation's id (made by hand, or by
    // another basphere on this libvirtd) are listed and left alone; a disk in the data
    // directory that no VM has is this installation's, and goes.
    let orphan_net = format!("{}-ghost", bsp.prefix);
    let net_xml = bsp.dir.path().join("net.xml");
    let net_def = |metadata: &str| {
        format!(
            "<network><name>{orphan_net}</name>{metadata}<bridge name='{}ff'/></network>",
            bsp.prefix
        )
    };
    std::fs::write(&net_xml, net_def("")).unwrap();
    virsh(&uri, &["net-define", net_xml.to_str().unwrap()]);
    let dom_xml = bsp.dir.path().join("dom.xml");
    let orphan_dom = format!("{}.ghost.vm", bsp.prefix);
    std::fs::write(
        &dom_xml,
        format!("<domain type='qemu'><name>{orphan_dom}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"),
    )
    .unwrap();
    virsh(&uri, &["define", dom_xml.to_str().unwrap()]);
    let stray = bsp
        .data_dir()
        .join(format!("disks/{}.qcow2", uuid::Uuid::new_v4()));
    std::fs::write(&stray, b"").unwrap();
    let plan = bsp.json(&["admin", "reconcile", "--dry-run"]);
    let kinds = |plan: &serde_json::Value| -> Vec<String> {
        let repairs = plan["repairs"].as_array().unwrap().iter();
        repairs
            .map(|r| r["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let alone: Vec<&str> = plan["left_alone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(kinds(&plan), ["remove_file"], "{plan}");
    assert!(
        alone.contains(&orphan_dom.as_str()) && alone.contains(&orphan_net.as_str()),
        "{plan}"
    );
    bsp.run(&["admin", "reconcile"]).success();
    assert!(!stray.exists());
    let (domains, networks) = libvirt_objects(&bsp);
    assert!(domains.contains(&orphan_dom) && networks.contains(&orphan_net));

    // Given this installation's id, they are its orphans: removed, with --force as the
    // plan may remove more than it keeps.
    let id = plan["installation"].as_str().unwrap();
    let element = format!(
        "<bsp:installation xmlns:bsp='https://basphere.dev/xmlns/installation/1'>{id}</bsp:installation>"
    );
    virsh(
        &uri,
        &[
            "metadata",
            &orphan_dom,
            "https://basphere.dev/xmlns/installation/1",
            "--key",
            "bsp",
            "--set",
            &format!("<installation>{id}</installation>"),
            "--config",
        ],
    );
    virsh(&uri, &["net-undefine", &orphan_net]);
    std::fs::write(
        &net_xml,
        net_def(&format!("<metadata>{element}</metadata>")),
    )
    .unwrap();
    virsh(&uri, &["net-define", net_xml.to_str().unwrap()]);
    let plan = bsp.json(&["admin", "reconcile", "--dry-run"]);
    let found = kinds(&plan);
    assert!(
        found.contains(&"remove_domain".to_owned()) && found.contains(&"remove_network".to_owned()),
        "{plan}"
    );
    assert!(
        libvirt_objects(&bsp).1.contains(&orphan_net),
        "dry run changed libvirt"
    );
    bsp.run(&["admin", "reconcile", "--force"]).success();
    let (domains, networks) = libvirt_objects(&bsp);
    assert!(!domains.contains(&orphan_dom) && !networks.contains(&orphan_net));
    assert_consistent(&bsp);

    // A reservation removed behind basphere's back is put back.
    let net = format!("{}-alice", bsp.prefix);
    let keep_vm = bsp.json(&["--as", "alice", "vm", "show", "keep"]);
    let host = format!(
        "<host mac='{}' ip='{}'/>",
        keep_vm["mac"].as_str().unwrap(),
        keep_vm["ip"].as_str().unwrap()
    );
    virsh(
        &uri,
        &[
            "net-update",
            &net,
            "delete",
            "ip-dhcp-host",
            &host,
            "--live",
            "--config",
        ],
    );
    assert!(!virsh(&uri, &["net-dumpxml", &net]).contains(&host));
    bsp.run(&["admin", "reconcile"])
        .success()
        .stdout_has("repair DHCP reservations");
    assert!(virsh(&uri, &["net-dumpxml", &net]).contains(&host));
    assert_consistent(&bsp);

    // Leftovers of writes that were killed: a seed's work directory and a partial image
    // copy. One whose lock is held (a write in progress) is left alone.
    let id = uuid::Uuid::new_v4().to_string();
    let work = bsp
        .data_dir()
        .join(format!("seeds/.{id}.iso.00000000000000ff.tmp"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("user-data"), b"#cloud-config\n").unwrap();
    let partial = bsp.data_dir().join("images/half.partial");
    std::fs::write(&partial, b"qcow").unwrap();
    // `-o`: flock alone holds the lock, so killing it releases the lock.
    let lock = bsp.data_dir().join("locks/image-half.lock");
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    bsp.run(&["admin", "reconcile"])
        .success()
        .stdout_has("remove leftover of an interrupted write");
    assert!(!work.exists(), "the seed work directory survived");
    assert!(
        partial.exists(),
        "a partial image being written was removed"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    bsp.run(&["admin", "reconcile"]).success();
    assert!(!partial.exists());
    assert_consistent(&bsp);

    // A VM whose domain vanished but whose disk survives is defined again.
    let keep = format!("{}.alice.keep", bsp.prefix);
    virsh(&uri, &["undefine", &keep]);
    bsp.run(&["admin", "reconcile"])
        .success()
        .stdout_has("define missing domain");
    assert_consistent(&bsp);
}

/// SIGTERM while creates run over SSH: `serve` exits within 10 s, and each create has
/// finished or rolled back, so `admin reconcile` finds nothing to repair.
#[test]
fn serve_stops_within_10_s_with_creates_in_flight() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = Bsp::with_uri(&uri);
    let alice = bsp.add_user("alice");
    bsp.add_blank_image("blank");
    let _cleanup = Cleanup::new(&bsp);
    let mut server = SshServer::start(&bsp);
    let clients: Vec<_> = (0..3)
        .map(|i| {
            server
                .ssh_command(
                    &alice,
                    "basphere",
                    &["create-vm", &format!("t{i}"), "--memory", "128M"],
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Stop while at least one create is under way.
    let started = Instant::now();
    while !bsp
        .run(&["admin", "vms", "--json"])
        .stdout
        .contains("\"creating\"")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no create started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, took) = server.terminate();
    assert!(
        status.success(),
        "serve exited with {status}: {}",
        server.log()
    );
    assert!(
        took < Duration::from_secs(10),
        "serve took {took:?} to stop"
    );
    for client in clients {
        let out = client.wait_with_output().unwrap();
        eprintln!("a create ended: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_consistent(&bsp);
}

#[test]
fn a_stopped_libvirtd_fails_fast_and_changes_nothing() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = setup(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.run(&[
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--no-start",
        "--memory",
        "128M",
    ])
    .success();
    // What a stopped libvirtd leaves: a socket file nobody listens on.
    let sock = bsp.dir.path().join("dead-libvirt-sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let dead = format!("qemu+unix:///system?socket={}", sock.display());
    let before = bsp.state();
    let commands: &[&[&str]] = &[
        &["--as", "alice", "create-vm", "web2"],
        &["--as", "alice", "vm", "list"],
        &["--as", "alice", "vm", "show", "web1"],
        &["--as", "alice", "vm", "start", "web1"],
        &["--as", "alice", "vm", "stop", "web1", "--force"],
        &["--as", "alice", "vm", "reboot", "web1"],
        &["--as", "alice", "vm", "delete", "web1", "--yes"],
        &["admin", "vms"],
        &["admin", "reconcile"],
    ];
    for args in commands {
        let mut all = vec!["--libvirt-uri", dead.as_str()];
        all.extend_from_slice(args);
        let start = Instant::now();
        bsp.run(&all)
            .code(UNAVAILABLE)
            .stderr_has(&format!("cannot connect to libvirt at `{dead}`"));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{args:?} took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(bsp.state(), before, "a failed command changed the database");
    // Commands that do not need libvirt keep working.
    bsp.run(&["--libvirt-uri", &dead, "--as", "alice", "quota"])
        .success();
    bsp.run(&["--as", "alice", "vm", "delete", "web1", "--yes"])
        .success();
}
