//! The embedded SSH server (`basphere serve --ssh`) driven by the system OpenSSH client.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::fixtures::bin::{fingerprint, Bsp};
use crate::fixtures::libvirt::{require_libvirt, Cleanup};
use crate::fixtures::poll;
use crate::fixtures::ssh::SshServer;
use crate::fixtures::terminal::CTRL_C;

const DENIED: i32 = 4;

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
    let added = server
        .ssh_with_stdin(&alice, &["key", "add"], &public)
        .success();
    let code = crate::fixtures::confirm_code(&added.stdout);
    let keys = server.ssh(&alice, &["key", "list", "--json"]).success();
    let keys: serde_json::Value = serde_json::from_str(&keys.stdout).unwrap();
    let laptop_row = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == fingerprint(&laptop).as_str())
        .unwrap();
    assert_eq!(laptop_row["state"], "pending", "{keys}");
    // Pending: it logs in to nothing, and runs nothing but `key confirm`.
    server
        .ssh(&laptop, &["whoami"])
        .code(1)
        .stderr_has("not registered");
    server
        .ssh(&laptop, &["key", "confirm", "AAAA-AAAA"])
        .code(DENIED)
        .stderr_has("does not confirm");
    server.ssh(&laptop, &["key", "confirm", &code]).success();
    // Once only: the key logs in now, and has nothing left to confirm.
    server
        .ssh(&laptop, &["key", "confirm", &code])
        .code(6)
        .stderr_has("already confirmed");
    // The new key logs in as alice.
    let who = server.ssh(&laptop, &["whoami"]).success();
    assert!(who.stdout.contains("alice"), "{}", who.stdout);
    let audit = bsp.run(&["admin", "audit", "--json"]).success().stdout;
    assert!(
        audit.contains("key.add_pending") && audit.contains("key.confirm"),
        "{audit}"
    );
}

/// Someone who adds a key they do not hold gets nothing: its holder's client offering
/// it logs in to no account, and their code would be needed to confirm it.
#[test]
fn a_key_added_by_someone_who_does_not_hold_it_logs_in_nowhere() {
    let bsp = Bsp::new();
    let mallory = bsp.add_user("mallory");
    let victim = bsp.keygen("victim");
    let server = SshServer::start(&bsp);
    let public = std::fs::read_to_string(victim.with_extension("pub")).unwrap();
    let added = server
        .ssh_with_stdin(&mallory, &["key", "add"], &public)
        .success();
    // Offering the key confirms nothing, and whatever it runs is not mallory's.
    for command in [&["whoami"][..], &["vm", "list"], &["key", "add"]] {
        let run = server.ssh(&victim, command);
        assert_ne!(run.code, 0, "{command:?} ran as mallory: {}", run.stdout);
        assert!(!run.stdout.contains("mallory"), "{}", run.stdout);
    }
    // Another user may add the same key pending: mallory's pending key blocks nobody.
    let bob = bsp.add_user("bob");
    let bobs = server
        .ssh_with_stdin(&bob, &["key", "add"], &public)
        .success();
    // A code shown to another session is no code for this one... unless it is the
    // holder's own: the holder confirms bob's code, and the key is bob's alone.
    let mallorys = crate::fixtures::confirm_code(&added.stdout);
    let bobs = crate::fixtures::confirm_code(&bobs.stdout);
    assert_ne!(mallorys, bobs);
    server.ssh(&victim, &["key", "confirm", &bobs]).success();
    let who = server.ssh(&victim, &["whoami"]).success();
    assert!(who.stdout.contains("bob"), "{}", who.stdout);
    let keys = server.ssh(&mallory, &["key", "list", "--json"]).success();
    assert!(
        !keys.stdout.contains(&fingerprint(&victim)),
        "{}",
        keys.stdout
    );
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
    let mut waiting = server.waiting_session(&alice);
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
    let code = crate::fixtures::confirm_code(&String::from_utf8_lossy(&out.stdout));
    server.ssh(&laptop, &["key", "confirm", &code]).success();
    let who = server.ssh(&laptop, &["whoami"]).success();
    assert!(who.stdout.contains("alice"), "{}", who.stdout);
}

/// A server whose `setting` (a `BASPHERE_SSH_*` variable) is `value`, and Alice's key.
fn server_with(setting: &str, value: &str) -> (Bsp, std::path::PathBuf, SshServer) {
    let mut bsp = Bsp::new();
    bsp.set_env(setting, value);
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    (bsp, alice, server)
}

#[test]
fn a_terminal_session_prompts_fits_tables_to_the_window_and_confirms() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.add_blank_image("blank");
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    server.ssh(&alice, &["create-vm", "web1"]).success();
    server.ssh(&alice, &["create-vm", "web2"]).success();

    let mut term = server.terminal(&alice, &[], 160, 50);
    let prompt = "alice@basphere> ";
    let welcome = term.wait_for(prompt, 30);
    assert!(welcome.contains("signed in as alice"), "{welcome}");
    assert!(welcome.contains("Quota: 2/32 vCPUs"), "{welcome}");
    assert!(
        welcome.contains("web1") && welcome.contains("web2"),
        "{welcome}"
    );

    // On a terminal, tables are boxed and fitted to the window, and follow its size.
    term.line("vm list");
    let wide = term.wait_for_count(prompt, 2, 30);
    let widest = |screen: &str, from: usize| {
        screen
            .lines()
            .skip(from)
            .filter(|l| l.contains('│'))
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0)
    };
    let table_start = wide.rfind("> vm list").unwrap();
    let before = wide[..table_start].lines().count();
    assert!(wide[table_start..].contains("web1"), "{wide}");
    let wide_width = widest(&wide, before);
    assert!((60..=160).contains(&wide_width), "{wide_width}\n{wide}");

    term.resize(60, 50);
    term.line("vm list");
    let narrow = term.wait_for_count(prompt, 3, 30);
    let before = narrow[..narrow.rfind("> vm list").unwrap()].lines().count();
    let narrow_width = widest(&narrow, before);
    assert!(
        narrow_width <= 60 && narrow_width < wide_width,
        "{narrow_width} vs {wide_width}\n{narrow}"
    );

    // Ctrl-C drops the line being typed; the session goes on.
    term.send(b"vm delete web1");
    term.send(CTRL_C);
    term.line("whoami");
    term.wait_for("via:", 30);

    // A confirmation, answered on the terminal.
    term.line("vm delete web2");
    term.wait_for("[y/N]", 30);
    term.send(b"y");
    term.wait_for_count(prompt, 5, 60);
    term.line("exit");
    assert_eq!(term.wait_exit(30), 0, "{}", term.screen());

    let vms = server.ssh(&alice, &["vm", "list", "--json"]).success();
    assert!(vms.stdout.contains("web1"), "{}", vms.stdout);
    assert!(!vms.stdout.contains("web2"), "{}", vms.stdout);
    // Without a terminal, the same table is plain and stable.
    let plain = server.ssh(&alice, &["vm", "list"]).success();
    assert!(plain.stdout.starts_with("NAME  STATE"), "{}", plain.stdout);
    assert!(!plain.stdout.contains('│'), "{}", plain.stdout);
}

#[test]
fn a_command_on_a_terminal_gets_its_exit_status_and_stays_on_the_terminal() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    let mut term = server.terminal(&alice, &["vm", "show", "nope"], 100, 30);
    assert_eq!(term.wait_exit(30), NOT_FOUND, "{}", term.screen());
    assert!(
        term.screen().contains("`nope` not found"),
        "{}",
        term.screen()
    );
}

#[test]
fn forwarding_is_refused_except_to_port_22_of_ones_own_vms() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    bsp.add_blank_image("blank");
    let alice = bsp.add_user("alice");
    let bob = bsp.add_user("bob");
    let stranger = bsp.keygen("stranger");
    let server = SshServer::start(&bsp);
    server.ssh(&alice, &["create-vm", "web1"]).success();
    let vm: serde_json::Value = serde_json::from_str(
        &server
            .ssh(&alice, &["vm", "show", "web1", "--json"])
            .success()
            .stdout,
    )
    .unwrap();
    let ip = vm["ip"].as_str().unwrap().to_owned();
    // The line tenants are shown names this server's port.
    assert_eq!(
        vm["ssh"],
        format!("ssh -J basphere@bastion.test:{} debian@{ip}", server.port)
    );

    // Every one of these is refused before anything is connected, so nothing leaves
    // this network namespace.
    let refused = [
        (&bob, "web1:22".to_owned(), "VM `web1` not found"),
        (&bob, format!("{ip}:22"), "not found"),
        (&alice, "web1:80".to_owned(), "only port 22"),
        (&alice, format!("{ip}:2222"), "only port 22"),
        (&alice, "127.0.0.1:22".to_owned(), "not found"),
        (&alice, "nope:22".to_owned(), "not found"),
        (&alice, "bad;name:22".to_owned(), "neither a VM name"),
        (&stranger, "web1:22".to_owned(), "not a registered key"),
    ];
    for (key, target, reason) in refused {
        let mut cmd = Command::new("ssh");
        cmd.args(server.ssh_options(key))
            .args(["-W", &target, "basphere@127.0.0.1"])
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(255), "{target}: {stderr}");
        assert!(stderr.contains("forwarding failed"), "{target}: {stderr}");
        let log = server.wait_log(reason);
        assert!(log.contains("ssh forwarding refused"), "{log}");
    }
    assert!(
        !server.log().contains("ssh forwarding host"),
        "{}",
        server.log()
    );
}

#[test]
fn connections_from_one_address_are_limited_per_minute() {
    let (_bsp, alice, server) = server_with("BASPHERE_SSH_CONNECTIONS_PER_MINUTE", "3");
    for _ in 0..3 {
        server.ssh(&alice, &["whoami"]).success();
    }
    let refused = server.ssh(&alice, &["whoami"]);
    assert_eq!(refused.code, 255, "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    server.wait_log("too many connections from this address");
}

#[test]
fn sessions_per_user_are_limited() {
    let (bsp, alice, server) = server_with("BASPHERE_SSH_MAX_SESSIONS", "1");
    let bob = bsp.add_user("bob");
    // One session of Alice's waits for input...
    let mut waiting = server.waiting_session(&alice);
    server.wait_log("identity=Known");
    std::thread::sleep(Duration::from_millis(300));
    // ...so a second is refused, and Bob is not affected.
    let refused = server.ssh(&alice, &["whoami"]).code(1);
    assert!(
        refused.stderr.contains("too many sessions"),
        "{}",
        refused.stderr
    );
    server.ssh(&bob, &["whoami"]).success();
    drop(waiting.stdin.take());
    let _ = waiting.wait_with_output().unwrap();
    server.ssh(&alice, &["whoami"]).success();
}

#[test]
fn failed_authentication_attempts_are_limited_per_connection() {
    let (bsp, alice, server) = server_with("BASPHERE_SSH_MAX_AUTH_ATTEMPTS", "2");
    let keys: Vec<_> = (0..3).map(|i| bsp.keygen(&format!("k{i}"))).collect();
    // Three keys refused for another login name: the server stops after two.
    let mut cmd = Command::new("ssh");
    cmd.args(server.ssh_options(&keys[0]));
    for key in &keys[1..] {
        cmd.arg("-i").arg(key);
    }
    cmd.args(["root@127.0.0.1", "whoami"]).stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("Too many authentication attempts"),
        "{stderr}"
    );
    // Within the limit, the registered key still gets in after a refused one.
    bsp.run(&["admin", "user", "disable", "alice"]).success();
    let mut cmd = Command::new("ssh");
    cmd.args(server.ssh_options(&alice))
        .args(["basphere@127.0.0.1", "whoami"])
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Too many"));
}

#[test]
fn idle_connections_are_closed() {
    let (_bsp, alice, server) = server_with("BASPHERE_SSH_IDLE_TIMEOUT", "2s");
    // `ssh -N` opens no session and sends nothing.
    let started = std::time::Instant::now();
    let mut cmd = Command::new("ssh");
    cmd.args(server.ssh_options(&alice))
        .args(["-N", "basphere@127.0.0.1"])
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // A connection that is busy is not idle.
    server.ssh(&alice, &["whoami"]).success();
}

/// `serve`'s flags are the configuration of every command it runs, exec and terminal
/// alike: here `--virt-type kvm` beats `BASPHERE_VIRT_TYPE=qemu` in the environment, and
/// the test driver, which offers no kvm, refuses the create.
#[test]
fn serve_flags_apply_to_commands_over_ssh() {
    let bsp = Bsp::new();
    bsp.add_blank_image("blank");
    let alice = bsp.add_user("alice");
    let server = SshServer::start_with(&bsp, None, &["--virt-type", "kvm"]);
    let refused = server.ssh(&alice, &["create-vm", "web1"]).code(1);
    assert!(
        refused.stderr.contains("kvm is configured"),
        "{}",
        refused.stderr
    );
    let mut term = server.terminal(&alice, &["create-vm", "web2"], 120, 30);
    assert_eq!(term.wait_exit(30), 1, "{}", term.screen());
    assert!(
        term.screen().contains("kvm is configured"),
        "{}",
        term.screen()
    );
    let vms = server.ssh(&alice, &["vm", "list", "--json"]).success();
    assert_eq!(vms.stdout.trim(), "[]");

    // Without the flag the same create works: the environment's qemu applies.
    drop(server);
    let server = SshServer::start(&bsp);
    server.ssh(&alice, &["create-vm", "web1"]).success();
}

/// The welcome lists what the caller may run, and the real way to run it.
#[test]
fn the_welcome_offers_what_the_caller_may_run_and_names_this_server() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let carol = bsp.keygen("carol");
    let carol_pub = format!("{}.pub", carol.display());
    bsp.run(&[
        "admin",
        "user",
        "add",
        "carol",
        "--email",
        "carol@example.com",
        "--key-file",
        &carol_pub,
        "--admin",
    ])
    .success();
    let server = SshServer::start(&bsp);
    let tenant = server.ssh(&alice, &[]).success().stdout;
    assert!(tenant.contains("  create-vm "), "{tenant}");
    for hidden in [
        "  admin ",
        "  mail ",
        "  serve ",
        "  config ",
        "  shell ",
        "  completions ",
    ] {
        assert!(
            !tenant.contains(hidden),
            "{hidden:?} offered to a tenant:\n{tenant}"
        );
    }
    let run_line = format!(
        "Run a command with: ssh -p {port} basphere@bastion.test COMMAND, e.g. ssh -p {port} basphere@bastion.test vm list",
        port = server.port
    );
    assert!(tenant.contains(&run_line), "{tenant}");
    let admin = server.ssh(&carol, &[]).success().stdout;
    assert!(admin.contains("  admin "), "{admin}");
    assert!(!admin.contains("  serve "), "{admin}");
}

/// SIGHUP, and only SIGHUP, puts an edited file in force for the commands after it; a
/// file that does not parse keeps the old configuration.
#[test]
fn sighup_reloads_the_configuration_and_a_bad_file_keeps_the_old_one() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    let cpus = |server: &SshServer| -> serde_json::Value {
        let quota = server.ssh(&alice, &["quota", "--json"]).success();
        let value: serde_json::Value = serde_json::from_str(&quota.stdout).unwrap();
        value["limits"]["cpus"].clone()
    };
    assert_eq!(cpus(&server), 32);
    let file = bsp.dir.path().join("config.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{original}[quota]\ncpus = 3\n")).unwrap();
    assert_eq!(cpus(&server), 32, "an edit alone changes nothing");
    server.signal(Signal::SIGHUP);
    server.wait_log("configuration reloaded");
    assert_eq!(cpus(&server), 3);

    std::fs::write(&file, format!("{original}[quota]\ncpus = \"many\"\n")).unwrap();
    server.signal(Signal::SIGHUP);
    let log = server.wait_log("configuration not reloaded");
    assert!(log.contains("quota.cpus"), "{log}");
    assert_eq!(cpus(&server), 3);
}

/// One clock for every rule, which a test moves while `serve` runs.
#[test]
fn the_clock_moves_while_serve_runs() {
    let mut bsp = Bsp::new();
    bsp.add_blank_image("blank");
    let alice = bsp.add_user("alice");
    let clock = bsp.dir.path().join("clock");
    std::fs::write(&clock, "1800000000").unwrap();
    bsp.set_env("BASPHERE_NOW", clock.to_str().unwrap());
    let server = SshServer::start(&bsp);
    let created = |name: &str| -> serde_json::Value {
        let run = server
            .ssh(&alice, &["create-vm", name, "--no-start", "--json"])
            .success();
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["created_at"].clone()
    };
    assert_eq!(created("web1"), 1_800_000_000);
    std::fs::write(&clock, "1800086400").unwrap();
    assert_eq!(created("web2"), 1_800_086_400);
    // The hooks are not settings: `config` never shows them.
    let config = bsp.run(&["config", "--json"]).success().stdout;
    assert!(
        !config.contains("BASPHERE_NOW") && !config.contains("1800086400"),
        "{config}"
    );
}

/// A command whose client leaves is cancelled: `vm stop` waiting on a guest that
/// ignores ACPI (a blank disk: no OS) gives its session slot back within seconds, not
/// after its 600 s timeout.
#[test]
fn a_command_is_cancelled_when_its_client_leaves() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let mut bsp = Bsp::with_uri(&uri);
    bsp.set_env("BASPHERE_SSH_MAX_SESSIONS", "1");
    let _cleanup = Cleanup::new(&bsp);
    bsp.add_blank_image("blank");
    let alice = bsp.add_user("alice");
    let server = SshServer::start(&bsp);
    server.ssh(&alice, &["create-vm", "web1"]).success();
    let mut stop = server
        .ssh_command(
            &alice,
            "basphere",
            &["vm", "stop", "web1", "--timeout", "600"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(stop.try_wait().unwrap().is_none(), "vm stop ended early");
    let busy = server.ssh(&alice, &["quota"]);
    assert_ne!(busy.code, 0, "the stop holds alice's one session");
    let _ = stop.kill();
    let _ = stop.wait();
    poll::eventually_every(Duration::from_secs(5), Duration::from_millis(200), || {
        let run = server.ssh(&alice, &["quota"]);
        if run.code == 0 {
            Ok(())
        } else {
            Err(format!(
                "the cancelled stop still holds the session: {}\n{}",
                run.stderr,
                server.log()
            ))
        }
    });
}
