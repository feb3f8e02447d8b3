//! Attacks on `serve` by a stranger or a misbehaving client: each runs for real, and
//! meanwhile a registered user's OpenSSH login works within 2 s and `/healthz` answers.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::bin::Bsp;
use crate::fixtures::ssh::SshServer;
use crate::fixtures::web::Http;

/// Debian's Python, which has paramiko (python3-paramiko).
const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> String {
    format!(
        "{}/tests/it/fixtures/attacks/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A registered user logs in and runs a command within 2 s, and the web server, where
/// it runs, answers `/healthz` within 2 s.
#[track_caller]
fn login_is_quick(server: &SshServer, key: &Path) {
    let started = Instant::now();
    server.ssh(key, &["whoami"]).success();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a login took {took:?} during the attack"
    );
    if let Some(web) = &server.web {
        let started = Instant::now();
        let reply = Http::new().get(&format!("{web}/healthz"));
        let took = started.elapsed();
        assert_eq!(
            reply.status, 200,
            "/healthz during the attack: {}",
            reply.body
        );
        assert!(
            took < Duration::from_secs(2),
            "/healthz took {took:?} during the attack"
        );
    }
}

#[test]
fn an_unknown_key_gets_one_channel_and_its_connection_closes() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let stranger = bsp.keygen("stranger");
    let server = SshServer::start_with_web(&bsp);
    let attack = Command::new(PYTHON)
        .arg(script("zero_window.py"))
        .arg(server.port.to_string())
        .arg(&stranger)
        .arg("100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with paramiko (apt-get install python3-paramiko)");
    // While it runs: logins go on.
    for _ in 0..3 {
        login_is_quick(&server, &alice);
    }
    let out = attack.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("accepted=1 ") && report.contains("closed=True"),
        "the server should accept one channel and close the connection: {report}"
    );
    login_is_quick(&server, &alice);
}

#[test]
fn connections_that_only_send_a_banner_are_capped_and_closed() {
    let mut bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    bsp.set_env("BASPHERE_SSH_LOGIN_GRACE_TIME", "3s");
    let server = SshServer::start_with_web(&bsp);
    // 58 connections, under the per-minute limit, from another address of this host.
    let mut attack = Command::new(PYTHON)
        .arg(script("banners.py"))
        .args([&server.port.to_string(), "127.0.0.2", "58", "15"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attack.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    login_is_quick(&server, &alice);
    login_is_quick(&server, &alice);
    writeln!(attack.stdin.as_mut().unwrap()).unwrap();
    let closed = lines.next().unwrap().unwrap();
    assert_eq!(closed, "closed=58", "every banner-only connection ends");
    attack.wait().unwrap();
    let log = server.log();
    assert!(log.contains("too many connections"), "{log}");
    assert!(
        log.contains("not authenticated in time") || log.contains("no key exchange in time"),
        "{log}"
    );
    login_is_quick(&server, &alice);
}

/// ssh-audit (the version scripts/test pins) finds nothing to fault in what the server
/// offers; the one remark allowed is its note that curve25519 is not post-quantum.
#[test]
fn ssh_audit_accepts_the_algorithms_and_the_throttling() {
    let Some(audit) = std::env::var_os("BASPHERE_TEST_SSH_AUDIT") else {
        eprintln!("skipped: BASPHERE_TEST_SSH_AUDIT is not set (scripts/test sets it)");
        return;
    };
    let mut bsp = Bsp::new();
    // The defaults, as an installation has them.
    bsp.set_env("BASPHERE_SSH_CONNECTION_BURST", "10");
    bsp.set_env("BASPHERE_SSH_CONNECTIONS_PER_MINUTE", "60");
    let server = SshServer::start_with_web(&bsp);
    let out = Command::new(audit)
        .args([
            "--no-colors",
            "--json",
            "-p",
            &server.port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("ssh-audit printed no JSON ({e}): {text}"));
    let mut findings = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for algorithm in report[section].as_array().into_iter().flatten() {
            for level in ["fail", "warn"] {
                if let Some(notes) = algorithm["notes"][level].as_array() {
                    for note in notes {
                        findings.push(format!(
                            "{section} {}: {level} {note}",
                            algorithm["algorithm"]
                        ));
                    }
                }
            }
        }
    }
    for (level, items) in report["recommendations"].as_object().into_iter().flatten() {
        findings.push(format!("recommendation {level}: {items}"));
    }
    let allowed = |f: &String| f.contains("curve25519") && f.to_lowercase().contains("quantum");
    let unexpected: Vec<_> = findings.iter().filter(|f| !allowed(f)).collect();
    assert!(
        unexpected.is_empty(),
        "ssh-audit findings: {unexpected:#?}\n{text}"
    );
    let info = text.to_lowercase();
    assert!(
        !info.contains("insufficient connection throttling"),
        "{text}"
    );
}

/// A client that asks for forwards it may not have, with huge host names: each refusal
/// logs a short quoted host, and the tenth ends the connection.
#[test]
fn refused_forwards_cannot_flood_the_log() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start_with_web(&bsp);
    let out = Command::new(PYTHON)
        .arg(script("forwards.py"))
        .arg(server.port.to_string())
        .arg(&alice)
        .args(["200", "40000"])
        .output()
        .expect("python3 with paramiko");
    let report = String::from_utf8_lossy(&out.stdout);
    // The tenth refusal and the end of the connection race to the client.
    let answered = ["answered=9 ", "answered=10 "]
        .iter()
        .any(|a| report.contains(a));
    assert!(
        answered && report.contains("active=False"),
        "the tenth refused forward should end the connection: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_log("too many refused forwards");
    let log = server.log();
    let long: Vec<String> = (log.lines())
        .filter(|l| l.len() > 500)
        .map(|l| l.chars().take(300).collect())
        .collect();
    assert!(
        log.len() < 20_000,
        "the log grew to {} bytes: {long:#?}",
        log.len()
    );
    login_is_quick(&server, &alice);
}

/// A registered user's client that opens no window: each of its commands is cancelled
/// after `ssh.write_timeout` of no progress, and its session slots come back.
#[test]
fn commands_whose_client_opens_no_window_are_cancelled() {
    let mut bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let mallory = bsp.add_user("mallory");
    bsp.set_env("BASPHERE_SSH_WRITE_TIMEOUT", "2s");
    let server = SshServer::start_with_web(&bsp);
    let attack = Command::new(PYTHON)
        .arg(script("stalled.py"))
        .arg(server.port.to_string())
        .arg(&mallory)
        .args(["20", "--help"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with paramiko");
    login_is_quick(&server, &alice);
    let out = attack.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sixteen channels a connection; each command ends, cancelled, not finished.
    assert!(
        report.contains("accepted=16 ended=16 ") && !report.contains("statuses=[0"),
        "each stalled command should be cancelled: {report}"
    );
    server.wait_log("its client opened no window");
    // The slots are free again: mallory runs as many sessions as before.
    login_is_quick(&server, &mallory);
    // The same on a terminal: the prompt there, waiting for a command, is hung up.
    let out = Command::new(PYTHON)
        .arg(script("stalled.py"))
        .arg(server.port.to_string())
        .arg(&mallory)
        .args(["4", "shell", "pty"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("accepted=4 ended=4 ") && !report.contains("statuses=[0"),
        "each stalled terminal should be hung up: {report}"
    );
    server.wait_log("ssh terminal hung up");
    login_is_quick(&server, &alice);
}

/// A client that opens its window slowly but steadily is not cancelled, however long
/// the whole output takes.
#[test]
fn a_slow_client_that_keeps_reading_is_not_cancelled() {
    let mut bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    bsp.set_env("BASPHERE_SSH_WRITE_TIMEOUT", "2s");
    let server = SshServer::start(&bsp);
    let whole = server.ssh(&alice, &["--", "--help"]).success().stdout.len();
    assert!(
        whole > 1500,
        "help is {whole} bytes: too short for this test"
    );
    let out = Command::new(PYTHON)
        .arg(script("slow_reader.py"))
        .arg(server.port.to_string())
        .arg(&alice)
        .args(["--help", &(whole / 5).to_string(), "1.0"])
        .output()
        .expect("python3 with paramiko");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("received={whole} status=0 ")),
        "the whole output, then exit 0: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Web clients that trickle their headers, or send none, are closed by the header
/// deadline, while others are served.
#[test]
fn web_clients_that_trickle_headers_are_closed() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start_with_web(&bsp);
    let web = server.web.clone().unwrap();
    let port = web.rsplit(':').next().unwrap().to_owned();
    let mut attack = Command::new(PYTHON)
        .arg(script("trickle.py"))
        .args([&port, "40", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attack.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    login_is_quick(&server, &alice);
    let closed = lines.next().unwrap().unwrap();
    assert_eq!(closed, "closed=40", "every slow connection ends");
    attack.wait().unwrap();
    login_is_quick(&server, &alice);
}
