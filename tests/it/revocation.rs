//! Revocation that bites on the embedded server: a live connection whose key is
//! removed, or whose user is disabled or removed, runs nothing more and is closed
//! within 5 s, whichever process made the change.

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::fixtures::bin::{fingerprint, Bsp};
use crate::fixtures::ssh::SshServer;

/// Debian's Python, which has paramiko (python3-paramiko).
const PYTHON: &str = "/usr/bin/python3";

/// One authenticated connection, held open by a client until `then`.
struct Held {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Held {
    /// Authenticates with `key`; `command` is what `then` runs over the connection.
    fn open(server: &SshServer, key: &Path, command: &str) -> Held {
        let script = format!(
            "{}/tests/it/fixtures/attacks/revoked.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = Command::new(PYTHON)
            .arg(script)
            .arg(server.port.to_string())
            .arg(key)
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with paramiko");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        Held { child, lines }
    }

    /// Runs the command over the held connection and waits for the server to close
    /// it: the client's report.
    fn then(mut self) -> String {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        let report = self.lines.next().unwrap().unwrap();
        self.child.wait().unwrap();
        report
    }
}

/// Whether the report says the command did not run and the connection closed in 5 s.
#[track_caller]
fn assert_cut_off(report: &str) {
    assert!(
        !report.starts_with("status=0 "),
        "the command ran on a revoked connection: {report}"
    );
    let after: f64 = report
        .split("after=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        report.contains("closed=True") && after < 5.0,
        "the connection should close within 5 s: {report}"
    );
}

#[test]
fn a_removed_key_runs_nothing_more_and_its_connection_closes() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let second = bsp.add_key("alice", "alice2");
    let server = SshServer::start(&bsp);
    let held = Held::open(&server, &alice, "key add");
    // Another process removes the key: here an administrator at the bastion.
    bsp.run(&["--as", "alice", "key", "remove", &fingerprint(&alice)])
        .success();
    let report = held.then();
    assert_cut_off(&report);
    server.wait_log("its key or user was revoked");
    // The other key still works.
    server.ssh(&second, &["whoami"]).success();
}

#[test]
fn a_disabled_user_runs_nothing_more_and_its_connection_closes() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    let held = Held::open(&server, &alice, "whoami");
    bsp.run(&["admin", "user", "disable", "alice"]).success();
    assert_cut_off(&held.then());
}

#[test]
fn a_user_removed_and_made_again_is_not_the_old_connection() {
    let bsp = Bsp::new();
    let carol = bsp.add_user("carol");
    let server = SshServer::start(&bsp);
    let held = Held::open(&server, &carol, "whoami");
    bsp.run(&["admin", "user", "remove", "carol", "--yes"])
        .success();
    // Someone else gets the id, and even the old key: a new user all the same.
    bsp.add_user_with_key("carol", &carol);
    let report = held.then();
    assert_cut_off(&report);
    // A new connection with the key is the new carol.
    server.ssh(&carol, &["whoami"]).success();
}

#[test]
fn removing_ones_own_key_answers_then_closes_the_connection() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    bsp.add_key("alice", "alice2");
    let server = SshServer::start(&bsp);
    let command = format!("key remove {}", fingerprint(&alice));
    let report = Held::open(&server, &alice, &command).then();
    assert!(
        report.starts_with("status=0 ") && report.contains("closed=True"),
        "the removal answers, then the connection closes: {report}"
    );
}
