//! The job runner (`admin run-jobs`) through the real binary: what is due runs and is
//! recorded, a job runs once however many runners start together, a run killed half way
//! is finished by the next; mail through a real SMTP server, from the runner and from
//! `serve` whichever doors it opens; systemd's readiness protocol on a real socket; and
//! every unit in templates/systemd/ checked by `systemd-analyze verify`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::bin::{Bsp, Run};
use crate::fixtures::smtp::{require_aiosmtpd, Smtp};
use crate::fixtures::{free_port, poll, unique};

/// A fixed clock, as every rule reads it.
const T: i64 = 1_800_000_000;

/// `admin run-jobs ARGS --json`, by job name; the whole run too.
fn run_jobs(bsp: &Bsp, args: &[&str]) -> (Run, Vec<Value>) {
    let mut all = vec!["admin", "run-jobs"];
    all.extend(args);
    all.push("--json");
    let run = bsp.run(&all);
    let jobs = serde_json::from_str::<Value>(&run.stdout)
        .unwrap_or_else(|e| {
            panic!(
                "bad JSON from run-jobs: {e}\n{}\n{}",
                run.stdout, run.stderr
            )
        })
        .as_array()
        .unwrap()
        .clone();
    (run, jobs)
}

fn job<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs:?}"))
}

fn results(jobs: &[Value]) -> Vec<(String, String)> {
    jobs.iter()
        .map(|j| {
            let name = j["name"].as_str().unwrap().to_owned();
            (name, j["result"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Queues one message in the outbox, due at `due`, as a change that mails would.
fn queue_mail(bsp: &Bsp, to: &str, due: i64) {
    let conn = rusqlite::Connection::open(bsp.data_dir().join("basphere.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "INSERT INTO mail_outbox (recipient, subject, body, created_at, next_attempt_at)
         VALUES (?1, 'Hello from the outbox', 'A test message.', ?2, ?2)",
        rusqlite::params![to, due],
    )
    .unwrap();
}

fn spooled(bsp: &Bsp) -> usize {
    std::fs::read_dir(bsp.data_dir().join("spool"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn run_jobs_runs_what_is_due_and_records_each_run() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_NOW", &T.to_string());
    queue_mail(&bsp, "carol@example.com", T);

    let (run, jobs) = run_jobs(&bsp, &[]);
    let run = run.success();
    assert_eq!(
        results(&jobs),
        pairs(&[("mail", "ok"), ("prune", "ok"), ("reconcile", "ok")]),
        "{}",
        run.stderr
    );
    for j in &jobs {
        assert_eq!(j["runs"], 1, "{j}");
        assert_eq!(j["last_start"], T);
        assert_eq!(j["last_success"], T);
        assert!(j["last_error"].is_null());
        assert!(j["last_duration_ms"].as_i64().is_some());
    }
    assert_eq!(job(&jobs, "mail")["detail"], "1 sent");
    assert_eq!(job(&jobs, "mail")["next_due"], T + 60);
    assert_eq!(job(&jobs, "prune")["next_due"], T + 3600);
    assert_eq!(spooled(&bsp), 1, "the mail went to the spool");

    // At once again: nothing is due, nothing runs.
    let (_, jobs) = run_jobs(&bsp, &[]);
    assert_eq!(
        results(&jobs),
        pairs(&[
            ("mail", "not_due"),
            ("prune", "not_due"),
            ("reconcile", "not_due")
        ])
    );
    assert!(jobs.iter().all(|j| j["runs"] == 1));

    // A minute later only mail is due.
    bsp.set_env("BASPHERE_NOW", &(T + 60).to_string());
    let (_, jobs) = run_jobs(&bsp, &[]);
    assert_eq!(
        results(&jobs),
        pairs(&[
            ("mail", "ok"),
            ("prune", "not_due"),
            ("reconcile", "not_due")
        ])
    );
    assert_eq!(job(&jobs, "mail")["runs"], 2);

    // --only runs the named jobs now, due or not, and nothing else.
    let (_, jobs) = run_jobs(&bsp, &["--only", "prune", "--only", "reconcile"]);
    assert_eq!(
        results(&jobs),
        pairs(&[("prune", "ok"), ("reconcile", "ok")])
    );
    assert_eq!(job(&jobs, "prune")["runs"], 2);

    // A job that does not exist is a usage error that runs nothing.
    let before = bsp.json(&["admin", "run-jobs", "--list"]);
    bsp.run(&["admin", "run-jobs", "--only", "backup"])
        .code(2)
        .stderr_has("no job `backup`: the jobs are mail, prune, reconcile");
    assert_eq!(bsp.json(&["admin", "run-jobs", "--list"]), before);

    // The table people read.
    let table = bsp.run(&["admin", "run-jobs", "--list"]).success().stdout;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|s| !s.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "JOB",
            "LAST START",
            "LAST SUCCESS",
            "LAST ERROR",
            "DURATION",
            "NEXT DUE"
        ]
    );
    assert!(table.contains("2027-01-15 08:01:00Z"), "{table}");
}

#[test]
fn a_failed_job_is_recorded_with_its_error_and_fails_the_run() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_NOW", &T.to_string());
    // No libvirt at this address: prune cannot reach the hypervisor.
    bsp.set_env(
        "BASPHERE_LIBVIRT_URI",
        "qemu+unix:///system?socket=/nonexistent/sock",
    );
    let (run, jobs) = run_jobs(&bsp, &["--only", "prune"]);
    run.code(1).stderr_has("error: job prune failed: ");
    let prune = job(&jobs, "prune");
    assert_eq!(prune["result"], "failed");
    assert_eq!(prune["runs"], 1);
    assert_eq!(prune["consecutive_failures"], 1);
    assert!(prune["last_success"].is_null());
    let error = prune["last_error"].as_str().unwrap();
    assert!(!error.is_empty() && error == prune["detail"], "{prune}");
    // Failed runs wait their interval like any other.
    assert_eq!(prune["next_due"], T + 3600);
    let table = bsp.run(&["admin", "run-jobs", "--list"]).success().stdout;
    assert!(table.contains(error.lines().next().unwrap()), "{table}");
}

#[test]
fn many_runners_at_once_run_each_job_once() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_NOW", &T.to_string());
    queue_mail(&bsp, "dan@example.com", T);
    let children: Vec<_> = (0..6)
        .map(|_| {
            bsp.command(&["admin", "run-jobs", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let jobs = bsp.json(&["admin", "run-jobs", "--list"]);
    for j in jobs.as_array().unwrap() {
        assert_eq!(j["runs"], 1, "each job ran exactly once: {j}");
    }
    assert_eq!(spooled(&bsp), 1, "the mail went out once");
}

#[test]
fn a_job_running_elsewhere_is_skipped_not_waited_for() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_NOW", &T.to_string());
    let held = bsp.start_paused("job-mail", &["admin", "run-jobs", "--only", "mail"]);
    let started = Instant::now();
    let (run, jobs) = run_jobs(&bsp, &[]);
    let run = run
        .success()
        .stderr_has("mail: running in another process; skipped, not waited for");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{}",
        run.stderr
    );
    assert_eq!(
        results(&jobs),
        pairs(&[("mail", "busy"), ("prune", "ok"), ("reconcile", "ok")])
    );
    // The one that holds it is running: started, not ended.
    assert_eq!(job(&jobs, "mail")["last_start"], T);
    assert!(job(&jobs, "mail")["last_end"].is_null());
    held.open().success();
    let jobs = bsp.json(&["admin", "run-jobs", "--list"]);
    let mail = job(jobs.as_array().unwrap(), "mail");
    assert_eq!(
        (mail["runs"].clone(), mail["last_end"].clone()),
        (1.into(), T.into())
    );
}

#[test]
fn a_run_killed_half_way_leaves_what_the_next_run_finishes() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_NOW", &T.to_string());
    queue_mail(&bsp, "erin@example.com", T);
    let gate = bsp.dir.path().join(format!("gate-{}", unique()));
    std::fs::write(&gate, "").unwrap();
    let mut child = bsp
        .command(&["admin", "run-jobs"])
        .env("BASPHERE_PAUSE_AT", format!("job-mail:{}", gate.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reached = gate.with_extension("reached");
    poll::eventually(Duration::from_secs(30), || {
        reached
            .exists()
            .then_some(())
            .ok_or("run-jobs inside the mail job")
    });
    child.kill().unwrap(); // SIGKILL, half way through the mail job
    child.wait().unwrap();

    let jobs = bsp.json(&["admin", "run-jobs", "--list"]);
    let mail = job(jobs.as_array().unwrap(), "mail");
    assert_eq!(mail["last_start"], T);
    assert!(mail["last_end"].is_null(), "{mail}");
    assert_eq!(
        mail["next_due"], T,
        "a run that never ended makes the job due"
    );
    assert_eq!(spooled(&bsp), 0);
    let list = bsp.run(&["admin", "run-jobs", "--list"]).success().stdout;
    assert!(list.contains("unfinished"), "{list}");

    // Same clock, no --only: the lock went with the process, and the job runs again.
    let (run, jobs) = run_jobs(&bsp, &[]);
    run.success();
    let mail = job(&jobs, "mail");
    assert_eq!(mail["result"], "ok");
    assert_eq!(mail["detail"], "1 sent");
    assert_eq!(
        (mail["runs"].clone(), mail["last_end"].clone()),
        (1.into(), T.into())
    );
    assert_eq!(spooled(&bsp), 1);
}

#[test]
fn the_mail_job_delivers_through_a_real_smtp_server() {
    if !require_aiosmtpd() {
        return;
    }
    let mut bsp = Bsp::new();
    let smtp = Smtp::start(bsp.dir.path());
    smtp.configure(&mut bsp);
    queue_mail(&bsp, "frank@example.com", 0);
    let (run, jobs) = run_jobs(&bsp, &["--only", "mail"]);
    run.success();
    assert_eq!(job(&jobs, "mail")["detail"], "1 sent");
    let mails = smtp.wait_for(1);
    assert_eq!(mails[0].rcpt_to, "frank@example.com");
    assert_eq!(mails[0].subject, "Hello from the outbox");
    assert_eq!(bsp.json(&["admin", "mail"]).as_array().unwrap().len(), 0);
}

/// `basphere serve ARGS` with its stdout read line by line.
struct Serve {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Serve {
    fn start(cmd: &mut Command) -> Serve {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Serve { child, lines }
    }

    /// The lines up to and including the one that starts with `prefix`.
    fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            let done = line.starts_with(prefix);
            seen.push(line);
            if done {
                return seen;
            }
        }
        panic!("serve ended before `{prefix}`: {seen:?}");
    }

    fn stop(mut self) -> std::process::Output {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut rest = String::new();
        for line in self.lines.by_ref() {
            rest.push_str(&line.unwrap());
        }
        let mut stderr = Vec::new();
        if let Some(mut err) = self.child.stderr.take() {
            std::io::Read::read_to_end(&mut err, &mut stderr).unwrap();
        }
        let status = self.child.wait().unwrap();
        std::process::Output {
            status,
            stdout: rest.into_bytes(),
            stderr,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_with_only_the_ssh_door_still_sends_mail() {
    if !require_aiosmtpd() {
        return;
    }
    let mut bsp = Bsp::new();
    let smtp = Smtp::start(bsp.dir.path());
    smtp.configure(&mut bsp);
    let clock = bsp.dir.path().join("clock");
    std::fs::write(&clock, T.to_string()).unwrap();
    bsp.set_env("BASPHERE_NOW", clock.to_str().unwrap());
    queue_mail(&bsp, "gina@example.com", T);
    let mut serve = Serve::start(&mut bsp.command(&["serve", "--ssh", "127.0.0.1:0"]));
    let first = serve.until("ssh: listening on ");
    assert_eq!(first.len(), 1, "no web door: {first:?}");
    let mails = smtp.wait_for(1);
    assert_eq!(mails[0].rcpt_to, "gina@example.com");

    // Mail queued later goes out on serve's tick, once the job is due again.
    queue_mail(&bsp, "hana@example.com", T);
    std::fs::write(&clock, (T + 60).to_string()).unwrap();
    let mails = smtp.wait_for(2);
    assert_eq!(mails[1].rcpt_to, "hana@example.com");
    let jobs = bsp.json(&["admin", "run-jobs", "--list"]);
    let mail = job(jobs.as_array().unwrap(), "mail");
    assert!(mail["runs"].as_i64() >= Some(2), "{mail}");
    assert_eq!(mail["last_success"], T + 60);
    assert!(serve.stop().status.success());
}

#[test]
fn the_settings_pick_the_doors_and_the_flags_override_them() {
    let mut bsp = Bsp::new();
    // In the file: SSH on; in the environment: the web form off.
    let config = bsp.dir.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[serve]\nssh = \"127.0.0.1:0\"\n");
    std::fs::write(&config, text).unwrap();
    bsp.set_env("BASPHERE_SERVE_WEB", "off");
    let mut serve = Serve::start(&mut bsp.command(&["serve"]));
    let lines = serve.until("ssh: host key ");
    assert!(
        lines[0].starts_with("ssh: listening on 127.0.0.1:"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("web:")), "{lines:?}");
    drop(serve);

    // Both settings on: both doors, the web form first.
    bsp.set_env("BASPHERE_SERVE_WEB", "127.0.0.1:0");
    let mut serve = Serve::start(&mut bsp.command(&["serve"]));
    let lines = serve.until("ssh: listening on ");
    assert!(
        lines[0].starts_with("web: listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    drop(serve);

    // A flag names the doors alone: `--web` opens no SSH server.
    let mut serve = Serve::start(&mut bsp.command(&["serve", "--web", "127.0.0.1:0"]));
    serve.until("web: listening on ");
    let out = serve.stop();
    let rest = String::from_utf8_lossy(&out.stdout);
    assert!(!rest.contains("ssh: listening"), "{rest}");

    // Both off: a usage error naming both settings, and nothing listens.
    bsp.set_env("BASPHERE_SERVE_WEB", "off");
    bsp.set_env("BASPHERE_SERVE_SSH", "off");
    bsp.run(&["serve"])
        .code(2)
        .stderr_has("`serve.web` and `serve.ssh` are both `off`");
    // A bad address is refused, naming the setting.
    bsp.set_env("BASPHERE_SERVE_SSH", "localhost");
    bsp.run(&["serve"]).code(1).stderr_has("BASPHERE_SERVE_SSH");
}

/// A socket in the role of systemd's notification socket, and what came on it.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join(format!("notify-{}.sock", unique()));
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { path, socket }
    }

    /// The next message within `timeout`, if any.
    fn recv(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }
}

#[test]
fn serve_tells_systemd_it_is_ready_only_once_every_door_listens() {
    let bsp = Bsp::new();
    let notify = NotifySocket::bind(bsp.dir.path());
    let (web, ssh) = (free_port(), free_port());
    let mut cmd = bsp.command(&[
        "serve",
        "--web",
        &format!("127.0.0.1:{web}"),
        "--ssh",
        &format!("127.0.0.1:{ssh}"),
    ]);
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let serve = Serve::start(&mut cmd);
    let ready = notify
        .recv(Duration::from_secs(30))
        .expect("READY=1 within 30 s");
    assert_eq!(ready.trim(), "READY=1");
    // The moment it says so, both doors take connections.
    for port in [web, ssh] {
        TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("READY=1 came before port {port} listened: {e}"));
    }
    assert_eq!(notify.recv(Duration::from_millis(500)), None, "one READY=1");
    let out = serve.stop();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        notify
            .recv(Duration::from_secs(5))
            .as_deref()
            .map(str::trim),
        Some("STOPPING=1")
    );

    // A door that cannot listen: serve fails, and never says it is ready.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = bsp.command(&[
        "serve",
        "--web",
        "127.0.0.1:0",
        "--ssh",
        &format!("127.0.0.1:{port}"),
    ]);
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(&format!("cannot listen on 127.0.0.1:{port}")));
    assert_eq!(notify.recv(Duration::from_millis(500)), None, "no READY=1");
}

const UNITS: &[&str] = &[
    "basphere.service",
    "basphere-jobs.service",
    "basphere-jobs.timer",
    "basphere-reconcile.service",
];

fn have_systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: systemd-analyze is not installed (Debian package systemd)");
    }
    found
}

/// An offline root for `systemd-analyze verify --root`: systemd's own units from this
/// host, `kill`, the binary as the package installs it, and the units under test.
fn unit_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for sub in ["usr/bin", "usr/lib/systemd", "etc/systemd/system"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::copy("/usr/bin/kill", root.join("usr/bin/kill")).unwrap();
    std::fs::copy(crate::fixtures::bin::BIN, root.join("usr/bin/basphere")).unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/systemd");
    for unit in UNITS {
        std::fs::copy(
            templates.join(unit),
            root.join("etc/systemd/system").join(unit),
        )
        .unwrap();
    }
    root
}

/// `systemd-analyze verify` of `units` in `root`: its complaints, empty when it has none
/// (it exits 0 on a key it ignores, so what it prints counts as much as its status).
fn verify(root: &Path, units: &[&str]) -> String {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        // Documentation= is checked below against man/, not by running man(1).
        .arg("--man=no")
        .args(
            units
                .iter()
                .map(|u| root.join("etc/systemd/system").join(u)),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match (out.status.success(), text.trim()) {
        (true, "") => String::new(),
        (ok, text) => format!("exit ok: {ok}\n{text}"),
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = unit_root(dir.path());
    assert_eq!(verify(&root, UNITS), "", "systemd-analyze verify");

    // Each page a unit names is one basphere ships.
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for unit in UNITS {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).unwrap();
        for page in text
            .lines()
            .filter_map(|l| l.strip_prefix("Documentation=man:"))
        {
            let name = page.trim_end_matches("(1)");
            assert!(
                man.join(format!("{name}.1")).exists(),
                "{unit}: no man/{name}.1"
            );
        }
    }

    // The check is real: each kind of mistake is caught.
    let unit = root.join("etc/systemd/system/basphere.service");
    let good = std::fs::read_to_string(&unit).unwrap();
    for (mistake, broken) in [
        ("a bad value", good.replace("Type=notify", "Type=notifyy")),
        (
            "an unknown key",
            good.replace("ProtectSystem=", "ProtectSytem="),
        ),
        (
            "a missing program",
            good.replace("/usr/bin/basphere serve", "/usr/bin/bsphere serve"),
        ),
        (
            "a missing unit",
            good.replace("[Unit]\n", "[Unit]\nRequires=nothere.service\n"),
        ),
    ] {
        assert_ne!(broken, good, "{mistake}");
        std::fs::write(&unit, &broken).unwrap();
        assert_ne!(
            verify(&root, &["basphere.service"]),
            "",
            "{mistake} passed verify"
        );
    }
    std::fs::write(&unit, &good).unwrap();
    assert_eq!(verify(&root, &["basphere.service"]), "");
}
