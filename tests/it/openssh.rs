//! OpenSSH mode and key self-service: `key ...`, `auth-keys`, `sshd-config` through the
//! real binary, and Debian's sshd with the OpenSSH client driving it.

use std::path::Path;
use std::time::Duration;

use crate::fixtures::bin::{fingerprint, keygen, public_key, Bsp, Run, AUTH_KEYS_BIN, BIN};
use crate::fixtures::libvirt::{libvirt_objects, require_libvirt, Cleanup, LibvirtRelay};
use crate::fixtures::poll;
use crate::fixtures::sshd::{chown_to_service_account, start_sshd};

const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const DENIED: i32 = 4;
const QUOTA: i32 = 5;
const CONFLICT: i32 = 6;

fn key_fingerprints(bsp: &Bsp, user: &str) -> Vec<String> {
    let keys = bsp.json(&["--as", user, "key", "list"]);
    let mut fps: Vec<String> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    fps.sort();
    fps
}

/// `TYPE BASE64` of a public key file, as sshd passes them to the AuthorizedKeysCommand.
fn type_and_blob(key: &Path) -> (String, String) {
    let text = public_key(key);
    let mut words = text.split_whitespace();
    (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    )
}

/// Gives `user` a VM row at `ip` straight in the database: enough for `auth-keys`,
/// which reads the table and never asks libvirt.
fn insert_vm(bsp: &Bsp, user: &str, idx: u32, name: &str, ip: &str) {
    let conn = rusqlite::Connection::open(bsp.data_dir().join("basphere.db")).unwrap();
    conn.execute(
        "INSERT OR IGNORE INTO images (name, path, format, virtual_size, os_user, created_at)
         VALUES ('img', '/nonexistent.qcow2', 'qcow2', 1, 'debian', 0)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT OR IGNORE INTO networks (idx, user_id, name, bridge, subnet)
         VALUES (?1, ?2, ?2, ?2, ?3)",
        rusqlite::params![idx, user, format!("10.250.{idx}.0/24")],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO vms (id, owner, name, image, cpus, memory_mib, disk_bytes, state,
                          network_idx, mac, ip, domain, created_at)
         VALUES (?1, ?2, ?3, 'img', 1, 512, 1073741824, 'ready', ?4, ?5, ?6, ?1, 0)",
        rusqlite::params![
            format!("{user}-{name}"),
            user,
            name,
            idx,
            format!("52:54:00:00:{idx:02x}:{:02x}", ip.len()),
            ip
        ],
    )
    .unwrap();
}

#[test]
fn tenants_add_list_and_remove_their_keys() {
    let bsp = Bsp::new();
    let k1 = bsp.add_user("alice");
    bsp.add_user("bob");
    let k2 = bsp.keygen("alice2");
    let k3 = bsp.keygen("alice3");
    assert_eq!(key_fingerprints(&bsp, "alice"), [fingerprint(&k1)]);

    // From the argument, whole or split into words as ssh does.
    bsp.run(&["--as", "alice", "key", "add", &public_key(&k2)])
        .success()
        .stdout_has(&fingerprint(&k2));
    let words: Vec<String> = public_key(&k3)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut args = vec!["--as", "alice", "key", "add"];
    args.extend(words.iter().map(String::as_str));
    bsp.run(&args).success();
    let mut expected = vec![fingerprint(&k1), fingerprint(&k2), fingerprint(&k3)];
    expected.sort();
    assert_eq!(key_fingerprints(&bsp, "alice"), expected);
    bsp.run(&["--as", "alice", "key", "list"])
        .success()
        .stdout_has("alice2@test");

    // Remove down to one; the last one stays.
    bsp.run(&["--as", "alice", "key", "remove", &fingerprint(&k2)])
        .success();
    // Without the SHA256: prefix, and by the alias.
    bsp.run(&["--as", "alice", "key", "rm", &fingerprint(&k3)[7..]])
        .success();
    assert_eq!(key_fingerprints(&bsp, "alice"), [fingerprint(&k1)]);
    let before = bsp.state();
    bsp.run(&["--as", "alice", "key", "remove", &fingerprint(&k1)])
        .code(CONFLICT)
        .stderr_has("last key");
    // Someone else's key is not found, not removable, and not named.
    let bob_fp = bsp.json(&["--as", "bob", "key", "list"])[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    bsp.run(&["--as", "alice", "key", "add", &public_key(&k2)])
        .success();
    let before_bob = bsp.state();
    bsp.run(&["--as", "alice", "key", "remove", &bob_fp])
        .code(NOT_FOUND);
    bsp.run(&["--as", "alice", "key", "remove", "SHA256:nope"])
        .code(USAGE);
    assert_eq!(bsp.state(), before_bob);
    bsp.run(&["--as", "alice", "key", "remove", &fingerprint(&k2)])
        .success();
    assert_eq!(bsp.state(), before);

    let audit = bsp.json(&["admin", "audit", "--user", "alice"]);
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("user.add", "ok"),
            ("key.add", "ok"),
            ("key.add", "ok"),
            ("key.remove", "ok"),
            ("key.remove", "ok"),
            ("key.remove", "error"),
            ("key.add", "ok"),
            ("key.remove", "error"),
            ("key.remove", "ok"),
        ]
    );
    assert!(audit[1]["target"]
        .as_str()
        .unwrap()
        .starts_with("alice/SHA256:"));
}

#[test]
fn duplicate_and_bad_keys_are_refused_and_change_nothing() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let bob = bsp.add_user("bob");
    let before = bsp.state();

    // Bob's key: "already registered", without naming bob.
    let run = bsp
        .run(&["--as", "alice", "key", "add", &public_key(&bob)])
        .code(CONFLICT)
        .stderr_has("already registered");
    assert!(
        !run.stderr.contains("bob"),
        "owner revealed: {}",
        run.stderr
    );
    bsp.run(&["--as", "alice", "key", "add", &public_key(&alice)])
        .code(CONFLICT)
        .stderr_has("already registered");

    let private = std::fs::read_to_string(&alice).unwrap();
    let dsa_like = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAPW9";
    let weak_rsa = keygen(bsp.dir.path(), "weak", "rsa", Some("2048"));
    let cases: Vec<(String, &str)> = vec![
        ("ssh-ed25519 AAAA".into(), "not a valid SSH public key"),
        ("hello".into(), "not a valid SSH public key"),
        (private, "private key"),
        (dsa_like.into(), "not"),
        (public_key(&weak_rsa), "too weak"),
        (
            format!(
                "{}\n{}",
                public_key(&bsp.keygen("x1")),
                public_key(&bsp.keygen("x2"))
            ),
            "one SSH public key at a time",
        ),
        ("# only a comment\n\n".into(), "no SSH public key"),
    ];
    for (input, message) in &cases {
        bsp.run_with_stdin(&["--as", "alice", "key", "add"], input)
            .code(USAGE)
            .stderr_has(message);
        if !input.contains('\n') {
            bsp.run(&["--as", "alice", "key", "add", input])
                .code(USAGE)
                .stderr_has(message);
        }
    }
    bsp.run_with_stdin(&["--as", "alice", "key", "add"], "")
        .code(USAGE)
        .stderr_has("no SSH public key given");
    assert_eq!(bsp.state(), before);

    // A good key on stdin, with a comment line around it, works.
    let k = bsp.keygen("stdin");
    bsp.run_with_stdin(
        &["--as", "alice", "key", "add"],
        &format!("# laptop\n{}\n", public_key(&k)),
    )
    .success();
    assert!(key_fingerprints(&bsp, "alice").contains(&fingerprint(&k)));
}

#[test]
fn key_commands_need_a_tenant() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    bsp.run(&["key", "list"]).code(USAGE).stderr_has("--as");
    bsp.run(&["admin", "user", "disable", "alice"]).success();
    bsp.run(&["--as", "alice", "key", "list"]).code(DENIED);
}

/// `basphere auth-keys ARGS`, checked to answer exactly as the small `basphere-auth-keys`
/// that sshd runs (which takes `--exe` first).
fn auth_keys(bsp: &Bsp, args: &[&str]) -> Run {
    let run = bsp.run(&[&["auth-keys"], args].concat());
    let mut small_args: Vec<&str> = args.to_vec();
    if let Some(at) = small_args.iter().position(|a| *a == "--exe") {
        let exe: Vec<&str> = small_args.drain(at..at + 2).collect();
        small_args.splice(0..0, exe);
    }
    let out = std::process::Command::new(AUTH_KEYS_BIN)
        .args(&small_args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(bsp.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let small = Run::from(out, &small_args);
    let main_exe = small
        .stdout
        .replace(&format!("{AUTH_KEYS_BIN} "), &format!("{BIN} "));
    assert_eq!(
        (small.code, &main_exe),
        (run.code, &run.stdout),
        "{args:?}: {}",
        small.stderr
    );
    assert_eq!(
        small.stderr.is_empty(),
        run.stderr.is_empty(),
        "{args:?}: {} / {}",
        small.stderr,
        run.stderr
    );
    run
}

#[test]
fn auth_keys_prints_one_restricted_line_for_a_known_key() {
    let bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let bob = bsp.add_user("bob");
    let stranger = bsp.keygen("stranger");
    insert_vm(&bsp, "bob", 3, "web1", "10.250.3.10");
    insert_vm(&bsp, "bob", 3, "db1", "10.250.3.2");
    let before = bsp.state();

    let (t, k) = type_and_blob(&alice);
    let run = auth_keys(&bsp, &["basphere", &t, &k]).success();
    assert_eq!(
        run.stdout,
        format!(
            "restrict,pty,command=\"{BIN} shell --user alice --key {} --serial 1\" {t} {k}\n",
            fingerprint(&alice)
        )
    );
    assert_eq!(run.stderr, "");

    let (t, k) = type_and_blob(&bob);
    let run = auth_keys(
        &bsp,
        &["basphere", &t, &k, "--exe", "/usr/local/bin/basphere"],
    )
    .success();
    assert_eq!(
        run.stdout,
        format!(
            "restrict,pty,port-forwarding,permitopen=\"10.250.3.2:22\",permitopen=\"10.250.3.10:22\",\
             command=\"/usr/local/bin/basphere shell --user bob --key {} --serial 2\" {t} {k}\n",
            fingerprint(&bob)
        )
    );

    // Unknown key, another login name, garbage: nothing at all, exit 0.
    let (st, sk) = type_and_blob(&stranger);
    let (at, ak) = type_and_blob(&alice);
    for args in [
        vec!["basphere", st.as_str(), sk.as_str()],
        vec!["root", at.as_str(), ak.as_str()],
        vec!["alice", at.as_str(), ak.as_str()],
        vec!["basphere", "ssh-ed25519", "AAAA"],
        vec!["basphere", "ssh-rsa", ak.as_str()],
        vec!["basphere", "", ""],
    ] {
        let run = auth_keys(&bsp, &args).success();
        assert_eq!(run.stdout, "", "{args:?}");
    }

    // A disabled user's key gets nothing; enabled again, it does.
    bsp.run(&["admin", "user", "disable", "alice"]).success();
    assert_eq!(
        auth_keys(&bsp, &["basphere", &at, &ak]).success().stdout,
        ""
    );
    bsp.run(&["admin", "user", "enable", "alice"]).success();
    assert_ne!(
        auth_keys(&bsp, &["basphere", &at, &ak]).success().stdout,
        ""
    );

    // The configured service account is the login name that counts.
    let mut other = Bsp::new();
    other.set_env("BASPHERE_DATA_DIR", bsp.data_dir().to_str().unwrap());
    other.set_env("BASPHERE_SERVICE_USER", "tenants");
    assert_eq!(
        auth_keys(&other, &["basphere", &at, &ak]).success().stdout,
        ""
    );
    auth_keys(&other, &["tenants", &at, &ak])
        .success()
        .stdout_has("--user alice");
    // Lookups change nothing.
    assert_eq!(bsp.state(), before);
}

#[test]
fn auth_keys_never_creates_a_database_and_errors_go_to_stderr() {
    // Before `admin init` (or with the volume not mounted): no key is anyone's, which is
    // no failure for sshd to log at every login.
    let bsp = Bsp::without_database("test:///default");
    let key = bsp.keygen("k");
    let (t, k) = type_and_blob(&key);
    let run = auth_keys(&bsp, &["basphere", &t, &k]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("no basphere database at"),
        "{}",
        run.stderr
    );
    assert!(
        !bsp.data_dir().exists(),
        "auth-keys created the data directory"
    );
    // A database that cannot be read is an error, on stderr alone.
    std::fs::create_dir_all(bsp.data_dir().join("basphere.db")).unwrap();
    let run = auth_keys(&bsp, &["basphere", &t, &k]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("cannot open database"),
        "{}",
        run.stderr
    );
}

#[test]
fn sshd_config_snippet_names_this_binary_and_the_service_account() {
    let bsp = Bsp::without_database("test:///default");
    let run = bsp.run(&["sshd-config"]).success();
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(
        lines,
        [
            "MaxStartups 10:30:100",
            "PerSourceMaxStartups 4",
            "PerSourceNetBlockSize 32:64",
            "LoginGraceTime 30",
            "Match User basphere",
            "AuthorizedKeysFile none",
            &format!("AuthorizedKeysCommand {AUTH_KEYS_BIN} %u %t %k"),
            "AuthorizedKeysCommandUser basphere",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitTTY yes",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding local",
            "PermitTunnel no",
            "GatewayPorts no",
            "ChannelTimeout session=30m direct-tcpip=30m",
            "UnusedConnectionTimeout 5m",
        ]
    );
    assert!(!bsp.data_dir().exists());
}

// ---------------------------------------------------------------------------------------
// Debian's sshd (fixtures/sshd.rs), driven by the OpenSSH client.

#[test]
fn tenants_use_basphere_through_debians_sshd() {
    let bsp = Bsp::new();
    let sshd = match start_sshd(&bsp) {
        Ok(sshd) => sshd,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let keys = sshd.dir.path();
    let alice = keygen(keys, "alice", "ed25519", None);
    let carol = keygen(keys, "carol", "ed25519", None);
    let dave = keygen(keys, "dave", "ed25519", None);
    let stranger = keygen(keys, "stranger", "ed25519", None);
    let laptop = keygen(keys, "laptop", "ed25519", None);
    for (user, key) in [("alice", &alice), ("carol", &carol), ("dave", &dave)] {
        bsp.run(&[
            "admin",
            "user",
            "add",
            user,
            "--email",
            &format!("{user}@example.com"),
            "--key",
            &public_key(key),
        ])
        .success();
    }
    insert_vm(&bsp, "carol", 7, "web1", "127.0.0.2");
    // The forced command runs as the service account and owns the state.
    chown_to_service_account(bsp.dir.path());

    let ssh = |key: &Path, command: &str| sshd.ssh(key, &[], Some(command), None);

    let run = ssh(&alice, "quota --json");
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, sshd.log());
    let quota: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(quota.is_object(), "{}", run.stdout);

    let run = ssh(&alice, "whoami --json");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let me: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(me["user"], "alice");
    assert_eq!(me["via"], "ssh");

    let run = ssh(&alice, "vm show nope");
    assert_eq!(run.code, NOT_FOUND, "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);

    // No shell ever sees the command line.
    let run = ssh(&alice, "vm list; id");
    assert_eq!(run.code, USAGE, "{}", run.stderr);
    assert!(!run.stdout.contains("uid="), "{}", run.stdout);
    let run = ssh(&alice, "whoami && id");
    assert_ne!(run.code, 0);
    assert!(!run.stdout.contains("uid="), "{}", run.stdout);

    // Tenants cannot point basphere elsewhere or ask for other users' lines.
    let (t, k) = type_and_blob(&carol);
    let run = ssh(&alice, &format!("auth-keys basphere {t} {k}"));
    assert_eq!(run.code, DENIED, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(ssh(&alice, "quota --data-dir /tmp").code, DENIED);

    // An unknown key is refused by sshd: the AuthorizedKeysCommand printed nothing for it.
    let run = ssh(&stranger, "quota");
    assert_eq!(run.code, 255, "{}", run.stdout);
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let (t, k) = type_and_blob(&stranger);
    let lines = bsp.run(&["auth-keys", "basphere", &t, &k]).success();
    assert_eq!(lines.stdout, "");

    // Stdin reaches `key add`; the new key only proves itself until it is confirmed
    // over a connection made with it, then it signs in.
    let run = sshd.ssh(&alice, &[], Some("key add"), Some(&public_key(&laptop)));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&fingerprint(&laptop)), "{}", run.stdout);
    let code = crate::fixtures::confirm_code(&run.stdout);
    let run = ssh(&laptop, "quota");
    assert_eq!(run.code, 1, "a pending key runs nothing: {}", run.stderr);
    assert!(run.stderr.contains("not registered"), "{}", run.stderr);
    let run = ssh(&stranger, &format!("key confirm {code}"));
    assert_eq!(run.code, 255, "a key nobody added is refused by sshd");
    let run = ssh(&laptop, &format!("key confirm {code}"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("logs in to `alice`"), "{}", run.stdout);
    let run = ssh(&laptop, "key list --json");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    // A duplicate over SSH: refused, owner not named.
    let run = sshd.ssh(&alice, &[], Some("key add"), Some(&public_key(&carol)));
    assert_eq!(run.code, CONFLICT, "{}", run.stderr);
    assert!(!run.stderr.contains("carol"), "{}", run.stderr);
    // Removing the new key locks it out again.
    let run = ssh(&alice, &format!("key remove {}", fingerprint(&laptop)));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ssh(&laptop, "quota").code, 255);

    // A disabled user is refused at the door.
    bsp.run(&["admin", "user", "disable", "dave"]).success();
    let run = ssh(&dave, "quota");
    assert_eq!(run.code, 255, "{}", run.stdout);
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    // Forwarding: nowhere without VMs; only port 22 of one's own VMs otherwise.
    let forward = |key: &Path, target: &str| {
        let run = sshd.ssh(key, &["-o", "LogLevel=INFO", "-W", target], None, None);
        let prohibited = run.stderr.contains("administratively prohibited");
        (run, prohibited)
    };
    let (run, prohibited) = forward(&alice, "127.0.0.2:22");
    assert!(prohibited, "alice (no VMs) forwarded: {}", run.stderr);
    let (run, prohibited) = forward(&alice, &format!("127.0.0.1:{}", sshd.port));
    assert!(prohibited, "alice forwarded to the bastion: {}", run.stderr);
    let (run, prohibited) = forward(&carol, &format!("127.0.0.1:{}", sshd.port));
    assert!(prohibited, "carol forwarded to the bastion: {}", run.stderr);
    let (run, prohibited) = forward(&carol, "127.0.0.2:2222");
    assert!(
        prohibited,
        "carol forwarded to another port: {}",
        run.stderr
    );
    let (run, prohibited) = forward(&carol, "127.0.0.2:22");
    assert!(
        !prohibited,
        "carol's own VM was refused by policy: {}\n{}",
        run.stderr,
        sshd.log()
    );

    // Audit shows the SSH actor and the key that signed in.
    let audit = bsp.json(&["admin", "audit", "--user", "alice"]);
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.add_pending" && e["result"] == "ok")
        .unwrap_or_else(|| panic!("no key.add_pending entry: {audit}"));
    assert_eq!(entry["via"], "ssh");
    assert_eq!(entry["actor"], "alice");
}

/// The flows a tenant has through the embedded server, through sshd instead: commands on
/// real VMs with their exit codes, and a terminal session with the prompt, a table that
/// fits the window and a confirmation.
#[test]
fn the_same_user_flows_work_through_debians_sshd() {
    let Some(uri) = require_libvirt() else {
        return;
    };
    let mut bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    // The forced command runs as the service account, which may not open the test
    // libvirtd's socket.
    let relay = LibvirtRelay::start(&uri);
    bsp.set_env("BASPHERE_LIBVIRT_URI", &relay.uri);
    let sshd = match start_sshd(&bsp) {
        Ok(sshd) => sshd,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let alice = keygen(sshd.dir.path(), "alice", "ed25519", None);
    bsp.run(&[
        "admin",
        "user",
        "add",
        "alice",
        "--email",
        "alice@example.com",
        "--key",
        &public_key(&alice),
    ])
    .success();
    bsp.add_blank_image("blank");
    chown_to_service_account(bsp.dir.path());
    let ssh = |command: &str| sshd.ssh(&alice, &[], Some(command), None);

    let run = ssh("create-vm web1 --image blank --memory 128M --disk 1G --json");
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, sshd.log());
    let vm: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(vm["owner"], "alice");
    assert_eq!(vm["state"], "running");
    let domain = format!("{}.alice.web1", bsp.prefix);
    assert_eq!(vm["domain"], domain.as_str());
    assert_eq!(libvirt_objects(&bsp).0, std::slice::from_ref(&domain));
    let ip = vm["ip"].as_str().unwrap().to_owned();

    let run = ssh("create-vm web1 --image blank --memory 128M");
    assert_eq!(run.code, CONFLICT, "{}", run.stderr);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let run = ssh("create-vm big --image blank --cpus 40 --memory 128M");
    assert_eq!(run.code, QUOTA, "{}", run.stderr);
    let run = ssh("create-vm Bad_Name");
    assert_eq!(run.code, USAGE, "{}", run.stderr);
    let run = ssh("vm list");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("NAME"), "{}", run.stdout);
    assert!(
        run.stdout.contains("web1") && run.stdout.contains(&ip),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains('│'),
        "a table off a terminal: {}",
        run.stdout
    );
    let run = ssh("vm list --json");
    let list: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let run = ssh("quota --json");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let quota: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(quota["usage"]["vms"], 1, "{quota}");
    assert_eq!(quota["usage"]["memory_mib"], 128, "{quota}");
    let run = ssh("vm delete web1");
    assert_eq!(run.code, USAGE, "{}", run.stderr);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(ssh("vm show nope").code, NOT_FOUND);

    // A terminal session: ssh -tt on a real terminal, a narrow one.
    const COLS: u16 = 60;
    let mut term = sshd.terminal(&alice, &[], COLS, 40);
    let prompt = "alice@basphere> ";
    term.wait_for("basphere: signed in as alice", 30);
    term.wait_for(prompt, 30);
    term.line("vm list");
    let screen = term.wait_for_count(prompt, 2, 30);
    let table: Vec<&str> = screen.lines().filter(|l| l.contains('│')).collect();
    assert!(
        table.iter().any(|l| l.contains("web1")),
        "no boxed table with web1 on the terminal:\n{screen}"
    );
    // Every line of the tables (sshd's own notices, such as the missing home directory
    // of the service account, are not basphere's to fit).
    for line in screen.lines().filter(|l| l.contains(['│', '┌', '└', '╞'])) {
        assert!(
            line.trim_end().chars().count() <= COLS as usize,
            "a line wider than the {COLS}-column window:\n{line}\n{screen}"
        );
    }
    term.line("vm delete web1");
    term.wait_for("[y/N]", 30);
    term.send(b"y");
    term.wait_for("deleted web1", 60);
    term.wait_for_count(prompt, 3, 30);
    term.line("exit");
    // Waited for here rather than with `wait_exit`, to say what is still running if the
    // session does not end.
    let ended = poll::within(Duration::from_secs(60), Duration::from_millis(50), || {
        term.exit_code()
    });
    let Some(status) = ended else {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,user,stat,wchan:24,args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        let ps: Vec<&str> = ps
            .lines()
            .filter(|l| l.contains("basphere") || l.contains("sshd"))
            .collect();
        panic!(
            "the session did not end after `exit`:\n{}\nsshd:\n{}\nprocesses:\n{}",
            term.screen(),
            sshd.log(),
            ps.join("\n")
        );
    };
    assert_eq!(status, 0, "{}", term.screen());

    let run = ssh("vm show web1");
    assert_eq!(run.code, NOT_FOUND, "{}", run.stderr);
    assert!(
        libvirt_objects(&bsp).0.is_empty(),
        "the domain is still there"
    );
    let audit = bsp.json(&["admin", "audit", "--user", "alice"]);
    let deleted = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "vm.delete")
        .unwrap_or_else(|| panic!("no vm.delete entry: {audit}"));
    assert_eq!(deleted["via"], "ssh");
    assert_eq!(deleted["result"], "ok");
}
