//! `console NAME`: refused without a terminal, by name rules and by ownership; on a
//! pseudo-terminal against a real libvirtd it attaches, detaches on Ctrl-], keeps
//! one session per console unless --force, and notices the VM stopping.

use nix::sys::termios::LocalFlags;

use crate::fixtures::bin::Bsp;
use crate::fixtures::libvirt::{require_libvirt, Cleanup};
use crate::fixtures::terminal::{Terminal, CTRL_RIGHT_BRACKET};

const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const CONFLICT: i32 = 6;

/// Seconds for a console to answer.
const SHORT: u64 = 20;

/// alice with `web1`, bob with `bweb`, both on a blank image.
fn two_tenants(bsp: &Bsp, start: bool) {
    bsp.add_user("alice");
    bsp.add_user("bob");
    bsp.add_blank_image("blank");
    for (user, vm) in [("alice", "web1"), ("bob", "bweb")] {
        let mut args = vec!["--as", user, "create-vm", vm, "--memory", "128M"];
        if !start {
            args.push("--no-start");
        }
        bsp.run(&args).success();
    }
}

fn audit_actions(bsp: &Bsp) -> Vec<String> {
    bsp.json(&["admin", "audit", "--user", "alice"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["action"], e["target"], e["result"]).replace('"', ""))
        .collect()
}

/// `basphere ARGS` on a terminal of its own, to its end: its exit code and screen.
fn on_terminal(bsp: &Bsp, args: &[&str]) -> (i32, String) {
    let mut term = Terminal::basphere(bsp, args);
    let code = term.wait_exit(SHORT);
    (code, term.screen())
}

/// The error text with the VM name taken out, to compare message shapes.
fn shape(stderr: &str, name: &str) -> String {
    stderr.replace(name, "NAME")
}

#[test]
fn without_a_terminal_console_explains_and_changes_nothing() {
    let mut bsp = Bsp::new();
    two_tenants(&bsp, true);
    let before = bsp.state();
    let audit = audit_actions(&bsp);

    bsp.run(&["--as", "alice", "console", "web1"])
        .code(USAGE)
        .stderr_has("error: `console` needs a terminal")
        .stderr_has("help: run it with `ssh -t basphere@bastion.test console web1`");
    // The same through OpenSSH's forced command, as the tenant.
    bsp.forced_command("alice", "console web1")
        .code(USAGE)
        .stderr_has("`console` needs a terminal");

    // Someone else's VM looks exactly like a missing one.
    let theirs = bsp.forced_command("alice", "console bweb").code(NOT_FOUND);
    let missing = bsp.forced_command("alice", "console nope").code(NOT_FOUND);
    assert_eq!(missing.stderr, "error: VM `nope` not found\n");
    assert_eq!(
        shape(&theirs.stderr, "bweb"),
        shape(&missing.stderr, "nope")
    );

    for bad in [
        "Web1",
        "1web",
        "web_1",
        "web 1",
        "web1;id",
        "../web1",
        "web1\u{1b}[2J",
        &"a".repeat(64),
    ] {
        bsp.run(&["--as", "alice", "console", bad])
            .code(USAGE)
            .stderr_has("invalid VM name");
    }
    bsp.run(&["--as", "alice", "console", ""])
        .code(USAGE)
        .stderr_has("invalid VM name");
    bsp.run(&["--as", "alice", "console", "-x"]).code(USAGE);
    bsp.run(&["--as", "alice", "console"]).code(USAGE);

    assert_eq!(bsp.state(), before, "a refused console changed the state");
    assert_eq!(audit_actions(&bsp), audit, "a refused console was audited");
}

#[test]
fn on_a_terminal_console_attaches_detaches_and_is_owners_only() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    two_tenants(&bsp, false);

    // Another user's VM and a missing one: the same "not found", on a terminal too.
    let (code, theirs) = on_terminal(&bsp, &["--as", "alice", "console", "bweb"]);
    assert_eq!(code, NOT_FOUND, "{theirs}");
    let (code, missing) = on_terminal(&bsp, &["--as", "alice", "console", "nope"]);
    assert_eq!(code, NOT_FOUND, "{missing}");
    assert_eq!(shape(&theirs, "bweb"), shape(&missing, "nope"));

    let (code, screen) = on_terminal(&bsp, &["--as", "alice", "console", "web1"]);
    assert_eq!(code, CONFLICT, "{screen}");
    assert!(screen.contains("VM `web1` is not running"), "{screen}");
    assert!(screen.contains("vm start web1"), "{screen}");

    bsp.run(&["--as", "alice", "vm", "start", "web1"]).success();

    // Attach: raw mode while attached, the terminal restored after Ctrl-].
    let mut a = Terminal::basphere(&bsp, &["--as", "alice", "console", "web1"]);
    a.wait_for("Connected to VM web1 (press Ctrl-] to detach)", SHORT);
    a.wait_for_raw_mode(SHORT);

    // One session per console: a second is refused, --force takes over.
    let (code, screen) = on_terminal(&bsp, &["--as", "alice", "console", "web1"]);
    assert_eq!(code, CONFLICT, "{screen}");
    assert!(
        screen.contains("the console of VM `web1` is in use by another session"),
        "{screen}"
    );
    assert!(screen.contains("console --force web1"), "{screen}");
    let mut b = Terminal::basphere(&bsp, &["--as", "alice", "console", "--force", "web1"]);
    b.wait_for("Connected to VM web1", SHORT);
    let code = a.wait_exit(SHORT);
    let screen = a.screen();
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains("The console of web1 was closed"),
        "{screen}"
    );
    assert!(
        a.local_flags()
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "the terminal stayed raw"
    );

    b.send(CTRL_RIGHT_BRACKET);
    let code = b.wait_exit(SHORT);
    let screen = b.screen();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Detached from web1"), "{screen}");
    assert!(
        b.local_flags()
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "the terminal stayed raw"
    );

    // The console is free again after a detach, and ends when the VM stops.
    let mut c = Terminal::basphere(&bsp, &["--as", "alice", "console", "web1"]);
    c.wait_for("Connected to VM web1", SHORT);
    bsp.run(&["--as", "alice", "vm", "stop", "--force", "web1"])
        .success();
    let code = c.wait_exit(SHORT);
    let screen = c.screen();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("VM web1 stopped"), "{screen}");

    let audit = audit_actions(&bsp);
    for entry in [
        "vm.console alice/bweb error",
        "vm.console alice/nope error",
        "vm.console alice/web1 error",
        "vm.console alice/web1 ok",
        "vm.console.force alice/web1 ok",
    ] {
        assert!(audit.contains(&entry.to_owned()), "{entry}: {audit:#?}");
    }
}
