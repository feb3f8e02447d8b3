//! The libvirt layer against libvirt's test driver (real libvirt, state in
//! memory), and the disk and seed helpers against the real `qemu-img` and
//! `genisoimage`.
//!
//! `test:///default` is shared by every connection in the process (libvirt
//! keeps one default instance while any connection is open), and tests run
//! in parallel, so each test opens its own `test:///<file>` instance from a
//! node description that mirrors the default one: a foreign domain `test`
//! and a foreign network `default`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use basphere::virt::disk::{create_overlay, image_info};
use basphere::virt::seed::{self, SeedSpec};
use basphere::virt::{
    domain_name, network_name, DhcpHost, DomainSpec, DomainType, Hypervisor, NetworkSpec,
    PowerState, VirtError, VirtTypeSetting,
};
use uuid::Uuid;

const NODE_XML: &str = "<node>
  <domain type='test'>
    <name>test</name>
    <memory>8388608</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
  </domain>
  <network>
    <name>default</name>
    <bridge name='virbr0'/>
    <forward/>
    <ip address='192.0.2.1' netmask='255.255.255.0'/>
  </network>
</node>
";

/// A private test-driver instance (its state lives as long as the connection).
fn hv() -> Hypervisor {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    std::fs::write(&node, NODE_XML).unwrap();
    Hypervisor::open(&format!("test://{}", node.display())).expect("libvirt test driver")
}

/// The installation id the tests' objects carry, and another installation's.
const OURS: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const THEIRS: &str = "aaaabbbbccccddddeeeeffff00001111";

fn net_spec(name: &str) -> NetworkSpec<'_> {
    NetworkSpec {
        name,
        bridge: "bsp-n1",
        gateway: Ipv4Addr::new(10, 250, 1, 1),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        dhcp_start: Ipv4Addr::new(10, 250, 1, 10),
        dhcp_end: Ipv4Addr::new(10, 250, 1, 250),
        hosts: &[],
        installation: OURS,
    }
}

fn host(mac: &str, ip: [u8; 4], name: &str) -> DhcpHost {
    DhcpHost {
        mac: mac.to_string(),
        ip: Ipv4Addr::from(ip),
        name: name.to_string(),
    }
}

struct Files {
    _dir: tempfile::TempDir,
    disk: std::path::PathBuf,
    seed: std::path::PathBuf,
    /// Where the domain's snapshots are saved when it is undefined.
    snapshots: std::path::PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    let seed = dir.path().join("seed.iso");
    std::fs::write(&disk, b"").unwrap();
    std::fs::write(&seed, b"").unwrap();
    Files {
        snapshots: dir.path().join("disk.snapshots.xml"),
        _dir: dir,
        disk,
        seed,
    }
}

fn dom_spec<'a>(name: &'a str, uuid: Uuid, f: &'a Files, network: &'a str) -> DomainSpec<'a> {
    DomainSpec {
        name,
        uuid,
        domain_type: DomainType::Qemu,
        vcpus: 1,
        memory_mib: 256,
        disk_path: &f.disk,
        seed_path: &f.seed,
        network,
        mac: "52:54:00:00:00:01",
        owner: "alice",
        vm_name: "web1",
        installation: OURS,
    }
}

#[test]
fn ensure_network_is_idempotent_and_listed() {
    let hv = hv();
    let name = network_name("bsp", "alice");
    hv.ensure_network(&net_spec(&name)).unwrap();
    hv.ensure_network(&net_spec(&name)).unwrap();
    // The test driver's own "default" network is not ours.
    assert_eq!(hv.networks().unwrap(), vec![name.clone()]);

    hv.remove_network(&name, OURS).unwrap();
    assert!(hv.networks().unwrap().is_empty());
    hv.remove_network(&name, OURS).unwrap();
}

#[test]
fn ensure_network_tolerates_concurrent_callers() {
    // test:///default is one instance shared by all connections in the
    // process: real concurrency. Held open throughout, because the shared
    // instance dies with its last connection.
    let hv = Hypervisor::open("test:///default").unwrap();
    let conns: Vec<Hypervisor> = (0..8)
        .map(|_| Hypervisor::open("test:///default").unwrap())
        .collect();
    // Several rounds, since one round does not always interleave.
    for _ in 0..30 {
        let name = format!("bsp-race{}", &Uuid::new_v4().simple().to_string()[..8]);
        let barrier = std::sync::Barrier::new(conns.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = conns
                .iter()
                .map(|c| {
                    let (barrier, name) = (&barrier, &name);
                    s.spawn(move || {
                        barrier.wait();
                        c.ensure_network(&net_spec(name))
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        assert!(hv.networks().unwrap().contains(&name));
        hv.remove_network(&name, OURS).unwrap();
        assert!(!hv.networks().unwrap().contains(&name));
    }
}

#[test]
fn dhcp_hosts_add_replace_remove() {
    let hv = hv();
    let name = network_name("bsp", "alice");
    hv.ensure_network(&net_spec(&name)).unwrap();
    assert!(hv.dhcp_hosts(&name).unwrap().is_empty());

    let a = host("52:54:00:00:00:0a", [10, 250, 1, 10], "web1");
    let b = host("52:54:00:00:00:0b", [10, 250, 1, 11], "web2");
    hv.add_dhcp_host(&name, &a).unwrap();
    hv.add_dhcp_host(&name, &b).unwrap();
    hv.add_dhcp_host(&name, &a).unwrap(); // again: no duplicate, no error
    assert_eq!(hv.dhcp_hosts(&name).unwrap(), vec![a.clone(), b.clone()]);

    // A stale entry holding the same IP under another MAC is replaced...
    let a2 = host("52:54:00:00:00:aa", [10, 250, 1, 10], "web1");
    hv.add_dhcp_host(&name, &a2).unwrap();
    assert_eq!(hv.dhcp_hosts(&name).unwrap(), vec![b.clone(), a2.clone()]);
    // ...and so is one holding the same MAC with another IP; an entry that
    // clashes on both (a2's IP, b's MAC) replaces both.
    let c = host("52:54:00:00:00:0b", [10, 250, 1, 10], "web3");
    hv.add_dhcp_host(&name, &c).unwrap();
    assert_eq!(hv.dhcp_hosts(&name).unwrap(), vec![c.clone()]);

    hv.remove_dhcp_host(&name, &c).unwrap();
    assert!(hv.dhcp_hosts(&name).unwrap().is_empty());
    hv.remove_dhcp_host(&name, &c).unwrap(); // missing entry
    hv.remove_dhcp_host("bsp-nobody", &c).unwrap(); // missing network

    let err = hv.add_dhcp_host("bsp-nobody", &c).unwrap_err();
    assert!(err.to_string().contains("`bsp-nobody`"), "{err}");
}

#[test]
fn domain_lifecycle() {
    let hv = hv();
    let f = files();
    let name = domain_name("bsp", "alice", "web1");
    let uuid = Uuid::new_v4();
    let net = network_name("bsp", "alice");
    hv.ensure_network(&net_spec(&net)).unwrap();

    assert_eq!(hv.power_state(uuid).unwrap(), None);
    hv.define_domain(&dom_spec(&name, uuid, &f, &net)).unwrap();
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::ShutOff));

    hv.start(uuid).unwrap();
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::Running));
    let err = hv.start(uuid).unwrap_err();
    assert!(matches!(err, VirtError::Libvirt { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("`{name}`")), "{err}");

    hv.reboot(uuid).unwrap();
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::Running));

    hv.shutdown(uuid).unwrap();
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::ShutOff));

    hv.start(uuid).unwrap();
    hv.destroy(uuid).unwrap();
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::ShutOff));
    hv.destroy(uuid).unwrap(); // already stopped

    hv.start(uuid).unwrap();
    hv.undefine(uuid, OURS, &f.snapshots).unwrap(); // running: destroyed first
    assert_eq!(hv.power_state(uuid).unwrap(), None);
    assert!(
        !f.snapshots.exists(),
        "a domain without snapshots saves none"
    );
    hv.undefine(uuid, OURS, &f.snapshots).unwrap(); // missing
}

#[test]
fn domains_lists_only_basphere_domains() {
    let hv = hv();
    let f = files();
    let net = network_name("bsp", "alice");
    hv.ensure_network(&net_spec(&net)).unwrap();
    // The test driver ships a domain called "test"; it must not show up.
    let a = (domain_name("bsp", "alice", "a"), Uuid::new_v4());
    let b = (domain_name("bsp", "alice", "b"), Uuid::new_v4());
    hv.define_domain(&dom_spec(&b.0, b.1, &f, &net)).unwrap();
    hv.define_domain(&dom_spec(&a.0, a.1, &f, &net)).unwrap();
    hv.start(b.1).unwrap();

    let list = hv.domains().unwrap();
    let got: Vec<(&str, Uuid, PowerState)> = list
        .iter()
        .map(|d| (d.name.as_str(), d.uuid, d.state))
        .collect();
    assert_eq!(
        got,
        vec![
            (a.0.as_str(), a.1, PowerState::ShutOff),
            (b.0.as_str(), b.1, PowerState::Running),
        ]
    );

    // One owner's domains; `alice` must not match `alice2`.
    let c = (domain_name("bsp", "alice2", "c"), Uuid::new_v4());
    hv.define_domain(&dom_spec(&c.0, c.1, &f, &net)).unwrap();
    let names: Vec<String> = hv
        .domains_of("alice")
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, [a.0.clone(), b.0.clone()]);
    assert_eq!(hv.domains_of("alice2").unwrap().len(), 1);
    assert_eq!(hv.domains().unwrap().len(), 3);
}

#[test]
fn domains_scales_to_hundreds() {
    let hv = hv();
    let f = files();
    let net = network_name("bsp", "alice");
    hv.ensure_network(&net_spec(&net)).unwrap();
    let names: Vec<String> = (0..500)
        .map(|i| domain_name("bsp", "load", &format!("vm{i:03}")))
        .collect();
    for name in &names {
        hv.define_domain(&dom_spec(name, Uuid::new_v4(), &f, &net))
            .unwrap();
    }
    let started = Instant::now();
    let list = hv.domains().unwrap();
    let took = started.elapsed();
    assert_eq!(list.len(), 500);
    assert!(took < Duration::from_secs(1), "domains() took {took:?}");
}

#[test]
fn undefine_of_a_missing_domain_is_ok() {
    let hv = hv();
    let f = files();
    hv.undefine(Uuid::new_v4(), OURS, &f.snapshots).unwrap();
    assert_eq!(hv.power_state(Uuid::new_v4()).unwrap(), None);
    let err = hv.start(Uuid::new_v4()).unwrap_err();
    assert!(err.to_string().contains("no such domain"), "{err}");
}

/// A domain with snapshots once lost them with its definition: `undefine` passed
/// libvirt's "snapshots metadata" flag and kept nothing. Now their XML is written beside
/// the disk first, and defined again with the domain, names and times as they were.
#[test]
fn undefine_keeps_snapshots_beside_the_disk_and_they_come_back() {
    let hv = hv();
    let f = files();
    let name = domain_name("bsp", "alice", "web1");
    let uuid = Uuid::new_v4();
    hv.define_domain(&dom_spec(&name, uuid, &f, "")).unwrap();
    hv.start(uuid).unwrap();
    hv.create_snapshot(uuid, "first", "before the upgrade")
        .unwrap();
    hv.create_snapshot(uuid, "second", "").unwrap();
    let before = hv.snapshots(uuid).unwrap();
    assert_eq!(before.len(), 2);

    hv.undefine(uuid, OURS, &f.snapshots).unwrap();
    assert_eq!(hv.power_state(uuid).unwrap(), None);
    assert_eq!(
        basphere::virt::snapshot::saved_snapshots(&f.snapshots).unwrap(),
        ["first", "second"]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&f.snapshots).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    hv.define_domain(&dom_spec(&name, uuid, &f, "")).unwrap();
    assert!(
        hv.snapshots(uuid).unwrap().is_empty(),
        "libvirt forgot them"
    );
    assert_eq!(hv.restore_snapshots(uuid, &f.snapshots).unwrap(), 2);
    assert_eq!(hv.snapshots(uuid).unwrap(), before);
    assert!(!f.snapshots.exists(), "the saved XML is gone once used");
    hv.revert_snapshot(uuid, "first").unwrap();
    // Nothing saved: nothing to do.
    assert_eq!(hv.restore_snapshots(uuid, &f.snapshots).unwrap(), 0);

    // Undefined again, a second save keeps what the first saved and the domain lost.
    hv.undefine(uuid, OURS, &f.snapshots).unwrap();
    hv.define_domain(&dom_spec(&name, uuid, &f, "")).unwrap();
    hv.create_snapshot(uuid, "third", "").unwrap();
    hv.undefine(uuid, OURS, &f.snapshots).unwrap();
    assert_eq!(
        basphere::virt::snapshot::saved_snapshots(&f.snapshots).unwrap(),
        ["first", "second", "third"]
    );
}

/// Objects another installation made (same prefix, same libvirtd) are never used,
/// changed or removed.
#[test]
fn another_installations_objects_are_refused() {
    let hv = hv();
    let f = files();
    let net = network_name("bsp", "alice");
    let theirs = NetworkSpec {
        installation: THEIRS,
        ..net_spec(&net)
    };
    hv.ensure_network(&theirs).unwrap();
    let err = hv.ensure_network(&net_spec(&net)).unwrap_err();
    assert!(matches!(err, VirtError::NotOurs { .. }), "{err:?}");
    assert!(err.to_string().contains(THEIRS), "{err}");
    assert!(hv.remove_network(&net, OURS).is_err());
    assert!(hv.stamp_network(&net, OURS).is_err());
    assert_eq!(
        hv.network_installations().unwrap(),
        [(net.clone(), Some(THEIRS.to_owned()))]
    );

    let name = domain_name("bsp", "alice", "web1");
    let uuid = Uuid::new_v4();
    let spec = DomainSpec {
        installation: THEIRS,
        ..dom_spec(&name, uuid, &f, "")
    };
    hv.define_domain(&spec).unwrap();
    hv.start(uuid).unwrap();
    let err = hv.undefine(uuid, OURS, &f.snapshots).unwrap_err();
    assert!(matches!(err, VirtError::NotOurs { .. }), "{err:?}");
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::Running));
    assert!(hv.stamp_domain(uuid, OURS).is_err());
    let found = hv.domain_installations().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.as_deref(), Some(THEIRS));
    hv.undefine(uuid, THEIRS, &f.snapshots).unwrap();
    hv.remove_network(&net, THEIRS).unwrap();
}

/// Objects defined before ids existed carry none until stamped, running or not; the
/// running network and guest are not disturbed.
#[test]
fn objects_without_an_id_are_stamped_once() {
    // The shared instance, so that a raw connection sees the same objects.
    let hv = Hypervisor::open("test:///default").unwrap();
    let raw = virt::connect::Connect::open(Some("test:///default")).unwrap();
    let owner = format!("u{}", &Uuid::new_v4().simple().to_string()[..8]);
    let without_id = |xml: String| {
        let start = xml.find("<bsp:installation").unwrap();
        let end = xml.find("</bsp:installation>").unwrap() + "</bsp:installation>".len();
        format!("{}{}", &xml[..start], &xml[end..])
    };

    let net = network_name("bsp", &owner);
    let bridge = format!("b{}", &owner[1..]);
    let spec = NetworkSpec {
        bridge: &bridge,
        ..net_spec(&net)
    };
    let xml = without_id(basphere::virt::xml::network_xml(&spec).unwrap());
    // Defined, not started: the test driver shows a running network's live definition
    // only, where a stamp appears at its next start (libvirtd shows the persistent one).
    let defined = raw.define_network_xml(&xml).unwrap();
    let listed = |hv: &Hypervisor| {
        let all = hv.network_installations().unwrap();
        all.into_iter().find(|(n, _)| *n == net).unwrap().1
    };
    assert_eq!(listed(&hv), None);
    hv.stamp_network(&net, OURS).unwrap();
    assert_eq!(listed(&hv).as_deref(), Some(OURS));
    hv.stamp_network(&net, OURS).unwrap(); // once is enough; again changes nothing
    assert!(hv.stamp_network(&net, THEIRS).is_err());
    defined.create().unwrap();
    assert_eq!(
        listed(&hv).as_deref(),
        Some(OURS),
        "started, it keeps the id"
    );
    let hosts = hv.dhcp_hosts(&net).unwrap();
    assert!(hosts.is_empty(), "{hosts:?}");

    let f = files();
    let name = domain_name("bsp", &owner, "web1");
    let uuid = Uuid::new_v4();
    let xml = without_id(basphere::virt::xml::domain_xml(&dom_spec(&name, uuid, &f, "")).unwrap());
    raw.define_domain_xml(&xml).unwrap();
    hv.start(uuid).unwrap();
    let of = |hv: &Hypervisor| {
        let all = hv.domain_installations().unwrap();
        all.into_iter().find(|(d, _)| d.uuid == uuid).unwrap().1
    };
    assert_eq!(of(&hv), None);
    hv.stamp_domain(uuid, OURS).unwrap();
    assert_eq!(of(&hv).as_deref(), Some(OURS));
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::Running));
    assert!(hv.stamp_domain(uuid, THEIRS).is_err());

    hv.undefine(uuid, OURS, &f.snapshots).unwrap();
    hv.remove_network(&net, OURS).unwrap();
}

#[test]
fn shared_default_test_driver_works_too() {
    let hv = Hypervisor::open("test:///default").unwrap();
    assert_eq!(hv.uri(), "test:///default");
    // The test driver offers no kvm: auto falls back to qemu, kvm is refused.
    assert_eq!(
        hv.domain_type(VirtTypeSetting::Auto).unwrap(),
        DomainType::Qemu
    );
    // Shared with other connections in this process: use names nobody else does.
    let f = files();
    let uuid = Uuid::new_v4();
    let name = domain_name("bsp", "shared", &uuid.simple().to_string());
    hv.define_domain(&dom_spec(&name, uuid, &f, "default"))
        .unwrap();
    hv.start(uuid).unwrap();
    assert!(hv
        .domains()
        .unwrap()
        .iter()
        .any(|d| d.uuid == uuid && d.state == PowerState::Running));
    hv.undefine(uuid, OURS, &f.snapshots).unwrap();
    assert!(hv.domains().unwrap().iter().all(|d| d.uuid != uuid));
}

#[test]
fn domain_type_on_the_test_driver() {
    let hv = hv();
    // The test driver offers no kvm: auto falls back to qemu, kvm is refused.
    assert_eq!(
        hv.domain_type(VirtTypeSetting::Auto).unwrap(),
        DomainType::Qemu
    );
    assert_eq!(
        hv.domain_type(VirtTypeSetting::Qemu).unwrap(),
        DomainType::Qemu
    );
    let err = hv.domain_type(VirtTypeSetting::Kvm).unwrap_err();
    assert!(err.to_string().contains("kvm"), "{err}");
}

#[test]
fn unreachable_libvirt_fails_fast_and_names_the_uri() {
    let uri = "qemu+unix:///system?socket=/nonexistent/sock";
    let started = Instant::now();
    let err = Hypervisor::open(uri).unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "open took {took:?}");
    assert!(matches!(err, VirtError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot connect to libvirt at `{uri}`: ")),
        "{msg}"
    );
}

// ---- disks --------------------------------------------------------------

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn overlay_on_a_base_leaves_the_base_alone() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    let before = std::fs::read(&base).unwrap();
    let mtime = std::fs::metadata(&base).unwrap().modified().unwrap();

    let info = image_info(&base).unwrap();
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, 64 << 20);
    assert_eq!(info.backing_file, None);

    let overlay = dir.path().join("vm.qcow2");
    create_overlay(&base, &overlay, 1 << 30).unwrap();
    // Private whatever this process's umask: QEMU gets it from libvirt, not from its mode.
    assert_eq!(mode(&overlay), 0o600);
    let info = image_info(&overlay).unwrap();
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, 1 << 30);
    let canonical = base.canonicalize().unwrap();
    assert_eq!(info.backing_file.as_deref(), canonical.to_str());

    assert_eq!(std::fs::read(&base).unwrap(), before);
    assert_eq!(std::fs::metadata(&base).unwrap().modified().unwrap(), mtime);

    // Never clobber an existing disk.
    let err = create_overlay(&base, &overlay, 1 << 30).unwrap_err();
    assert!(matches!(err, VirtError::Io { .. }), "{err:?}");
}

#[test]
fn relative_base_is_recorded_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    let cwd = std::env::current_dir().unwrap();
    let rel = pathdiff(&base, &cwd);
    let overlay = dir.path().join("vm.qcow2");
    create_overlay(&rel, &overlay, 32 << 20).unwrap();
    let backing = image_info(&overlay).unwrap().backing_file.unwrap();
    assert!(Path::new(&backing).is_absolute(), "{backing}");
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `target` relative to `from` (both absolute), with `..` as needed.
fn pathdiff(target: &Path, from: &Path) -> std::path::PathBuf {
    let t: Vec<_> = target.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut p = std::path::PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    p
}

#[test]
fn tool_errors_name_the_tool_and_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let not_an_image = dir.path().join("missing.qcow2");
    let err = image_info(&not_an_image).unwrap_err();
    let VirtError::Tool { tool, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(tool, "qemu-img");
    assert!(message.contains("missing.qcow2"), "{message}");
    assert!(err.to_string().starts_with("`qemu-img` failed: "), "{err}");

    // A base that is not qcow2: qemu-img refuses (-F qcow2), and says so.
    let raw = dir.path().join("raw.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let err = create_overlay(&raw, &dir.path().join("vm.qcow2"), 1 << 30).unwrap_err();
    assert!(
        matches!(&err, VirtError::Tool { tool, .. } if tool == "qemu-img"),
        "{err:?}"
    );
    assert!(
        !dir.path().join("vm.qcow2").exists(),
        "a failed create left its disk"
    );
}

// ---- seeds --------------------------------------------------------------

#[test]
fn seed_iso_is_cidata_with_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("seed.iso");
    let keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI alice@laptop".to_string()];
    let (meta, user) = seed::render(&SeedSpec {
        instance_id: "i-0001",
        hostname: "web1",
        os_user: "ubuntu",
        ssh_keys: &keys,
    })
    .unwrap();
    seed::write_seed(&iso, &meta, &user).unwrap();
    assert_eq!(mode(&iso), 0o600);

    let bytes = std::fs::read(&iso).unwrap();
    // Primary volume descriptor at 32768: type 1, "CD001", volume id at +40.
    assert_eq!(&bytes[32768..32774], b"\x01CD001");
    let volid = std::str::from_utf8(&bytes[32808..32840]).unwrap();
    assert_eq!(volid.trim_end(), "cidata");

    let out = Command::new("isoinfo")
        .args(["-f", "-R", "-i"])
        .arg(&iso)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listing: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    listing.sort();
    assert_eq!(listing, vec!["/meta-data", "/user-data"]);

    let out = Command::new("isoinfo")
        .args(["-R", "-x", "/user-data", "-i"])
        .arg(&iso)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), user);

    // Rewriting replaces the seed, and no work directory is left behind.
    seed::write_seed(&iso, &meta, "#cloud-config\n").unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("seed.iso")]);
}
