//! The embedded SSH server (`basphere serve --ssh`) driven by the system OpenSSH client.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::server::SshServer;
use common::{fingerprint, Bsp};

const NOT_FOUND: i32 = 3;

#[test]
fn a_known_user_runs_commands_with_the_right_streams_and_exit_codes() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);

    let quota = server.ssh(&alice, &["quota", "--json"]).success();
    let value: serde_json::Value = serde_json::from_str(&quota.stdout)
        .unwrap_or_else(|e| panic!("bad JSON over ssh: {e}\n{}", quota.stdout));
    assert!(value.is_object(), "{value}");

    let who = server.ssh(&alice, &["whoami"]).success();
    assert!(who.stdout.contains("alice"), "{}", who.stdout);
    assert!(who.stdout.contains("ssh"), "{}", who.stdout);
    assert!(who.stdout.contains(&fingerprint(&alice)), "{}", who.stdout);

    let missing = server.ssh(&alice, &["vm", "show", "nope"]).code(NOT_FOUND);
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);

    // The command line is split like a shell would, never given to one.
    let injected = server.ssh(&alice, &["vm list; id"]);
    assert_ne!(injected.code, 0, "{}", injected.stdout);
    assert!(!injected.stdout.contains("uid="), "{}", injected.stdout);
    assert!(!injected.stderr.contains("uid="), "{}", injected.stderr);

    // A leading `basphere` is the same command.
    server.ssh(&alice, &["basphere", "whoami"]).success();
}

#[test]
fn the_shell_without_a_command_is_the_welcome() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    let welcome = server.ssh(&alice, &[]).success();
    assert!(
        welcome.stdout.contains("signed in as alice"),
        "{}",
        welcome.stdout
    );
    assert!(welcome.stdout.contains("Commands:"), "{}", welcome.stdout);
    assert!(!welcome.stdout.contains(" serve "), "{}", welcome.stdout);
}

#[test]
fn an_unknown_key_gets_the_signup_screen_and_nothing_else() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_PUBLIC_URL", "https://signup.example.test");
    bsp.add_user("alice");
    let stranger = bsp.keygen("stranger");
    let server = SshServer::start(&bsp);
    let before = bsp.state();

    for command in [
        &["whoami"][..],
        &[][..],
        &["key", "add", "ssh-ed25519 AAAA"][..],
    ] {
        let screen = server.ssh(&stranger, command).code(1);
        assert!(
            screen.stderr.contains(&fingerprint(&stranger)),
            "{}",
            screen.stderr
        );
        assert!(
            screen.stderr.contains("no signup with this key is pending"),
            "{}",
            screen.stderr
        );
        assert!(
            screen.stderr.contains("https://signup.example.test"),
            "{}",
            screen.stderr
        );
        assert!(screen.stdout.is_empty(), "{}", screen.stdout);
    }
    assert_eq!(bsp.state(), before);

    // A key waiting for approval is told so.
    let waiting = bsp.keygen("waiting");
    let conn = rusqlite::Connection::open(bsp.data_dir().join("basphere.db")).unwrap();
    conn.execute(
        "INSERT INTO signups (user_id, email, public_key, fingerprint, algorithm, reason, state,
                              token_expires_at, status_hash, created_at)
         VALUES ('carol', 'carol@example.com', 'ssh-ed25519 AAAA', ?1, 'ssh-ed25519', 'work',
                 'pending_approval', 4102444800, 'status', 0)",
        [fingerprint(&waiting)],
    )
    .unwrap();
    let screen = server.ssh(&waiting, &["vm", "list"]).code(1);
    assert!(
        screen
            .stderr
            .contains("a signup for `carol` with this key is pending (pending approval)"),
        "{}",
        screen.stderr
    );
    assert!(
        screen.stderr.contains(&fingerprint(&waiting)),
        "{}",
        screen.stderr
    );
}

#[test]
fn a_disabled_user_and_other_login_names_are_refused() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    server.ssh(&alice, &["whoami"]).success();

    let root = server.ssh_as(&alice, "root", &["whoami"]);
    assert_eq!(root.code, 255, "{}", root.stderr);
    assert!(root.stderr.contains("Permission denied"), "{}", root.stderr);

    bsp.run(&["admin", "user", "disable", "alice"]).success();
    let refused = server.ssh(&alice, &["whoami"]);
    assert_eq!(refused.code, 255, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("Permission denied"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("alice"), "{}", refused.stdout);
}

#[test]
fn stdin_is_piped_into_key_add() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let laptop = bsp.keygen("laptop");
    let server = SshServer::start(&bsp);
    let public = std::fs::read_to_string(laptop.with_extension("pub")).unwrap();
    server
        .ssh_with_stdin(&alice, &["key", "add"], &public)
        .success();
    let keys = server.ssh(&alice, &["key", "list", "--json"]).success();
    assert!(
        keys.stdout.contains(&fingerprint(&laptop)),
        "{}",
        keys.stdout
    );
    // The new key logs in as alice.
    let who = server.ssh(&laptop, &["whoami"]).success();
    assert!(who.stdout.contains("alice"), "{}", who.stdout);
}

#[test]
fn the_host_key_is_made_once_and_kept() {
    let bsp = Bsp::new();
    let first = SshServer::start(&bsp);
    let path = bsp.data_dir().join("ssh_host_ed25519_key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "host key mode {mode:o}");
    assert!(first.host_key.starts_with("SHA256:"), "{}", first.host_key);
    let key = first.host_key.clone();
    drop(first);
    let second = SshServer::start(&bsp);
    assert_eq!(second.host_key, key);

    // What the client sees is that key.
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &second.port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut keygen = Command::new("ssh-keygen")
        .args(["-lf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    keygen
        .stdin
        .take()
        .unwrap()
        .write_all(scanned.as_bytes())
        .unwrap();
    let listed = String::from_utf8(keygen.wait_with_output().unwrap().stdout).unwrap();
    assert!(listed.contains(&key), "{listed}\n{scanned}");
}

#[test]
fn two_connections_run_at_once() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let bob = bsp.add_user("bob");
    let laptop = bsp.keygen("laptop");
    let server = SshServer::start(&bsp);
    // Alice's command waits for stdin that has not come yet...
    let mut waiting = server
        .ssh_command(&alice, "basphere", &["key", "add"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // ...while Bob's commands, and another of Alice's, run to the end.
    let who = server.ssh(&bob, &["whoami"]).success();
    assert!(who.stdout.contains(&fingerprint(&bob)), "{}", who.stdout);
    server.ssh(&alice, &["quota", "--json"]).success();
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "key add did not wait"
    );

    let public = std::fs::read_to_string(laptop.with_extension("pub")).unwrap();
    let mut input = waiting.stdin.take().unwrap();
    input.write_all(public.as_bytes()).unwrap();
    drop(input);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who = server.ssh(&laptop, &["whoami"]).success();
    assert!(who.stdout.contains("alice"), "{}", who.stdout);
}
