//! Administrators who are not root, as real Unix accounts: a member of the admin group
//! reaches the service account's private database through the sudoers rule basphere
//! ships (installed for the test in the host's /etc/sudoers.d), and is audited as
//! itself; strangers, and tenants whose environment names a sudo caller, are not
//! administrators. And `admin adopt`, which moves a root-owned installation to the
//! service account.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::bin::{Bsp, BIN};
use crate::fixtures::unique;

const TEMPLATE: &str = include_str!("../../templates/sudoers/basphere");

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

/// Unix accounts and a sudoers drop-in made for one test, removed when it ends.
struct Host {
    service: String,
    group: String,
    member: String,
    stranger: String,
    sudoers: PathBuf,
}

impl Host {
    /// Names for a service account, an admin group with one member, and an account in
    /// no group, none of which exist yet; whatever of them exists at the end is removed.
    fn named() -> Host {
        assert!(
            nix::unistd::getuid().is_root(),
            "these tests make Unix accounts: run them as root (scripts/test does)"
        );
        let n = format!("{}{}", std::process::id() % 100_000, unique());
        Host {
            service: format!("bspsvc{n}"),
            group: format!("bspadm{n}"),
            member: format!("bspmem{n}"),
            stranger: format!("bspout{n}"),
            sudoers: PathBuf::from(format!("/etc/sudoers.d/basphere-test-{n}")),
        }
    }

    /// Those accounts, made.
    fn new() -> Host {
        let host = Host::named();
        sh("groupadd", &[&host.group]);
        for (name, groups) in [
            (&host.service, ""),
            (&host.member, host.group.as_str()),
            (&host.stranger, ""),
        ] {
            let mut args = vec!["--no-create-home", "--shell", "/bin/sh"];
            if !groups.is_empty() {
                args.extend(["--groups", groups]);
            }
            args.push(name);
            sh("useradd", &args);
        }
        host
    }

    /// basphere's own rule, for this test's accounts and binary, checked by `visudo`
    /// and installed where sudo reads it.
    fn install_sudoers(&self) {
        let bin = std::fs::canonicalize(BIN).unwrap();
        let rule = TEMPLATE
            .replace("/usr/bin/basphere", bin.to_str().unwrap())
            .replace("%basphere-admin", &format!("%{}", self.group))
            .replace("(basphere)", &format!("({})", self.service));
        assert_ne!(rule, TEMPLATE);
        let staged = self.sudoers.with_extension("staged");
        std::fs::write(&staged, rule).unwrap();
        sh("visudo", &["-cf", staged.to_str().unwrap()]);
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o440)).unwrap();
        std::fs::rename(&staged, &self.sudoers).unwrap();
    }

    /// An installation of these accounts: the data directory and its 0600 database the
    /// service account's, its parents and the configuration reachable by the others.
    fn installation(&self) -> Bsp {
        let bsp = self.root_installation();
        sh(
            "chown",
            &[
                "-R",
                &format!("{}:", self.service),
                bsp.data_dir().to_str().unwrap(),
            ],
        );
        let data = bsp.data_dir();
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&data.join("basphere.db")), 0o600);
        bsp
    }

    /// An installation of these accounts whose data root still owns, with the user
    /// `alice`.
    fn root_installation(&self) -> Bsp {
        let bsp = Bsp::new();
        let config = bsp.dir.path().join("config.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "service_user = \"{}\"\nadmin_group = \"{}\"\n",
            self.service, self.group
        ));
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(bsp.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        bsp.add_user("alice");
        bsp
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sudoers);
        let _ = std::fs::remove_file(self.sudoers.with_extension("staged"));
        for name in [&self.member, &self.stranger, &self.service] {
            let _ = Command::new("userdel").arg(name).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_shipped_sudoers_rule_passes_visudo() {
    sh("visudo", &["-cf", "templates/sudoers/basphere"]);
}

#[test]
fn a_member_reaches_the_service_accounts_database_through_sudo_and_is_audited_as_itself() {
    let host = Host::new();
    let mut bsp = host.installation();
    bsp.run_as(&host.member);

    // Without the rule: a clear error that names it, and nothing else happens.
    let run = bsp.run(&["admin", "user", "list"]).code(1);
    run.stderr_has("/etc/sudoers.d/basphere")
        .stderr_has(&format!("members of `{}`", host.group));

    host.install_sudoers();
    let list = bsp.json(&["admin", "user", "list"]);
    assert!(list.to_string().contains("\"alice\""), "{list}");

    let me = bsp.json(&["whoami"]);
    assert_eq!(me["actor"], host.member.as_str(), "{me}");
    assert_eq!(me["via"], "sudo", "{me}");
    assert_eq!(me["role"], "admin", "{me}");

    // A change is the member's in the audit log; the exit code is the command's.
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "3"])
        .success();
    bsp.run(&["admin", "user", "show", "nobody-here"]).code(3);
    bsp.account = None;
    let audit = bsp.json(&["admin", "audit", "--limit", "1"]);
    let last = &audit.as_array().unwrap()[0];
    assert_eq!(last["actor"], host.member.as_str(), "{audit}");
    assert_eq!(last["via"], "sudo", "{audit}");
    assert_eq!(last["action"], "quota.set", "{audit}");

    // The database stayed the service account's.
    let db = std::fs::metadata(bsp.data_dir().join("basphere.db")).unwrap();
    assert_eq!(db.uid(), uid_of(&host.service));
    assert_eq!(db.mode() & 0o7777, 0o600);
}

#[test]
fn strangers_and_tenants_that_name_a_sudo_caller_are_no_administrators() {
    let host = Host::new();
    host.install_sudoers();
    let mut bsp = host.installation();

    bsp.run_as(&host.stranger);
    bsp.run(&["admin", "user", "list"])
        .code(4)
        .stderr_has(&format!(
            "local use of basphere is for root and members of the `{}` group",
            host.group
        ));

    // The service account itself, with no sudo variables: the service, no admin.
    bsp.run_as(&host.service);
    bsp.run(&["admin", "user", "list"])
        .code(4)
        .stderr_has("is for administrators");

    // The service account claiming a stranger sent it: still no admin.
    let stranger = uid_of(&host.stranger).to_string();
    bsp.set_env("SUDO_UID", &stranger);
    bsp.set_env("SUDO_USER", &host.stranger);
    bsp.run(&["admin", "user", "list"])
        .code(4)
        .stderr_has("is for administrators");

    // A tenant's forced command, whose environment names the member as sudo's caller
    // (a client's variables let in by sshd's AcceptEnv): the tenant, and only that.
    bsp.account = None;
    let shown = bsp.json(&["admin", "user", "show", "alice"]);
    let key = shown["keys"][0]["fingerprint"].as_str().unwrap().to_owned();
    bsp.run_as(&host.service);
    let member = uid_of(&host.member).to_string();
    bsp.set_env("SUDO_UID", &member);
    bsp.set_env("SUDO_USER", &host.member);
    bsp.set_env("SSH_CONNECTION", "127.0.0.1 50000 127.0.0.1 22");
    let forced = |bsp: &mut Bsp, line: &str| {
        bsp.set_env("SSH_ORIGINAL_COMMAND", line);
        bsp.run(&["shell", "--user", "alice", "--key", &key])
    };
    let me = forced(&mut bsp, "whoami --json").success();
    let me: serde_json::Value = serde_json::from_str(&me.stdout).unwrap();
    assert_eq!(me["actor"], "alice", "{me}");
    assert_eq!(me["via"], "ssh", "{me}");
    assert_eq!(me["role"], "user", "{me}");
    forced(&mut bsp, "admin user list")
        .code(4)
        .stderr_has("is for administrators");
}

/// Every file and directory under `dir` (not following links) with its owner and mode.
fn tree(dir: &Path, out: &mut Vec<(PathBuf, u32, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path(), meta.uid(), meta.mode() & 0o7777));
        if meta.is_dir() {
            tree(&entry.path(), out);
        }
    }
}

const OLD_QEMU_CONF: &str = "# Master configuration file for the QEMU driver.\n\
#user = \"libvirt-qemu\"\n\
user = \"root\"\n\
#group = \"libvirt-qemu\"\n\
group = \"root\"\n\
#dynamic_ownership = 1\n\
# user = \"root\" in a comment stays\n";

#[test]
fn adopt_hands_a_root_owned_installation_to_the_service_account_and_finishes_after_a_crash() {
    let host = Host::named();
    let mut bsp = host.root_installation();
    bsp.add_blank_image("base");
    let data = bsp.data_dir();
    // The old layout: everything root's, some of it from before basphere set modes.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let image = data.join("images/base.qcow2");
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A disk QEMU's account holds while its VM runs; a link out; a second link to a
    // root file elsewhere: all three are left as they are.
    let qemus = data.join("disks/running.qcow2");
    std::fs::write(&qemus, "").unwrap();
    std::os::unix::fs::chown(&qemus, Some(64055), None).unwrap();
    let outside = bsp.dir.path().join("outside");
    std::fs::write(&outside, "root's").unwrap();
    std::os::unix::fs::symlink(&outside, data.join("disks/link.qcow2")).unwrap();
    std::fs::hard_link(&outside, data.join("seeds/hard.iso")).unwrap();
    let qemu_conf = bsp.dir.path().join("qemu.conf");
    std::fs::write(&qemu_conf, OLD_QEMU_CONF).unwrap();
    std::fs::set_permissions(&qemu_conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    bsp.set_env("BASPHERE_TEST_QEMU_CONF", qemu_conf.to_str().unwrap());
    let top = bsp.dir.path().to_owned();
    let backups = || {
        let mut names: Vec<String> = std::fs::read_dir(&top)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("qemu.conf.before-adopt."))
            .collect();
        names.sort();
        names
    };

    // Killed once the account is made, then once qemu.conf is copied but not yet
    // rewritten: each next run goes on from there.
    bsp.set_env("BASPHERE_CRASH_AT", "adopt-account");
    bsp.run(&["admin", "adopt"]).code(-1);
    assert!(nix::unistd::User::from_name(&host.service)
        .unwrap()
        .is_some());
    bsp.set_env("BASPHERE_CRASH_AT", "adopt-qemu-conf-copied");
    bsp.run(&["admin", "adopt"]).code(-1);
    assert_eq!(std::fs::read_to_string(&qemu_conf).unwrap(), OLD_QEMU_CONF);
    bsp.set_env("BASPHERE_CRASH_AT", "");
    let done = bsp.json(&["admin", "adopt"]);
    assert_eq!(
        done["qemu_conf"]["lines_removed"],
        serde_json::json!(["user = \"root\"", "group = \"root\""]),
        "{done}"
    );
    let conf = std::fs::read_to_string(&qemu_conf).unwrap();
    assert_eq!(
        conf,
        OLD_QEMU_CONF
            .replace("user = \"root\"\n#group", "#group")
            .replace("group = \"root\"\n#dyn", "#dyn")
    );
    assert_eq!(mode(&qemu_conf), 0o600);
    let copies = backups();
    // One per run that got that far, unless both ran within the same second.
    assert!((1..=2).contains(&copies.len()), "{copies:?}");
    for copy in &copies {
        let text = std::fs::read_to_string(top.join(copy)).unwrap();
        assert_eq!(text, OLD_QEMU_CONF);
    }

    let service = uid_of(&host.service);
    let mut entries = vec![(data.clone(), 0, 0)];
    entries[0].1 = std::fs::metadata(&data).unwrap().uid();
    entries[0].2 = mode(&data);
    tree(&data, &mut entries);
    let left_alone = [
        qemus.clone(),
        data.join("disks/link.qcow2"),
        data.join("seeds/hard.iso"),
    ];
    for (path, uid, m) in &entries {
        if left_alone.contains(path) {
            assert_ne!(*uid, service, "{} was handed over", path.display());
            continue;
        }
        assert_eq!(
            *uid,
            service,
            "{} is not the service account's",
            path.display()
        );
        let is_dir = path.is_dir();
        let traversable = ["", "disks", "seeds", "images"]
            .iter()
            .any(|d| *path == data.join(d) || (d.is_empty() && *path == data));
        let want = match (is_dir, traversable) {
            (true, true) => 0o711,
            (true, false) => 0o700,
            (false, _) => 0o600,
        };
        assert_eq!(*m, want, "{}", path.display());
    }
    assert!(entries.iter().any(|(p, _, _)| *p == image));
    assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&qemus).unwrap().uid(), 64055);
    let name = std::ffi::CString::new(host.service.clone()).unwrap();
    let account = nix::unistd::User::from_name(&host.service)
        .unwrap()
        .unwrap();
    let groups = nix::unistd::getgrouplist(&name, account.gid).unwrap();
    for group in ["libvirt", "kvm"] {
        if let Ok(Some(g)) = nix::unistd::Group::from_name(group) {
            assert!(
                groups.contains(&g.gid),
                "{} is not in {group}",
                host.service
            );
        }
    }
    assert!(nix::unistd::Group::from_name(&host.group)
        .unwrap()
        .is_some());

    // A second run changes nothing and says so.
    let again = bsp.json(&["admin", "adopt"]);
    assert_eq!(again["entries_changed"], 0, "{again}");
    assert_eq!(again["account_created"], false, "{again}");
    assert_eq!(again["qemu_conf"]["lines_removed"], serde_json::json!([]));
    assert_eq!(backups(), copies);

    // The service account now opens its database, and may not adopt.
    std::fs::set_permissions(bsp.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    bsp.run_as(&host.service);
    bsp.run(&["admin", "init", "--database-only"]).success();
    bsp.run(&["admin", "adopt"])
        .code(4)
        .stderr_has("`admin adopt` is for root");
    assert_eq!(std::fs::read_to_string(&qemu_conf).unwrap(), conf);
    bsp.account = None;
    let audit = bsp.json(&["admin", "audit", "--limit", "1"]);
    assert_eq!(audit[0]["action"], "admin adopt", "{audit}");
    assert_eq!(audit[0]["actor"], "root", "{audit}");
}

/// Root sets the host up with `admin init` where the service account exists (as the
/// package makes it): the data directory ends up the service account's, and later
/// commands root runs there make nothing of root's, yet are audited as root.
#[test]
fn root_inits_for_the_service_account_and_makes_nothing_of_its_own_there_later() {
    let host = Host::new();
    let mut bsp = Bsp::without_database("test:///default");
    std::fs::set_permissions(bsp.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let config = bsp.dir.path().join("etc/basphere/config.toml");
    bsp.set_env("BASPHERE_CONFIG", config.to_str().unwrap());
    bsp.set_env("BASPHERE_SERVICE_USER", &host.service);
    bsp.set_env("BASPHERE_ADMIN_GROUP", &host.group);
    let key = crate::fixtures::bin::public_key(&bsp.keygen("alice"));
    let preseed = bsp.dir.path().join("preseed.toml");
    std::fs::write(
        &preseed,
        format!(
            "public_host = \"bastion.example.org\"\nnetwork_pool = \"10.232.0.0/16\"\n\
             [ssh]\ndoor = \"embedded\"\nport = 2222\n\
             [admin]\nid = \"alice\"\nemail = \"alice@example.org\"\nkey = \"{key}\"\n"
        ),
    )
    .unwrap();
    let preseed = preseed.to_str().unwrap();
    let first = bsp.run(&["admin", "init", "--preseed", preseed]).success();
    first.stdout_has(&format!("to the service account {}", host.service));

    let service = uid_of(&host.service);
    let data = bsp.data_dir();
    let owners = || {
        let mut entries = vec![(data.clone(), std::fs::metadata(&data).unwrap().uid(), 0)];
        tree(&data, &mut entries);
        entries
    };
    let not_services = |entries: &[(PathBuf, u32, u32)]| -> Vec<PathBuf> {
        entries
            .iter()
            .filter(|(_, uid, _)| *uid != service)
            .map(|(p, _, _)| p.clone())
            .collect()
    };
    assert_eq!(not_services(&owners()), Vec::<PathBuf>::new());
    assert_eq!(mode(&data.join("basphere.db")), 0o600);
    // The configuration holds secrets: root's, read by the service account's group.
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!((meta.uid(), mode(&config)), (0, 0o640));

    // Root's later commands, jobs with their lock files included, work as the service
    // account, and the audit log says root.
    let me = bsp.json(&["whoami"]);
    assert_eq!(me["actor"], "root", "{me}");
    assert_eq!(me["role"], "admin", "{me}");
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "3"])
        .success();
    bsp.run(&["admin", "run-jobs"]).success();
    let entries = owners();
    assert!(entries.len() > 3, "{entries:?}");
    assert_eq!(not_services(&entries), Vec::<PathBuf>::new());
    let audit = bsp.json(&["admin", "audit", "--limit", "1"]);
    assert_eq!(audit[0]["action"], "quota.set", "{audit}");
    assert_eq!(audit[0]["actor"], "root", "{audit}");

    // The service account, as the timer runs it, takes the same locks.
    bsp.run_as(&host.service);
    bsp.run(&["admin", "run-jobs"]).success();
    bsp.account = None;
    bsp.run(&["admin", "init", "--preseed", preseed])
        .success()
        .stdout_has("nothing changed");
}
