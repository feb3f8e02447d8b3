//! One tenant can neither see, act on, console into, nor forward to another tenant's VM,
//! by its name, id, address or libvirt domain name, through either SSH front door: the
//! embedded server and Debian's sshd in OpenSSH mode. Needs the real libvirtd.
//!
//! Every attempt must read exactly like one on a VM that does not exist, and the VM must
//! be untouched afterwards.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::fixtures::bin::{keygen, Bsp, Run};
use crate::fixtures::libvirt::{
    libvirt_objects, require_libvirt, test_netns, virsh, Cleanup, LibvirtRelay,
};
use crate::fixtures::ssh::{run_of, SshServer};
use crate::fixtures::sshd::{chown_to_service_account, start_sshd_in, Sshd};
use crate::fixtures::{in_netns, poll};

const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const DENIED: i32 = 4;

/// One way bob might name alice's VM, and a made-up twin of the same shape that names
/// nothing (so both take the same path through the code).
struct Target {
    what: &'static str,
    real: String,
    twin: String,
}

/// Alice's VM and the ways to name it.
struct AlicesVm {
    id: String,
    ip: String,
    domain: String,
    targets: Vec<Target>,
}

/// Alice makes `web1` (running, on a blank image) with a snapshot `mine`.
fn alice_makes_a_vm(bsp: &Bsp) -> AlicesVm {
    bsp.add_blank_image("blank");
    let vm = bsp.json(&[
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--image",
        "blank",
        "--memory",
        "128M",
        "--disk",
        "1G",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    bsp.run(&["--as", "alice", "snapshot", "create", "web1", "mine"])
        .success();
    let text = |k: &str| vm[k].as_str().unwrap().to_owned();
    let (id, ip, domain) = (text("id"), text("ip"), text("domain"));
    // The same VM as an administrator sees it.
    let all = bsp.json(&["admin", "vms"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["id"], vm["id"]);
    assert_eq!(all[0]["ip"], vm["ip"]);

    // Twins: same first character and length for the id (a letter makes it a valid VM
    // name, a digit does not), the same /24 for the address, the same owner for the domain.
    let twin_id = format!(
        "{}{}",
        &id[..id.len() - 12],
        if id.ends_with("000000000000") {
            "111111111111"
        } else {
            "000000000000"
        }
    );
    let twin_ip = format!("{}.{}", ip.rsplit_once('.').unwrap().0, 200);
    assert_ne!(twin_ip, ip);
    let twin_domain = domain.replace(".web1", ".web9");
    let targets = vec![
        Target {
            what: "name",
            real: "web1".into(),
            twin: "web9".into(),
        },
        Target {
            what: "id",
            real: id.clone(),
            twin: twin_id,
        },
        Target {
            what: "address",
            real: ip.clone(),
            twin: twin_ip,
        },
        Target {
            what: "domain",
            real: domain.clone(),
            twin: twin_domain,
        },
    ];
    AlicesVm {
        id,
        ip,
        domain,
        targets,
    }
}

/// Everything bob could change about alice's VM: her view of it and of its snapshots,
/// and libvirt's domain (its state, its id, which changes when it is restarted) and snapshots.
fn untouched(bsp: &Bsp, vm: &AlicesVm) -> String {
    let show = bsp.json(&["--as", "alice", "vm", "show", "web1"]);
    let snaps = bsp.json(&["--as", "alice", "snapshot", "list", "web1"]);
    format!(
        "{show}\n{snaps}\nstate: {}id: {}snapshots: {}",
        virsh(&bsp.uri, &["domstate", &vm.domain]),
        virsh(&bsp.uri, &["domid", &vm.domain]),
        virsh(&bsp.uri, &["snapshot-list", &vm.domain, "--name"]),
    )
}

/// The command lines bob tries on a VM, `{}` standing for how he names it.
const ACTS: &[&str] = &[
    "vm show {}",
    "vm show {} --json",
    "vm start {}",
    "vm stop {} --force",
    "vm stop {}",
    "vm reboot {}",
    "vm delete {} --yes",
    "vm delete {}",
    "snapshot create {} theirs",
    "snapshot create {}",
    "snapshot list {}",
    "snapshot list {} --json",
    "snapshot restore {} mine --yes",
    "snapshot restore {} mine",
    "snapshot delete {} mine",
    // Ownership is checked before the terminal: without one, still "not found". With a
    // terminal (`ssh -tt ... console`), tests/it/e2e.rs checks the same refusal.
    "console {}",
    "console {} --force",
];

/// Bob, who has no VM yet, through one front door (`run(key, command line)`): alice's VM
/// is invisible and out of reach, by every name.
fn bob_can_neither_see_nor_act(
    bsp: &Bsp,
    vm: &AlicesVm,
    bob: &Path,
    run: &dyn Fn(&Path, &str) -> Run,
) {
    let before = untouched(bsp, vm);
    for act in ACTS {
        for t in &vm.targets {
            let real = run(bob, &act.replace("{}", &t.real));
            let twin = run(bob, &act.replace("{}", &t.twin));
            // Every command checks the shape of a name first: what is not a VM name (an
            // address, say) is a usage error (exit 2), for alice's VM and a made-up one
            // alike.
            let is_name = t.real.parse::<basphere::validate::VmName>().is_ok();
            let expected = if is_name { NOT_FOUND } else { USAGE };
            let real = real.code(expected);
            assert_eq!(twin.code, expected, "{act} by made-up {}", t.what);
            assert_eq!(real.stdout, "", "{act} by {}", t.what);
            let real_err = real.stderr.replace(&t.real, "<VM>");
            assert_eq!(
                real_err,
                twin.stderr.replace(&t.twin, "<VM>"),
                "`{act}` by alice's VM {} reads differently from a VM that does not exist",
                t.what
            );
            assert!(!real_err.contains("alice"), "{act}: {real_err}");
        }
    }

    // Nothing of alice's shows in bob's lists, quota or welcome.
    let leaks = |text: &str, what: &str| {
        for secret in ["web1", "mine", "alice", &vm.ip, &vm.id, &vm.domain] {
            assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
        }
    };
    for line in [
        "vm list",
        "vm list --json",
        "vm ls",
        "snapshot list",
        "snapshot list --json",
        "quota",
        "",
    ] {
        let r = run(bob, line).success();
        leaks(&r.stdout, line);
        leaks(&r.stderr, line);
    }
    let list: serde_json::Value = serde_json::from_str(&run(bob, "vm list --json").stdout).unwrap();
    assert_eq!(list, serde_json::json!([]));
    let snaps: serde_json::Value =
        serde_json::from_str(&run(bob, "snapshot list --json").stdout).unwrap();
    assert_eq!(snaps, serde_json::json!([]));
    let quota: serde_json::Value = serde_json::from_str(&run(bob, "quota --json").stdout).unwrap();
    assert_eq!(quota["usage"]["vms"], 0, "{quota}");
    assert_eq!(quota["usage"]["cpus"], 0, "{quota}");
    run(bob, "").success().stdout_has("no VMs yet");

    // Nor by acting as alice or as an administrator.
    for line in [
        "--as alice vm show web1",
        "--as alice vm list --json",
        "--as alice vm delete web1 --yes",
        "--as alice snapshot delete web1 mine",
        "admin vms --json",
        "admin vms --user alice",
        "snapshot prune --user alice",
        "snapshot prune --all",
    ] {
        let r = run(bob, line).code(DENIED);
        assert_eq!(r.stdout, "", "{line}");
        assert!(!r.stderr.contains(&vm.ip), "{line}: {}", r.stderr);
    }
    assert_eq!(untouched(bsp, vm), before, "bob changed alice's VM");
}

/// Bob makes a VM of his own named `web1` too: names are per tenant, so it is his, on his
/// own network, and alice's is still neither shown nor touched. Returns his VM's address.
fn bob_makes_his_own_web1(
    bsp: &Bsp,
    vm: &AlicesVm,
    bob: &Path,
    run: &dyn Fn(&Path, &str) -> Run,
) -> String {
    let before = untouched(bsp, vm);
    let made = run(
        bob,
        "create-vm web1 --image blank --memory 128M --disk 1G --no-start --json",
    )
    .success();
    let his: serde_json::Value = serde_json::from_str(&made.stdout).unwrap();
    assert_eq!(his["owner"], "bob", "{his}");
    assert_eq!(his["name"], "web1");
    assert_ne!(his["id"], vm.id.as_str());
    assert_ne!(his["domain"], vm.domain.as_str());
    let his_ip = his["ip"].as_str().unwrap().to_owned();
    assert_ne!(
        his_ip.rsplit_once('.').unwrap().0,
        vm.ip.rsplit_once('.').unwrap().0,
        "bob's VM is on alice's /24"
    );
    let list: serde_json::Value = serde_json::from_str(&run(bob, "vm list --json").stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], his["id"]);
    let plain = run(bob, "vm list").success().stdout;
    assert!(
        plain.contains(&his_ip) && !plain.contains(&vm.ip),
        "{plain}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&run(bob, "vm show web1 --json").success().stdout).unwrap();
    assert_eq!(shown["id"], his["id"]);
    // His own VM does not open a way to hers by any other name.
    for t in &vm.targets[1..] {
        let is_name = t.real.parse::<basphere::validate::VmName>().is_ok();
        let expected = if is_name { NOT_FOUND } else { USAGE };
        run(bob, &format!("vm show {}", t.real)).code(expected);
        run(bob, &format!("snapshot list {}", t.real)).code(expected);
    }
    run(bob, "snapshot restore web1 mine --yes")
        .code(NOT_FOUND)
        .stderr_has("snapshot `mine` not found");
    assert_eq!(
        untouched(bsp, vm),
        before,
        "bob's create-vm changed alice's VM"
    );
    his_ip
}

/// Bob deletes his `web1`; alice's stays.
fn bob_deletes_his_web1(bsp: &Bsp, vm: &AlicesVm, bob: &Path, run: &dyn Fn(&Path, &str) -> Run) {
    let before = untouched(bsp, vm);
    run(bob, "vm delete web1 --yes").success();
    run(bob, "vm show web1").code(NOT_FOUND);
    assert_eq!(
        untouched(bsp, vm),
        before,
        "bob's delete changed alice's VM"
    );
    let (domains, _) = libvirt_objects(bsp);
    assert_eq!(domains, std::slice::from_ref(&vm.domain));
}

/// `text` without the terminal colour codes a log may carry.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then a final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn another_tenants_vm_is_out_of_reach_through_the_embedded_server() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let netns = test_netns();
    let netns = netns.as_deref();
    let mut bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    // Bob knocks well over a hundred times a minute here; the rate limit is not the subject.
    bsp.set_env("BASPHERE_SSH_CONNECTIONS_PER_MINUTE", "100000");
    bsp.add_user("alice");
    let bob = bsp.add_user("bob");
    let vm = alice_makes_a_vm(&bsp);
    let server = SshServer::start_in(&bsp, netns);

    let ssh = |key: &Path, extra: &[&str], line: &str| {
        let mut cmd = in_netns(netns, "ssh");
        cmd.args(extra)
            .args(server.ssh_options(key))
            .arg("basphere@127.0.0.1");
        if !line.is_empty() {
            // A command may start with `-`: no more options for ssh.
            cmd.arg("--").arg(line);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        run_of(out, &[line])
    };
    let run = |key: &Path, line: &str| ssh(key, &["-T"], line);
    bob_can_neither_see_nor_act(&bsp, &vm, &bob, &run);

    // Forwarding: refused for every name of alice's VM, exactly as for one that does not
    // exist, and logged with the reason.
    let before = untouched(&bsp, &vm);
    let forward = |host: &str| {
        let r = ssh(
            &bob,
            &["-o", "LogLevel=INFO", "-W", &format!("{host}:22")],
            "",
        );
        assert_eq!(r.code, 255, "-W {host}:22: {}", r.stderr);
        assert!(
            r.stderr.contains("administratively prohibited"),
            "-W {host}:22 was not refused by policy: {}",
            r.stderr
        );
        r
    };
    // The line where the server refused bob's forward to `host`, waited for.
    let refused_in_log = |host: &str| {
        poll::eventually(Duration::from_secs(10), || {
            let log = without_colours(&server.log());
            log.lines()
                .find(|l| {
                    l.contains("ssh forwarding refused")
                        && l.contains("user=\"bob\"")
                        && l.contains(&format!("host=\"{host}\""))
                })
                .map(str::to_owned)
                .ok_or_else(|| format!("no refusal of {host} for bob in the log:\n{log}"))
        })
    };
    let mut targets: Vec<(String, String)> = vm
        .targets
        .iter()
        .map(|t| (t.real.clone(), t.twin.clone()))
        .collect();
    targets.push(("WEB1".into(), "WEB9".into()));
    for (real, twin) in &targets {
        let r = forward(real);
        let t = forward(twin);
        assert_eq!(
            r.stderr.replace(real, "<VM>"),
            t.stderr.replace(twin, "<VM>"),
            "-W {real}:22"
        );
        let (lr, lt) = (refused_in_log(real), refused_in_log(twin));
        let reason = |l: &str, host: &str| {
            l.split_once("reason=")
                .map(|(_, r)| r.replace(host, "<VM>"))
                .unwrap_or_default()
        };
        assert!(!reason(&lr, real).is_empty(), "no reason logged: {lr}");
        assert_eq!(
            reason(&lr, real),
            reason(&lt, twin),
            "the server refused {real} for another reason than a missing VM:\n{lr}\n{lt}"
        );
    }
    // Another port of her VM, by address.
    let r = ssh(
        &bob,
        &["-o", "LogLevel=INFO", "-W", &format!("{}:2222", vm.ip)],
        "",
    );
    assert!(
        r.stderr.contains("administratively prohibited"),
        "{}",
        r.stderr
    );
    assert_eq!(
        untouched(&bsp, &vm),
        before,
        "bob's forwards changed alice's VM"
    );

    bob_makes_his_own_web1(&bsp, &vm, &bob, &run);
    // With a network of his own, her address is still not his.
    forward(&vm.ip);
    let log = without_colours(&server.log());
    let refusals = log
        .lines()
        .filter(|l| l.contains("ssh forwarding refused") && l.contains(&format!("\"{}\"", vm.ip)))
        .count();
    assert!(refusals >= 3, "{log}");
    // The server never tried to connect anywhere for bob.
    for line in log.lines().filter(|l| l.contains("ssh forwarding")) {
        assert!(
            line.contains("ssh forwarding refused"),
            "the server went further than refusing: {line}\n{log}"
        );
    }
    bob_deletes_his_web1(&bsp, &vm, &bob, &run);
}

#[test]
fn another_tenants_vm_is_out_of_reach_through_debians_sshd() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let netns = test_netns();
    let mut bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    // The forced command runs as the service account, which may not open the test
    // libvirtd's socket.
    let relay = LibvirtRelay::start(&uri);
    bsp.set_env("BASPHERE_LIBVIRT_URI", &relay.uri);
    let sshd: Sshd = match start_sshd_in(&bsp, netns.as_deref()) {
        Ok(sshd) => sshd,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let keys = sshd.dir.path();
    let (alice, bob) = (
        keygen(keys, "alice", "ed25519", None),
        keygen(keys, "bob", "ed25519", None),
    );
    bsp.add_user_with_key("alice", &alice);
    bsp.add_user_with_key("bob", &bob);
    let vm = alice_makes_a_vm(&bsp);
    chown_to_service_account(bsp.dir.path());

    let run = |key: &Path, line: &str| {
        let command = (!line.is_empty()).then_some(line);
        sshd.ssh(key, &[], command, None)
    };
    // A forced command that fails to start would also read as "not found" nowhere: make
    // sure the front door works first.
    run(&alice, "vm show web1").success().stdout_has(&vm.ip);
    bob_can_neither_see_nor_act(&bsp, &vm, &bob, &run);
    chown_to_service_account(bsp.dir.path());

    let his_ip = bob_makes_his_own_web1(&bsp, &vm, &bob, &run);
    // sshd enforces the forwarding policy itself: bob's key line opens port 22 of his own
    // VM's address only.
    let before = untouched(&bsp, &vm);
    let mut hosts: Vec<String> = vm.targets.iter().map(|t| t.real.clone()).collect();
    hosts.push(format!("{his_ip}:2222"));
    for host in &hosts {
        let target = if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:22")
        };
        let r = sshd.ssh(&bob, &["-o", "LogLevel=INFO", "-W", &target], None, None);
        assert_eq!(r.code, 255, "-W {target}: {}", r.stderr);
        assert!(
            r.stderr.contains("administratively prohibited"),
            "sshd did not refuse -W {target} for bob: {}\n{}",
            r.stderr,
            sshd.log()
        );
        let (h, p) = target.rsplit_once(':').unwrap();
        sshd.wait_log(&format!(
            "to connect to host {h} port {p}, but the request was denied"
        ));
    }
    assert_eq!(
        untouched(&bsp, &vm),
        before,
        "bob's forwards changed alice's VM"
    );
    chown_to_service_account(bsp.dir.path());
    bob_deletes_his_web1(&bsp, &vm, &bob, &run);
}
