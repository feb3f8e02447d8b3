//! End to end on a real guest: a Debian image with cloud-init boots under full
//! emulation, and its owner logs in over SSH with their key at the address basphere
//! printed, and reaches its login prompt on the serial console with `console`.
//! Guest traffic stays in the test run's own network namespace.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixtures::bin::Bsp;
use crate::fixtures::in_netns;
use crate::fixtures::libvirt::{require_libvirt, test_image, test_netns};
use crate::fixtures::poll;
use crate::fixtures::ssh::{client_options, SshServer};
use crate::fixtures::terminal::{Terminal, CTRL_RIGHT_BRACKET, ENTER};

/// Under emulation the guest reaches SSH in about a minute; allow for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

fn ssh_in_netns(netns: &str, key: &Path, target: &str, command: &str) -> std::process::Output {
    in_netns(Some(netns), "ssh")
        .args(["-o", "ConnectTimeout=5"])
        .args(client_options(key, 22))
        .arg(target)
        .arg(command)
        .output()
        .unwrap()
}

/// What an SSH run printed on stdout and stderr.
fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_user_logs_into_their_new_vm() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (Some(image), Some(netns)) = (test_image(), test_netns()) else {
        eprintln!("skipped: BASPHERE_TEST_IMAGE and BASPHERE_TEST_NETNS are not set (scripts/test builds the image and the namespace)");
        return;
    };
    let bsp = Bsp::with_uri(&uri);
    let key = bsp.add_user("alice");
    bsp.run(&[
        "admin",
        "image",
        "add",
        "debian-12",
        &image,
        "--os-user",
        "debian",
    ])
    .success();

    let vm = bsp.json(&[
        "--as",
        "alice",
        "create-vm",
        "e2e-web",
        "--cpus",
        "1",
        "--memory",
        "1G",
    ]);
    let ip = vm["ip"].as_str().unwrap().to_owned();
    assert_eq!(
        vm["ssh"],
        format!("ssh -J basphere@bastion.test debian@{ip}")
    );
    let started = Instant::now();
    let target = format!("debian@{ip}");
    let hostname = poll::eventually_every(BOOT_TIMEOUT, Duration::from_secs(5), || {
        let out = ssh_in_netns(&netns, &key, &target, "hostname");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("no SSH at {ip}: {}", printed(&out)))
        }
    });
    eprintln!(
        "guest reached SSH {:?} after create-vm returned",
        started.elapsed()
    );
    assert_eq!(hostname, "e2e-web");

    // cloud-init may still be at work (it restarts sshd): wait until it is done.
    poll::eventually_every(Duration::from_secs(240), Duration::from_secs(3), || {
        let out = ssh_in_netns(
            &netns,
            &key,
            &target,
            "cloud-init status --wait >/dev/null; cloud-init status",
        );
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done") {
            Ok(())
        } else {
            Err(format!("cloud-init did not finish: {}", printed(&out)))
        }
    });

    through_the_bastion(&bsp, &netns, &key, "e2e-web", &ip);

    // The serial console on a pseudo-terminal: a login prompt, and Ctrl-] detaches.
    let started = Instant::now();
    let mut console = Terminal::basphere(&bsp, &["--as", "alice", "console", "e2e-web"]);
    console.wait_for("Connected to VM e2e-web", 20);
    console.wait_for_raw_mode(10);
    console.send(ENTER);
    console.wait_for("login:", 20);
    console.send(CTRL_RIGHT_BRACKET);
    let code = console.wait_exit(10);
    let screen = console.screen();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Detached from e2e-web"), "{screen}");
    eprintln!(
        "console: login prompt and detach in {:?}",
        started.elapsed()
    );

    // The key works for sudo too, and a stranger's key does not get in.
    let out = ssh_in_netns(&netns, &key, &target, "sudo -n true && echo sudo-ok");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sudo-ok");
    let stranger = bsp.keygen("stranger");
    assert!(!ssh_in_netns(&netns, &stranger, &target, "true")
        .status
        .success());

    // A snapshot of the running guest, a file written after it, a restore: the file is gone
    // and the guest runs on from the snapshot's moment.
    let out = ssh_in_netns(&netns, &key, &target, "echo before > /tmp/marker && sync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    bsp.run(&[
        "--as",
        "alice",
        "snapshot",
        "create",
        "e2e-web",
        "clean",
        "--description",
        "before the change",
    ])
    .success();
    eprintln!("snapshot of the running guest took {:?}", started.elapsed());
    let out = ssh_in_netns(
        &netns,
        &key,
        &target,
        "echo after > /tmp/after-snapshot && sync && cat /tmp/after-snapshot",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "after");
    let started = Instant::now();
    bsp.run(&[
        "--as", "alice", "snapshot", "restore", "e2e-web", "clean", "--yes",
    ])
    .success();
    eprintln!("restore took {:?}", started.elapsed());
    assert_eq!(
        bsp.json(&["--as", "alice", "vm", "show", "e2e-web"])["state"],
        "running"
    );
    let files = poll::eventually_every(Duration::from_secs(120), Duration::from_secs(3), || {
        let out = ssh_in_netns(
            &netns,
            &key,
            &target,
            "ls /tmp/marker /tmp/after-snapshot 2>&1; true",
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("no SSH after restore: {}", printed(&out)))
        }
    });
    assert!(files.contains("/tmp/marker"), "{files}");
    assert!(
        files.contains("No such file"),
        "the file written after the snapshot survived: {files}"
    );

    bsp.run(&["--as", "alice", "vm", "delete", "e2e-web", "--yes"])
        .success();
    assert!(bsp.json(&["admin", "vms"]).as_array().unwrap().is_empty());
    bsp.run(&["admin", "reconcile", "--dry-run"])
        .success()
        .stdout_has("nothing to repair");
    // The user's network stays; remove it with the user.
    bsp.run(&["admin", "user", "remove", "alice", "--yes"])
        .success();
}

/// `ssh -J` through the embedded server to the owner's VM, by name and by address; another
/// tenant is refused. Server and clients run inside the test's network namespace.
fn through_the_bastion(bsp: &Bsp, netns: &str, key: &Path, name: &str, ip: &str) {
    let server = SshServer::start_in(bsp, Some(netns));
    let bob = bsp.add_user("bob");
    let config = |key: &Path| {
        let path = bsp.dir.path().join(format!(
            "ssh-config-{}",
            key.file_name().unwrap().to_string_lossy()
        ));
        let text = format!(
            "Host bastion\n  HostName 127.0.0.1\n  Port {}\n  User basphere\n\
             Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  IdentityAgent none\n  BatchMode yes\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 10\n",
            server.port,
            key.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let jump = |key: &Path, target: &str| {
        in_netns(Some(netns), "ssh")
            .arg("-F")
            .arg(config(key))
            .args(["-J", "bastion", target, "hostname"])
            .output()
            .unwrap()
    };
    for target in [format!("debian@{name}"), format!("debian@{ip}")] {
        let out = jump(key, &target);
        assert!(
            out.status.success(),
            "ssh -J bastion {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    }
    server.wait_log("ssh forwarding");
    for target in [format!("debian@{name}"), format!("debian@{ip}")] {
        let out = jump(&bob, &target);
        assert!(!out.status.success(), "bob reached {target}");
    }
    server.wait_log("ssh forwarding refused");

    // The serial console over `ssh -t` to the embedded server: a terminal session runs
    // `console` on a real pseudo-terminal.
    let mut term = server.terminal(key, &["console", name], 100, 30);
    term.wait_for(&format!("Connected to VM {name}"), 30);
    // Raw mode is on once the console is attached; Enter brings a fresh login prompt.
    std::thread::sleep(Duration::from_millis(500));
    term.send(ENTER);
    term.wait_for("login:", 30);
    term.send(CTRL_RIGHT_BRACKET);
    assert_eq!(term.wait_exit(30), 0, "{}", term.screen());
    assert!(term.screen().contains(&format!("Detached from {name}")));
    // Bob's console to Alice's VM reads like a VM that does not exist.
    let mut term = server.terminal(&bob, &["console", name], 100, 30);
    assert_eq!(term.wait_exit(30), 3, "{}", term.screen());
    assert!(term.screen().contains("not found"), "{}", term.screen());
}
