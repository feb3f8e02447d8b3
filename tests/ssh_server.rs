//! The embedded SSH server (`basphere serve --ssh`) driven by the system OpenSSH client.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{fingerprint, run_piped, Bsp, Run};

const NOT_FOUND: i32 = 3;

/// `basphere serve --ssh 127.0.0.1:0`, killed when dropped.
struct SshServer {
    port: u16,
    host_key: String,
    child: Child,
}

impl SshServer {
    fn start(bsp: &Bsp) -> SshServer {
        let mut child = bsp
            .command(&["serve", "--ssh", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first
            .strip_prefix("ssh: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {first:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        let second = lines.next().unwrap().unwrap();
        let host_key = second
            .strip_prefix("ssh: host key ")
            .unwrap_or_else(|| panic!("unexpected second line from serve: {second:?}"))
            .to_owned();
        SshServer {
            port,
            host_key,
            child,
        }
    }

    fn ssh_command(&self, key: &Path, login: &str, command: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-T"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "IdentityAgent=none"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=20"])
            .args(["-p", &self.port.to_string()])
            .arg("-i")
            .arg(key)
            .arg(format!("{login}@127.0.0.1"))
            .args(command)
            .stdin(Stdio::null());
        cmd
    }

    /// `ssh basphere@127.0.0.1 COMMAND...` with `key`.
    fn ssh(&self, key: &Path, command: &[&str]) -> Run {
        self.ssh_as(key, "basphere", command)
    }

    fn ssh_as(&self, key: &Path, login: &str, command: &[&str]) -> Run {
        let out = self.ssh_command(key, login, command).output().unwrap();
        run_of(out, command)
    }

    fn ssh_with_stdin(&self, key: &Path, command: &[&str], input: &str) -> Run {
        let mut run = run_piped(self.ssh_command(key, "basphere", command), input, command);
        run.args = format!("(over ssh) {}", command.join(" "));
        run
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_of(out: std::process::Output, command: &[&str]) -> Run {
    let mut run = Run::from(out, command);
    run.args = format!("(over ssh) {}", command.join(" "));
    run
}

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
