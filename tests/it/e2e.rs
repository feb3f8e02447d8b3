//! End to end on a real guest: a Debian image with cloud-init boots under full
//! emulation, and its owner logs in over SSH with their key at the address basphere
//! printed, and reaches its login prompt on the serial console with `console`.
//! Guest traffic stays in the test run's own network namespace.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixtures::bin::{require_libvirt, Bsp};
use crate::fixtures::ssh::{terminal_ssh, SshServer, Tmux};

/// Under emulation the guest reaches SSH in about a minute; allow for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

fn ssh_in_netns(
    netns: &str,
    key: &std::path::Path,
    target: &str,
    command: &str,
) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", netns, "ssh", "-o", "ConnectTimeout=5"])
        .args(crate::fixtures::ssh::client_options(key, 22))
        .arg(target)
        .arg(command)
        .output()
        .unwrap()
}

#[test]
fn a_user_logs_into_their_new_vm() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let (Ok(image), Ok(netns)) = (
        std::env::var("BASPHERE_TEST_IMAGE"),
        std::env::var("BASPHERE_TEST_NETNS"),
    ) else {
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
    let hostname = loop {
        let out = ssh_in_netns(&netns, &key, &target, "hostname");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "no SSH at {ip} after {:?}: {}",
            started.elapsed(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    eprintln!(
        "guest reached SSH {:?} after create-vm returned",
        started.elapsed()
    );
    assert_eq!(hostname, "e2e-web");

    // cloud-init may still be at work (it restarts sshd): wait until it is done.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let out = ssh_in_netns(
            &netns,
            &key,
            &target,
            "cloud-init status --wait >/dev/null; cloud-init status",
        );
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cloud-init did not finish: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    through_the_bastion(&bsp, &netns, &key, "e2e-web", &ip);

    // The serial console on a pseudo-terminal: a login prompt, and Ctrl-] detaches.
    let started = Instant::now();
    let mut console =
        crate::fixtures::terminal::Session::start(&bsp, &["--as", "alice", "console", "e2e-web"]);
    let connected = console.expect("Connected to VM e2e-web", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while console
        .local_flags()
        .contains(nix::sys::termios::LocalFlags::ICANON)
    {
        assert!(Instant::now() < deadline, "the terminal never went raw");
        std::thread::sleep(Duration::from_millis(20));
    }
    console.send(b"\r");
    console.expect_after(connected, "login:", Duration::from_secs(20));
    console.send(b"\x1d");
    let (code, screen) = console.wait(Duration::from_secs(10));
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let files = loop {
        let out = ssh_in_netns(
            &netns,
            &key,
            &target,
            "ls /tmp/marker /tmp/after-snapshot 2>&1; true",
        );
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no SSH after restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(3));
    };
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
fn through_the_bastion(bsp: &Bsp, netns: &str, key: &std::path::Path, name: &str, ip: &str) {
    let server = SshServer::start_in(bsp, Some(netns));
    let bob = bsp.add_user("bob");
    let config = |key: &std::path::Path| {
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
    let jump = |key: &std::path::Path, target: &str| {
        Command::new("ip")
            .args(["netns", "exec", netns, "ssh", "-F"])
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
    let mut command = vec!["ip".to_owned(), "netns".into(), "exec".into(), netns.into()];
    command.extend(terminal_ssh(server.ssh_options(key), &["console", name]));
    let term = Tmux::start(bsp.dir.path(), 100, 30, &command);
    term.wait_for(&format!("Connected to VM {name}"), 30);
    // Raw mode is on once the console is attached; Enter brings a fresh login prompt.
    std::thread::sleep(Duration::from_millis(500));
    term.send(&["Enter"]);
    term.wait_for("login:", 30);
    term.send(&["C-]"]);
    assert_eq!(term.wait_exit(30), 0, "{}", term.screen());
    assert!(term.screen().contains(&format!("Detached from {name}")));
    // Bob's console to Alice's VM reads like a VM that does not exist.
    let mut command = vec!["ip".to_owned(), "netns".into(), "exec".into(), netns.into()];
    command.extend(terminal_ssh(server.ssh_options(&bob), &["console", name]));
    let term = Tmux::start(bsp.dir.path(), 100, 30, &command);
    assert_eq!(term.wait_exit(30), 3, "{}", term.screen());
    assert!(term.screen().contains("not found"), "{}", term.screen());
}
