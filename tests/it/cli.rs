//! The command line through the real binary: users, images, quotas, permissions,
//! configuration, and bad input that must be refused without changing anything.

use crate::fixtures::bin::{fingerprint, keygen, Bsp, BIN};
use crate::fixtures::terminal::Terminal;

const NOT_FOUND: i32 = 3;
const DENIED: i32 = 4;
const CONFLICT: i32 = 6;
const USAGE: i32 = 2;

#[test]
fn admin_registers_and_manages_a_user() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    let users = bsp.json(&["admin", "user", "list"]);
    assert_eq!(users[0]["id"], "alice");
    assert_eq!(users[0]["keys"], 1);
    assert_eq!(users[0]["role"], "user");

    bsp.run(&["admin", "user", "show", "alice"])
        .success()
        .stdout_has("alice@example.com")
        .stdout_has("SHA256:");
    bsp.run(&["admin", "user", "disable", "alice"]).success();
    assert_eq!(bsp.json(&["admin", "user", "list"])[0]["disabled"], true);
    bsp.run(&["--as", "alice", "quota"])
        .code(DENIED)
        .stderr_has("disabled");
    bsp.run(&["admin", "user", "enable", "alice"]).success();
    bsp.run(&["--as", "alice", "quota"]).success();

    bsp.run(&[
        "admin",
        "user",
        "add",
        "alice",
        "--email",
        "x@example.com",
        "--key",
        "ssh-ed25519 AAAA",
    ])
    .code(USAGE);
    let other = bsp.keygen("other");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    bsp.run(&[
        "admin",
        "user",
        "add",
        "alice",
        "--email",
        "x@example.com",
        "--key",
        other_pub.trim(),
    ])
    .code(CONFLICT)
    .stderr_has("user `alice` already exists");

    bsp.run(&["admin", "user", "remove", "alice"])
        .code(USAGE)
        .stderr_has("--yes");
    bsp.run(&["admin", "user", "remove", "alice", "--yes"])
        .success();
    bsp.run(&["admin", "user", "show", "alice"])
        .code(NOT_FOUND)
        .stderr_has("user `alice` not found");

    let audit = bsp.json(&["admin", "audit", "--user", "alice"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.add",
            "user.disable",
            "user.enable",
            "user.add",
            "user.remove"
        ]
    );
    assert_eq!(audit[3]["result"], "error");
    assert_eq!(audit[0]["actor"], "root");
}

#[test]
fn keys_are_read_from_stdin_and_belong_to_one_user() {
    let bsp = Bsp::new();
    let key = bsp.keygen("k");
    let text = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    bsp.run_with_stdin(
        &[
            "admin",
            "user",
            "add",
            "carol",
            "--email",
            "c@example.com",
            "--key-file",
            "-",
        ],
        &text,
    )
    .success();
    bsp.run(&[
        "admin",
        "user",
        "add",
        "dave",
        "--email",
        "d@example.com",
        "--key",
        text.trim(),
    ])
    .code(CONFLICT)
    .stderr_has("already registered to user `carol`");
    assert!(
        bsp.json(&["admin", "user", "list"])
            .as_array()
            .unwrap()
            .len()
            == 1
    );
}

#[test]
fn quota_defaults_and_changes() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    let q = bsp.json(&["--as", "alice", "quota"]);
    assert_eq!(q["limits"]["cpus"], 32);
    assert_eq!(q["limits"]["memory_mib"], 96 * 1024);
    assert_eq!(q["usage"]["vms"], 0);
    let text = bsp.run(&["--as", "alice", "quota"]).success().stdout;
    assert_eq!(
        text.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["RESOURCE", "LIMIT", "USED", "FREE"]
    );
    assert!(text.contains("memory    96G    0     96G"), "{text}");

    bsp.run(&[
        "admin", "quota", "set", "alice", "--cpus", "8", "--memory", "16G",
    ])
    .success();
    bsp.run(&["admin", "quota", "set", "alice", "--vms", "3"])
        .success();
    let q = bsp.json(&["admin", "quota", "show", "alice"]);
    assert_eq!(q["limits"]["cpus"], 8);
    assert_eq!(q["limits"]["memory_mib"], 16 * 1024);
    assert_eq!(q["limits"]["vms"], 3);
    bsp.run(&["admin", "quota", "set", "alice"])
        .code(USAGE)
        .stderr_has("nothing to change");
    bsp.run(&["admin", "quota", "set", "nobody1", "--cpus", "2"])
        .code(NOT_FOUND);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    bsp.add_blank_image("debian-12");
    let before = bsp.state();

    let long = "a".repeat(300);
    let names = [
        "../etc",
        "we\"b",
        "we'b",
        "<b>",
        "a&b",
        "web 1",
        "wéb",
        "\x1b[31mred",
        long.as_str(),
        "",
        "-x",
        "Web",
    ];
    for name in names {
        let run = bsp.run(&["--as", "alice", "create-vm", name]);
        assert!(
            run.code == USAGE,
            "create-vm {name:?}: exit {} {}",
            run.code,
            run.stderr
        );
        assert!(
            !run.stderr.contains('\x1b'),
            "escape echoed back for {name:?}"
        );
        let run = bsp.run(&[
            "admin",
            "user",
            "add",
            name,
            "--email",
            "x@example.com",
            "--key",
            "x",
        ]);
        assert_eq!(run.code, USAGE, "user add {name:?}: {}", run.stderr);
        let run = bsp.run(&[
            "admin",
            "image",
            "add",
            name,
            "/dev/null",
            "--os-user",
            "debian",
        ]);
        assert_eq!(run.code, USAGE, "image add {name:?}: {}", run.stderr);
    }
    for size in ["0", "-1G", "99999T", "4X", "4", "1.5G", "G", "0G"] {
        bsp.run(&["--as", "alice", "create-vm", "web1", "--memory", size])
            .code(USAGE)
            .stderr_has("invalid size");
        bsp.run(&["--as", "alice", "create-vm", "web1", "--disk", size])
            .code(USAGE);
        bsp.run(&["admin", "quota", "set", "alice", "--memory", size])
            .code(USAGE);
    }
    for cpus in ["0", "-1", "abc", "65", "999999999999"] {
        bsp.run(&["--as", "alice", "create-vm", "web1", "--cpus", cpus])
            .code(USAGE);
    }
    bsp.run(&["--as", "alice", "create-vm", "web1", "--memory", "64M"])
        .code(USAGE)
        .stderr_has("too small");
    bsp.run(&["--as", "alice", "create-vm", "web1", "--flavor", "huge"])
        .code(USAGE)
        .stderr_has("unknown flavor");
    bsp.run(&[
        "--as",
        "alice",
        "create-vm",
        "web1",
        "--flavor",
        "small",
        "--cpus",
        "2",
    ])
    .code(USAGE);
    bsp.run(&["--as", "alice", "create-vm", "web1", "--image", "nope"])
        .code(NOT_FOUND);

    // Keys: truncated, private, weak, someone else's, garbage, two lines.
    let dir = bsp.dir.path();
    let ed = keygen(dir, "ed", "ed25519", None);
    let public = std::fs::read_to_string(ed.with_extension("pub")).unwrap();
    let private = std::fs::read_to_string(&ed).unwrap();
    let truncated = &public[..public.len() / 2];
    let rsa = keygen(dir, "rsa2048", "rsa", Some("2048"));
    let weak = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let alice_key = std::fs::read_to_string(bsp.dir.path().join("key-alice.pub")).unwrap();
    let cases: [(&str, &str, i32); 6] = [
        (truncated, "not a valid SSH public key", USAGE),
        (&private, "private key", USAGE),
        (&weak, "too weak", USAGE),
        (&alice_key, "already registered", CONFLICT),
        ("hello world", "not a valid SSH public key", USAGE),
        (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGarbage==",
            "not a valid SSH public key",
            USAGE,
        ),
    ];
    for (key, message, code) in cases {
        bsp.run(&[
            "admin",
            "user",
            "add",
            "mallory",
            "--email",
            "m@example.com",
            "--key",
            key.trim(),
        ])
        .code(code)
        .stderr_has(message);
        let file = dir.join("keyfile");
        std::fs::write(&file, key).unwrap();
        bsp.run(&[
            "admin",
            "user",
            "add",
            "mallory",
            "--email",
            "m@example.com",
            "--key-file",
            file.to_str().unwrap(),
        ])
        .code(code)
        .stderr_has(message);
    }
    for email in [
        "nope",
        "a@b",
        "a b@example.com",
        "<a@example.com>",
        "a@example.com\n",
    ] {
        bsp.run(&[
            "admin",
            "user",
            "add",
            "mallory",
            "--email",
            email,
            "--key",
            public.trim(),
        ])
        .code(USAGE);
    }
    for id in ["root", "admin", "basphere", "ab", "1abc"] {
        bsp.run(&[
            "admin",
            "user",
            "add",
            id,
            "--email",
            "x@example.com",
            "--key",
            public.trim(),
        ])
        .code(USAGE);
    }
    bsp.run(&[
        "admin",
        "image",
        "add",
        "img",
        "/nonexistent/file.qcow2",
        "--os-user",
        "debian",
    ])
    .code(1);
    bsp.run(&[
        "admin",
        "image",
        "add",
        "img",
        "/dev/null",
        "--os-user",
        "Bad User",
    ])
    .code(USAGE);
    bsp.run(&["admin", "image", "add", "mystery", "/dev/null"])
        .code(USAGE)
        .stderr_has("--os-user");
    bsp.run(&["vm", "show", "web1", "--as", "alice"])
        .code(NOT_FOUND);

    assert_eq!(bsp.state(), before, "bad input changed the state");
}

#[test]
fn local_strangers_are_refused() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    // setpriv drops to `nobody`: neither root nor in basphere-admin.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "vm",
            "list",
        ])
        .env_clear()
        .envs(bsp.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(DENIED),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("basphere-admin"), "{stderr}");
}

#[test]
fn the_forced_command_runs_as_the_key_owner() {
    let mut bsp = Bsp::new();
    let key = bsp.add_user("alice");
    let fp = fingerprint(&key);
    let shell = ["shell", "--user", "alice", "--key", fp.as_str()];
    bsp.set_env("SSH_ORIGINAL_COMMAND", "quota --json");
    let run = bsp.run(&shell).success();
    let q: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(q["user"], "alice");

    bsp.set_env("SSH_ORIGINAL_COMMAND", "whoami");
    bsp.run(&shell).success().stdout_has("via:   ssh");

    bsp.set_env("SSH_ORIGINAL_COMMAND", "admin user list");
    bsp.run(&shell).code(DENIED);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "--data-dir /tmp vm list");
    bsp.run(&shell).code(DENIED);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "--as bob quota");
    bsp.run(&shell).code(DENIED);
    bsp.set_env(
        "SSH_ORIGINAL_COMMAND",
        &format!("shell --user bob --key {fp}"),
    );
    bsp.run(&shell).code(DENIED);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "config");
    bsp.run(&shell).code(DENIED);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "quota\nadmin user list");
    bsp.run(&shell).code(USAGE).stderr_has("newline");
    bsp.set_env("SSH_ORIGINAL_COMMAND", "vm show 'unterminated");
    bsp.run(&shell).code(USAGE);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "quota");
    bsp.run(&["shell", "--user", "zed", "--key", &fp])
        .code(DENIED)
        .stderr_has("is no longer registered to `zed`");
    bsp.set_env("SSH_ORIGINAL_COMMAND", "");
    bsp.run(&shell)
        .success()
        .stdout_has("signed in as alice")
        .stdout_has("create-vm");
}

#[test]
/// The forced command checks before every command that its key is still the user's:
/// not another user's key, not a removed key, not a user removed and made again.
fn the_forced_command_refuses_a_key_that_is_no_longer_the_users() {
    let mut bsp = Bsp::new();
    let alice = bsp.add_user("alice");
    let bob = bsp.add_user("bob");
    let (alice_fp, bob_fp) = (fingerprint(&alice), fingerprint(&bob));
    bsp.set_env("SSH_ORIGINAL_COMMAND", "whoami");
    bsp.run(&["shell", "--user", "alice", "--key", &bob_fp])
        .code(DENIED)
        .stderr_has("no longer registered to `alice`");
    bsp.run(&[
        "shell", "--user", "alice", "--key", &alice_fp, "--serial", "1",
    ])
    .success();
    // A second key for alice; the first removed.
    bsp.add_key("alice", "alice2");
    bsp.run(&["--as", "alice", "key", "remove", &alice_fp])
        .success();
    bsp.run(&["shell", "--user", "alice", "--key", &alice_fp])
        .code(DENIED)
        .stderr_has("no longer registered");
    // Alice removed and made again with her old key: the old serial no longer works.
    bsp.run(&["admin", "user", "remove", "alice", "--yes"])
        .success();
    bsp.add_user_with_key("alice", &alice);
    bsp.run(&[
        "shell", "--user", "alice", "--key", &alice_fp, "--serial", "1",
    ])
    .code(DENIED);
    bsp.run(&["admin", "user", "disable", "alice"]).success();
    bsp.run(&["shell", "--user", "alice", "--key", &alice_fp])
        .code(DENIED)
        .stderr_has("disabled");
}

#[test]
fn admins_act_for_users_only_when_asked() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    bsp.run(&["quota"]).code(USAGE).stderr_has("--as USER");
    bsp.run(&["--as", "ghost", "quota"]).code(NOT_FOUND);
    bsp.run(&["--as", "alice", "whoami"])
        .success()
        .stdout_has("user:  alice");
}

#[test]
fn config_shows_values_and_sources() {
    let bsp = Bsp::new();
    let rows = bsp.json(&["config"]);
    let find = |key: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(find("libvirt_uri")["source"], "env");
    assert_eq!(find("quota.cpus")["value"], "32");
    assert_eq!(find("quota.memory")["value"], "96G");
    assert_eq!(find("name_prefix")["source"], "file");
    let run = bsp
        .run(&["config", "--libvirt-uri", "test:///flag", "--json"])
        .success();
    assert!(run.stdout.contains("test:///flag"));

    let cfg = bsp.dir.path().join("bad.toml");
    std::fs::write(&cfg, "libvirt_url = \"x\"\n").unwrap();
    bsp.run(&["config", "--config", cfg.to_str().unwrap()])
        .code(1)
        .stderr_has("libvirt_url");
}

#[test]
fn completions_and_version() {
    let bsp = Bsp::new();
    bsp.run(&["completions", "bash"])
        .success()
        .stdout_has("create-vm");
    bsp.run(&["completions", "zsh"])
        .success()
        .stdout_has("#compdef basphere");
    bsp.run(&["completions", "tcsh"]).code(USAGE);
    bsp.run(&["--version"]).success().stdout_has("basphere ");
}

/// `basphere ARGS` on a 100-column terminal to its end, answering its confirmation with
/// `answer` if given: its exit code and screen.
fn on_terminal(bsp: &Bsp, args: &[&str], answer: Option<&str>) -> (i32, String) {
    let mut term = Terminal::start(bsp.command(args), 100, 24);
    if let Some(answer) = answer {
        term.wait_for("[y/N]", 20);
        term.send(answer.as_bytes());
    }
    let code = term.wait_exit(20);
    (code, term.screen())
}

#[test]
fn a_terminal_gets_tables_and_confirmations() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    let (code, screen) = on_terminal(&bsp, &["admin", "user", "list"], None);
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains('│') && screen.contains("alice"),
        "no table on the terminal: {screen}"
    );

    let remove = ["admin", "user", "remove", "alice"];
    let (code, screen) = on_terminal(&bsp, &remove, Some("n\n"));
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("remove user `alice`"), "{screen}");
    assert!(screen.contains("nothing removed"), "{screen}");
    bsp.run(&["admin", "user", "show", "alice"]).success();

    let (code, screen) = on_terminal(&bsp, &remove, Some("y\n"));
    assert_eq!(code, 0, "{screen}");
    bsp.run(&["admin", "user", "show", "alice"]).code(NOT_FOUND);
}

/// A sample of keys from each source, written out: the per-key source, the env names,
/// the value forms and the errors that name what is wrong.
#[test]
fn config_keys_come_from_file_env_and_flag_each_with_its_own_source() {
    let mut bsp = Bsp::new();
    let file = bsp.dir.path().join("config.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!(
            "{original}admin_emails = [\"a@example.com\", \"b@example.com\"]\n\
             [quota]\nmemory = \"64G\"\n\n[ssh]\nidle_timeout = \"never\"\n\n\
             [flavors.build]\ncpus = 8\nmemory = \"16G\"\ndisk = \"100G\"\n"
        ),
    )
    .unwrap();
    bsp.set_env("BASPHERE_SSH_MAX_SESSIONS", "3");
    bsp.set_env("BASPHERE_SMTP_PORT", "2525");
    bsp.set_env("BASPHERE_SIGNUP_TOKEN_LIFETIME", "90m");
    bsp.set_env("BASPHERE_CRASH_AT", "disk");
    let rows = bsp.json(&["config", "--virt-type", "kvm"]);
    let rows = rows.as_array().unwrap();
    let find = |key: &str| -> (String, String) {
        let row = rows
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no key {key}"));
        (
            row["value"].as_str().unwrap().to_owned(),
            row["source"].as_str().unwrap().to_owned(),
        )
    };
    let expected = [
        ("quota.memory", "64G", "file"),
        ("quota.cpus", "32", "default"),
        ("quota.disk", "1T", "default"),
        ("ssh.idle_timeout", "never", "file"),
        ("ssh.max_sessions", "3", "env"),
        ("ssh.max_auth_attempts", "6", "default"),
        ("smtp.port", "2525", "env"),
        ("smtp.security", "starttls", "default"),
        ("signup.token_lifetime", "90m", "env"),
        ("admin_emails", "a@example.com,b@example.com", "file"),
        ("virt_type", "kvm", "flag"),
        ("libvirt_uri", "test:///default", "env"),
        ("public_host", "bastion.test", "env"),
        ("public_port", "22", "default"),
        ("flavors.build", "cpus=8 memory=16G disk=100G", "file"),
        ("flavors.small", "cpus=1 memory=1G disk=10G", "default"),
    ];
    for (key, value, source) in expected {
        assert_eq!(find(key), (value.to_owned(), source.to_owned()), "{key}");
    }
    // Test hooks are not settings.
    assert!(
        rows.iter()
            .all(|r| !r["key"].as_str().unwrap().contains("crash")),
        "{rows:?}"
    );

    bsp.set_env("BASPHERE_QUOTA_MEMORY", "lots");
    bsp.run(&["config"])
        .code(1)
        .stderr_has("BASPHERE_QUOTA_MEMORY `lots`");
    bsp.set_env("BASPHERE_QUOTA_MEMORY", "");
    bsp.run(&["config", "--virt-type", "xen"])
        .code(1)
        .stderr_has("virt_type");
    std::fs::write(&file, format!("{original}[quota]\nmemory = 64\n")).unwrap();
    bsp.run(&["config"])
        .code(1)
        .stderr_has("quota.memory: expected a string");
    std::fs::write(&file, format!("{original}[quota.cpus]\nx = 1\n")).unwrap();
    bsp.run(&["config"]).code(1).stderr_has("quota.cpus");
    std::fs::write(
        &file,
        format!("{original}[flavors.big]\ncpus = 0\nmemory = \"1G\"\ndisk = \"1G\"\n"),
    )
    .unwrap();
    bsp.run(&["config"]).code(1).stderr_has("at least 1");
}

/// Two `admin image add` of one name at once: the second passed the check for the name
/// before the first registered it, then copied over the first's file and, when the
/// name was taken after all, deleted the file the catalogue now pointed at.
#[test]
fn a_second_image_add_of_the_same_name_leaves_the_first_intact() {
    let bsp = Bsp::new();
    let source = bsp.dir.path().join("src.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&source)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    let source = source.to_str().unwrap();
    let add = [
        "admin",
        "image",
        "add",
        "dup",
        source,
        "--os-user",
        "debian",
    ];
    // The first has copied the image into place and is about to register it; the
    // second has found the name free and waits for its turn.
    let first = bsp.start_paused("image-copied", &add);
    let second = bsp.start_paused("image-checked", &add);
    first.open().success().stdout_has("added image dup");
    second
        .open()
        .code(CONFLICT)
        .stderr_has("image `dup` already exists");
    let images = bsp.json(&["admin", "image", "list"]);
    let path = images[0]["path"].as_str().unwrap().to_owned();
    assert!(
        std::path::Path::new(&path).is_file(),
        "the registered file is gone: {images}"
    );
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", &path])
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let leftovers: Vec<_> = std::fs::read_dir(bsp.data_dir().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["dup.qcow2"]);
}

/// `admin user remove` while that user's `create-vm` ran: the removal found no VM yet
/// and went ahead, and the create went on for a user who was gone (or left a domain on
/// the network the removal deleted). The two now exclude each other: the removal waits
/// for the create, then refuses because the user owns a VM.
#[test]
fn removing_a_user_waits_for_their_create_vm() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    bsp.add_blank_image("blank");
    let create = bsp.start_paused(
        "reserve",
        &[
            "--as",
            "alice",
            "create-vm",
            "web1",
            "--memory",
            "128M",
            "--disk",
            "1G",
        ],
    );
    let mut remove = bsp
        .command(&["admin", "user", "remove", "alice", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let early = remove.try_wait().unwrap();
    let created = create.open();
    let removed = remove.wait_with_output().unwrap();
    assert!(
        early.is_none(),
        "the removal did not wait for the create: {early:?}\n{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    created.success().stdout_has("web1");
    assert_eq!(removed.status.code(), Some(CONFLICT));
    let stderr = String::from_utf8_lossy(&removed.stderr);
    assert!(stderr.contains("still owns 1 VM"), "{stderr}");
    assert_eq!(bsp.json(&["admin", "user", "list"])[0]["id"], "alice");
    assert_eq!(bsp.json(&["admin", "vms"])[0]["name"], "web1");
}

/// Runs `cmd` with at most 1 GiB of address space and 20 s: a command that reads
/// without end fails instead of taking the machine's memory or hanging the test.
fn run_bounded(mut cmd: std::process::Command, args: &[&str]) -> crate::fixtures::bin::Run {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let gib = 1 << 30;
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, gib, gib)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = crate::fixtures::poll::within(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(50),
        || child.try_wait().unwrap(),
    );
    if done.is_none() {
        let _ = child.kill();
    }
    crate::fixtures::bin::Run::from(child.wait_with_output().unwrap(), args)
}

/// `--key-file /dev/zero` read until memory ran out, a FIFO hung the command, and
/// stdin was cut at 64 KiB without a word. Keys are read from regular files and stdin
/// only, at most 64 KiB, and more is refused.
#[test]
fn key_files_are_regular_files_or_stdin_of_at_most_64_kib() {
    let bsp = Bsp::new();
    let key = keygen(bsp.dir.path(), "bob", "ed25519", None);
    let line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let add = |file: &str| {
        vec![
            "admin".to_owned(),
            "user".into(),
            "add".into(),
            "bob".into(),
            "--email".into(),
            "bob@example.com".into(),
            "--key-file".into(),
            file.into(),
        ]
    };
    let fifo = bsp.dir.path().join("keys.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for file in ["/dev/zero", "/dev/urandom", fifo.to_str().unwrap(), "/tmp"] {
        let args = add(file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bounded(bsp.command(&args), &args)
            .code(USAGE)
            .stderr_has("not a regular file");
    }
    // Over 64 KiB: a key, then a long comment line.
    let big = format!("{line}#{}\n", "x".repeat(70 * 1024));
    let big_file = bsp.dir.path().join("big.pub");
    std::fs::write(&big_file, &big).unwrap();
    let args = add(big_file.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bsp.run(&args).code(USAGE).stderr_has("64 KiB");
    let args = add("-");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bsp.run_with_stdin(&args, &big)
        .code(USAGE)
        .stderr_has("64 KiB");
    bsp.run_with_stdin(&["key", "add"], &big).code(USAGE);
    assert!(bsp
        .json(&["admin", "user", "list"])
        .as_array()
        .unwrap()
        .is_empty());
    // Within the limit, from a file and from stdin.
    let small = bsp.dir.path().join("bob.pub");
    std::fs::write(&small, &line).unwrap();
    let args = add(small.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bsp.run(&args).success();
}

/// The audit log grew forever. Entries older than `audit.retention` (400 days unless
/// set) are deleted as new ones are written; `never` keeps them all.
#[test]
fn audit_entries_older_than_the_retention_are_pruned() {
    const DAY: i64 = 86_400;
    let t0: i64 = 1_800_000_000;
    let mut bsp = Bsp::new();
    let at = |bsp: &mut Bsp, t: i64| bsp.set_env("BASPHERE_NOW", &t.to_string());
    let times = |bsp: &Bsp| -> Vec<i64> {
        let log = bsp.json(&["admin", "audit", "--limit", "1000"]);
        log.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["at"].as_i64().unwrap() - t0) / DAY)
            .collect()
    };
    at(&mut bsp, t0);
    bsp.add_user("alice");
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "4"])
        .success();
    at(&mut bsp, t0 + 399 * DAY);
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "5"])
        .success();
    assert_eq!(times(&bsp), [0, 0, 399], "nothing is 400 days old yet");
    at(&mut bsp, t0 + 401 * DAY);
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "6"])
        .success();
    assert_eq!(times(&bsp), [399, 401], "the entries of day 0 are gone");

    bsp.set_env("BASPHERE_AUDIT_RETENTION", "never");
    at(&mut bsp, t0 + 3000 * DAY);
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "7"])
        .success();
    assert_eq!(times(&bsp), [399, 401, 3000]);
    bsp.set_env("BASPHERE_AUDIT_RETENTION", "30d");
    at(&mut bsp, t0 + 3010 * DAY);
    bsp.run(&["admin", "quota", "set", "alice", "--cpus", "8"])
        .success();
    assert_eq!(times(&bsp), [3000, 3010]);
    bsp.set_env("BASPHERE_AUDIT_RETENTION", "soon");
    bsp.run(&["admin", "audit"])
        .code(1)
        .stderr_has("BASPHERE_AUDIT_RETENTION");
}
