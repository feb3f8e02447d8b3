//! `admin reconcile` never destroys what it does not know: not without a database, not
//! another installation's objects, not many objects at once without `--force`, and never
//! the snapshots of a domain it undefines. Installations run through the real
//! dispatcher in this process, on libvirt's `test:///default` driver, whose state lives
//! while this process holds a connection to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use basphere::config::{Config, Overrides};
use basphere::context::Caller;
use basphere::virt::{DomainSpec, DomainType, Hypervisor, PowerState};
use serde_json::Value;
use uuid::Uuid;

use crate::fixtures::dispatch::{run, Ran};
use crate::fixtures::{bin, unique};

const ROOT: Caller = Caller::Local { uid: 0 };
const USAGE: i32 = 2;
const CONFLICT: i32 = 6;

/// One installation: a data directory and a configuration, on the shared test driver.
struct Site {
    dir: tempfile::TempDir,
    config: Arc<Config>,
    prefix: String,
}

/// A name prefix of this process's own, at most 8 characters.
fn prefix() -> String {
    format!("r{:04}{:02}", std::process::id() % 10_000, unique() % 100)
}

fn config(prefix: &str, data: &Path) -> Arc<Config> {
    let env: BTreeMap<String, String> = [
        ("BASPHERE_CONFIG", "/dev/null".to_owned()),
        ("BASPHERE_DATA_DIR", data.display().to_string()),
        ("BASPHERE_LIBVIRT_URI", "test:///default".to_owned()),
        ("BASPHERE_VIRT_TYPE", "qemu".to_owned()),
        ("BASPHERE_NAME_PREFIX", prefix.to_owned()),
        ("BASPHERE_NETWORK_POOL", "10.231.0.0/16".to_owned()),
        ("BASPHERE_PUBLIC_HOST", "bastion.test".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Arc::new(Config::load(&Overrides::default(), &env).unwrap())
}

fn run_with(config: &Arc<Config>, argv: &[&str]) -> Ran {
    run(config, &ROOT, argv)
}

impl Site {
    /// An initialised installation with the name prefix `prefix`, and nothing in it.
    fn empty(prefix: &str) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("bsp-rec-")
            .tempdir()
            .unwrap();
        let site = Site {
            config: config(prefix, &dir.path().join("data")),
            dir,
            prefix: prefix.to_owned(),
        };
        site.ok(&["admin", "init", "--database-only"]);
        site
    }

    /// Alice, an image, her running VM `web1` with snapshot `snap1`, and `web2`, stopped.
    fn with_vms(prefix: &str) -> Site {
        let site = Site::empty(prefix);
        let key = bin::keygen(site.dir.path(), "alice", "ed25519", None);
        let key = bin::public_key(&key);
        site.ok(&[
            "admin",
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.com",
            "--key",
            &key,
        ]);
        let image = site.dir.path().join("tiny.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("16M")
            .status()
            .unwrap();
        assert!(made.success(), "qemu-img create failed");
        let image = image.display().to_string();
        site.ok(&[
            "admin",
            "image",
            "add",
            "blank",
            &image,
            "--os-user",
            "debian",
        ]);
        for (vm, start) in [("web1", true), ("web2", false)] {
            let mut argv = vec![
                "--as",
                "alice",
                "create-vm",
                vm,
                "--memory",
                "128M",
                "--disk",
                "1G",
            ];
            if !start {
                argv.push("--no-start");
            }
            site.ok(&argv);
        }
        site.ok(&["--as", "alice", "snapshot", "create", "web1", "snap1"]);
        site
    }

    fn run(&self, argv: &[&str]) -> Ran {
        run_with(&self.config, argv)
    }

    #[track_caller]
    fn ok(&self, argv: &[&str]) -> Ran {
        let ran = self.run(argv);
        assert_eq!(
            ran.code,
            0,
            "`{}` failed:\nstdout: {}\nstderr: {}",
            argv.join(" "),
            ran.stdout,
            ran.stderr
        );
        ran
    }

    #[track_caller]
    fn json(&self, argv: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(argv);
        let ran = self.ok(&all);
        serde_json::from_str(&ran.stdout).unwrap()
    }

    fn installation(&self) -> String {
        let done = self.json(&["admin", "init", "--database-only"]);
        assert_eq!(done["created"], false);
        done["installation"].as_str().unwrap().to_owned()
    }

    fn hypervisor(&self) -> Hypervisor {
        Hypervisor::open("test:///default")
            .unwrap()
            .with_prefix(&self.prefix)
    }

    /// libvirt's domains and networks with this prefix, names sorted, with power states.
    fn libvirt(&self) -> (Vec<(String, PowerState)>, Vec<String>) {
        let hv = self.hypervisor();
        let domains = hv.domains().unwrap();
        let domains = domains.into_iter().map(|d| (d.name, d.state)).collect();
        (domains, hv.networks().unwrap())
    }

    fn vm(&self, name: &str) -> Value {
        self.json(&["--as", "alice", "vm", "show", name])
    }

    fn snapshots(&self, vm: &str) -> Vec<String> {
        let list = self.json(&["--as", "alice", "snapshot", "list", vm]);
        let names = list.as_array().unwrap().iter();
        names
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A domain with this prefix that no row explains, carrying `installation`.
    fn plant_domain(&self, owner: &str, vm: &str, installation: &str) -> Uuid {
        let uuid = Uuid::new_v4();
        let name = format!("{}.{owner}.{vm}", self.prefix);
        let disk = self.dir.path().join("planted.qcow2");
        let spec = DomainSpec {
            name: &name,
            uuid,
            domain_type: DomainType::Qemu,
            vcpus: 1,
            memory_mib: 128,
            disk_path: &disk,
            seed_path: &disk,
            network: "",
            mac: "52:54:00:ff:ff:01",
            owner,
            vm_name: vm,
            installation,
        };
        self.hypervisor().define_domain(&spec).unwrap();
        uuid
    }
}

fn kinds(plan: &Value) -> Vec<String> {
    let repairs = plan["repairs"].as_array().unwrap().iter();
    repairs
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// `admin reconcile --data-dir EMPTY` (a typo, a volume not mounted yet) made a fresh
/// database there and then undefined every domain and removed every network with the
/// prefix, powering the VMs off. Now it stops before touching anything.
#[test]
fn reconcile_on_a_data_dir_without_a_database_fails_and_changes_nothing() {
    let _keep = Hypervisor::open("test:///default").unwrap();
    let site = Site::with_vms(&prefix());
    let before = site.libvirt();
    assert_eq!(before.0.len(), 2, "{before:?}");
    assert_eq!(before.0[0].1, PowerState::Running);
    assert_eq!(before.1.len(), 1);

    let empty: PathBuf = site.dir.path().join("empty");
    let elsewhere = config(&site.prefix, &empty);
    // Any command used to make a database there (a boot-time prune, say), and the
    // reconcile after it took every domain for an orphan.
    for argv in [
        &["admin", "vms"][..],
        &["--as", "alice", "vm", "list"],
        &["admin", "reconcile"],
        &["admin", "reconcile", "--force"],
        &["admin", "reconcile", "--dry-run"],
    ] {
        let ran = run_with(&elsewhere, argv);
        assert_eq!(ran.code, 1, "{argv:?}: {}", ran.stderr);
        assert!(
            ran.stderr
                .contains(&format!("no basphere database at `{}`", empty.display())),
            "{argv:?}: {}",
            ran.stderr
        );
        assert!(
            ran.stderr.contains("basphere admin init --database-only"),
            "{}",
            ran.stderr
        );
        assert!(!empty.exists(), "{argv:?} made the data directory");
    }
    assert_eq!(site.libvirt(), before, "libvirt changed");
    // Read-only views need no database.
    assert_eq!(run_with(&elsewhere, &["config"]).code, 0);
    assert!(!empty.exists());

    // Only `admin init --database-only` makes one, and says what it made.
    let ran = run_with(&elsewhere, &["admin", "init"]);
    assert_eq!(ran.code, USAGE, "{}", ran.stderr);
    assert!(ran.stderr.contains("--database-only"), "{}", ran.stderr);
    assert!(!empty.exists());
    let ran = run_with(&elsewhere, &["admin", "init", "--database-only"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.contains("created the basphere database"),
        "{}",
        ran.stdout
    );
    assert!(empty.join("basphere.db").exists());
    // Even then, its reconcile leaves the first installation's objects alone.
    let ran = run_with(&elsewhere, &["admin", "reconcile"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(site.libvirt(), before, "libvirt changed");
}

/// A second installation (its own data directory, the same prefix and libvirtd) once
/// took the first's domains and networks for orphans and removed them.
#[test]
fn a_second_installation_leaves_the_firsts_objects_alone() {
    let _keep = Hypervisor::open("test:///default").unwrap();
    let prefix = prefix();
    let first = Site::with_vms(&prefix);
    let second = Site::empty(&prefix);
    let (a, b) = (first.installation(), second.installation());
    assert_ne!(a, b);
    // One made by hand, with the prefix but no id: nobody's to remove.
    first.plant_domain("hand", "made", "");
    let before = first.libvirt();

    let plan = second.json(&["admin", "reconcile"]);
    assert_eq!(plan["installation"], b.as_str());
    assert_eq!(kinds(&plan), Vec::<String>::new(), "{plan}");
    let mut alone: Vec<(String, String, Value)> = plan["left_alone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let (object, name) = (f["object"].as_str().unwrap(), f["name"].as_str().unwrap());
            (
                object.to_owned(),
                name.to_owned(),
                f["installation"].clone(),
            )
        })
        .collect();
    alone.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    let ours = Value::from(a.as_str());
    assert_eq!(
        alone,
        [
            (
                "domain".into(),
                format!("{prefix}.alice.web1"),
                ours.clone()
            ),
            (
                "domain".into(),
                format!("{prefix}.alice.web2"),
                ours.clone()
            ),
            ("domain".into(), format!("{prefix}.hand.made"), Value::Null),
            ("network".into(), format!("{prefix}-alice"), ours),
        ]
    );
    assert_eq!(
        first.libvirt(),
        before,
        "the second installation changed libvirt"
    );
    let ran = second.ok(&["admin", "reconcile", "--dry-run"]);
    assert!(ran.stdout.contains("nothing to repair"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains(&format!("installation {a}")),
        "{}",
        ran.stdout
    );

    // The first judges only its own, and leaves the hand-made one alone too.
    let plan = first.json(&["admin", "reconcile"]);
    assert_eq!(kinds(&plan), Vec::<String>::new(), "{plan}");
    let alone = plan["left_alone"].as_array().unwrap();
    assert_eq!(alone.len(), 1, "{plan}");
    assert_eq!(alone[0]["name"], format!("{prefix}.hand.made"));
    assert_eq!(first.libvirt(), before);
    assert_eq!(first.snapshots("web1"), ["snap1"]);

    // Nor does the second use the first's network for a VM of its own.
    let key = bin::keygen(second.dir.path(), "alice", "ed25519", None);
    let key = bin::public_key(&key);
    second.ok(&[
        "admin",
        "user",
        "add",
        "alice",
        "--email",
        "a@example.com",
        "--key",
        &key,
    ]);
    let image = first.dir.path().join("tiny.qcow2");
    second.ok(&[
        "admin",
        "image",
        "add",
        "blank",
        image.to_str().unwrap(),
        "--os-user",
        "debian",
    ]);
    let ran = second.run(&["--as", "alice", "create-vm", "web3", "--memory", "128M"]);
    assert_eq!(ran.code, CONFLICT, "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "network `{prefix}-alice` belongs to another basphere installation"
        )),
        "{}",
        ran.stderr
    );
    assert_eq!(first.libvirt(), before);
}

/// A plan that removes many objects, or more than it keeps, is what a wrong database
/// or a wrong libvirt looks like: it is printed, and applied only with `--force`.
#[test]
fn a_plan_with_four_removals_needs_force() {
    let _keep = Hypervisor::open("test:///default").unwrap();
    let site = Site::with_vms(&prefix());
    let id = site.installation();
    let planted: Vec<Uuid> = (0..4)
        .map(|i| site.plant_domain("ghost", &format!("vm{i}"), &id))
        .collect();
    let before = site.libvirt();
    assert_eq!(before.0.len(), 6);

    let ran = site.run(&["admin", "reconcile"]);
    assert_eq!(ran.code, CONFLICT, "{}", ran.stderr);
    assert_eq!(
        ran.stdout.matches("remove orphan domain").count(),
        4,
        "{}",
        ran.stdout
    );
    assert_eq!(
        ran.stdout.matches("needs --force").count(),
        4,
        "{}",
        ran.stdout
    );
    assert!(ran.stderr.contains("nothing was changed"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("admin reconcile --force"),
        "{}",
        ran.stderr
    );
    assert_eq!(site.libvirt(), before, "a refused plan changed libvirt");

    let plan = site.json(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(plan["removals"], 4);
    assert_eq!(plan["kept"], 3, "two VMs and a network");
    assert_eq!(plan["needs_force"], true);
    assert_eq!(plan["applied"], false);
    let ran = site.run(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(ran.code, 0);
    assert!(ran.stderr.contains("needs --force"), "{}", ran.stderr);
    assert_eq!(site.libvirt(), before);

    let plan = site.json(&["admin", "reconcile", "--force"]);
    assert_eq!(plan["applied"], true);
    let hv = site.hypervisor();
    for uuid in planted {
        assert_eq!(hv.power_state(uuid).unwrap(), None);
    }
    assert_eq!(site.libvirt().0, before.0[..2], "the VMs stay");
    let plan = site.json(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(kinds(&plan), Vec::<String>::new(), "{plan}");

    // One removal, and nothing kept: more removals than objects kept.
    let bare = Site::empty(&prefix());
    let id = bare.installation();
    bare.plant_domain("ghost", "vm", &id);
    let ran = bare.run(&["admin", "reconcile"]);
    assert_eq!(ran.code, CONFLICT, "{}", ran.stderr);
    assert_eq!(bare.libvirt().0.len(), 1);
    bare.ok(&["admin", "reconcile", "--force"]);
    assert!(bare.libvirt().0.is_empty());
}

/// Undefining a domain dropped its snapshots' metadata, so the reconcile that defined it
/// again from its disk left snapshots libvirt no longer knew, and the next one forgot
/// their rows. Now their XML waits beside the disk and comes back with the domain.
#[test]
fn snapshots_come_back_when_a_domain_is_defined_again() {
    let _keep = Hypervisor::open("test:///default").unwrap();
    let site = Site::with_vms(&prefix());
    site.ok(&["--as", "alice", "snapshot", "create", "web1", "snap2"]);
    let id = site.installation();
    let web1 = site.vm("web1");
    let uuid = Uuid::parse_str(web1["id"].as_str().unwrap()).unwrap();
    let hv = site.hypervisor();
    let live = hv.snapshots(uuid).unwrap();
    assert_eq!(live.len(), 2);
    let disk = site
        .config
        .data_dir
        .join("disks")
        .join(format!("{uuid}.qcow2"));
    let saved = site
        .config
        .data_dir
        .join("disks")
        .join(format!("{uuid}.snapshots.xml"));

    // basphere's own undefine, as `admin reconcile` does for a domain it removes.
    hv.undefine(uuid, &id, &saved).unwrap();
    assert!(disk.exists() && saved.exists());
    let plan = site.json(&["admin", "reconcile"]);
    assert_eq!(kinds(&plan), ["redefine"], "{plan}");
    assert_eq!(hv.snapshots(uuid).unwrap(), live);
    assert!(!saved.exists());
    let plan = site.json(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(kinds(&plan), Vec::<String>::new(), "{plan}");
    assert_eq!(site.snapshots("web1"), ["snap1", "snap2"]);
    site.ok(&[
        "--as", "alice", "snapshot", "restore", "web1", "snap1", "--yes",
    ]);

    // Defined again without them (a restore cut short, say): the saved XML is used,
    // and no snapshot row is forgotten.
    hv.undefine(uuid, &id, &saved).unwrap();
    let (disk, seed) = (
        disk.clone(),
        site.config
            .data_dir
            .join("seeds")
            .join(format!("{uuid}.iso")),
    );
    let spec = DomainSpec {
        name: web1["domain"].as_str().unwrap(),
        uuid,
        domain_type: DomainType::Qemu,
        vcpus: 1,
        memory_mib: 128,
        disk_path: &disk,
        seed_path: &seed,
        network: &format!("{}-alice", site.prefix),
        mac: web1["mac"].as_str().unwrap(),
        owner: "alice",
        vm_name: "web1",
        installation: &id,
    };
    hv.define_domain(&spec).unwrap();
    let plan = site.json(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(kinds(&plan), ["restore_snapshots"], "{plan}");
    site.ok(&["admin", "reconcile"]);
    assert_eq!(hv.snapshots(uuid).unwrap(), live);
    let plan = site.json(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(kinds(&plan), Vec::<String>::new(), "{plan}");
    assert_eq!(site.snapshots("web1"), ["snap1", "snap2"]);

    // Deleting the VM deletes its disk, and the saved XML with it.
    hv.undefine(uuid, &id, &saved).unwrap();
    assert!(saved.exists());
    site.ok(&["--as", "alice", "vm", "delete", "web1", "--yes"]);
    assert!(!saved.exists() && !disk.exists());
}

/// Domains defined before installation ids existed carry none; reconcile gives those
/// its rows explain this installation's id, once, without touching the guest.
#[test]
fn domains_from_before_installation_ids_are_stamped_once() {
    let _keep = Hypervisor::open("test:///default").unwrap();
    let site = Site::with_vms(&prefix());
    let id = site.installation();
    let uuid = Uuid::parse_str(site.vm("web1")["id"].as_str().unwrap()).unwrap();
    // What an older basphere defined: the same domain, without the element.
    let raw = virt::connect::Connect::open(Some("test:///default")).unwrap();
    let dom = raw.lookup_domain_by_uuid(uuid).unwrap();
    dom.set_metadata(
        virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        None,
        None,
        Some(basphere::virt::INSTALLATION_NS),
        virt::sys::VIR_DOMAIN_AFFECT_CONFIG | virt::sys::VIR_DOMAIN_AFFECT_LIVE,
    )
    .unwrap();
    let of = |hv: &Hypervisor| {
        let all = hv.domain_installations().unwrap();
        all.into_iter().find(|(d, _)| d.uuid == uuid).unwrap().1
    };
    let hv = site.hypervisor();
    assert_eq!(of(&hv), None);

    let plan = site.json(&["admin", "reconcile"]);
    assert_eq!(kinds(&plan), ["stamp_domain"], "{plan}");
    assert_eq!(of(&hv), Some(id));
    assert_eq!(hv.power_state(uuid).unwrap(), Some(PowerState::Running));
    let plan = site.json(&["admin", "reconcile", "--dry-run"]);
    assert_eq!(kinds(&plan), Vec::<String>::new(), "{plan}");
}
