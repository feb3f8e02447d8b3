//! Who may run which command: every command of the CLI, for every kind of caller, through
//! the real dispatcher in this process, on libvirt's `test:///default` driver.
//!
//! The expected policy is written out below, row by row, independently of what the
//! commands declare in src: a change to who may run something must change this table too.
//! Every command of the clap tree must have a row.
//!
//! The local roles come from real accounts of a Debian system: the service account is
//! set to `daemon` and the admin group to `bin`, so uid 0 is root, `daemon` the service
//! account, `bin` (primary group `bin`) a local administrator and `nobody` a stranger.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use basphere::config::{Config, Overrides};
use basphere::context::{local_role, Caller, Role};
use basphere::virt::Hypervisor;

use crate::fixtures::dispatch::{run, Ran};
use crate::fixtures::{assert_snapshot, bin};

const DENIED: i32 = 4;

/// The kinds of caller, in the order of the columns of `ROWS`.
const COLUMNS: [&str; 7] = [
    "root",
    "local-admin",
    "service",
    "stranger",
    "tenant",
    "remote-admin",
    "admin-as",
];

/// Every command line, and whether each kind of caller may run it (`Y`) or is refused
/// (`-`), in the order of `COLUMNS`:
///
/// ```text
///   R root  L local-admin  S service  X stranger  T tenant  A remote-admin  @ admin-as
/// ```
///
/// `admin-as` is the remote administrator with `--as alice` before the command.
/// Placeholders: `@KEY` a public key line nobody has registered, `@FP` its fingerprint,
/// `@FILE` a small qcow2 file.
#[rustfmt::skip]
const ROWS: &[(&str, &str, &[&str])] = &[
    //                       R L S X T A @
    // Tenant commands: tenants and administrators, never the service account or a stranger.
    ("create-vm",           "Y Y - - Y Y Y", &["create-vm", "web2", "--memory", "128M", "--disk", "1G", "--no-start"]),
    ("vm list",             "Y Y - - Y Y Y", &["vm", "list"]),
    ("vm show",             "Y Y - - Y Y Y", &["vm", "show", "web1"]),
    ("vm start",            "Y Y - - Y Y Y", &["vm", "start", "web1"]),
    ("vm reboot",           "Y Y - - Y Y Y", &["vm", "reboot", "web1"]),
    ("vm stop",             "Y Y - - Y Y Y", &["vm", "stop", "tmp1", "--force"]),
    ("vm delete",           "Y Y - - Y Y Y", &["vm", "delete", "tmp1", "--yes"]),
    ("console",             "Y Y - - Y Y Y", &["console", "web1"]),
    ("snapshot create",     "Y Y - - Y Y Y", &["snapshot", "create", "web1", "snap2"]),
    ("snapshot list",       "Y Y - - Y Y Y", &["snapshot", "list", "web1"]),
    ("snapshot restore",    "Y Y - - Y Y Y", &["snapshot", "restore", "web1", "snap1", "--yes"]),
    ("snapshot delete",     "Y Y - - Y Y Y", &["snapshot", "delete", "web1", "snap2"]),
    ("snapshot prune",      "Y Y - - Y Y Y", &["snapshot", "prune", "--dry-run"]),
    // Pruning everyone's, or another user's, snapshots: administrators and cron.
    ("snapshot prune",      "Y Y Y - - Y Y", &["snapshot", "prune", "--all", "--dry-run"]),
    ("snapshot prune",      "Y Y Y - - Y Y", &["snapshot", "prune", "--user", "alice", "--dry-run"]),
    ("images",              "Y Y - - Y Y Y", &["images"]),
    ("quota",               "Y Y - - Y Y Y", &["quota"]),
    ("key list",            "Y Y - - Y Y Y", &["key", "list"]),
    ("key add",             "Y Y - - Y Y Y", &["key", "add", "@KEY"]),
    ("key remove",          "Y Y - - Y Y Y", &["key", "remove", "@FP"]),
    ("key confirm",         "Y Y - - Y Y Y", &["key", "confirm", "@CODE"]),
    // whoami: the tenant commands' callers, and the service account.
    ("whoami",              "Y Y Y - Y Y Y", &["whoami"]),
    // Setting the host up: administrators on the bastion and the service account.
    ("admin init",          "Y Y Y - - - -", &["admin", "init", "--database-only"]),
    ("admin run-jobs",      "Y Y Y - - - -", &["admin", "run-jobs", "--list"]),
    // Moving a root-owned installation: root. Pointed at no database, so that root's
    // run stops before it changes the host's accounts or libvirt (see `admins`).
    ("admin adopt",         "Y - - - - - -", &["--data-dir", "/nonexistent/adopt", "admin", "adopt"]),
    // Administration: administrators, local or remote.
    ("admin user add",      "Y Y - - - Y Y", &["admin", "user", "add", "erin", "--email", "erin@example.com", "--key", "@KEY"]),
    ("admin user list",     "Y Y - - - Y Y", &["admin", "user", "list"]),
    ("admin user show",     "Y Y - - - Y Y", &["admin", "user", "show", "alice"]),
    ("admin user disable",  "Y Y - - - Y Y", &["admin", "user", "disable", "dave"]),
    ("admin user enable",   "Y Y - - - Y Y", &["admin", "user", "enable", "dave"]),
    ("admin user remove",   "Y Y - - - Y Y", &["admin", "user", "remove", "dave", "--yes"]),
    ("admin image add",     "Y Y - - - Y Y", &["admin", "image", "add", "spare", "@FILE", "--os-user", "debian"]),
    ("admin image list",    "Y Y - - - Y Y", &["admin", "image", "list"]),
    ("admin image remove",  "Y Y - - - Y Y", &["admin", "image", "remove", "ghost"]),
    ("admin quota set",     "Y Y - - - Y Y", &["admin", "quota", "set", "alice", "--snapshots", "40"]),
    ("admin quota show",    "Y Y - - - Y Y", &["admin", "quota", "show", "alice"]),
    ("admin vms",           "Y Y - - - Y Y", &["admin", "vms"]),
    ("admin reconcile",     "Y Y - - - Y Y", &["admin", "reconcile", "--dry-run"]),
    ("admin audit",         "Y Y - - - Y Y", &["admin", "audit"]),
    ("admin signups",       "Y Y - - - Y Y", &["admin", "signups"]),
    ("admin signups prune", "Y Y - - - Y Y", &["admin", "signups", "prune", "--older-than", "4w"]),
    ("admin approve",       "Y Y - - - Y Y", &["admin", "approve", "ghost", "--yes"]),
    ("admin reject",        "Y Y - - - Y Y", &["admin", "reject", "ghost", "--reason", "no"]),
    ("admin mail",          "Y Y - - - Y Y", &["admin", "mail"]),
    // Delivering mail: administrators and cron.
    ("mail flush",          "Y Y Y - - Y Y", &["mail", "flush"]),
    // The host's own business: local administrators and the service account.
    ("serve",               "Y Y Y - - - -", &["serve", "--web", "192.0.2.1:8080"]),
    ("config",              "Y Y Y - - - -", &["config"]),
    ("sshd-config",         "Y Y Y - - - -", &["sshd-config"]),
    ("doctor",              "Y Y Y - - - -", &["doctor"]),
    // Anyone on the bastion, nobody over SSH (the template holds only defaults).
    ("config",              "Y Y Y Y - - -", &["config", "--template"]),
    ("completions",         "Y Y Y Y - - -", &["completions", "bash"]),
    // What sshd runs: root, or the service account.
    ("shell",               "Y - Y - - - -", &["shell", "--user", "alice", "--key", "@ALICE_FP"]),
    ("auth-keys",           "Y - Y - - - -", &["auth-keys", "basphere", "ssh-ed25519", "AAAA"]),
];

/// The uid of a local account, which must exist (every Debian system has these).
fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no local account `{name}`"))
        .uid
        .as_raw()
}

/// Who calls in each column: a local account, or a user of the installation over SSH.
enum Who {
    Local(&'static str),
    Ssh(&'static str),
}

/// The caller of each column, and the argument the column puts before the command.
fn callers() -> Vec<(Who, &'static [&'static str])> {
    vec![
        (Who::Local("root"), &[]),
        (Who::Local("bin"), &[]),
        (Who::Local("daemon"), &[]),
        (Who::Local("nobody"), &[]),
        (Who::Ssh("alice"), &[]),
        (Who::Ssh("carol"), &[]),
        (Who::Ssh("carol"), &["--as", "alice"]),
    ]
}

impl Ran {
    /// Whether the run was refused by the permission check.
    fn denied(&self) -> bool {
        self.code == DENIED && self.stderr.contains("permission denied")
    }
}

/// A new ed25519 key pair `name` in `dir`: its public key line and fingerprint.
fn keygen(dir: &Path, name: &str) -> (String, String) {
    let key = bin::keygen(dir, name, "ed25519", None);
    (bin::public_key(&key), bin::fingerprint(&key))
}

/// A fresh installation: its own data directory, name prefix and network pool.
struct Install {
    dir: tempfile::TempDir,
    config: Arc<Config>,
    /// A key line nobody has registered, and its fingerprint.
    spare_key: String,
    spare_fp: String,
    /// A small qcow2 file to register as an image.
    image_file: String,
    /// The fingerprint of each user's key.
    fingerprints: std::collections::HashMap<String, String>,
    /// The code of a key alice added over SSH, still pending.
    code: String,
}

const ROOT: Caller = Caller::Local { uid: 0 };

impl Install {
    /// An installation with no users.
    fn empty(n: u32) -> Install {
        let dir = tempfile::Builder::new()
            .prefix("bsp-perm-")
            .tempdir()
            .unwrap();
        let prefix = format!("p{:04}{n:02}", std::process::id() % 10_000);
        let file = dir.path().join("config.toml");
        std::fs::write(&file, format!("name_prefix = \"{prefix}\"\n")).unwrap();
        let data = dir.path().join("data");
        let env: BTreeMap<String, String> = [
            ("BASPHERE_CONFIG", file.display().to_string()),
            ("BASPHERE_DATA_DIR", data.display().to_string()),
            ("BASPHERE_LIBVIRT_URI", "test:///default".to_owned()),
            ("BASPHERE_VIRT_TYPE", "qemu".to_owned()),
            ("BASPHERE_NETWORK_POOL", format!("10.{}.0.0/16", 200 + n)),
            ("BASPHERE_PUBLIC_HOST", "bastion.test".to_owned()),
            ("BASPHERE_SERVICE_USER", "daemon".to_owned()),
            ("BASPHERE_ADMIN_GROUP", "bin".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = Arc::new(Config::load(&Overrides::default(), &env).unwrap());
        assert_eq!(config.name_prefix, prefix);
        let image = dir.path().join("tiny.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("16M")
            .status()
            .unwrap()
            .success();
        assert!(ok, "qemu-img create failed");
        let (spare_key, spare_fp) = keygen(dir.path(), "spare");
        let image_file = image.display().to_string();
        let install = Install {
            dir,
            config,
            spare_key,
            spare_fp,
            image_file,
            fingerprints: Default::default(),
            code: String::new(),
        };
        install.setup(&ROOT, &["admin", "init", "--database-only"]);
        install
    }

    /// `who` as the caller of a command; a user over SSH with their key.
    fn caller(&self, who: &Who) -> Caller {
        match who {
            Who::Local(name) => Caller::Local { uid: uid_of(name) },
            Who::Ssh(user) => self.ssh(user),
        }
    }

    /// `user` over SSH with their key (a made-up one for a user with none).
    fn ssh(&self, user: &str) -> Caller {
        let made_up = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned();
        Caller::Ssh(basphere::context::Binding {
            user: user.to_owned(),
            fingerprint: self.fingerprints.get(user).cloned().unwrap_or(made_up),
            serial: None,
        })
    }

    /// Users alice (a tenant), carol (an administrator) and dave (to be disabled and
    /// removed); an image; alice's running VMs web1, with snapshot snap1, and tmp1.
    fn new(n: u32) -> Install {
        let mut install = Install::empty(n);
        for (user, admin) in [("alice", false), ("carol", true), ("dave", false)] {
            let (key, fingerprint) = keygen(install.dir.path(), user);
            install.fingerprints.insert(user.to_owned(), fingerprint);
            let email = format!("{user}@example.com");
            let mut argv = vec![
                "admin", "user", "add", user, "--email", &email, "--key", &key,
            ];
            if admin {
                argv.push("--admin");
            }
            install.setup(&ROOT, &argv);
        }
        let file = install.image_file.clone();
        install.setup(
            &ROOT,
            &[
                "admin",
                "image",
                "add",
                "blank",
                &file,
                "--os-user",
                "debian",
            ],
        );
        for vm in ["web1", "tmp1"] {
            install.setup(
                &ROOT,
                &[
                    "--as",
                    "alice",
                    "create-vm",
                    vm,
                    "--memory",
                    "128M",
                    "--disk",
                    "1G",
                ],
            );
        }
        install.setup(
            &ROOT,
            &["--as", "alice", "snapshot", "create", "web1", "snap1"],
        );
        // A key alice added over SSH, waiting for its code.
        let (pending, _) = keygen(install.dir.path(), "pending");
        let ran = run(
            &install.config,
            &install.ssh("alice"),
            &["key", "add", &pending],
        );
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        install.code = crate::fixtures::confirm_code(&ran.stdout);
        install
    }

    #[track_caller]
    fn setup(&self, caller: &Caller, argv: &[&str]) {
        let ran = run(&self.config, caller, argv);
        assert_eq!(
            ran.code,
            0,
            "fixture `{}` failed:\nstdout: {}\nstderr: {}",
            argv.join(" "),
            ran.stdout,
            ran.stderr
        );
    }

    /// A row's argv with its placeholders filled in.
    fn argv(&self, row: &[&str]) -> Vec<String> {
        row.iter()
            .map(|a| match *a {
                "@KEY" => self.spare_key.clone(),
                "@FP" => self.spare_fp.clone(),
                "@ALICE_FP" => self.fingerprints["alice"].clone(),
                "@CODE" => self.code.clone(),
                "@FILE" => self.image_file.clone(),
                a => a.to_owned(),
            })
            .collect()
    }
}

/// The name of every command line that runs something: each leaf of the clap tree, and
/// each command whose subcommand is optional (`admin signups`).
fn runnable_commands() -> Vec<String> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_owned());
            let parent = sub.get_subcommands().next().is_some();
            if !parent || !sub.is_subcommand_required_set() {
                out.push(path.join(" "));
            }
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(&basphere::cli::command(), &mut Vec::new(), &mut out);
    out
}

/// The expectation of a row, one bool (allowed) per column.
fn expected(text: &str) -> Vec<bool> {
    let cells: Vec<bool> = text
        .split_whitespace()
        .map(|c| match c {
            "Y" => true,
            "-" => false,
            other => panic!("bad cell `{other}` in `{text}`"),
        })
        .collect();
    assert_eq!(cells.len(), COLUMNS.len(), "row `{text}`");
    cells
}

#[test]
fn every_command_has_a_row_and_every_row_parses_as_its_command() {
    let commands = runnable_commands();
    // Sanity: the walk sees the tree (nested, with the optional-subcommand parent).
    for name in [
        "vm list",
        "admin user add",
        "admin signups",
        "admin signups prune",
    ] {
        assert!(commands.iter().any(|c| c == name), "{name}: {commands:?}");
    }
    let missing: Vec<_> = commands
        .iter()
        .filter(|c| !ROWS.iter().any(|(name, _, _)| name == c))
        .collect();
    assert!(missing.is_empty(), "commands with no row: {missing:?}");

    let mut bad = Vec::new();
    for (name, cells, argv) in ROWS {
        expected(cells);
        if !commands.iter().any(|c| c == name) {
            bad.push(format!("row `{name}` names no command"));
            continue;
        }
        let args = argv.iter().map(|a| match *a {
            "@KEY" => "ssh-ed25519 AAAA x@test",
            "@FP" => "SHA256:x",
            "@FILE" => "/dev/null",
            a => a,
        });
        let line = std::iter::once("basphere").chain(args);
        match basphere::cli::command().try_get_matches_from(line) {
            Ok(m) => {
                let mut path = Vec::new();
                let mut sub = m.subcommand();
                while let Some((n, inner)) = sub {
                    path.push(n);
                    sub = inner.subcommand();
                }
                if path.join(" ") != *name {
                    bad.push(format!(
                        "row `{name}`: {argv:?} parses as `{}`",
                        path.join(" ")
                    ));
                }
            }
            Err(e) => bad.push(format!("row `{name}`: {argv:?} does not parse: {e}")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn local_accounts_have_the_expected_roles() {
    let install = Install::empty(8);
    let config = &install.config;
    assert_eq!(local_role(0, config), Role::Root);
    assert_eq!(local_role(uid_of("bin"), config), Role::LocalAdmin);
    assert_eq!(local_role(uid_of("daemon"), config), Role::Service);
    assert_eq!(local_role(uid_of("nobody"), config), Role::Stranger);
    assert_eq!(local_role(uid_of("sys"), config), Role::Stranger);
}

/// Every row, for every kind of caller, each column on an installation of its own so
/// that no column sees what another changed. Every mismatch is reported at once.
#[test]
fn who_may_run_what() {
    let started = Instant::now();
    assert!(
        std::env::var_os("SSH_ORIGINAL_COMMAND").is_none(),
        "unset SSH_ORIGINAL_COMMAND to run this test: `shell` would run it"
    );
    // `serve --web 192.0.2.1:8080` must fail to bind, not serve.
    assert!(
        std::net::TcpListener::bind("192.0.2.1:0").is_err(),
        "192.0.2.1 is an address of this host; `serve` would not stop"
    );
    // The test driver's state lives while some connection to it is open.
    let _keep = Hypervisor::open("test:///default").expect("libvirt test driver");

    let mut mismatches = Vec::new();
    let mut checked = 0;
    let mut codes = vec![Vec::new(); ROWS.len()];
    for (column, (who, prefix)) in callers().iter().enumerate() {
        let install = Install::new(column as u32);
        let caller = &install.caller(who);
        for (i, (name, cells, row)) in ROWS.iter().enumerate() {
            let allowed = expected(cells)[column];
            let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
            argv.extend(install.argv(row));
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let ran = run(&install.config, caller, &argv);
            checked += 1;
            codes[i].push(ran.code);
            let ok = if allowed {
                ran.code != DENIED
            } else {
                ran.denied()
            };
            if !ok {
                mismatches.push(format!(
                    "`{name}` ({}) for {}: expected {}, got exit {}\n    stderr: {}",
                    argv.join(" "),
                    COLUMNS[column],
                    if allowed { "allowed" } else { "denied" },
                    ran.code,
                    ran.stderr.trim_end().replace('\n', "\n            ")
                ));
            }
        }
    }
    // The exit code of every run, for reading along with the table (`--nocapture`).
    eprintln!("{:<60} {}", "exit codes", COLUMNS.join(" "));
    for ((_, _, row), codes) in ROWS.iter().zip(&codes) {
        let cells: Vec<String> = codes
            .iter()
            .zip(COLUMNS)
            .map(|(code, column)| format!("{code:>width$}", width = column.len()))
            .collect();
        eprintln!("{:<60} {}", row.join(" "), cells.join(" "));
    }
    eprintln!(
        "{checked} runs ({} rows x {} callers) in {:.1?}",
        ROWS.len(),
        COLUMNS.len(),
        started.elapsed()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {checked} runs disagree with the policy:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// `--as` is for administrators; over SSH, nobody points basphere at other state.
#[test]
fn as_and_local_state_flags() {
    let _keep = Hypervisor::open("test:///default").expect("libvirt test driver");
    let install = Install::new(7);
    let config = &install.config;
    let ssh = |user: &str| install.ssh(user);
    let service = Caller::Local {
        uid: uid_of("daemon"),
    };
    let local_admin = Caller::Local { uid: uid_of("bin") };
    let mut bad = Vec::new();
    let mut expect = |who: &str, caller: &Caller, argv: &[&str], denied: bool| {
        let ran = run(config, caller, argv);
        if ran.denied() != denied || (!denied && ran.code == DENIED) {
            bad.push(format!(
                "`{}` for {who}: expected {}, got exit {}\n    stderr: {}",
                argv.join(" "),
                if denied { "denied" } else { "allowed" },
                ran.code,
                ran.stderr.trim_end()
            ));
        }
    };
    // Not an administrator: no `--as`, for another user or for oneself.
    expect("tenant", &ssh("alice"), &["--as", "carol", "quota"], true);
    expect("tenant", &ssh("alice"), &["--as", "alice", "quota"], true);
    expect("service", &service, &["--as", "alice", "quota"], true);
    expect("service", &service, &["--as", "alice", "whoami"], true);
    // Administrators may.
    expect("root", &ROOT, &["--as", "alice", "quota"], false);
    expect(
        "local-admin",
        &local_admin,
        &["--as", "alice", "quota"],
        false,
    );
    expect(
        "remote-admin",
        &ssh("carol"),
        &["--as", "alice", "quota"],
        false,
    );
    // Over SSH, no flag that names local state, even for an administrator.
    for flag in [
        ["--data-dir", "/tmp"],
        ["--config", "/dev/null"],
        ["--libvirt-uri", "test:///default"],
        ["--virt-type", "qemu"],
    ] {
        for user in ["alice", "carol"] {
            let argv = [flag[0], flag[1], "vm", "list"];
            expect(user, &ssh(user), &argv, true);
        }
    }
    // An SSH user basphere does not know is refused whatever the command.
    expect("unknown", &ssh("zed"), &["whoami"], true);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Commands that cannot speak JSON: they stream a terminal or a session, or write a
/// format another program reads. `--json` is refused before they run.
const NO_JSON: &[&str] = &[
    "console",
    "serve",
    "shell",
    "auth-keys",
    "completions",
    "sshd-config",
];

/// Commands that change the host itself (its accounts, libvirt's configuration): their
/// JSON is checked where they run on accounts and files made for them (`admins`).
const CHANGES_THE_HOST: &[&str] = &["admin adopt"];

/// Every other command, as root (with `--as alice` for a tenant's), in an order in
/// which each one succeeds on the fixture. Placeholders as in `ROWS`.
#[rustfmt::skip]
const JSON: &[(&str, &[&str])] = &[
    ("create-vm",           &["--as", "alice", "create-vm", "web2", "--memory", "128M", "--disk", "1G", "--no-start"]),
    ("vm list",             &["--as", "alice", "vm", "list"]),
    ("vm show",             &["--as", "alice", "vm", "show", "web1"]),
    ("vm start",            &["--as", "alice", "vm", "start", "web2"]),
    ("vm reboot",           &["--as", "alice", "vm", "reboot", "web1"]),
    ("vm stop",             &["--as", "alice", "vm", "stop", "tmp1", "--force"]),
    ("vm delete",           &["--as", "alice", "vm", "delete", "tmp1", "--yes"]),
    ("snapshot create",     &["--as", "alice", "snapshot", "create", "web1", "snap2"]),
    ("snapshot list",       &["--as", "alice", "snapshot", "list"]),
    ("snapshot restore",    &["--as", "alice", "snapshot", "restore", "web1", "snap1", "--yes"]),
    ("snapshot delete",     &["--as", "alice", "snapshot", "delete", "web1", "snap2"]),
    ("snapshot prune",      &["snapshot", "prune", "--all", "--dry-run"]),
    ("images",              &["--as", "alice", "images"]),
    ("quota",               &["--as", "alice", "quota"]),
    ("key add",             &["--as", "alice", "key", "add", "@KEY"]),
    ("key list",            &["--as", "alice", "key", "list"]),
    ("key remove",          &["--as", "alice", "key", "remove", "@FP"]),
    ("key confirm",         &["--as", "alice", "key", "confirm", "@CODE"]),
    ("whoami",              &["--as", "alice", "whoami"]),
    ("admin init",          &["admin", "init", "--database-only"]),
    ("admin user add",      &["admin", "user", "add", "erin", "--email", "erin@example.com", "--key", "@KEY"]),
    ("admin user list",     &["admin", "user", "list"]),
    ("admin user show",     &["admin", "user", "show", "alice"]),
    ("admin user disable",  &["admin", "user", "disable", "dave"]),
    ("admin user enable",   &["admin", "user", "enable", "dave"]),
    ("admin user remove",   &["admin", "user", "remove", "dave", "--yes"]),
    ("admin image add",     &["admin", "image", "add", "spare", "@FILE", "--os-user", "debian"]),
    ("admin image list",    &["admin", "image", "list"]),
    ("admin image remove",  &["admin", "image", "remove", "spare"]),
    ("admin quota set",     &["admin", "quota", "set", "alice", "--snapshots", "40"]),
    ("admin quota show",    &["admin", "quota", "show", "alice"]),
    ("admin vms",           &["admin", "vms"]),
    ("admin reconcile",     &["admin", "reconcile", "--dry-run"]),
    ("admin audit",         &["admin", "audit", "--limit", "3"]),
    ("admin signups",       &["admin", "signups"]),
    ("admin approve",       &["admin", "approve", "frank", "--yes", "--force"]),
    ("admin reject",        &["admin", "reject", "gina", "--reason", "no"]),
    ("admin signups prune", &["admin", "signups", "prune", "--older-than", "4w"]),
    ("admin mail",          &["admin", "mail", "--all"]),
    ("admin run-jobs",      &["admin", "run-jobs", "--list"]),
    ("mail flush",          &["mail", "flush"]),
    ("config",              &["config"]),
    ("doctor",              &["doctor"]),
];

/// Commands whose exit status is part of what they report: `doctor` exits 1 with
/// warnings and 2 with failures, its JSON on stdout all the same.
const EXIT_REPORTS: &[&str] = &["doctor"];

/// The key paths of a JSON document, `[]` for the items of an array: its schema, less
/// the values.
fn key_paths(value: &serde_json::Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}.{k}");
                out.insert(p.clone());
                key_paths(v, &p, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Every command speaks JSON by construction: each runs to exit 0 with `--json` on a
/// fixture with users, VMs, snapshots and signups, its stdout is one JSON document, and
/// the keys of all of them are one snapshot, so a change of schema shows in review.
#[test]
fn every_command_speaks_json() {
    let _keep = Hypervisor::open("test:///default").expect("libvirt test driver");
    let install = Install::new(9);
    // Two account requests, one to approve and one to reject.
    let conn = basphere::db::open(&install.config.db_path()).unwrap();
    for user in ["frank", "gina"] {
        let (key, _) = keygen(install.dir.path(), user);
        let form = basphere::ops::signup::Form {
            user_id: user.into(),
            email: format!("{user}@example.com"),
            public_key: key,
            reason: "testing".into(),
        };
        basphere::ops::signup::create(&conn, &install.config, &form, "127.0.0.1").unwrap();
    }
    drop(conn);

    let commands = runnable_commands();
    let listed: Vec<&str> = JSON
        .iter()
        .map(|(n, _)| *n)
        .chain(NO_JSON.iter().copied())
        .chain(CHANGES_THE_HOST.iter().copied())
        .collect();
    let unlisted: Vec<_> = commands
        .iter()
        .filter(|c| !listed.contains(&c.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "commands in neither JSON nor NO_JSON: {unlisted:?}"
    );

    let mut schema = String::new();
    let mut bad = Vec::new();
    for (name, row) in JSON {
        // Global flags go first: `key add` takes every word after the key as part of it.
        let mut argv = vec!["--json".to_owned()];
        argv.extend(install.argv(row));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let ran = run(&install.config, &ROOT, &argv);
        let parsed = serde_json::from_str::<serde_json::Value>(&ran.stdout);
        let reported = EXIT_REPORTS.contains(name) && (0..=2).contains(&ran.code);
        match (ran.code, parsed) {
            (code, Ok(value)) if code == 0 || reported => {
                let mut keys = std::collections::BTreeSet::new();
                key_paths(&value, "", &mut keys);
                let kind = match &value {
                    serde_json::Value::Array(_) => "array",
                    serde_json::Value::Object(_) => "object",
                    _ => "value",
                };
                schema.push_str(&format!("{name} ({kind})\n"));
                for k in keys {
                    schema.push_str(&format!("  {k}\n"));
                }
            }
            (code, parsed) => bad.push(format!(
                "`{}`: exit {code}, JSON {:?}\n  stdout: {}\n  stderr: {}",
                argv.join(" "),
                parsed.err(),
                ran.stdout,
                ran.stderr
            )),
        }
    }
    for name in NO_JSON {
        let (_, _, row) = ROWS.iter().find(|(n, _, _)| n == name).unwrap();
        let mut argv = vec!["--json".to_owned()];
        argv.extend(install.argv(row));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let ran = run(&install.config, &ROOT, &argv);
        if ran.code != 2 || !ran.stderr.contains("no JSON output") {
            bad.push(format!(
                "`{name} --json`: exit {}, stderr {}",
                ran.code, ran.stderr
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_snapshot!("permissions__json_keys", schema);
}

/// With `--json`, an error is one object on stderr that says what kind it is.
#[test]
fn errors_in_json_are_one_object() {
    let _keep = Hypervisor::open("test:///default").expect("libvirt test driver");
    let install = Install::new(10);
    for (argv, kind, exit) in [
        (
            &["--as", "alice", "vm", "show", "ghost", "--json"][..],
            "not_found",
            3,
        ),
        (
            &["--as", "alice", "vm", "show", "Bad_Name", "--json"][..],
            "invalid",
            2,
        ),
        (
            &[
                "--as", "alice", "snapshot", "delete", "web1", "a..b", "--json",
            ][..],
            "invalid",
            2,
        ),
        (
            &["--as", "alice", "vm", "frobnicate", "--json"][..],
            "invalid",
            2,
        ),
        (&["--as", "zed", "quota", "--json"][..], "not_found", 3),
    ] {
        let ran = run(&install.config, &ROOT, argv);
        assert_eq!(ran.code, exit, "{argv:?}: {}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{argv:?}: {}", ran.stdout);
        let error: serde_json::Value =
            serde_json::from_str(ran.stderr.trim()).unwrap_or_else(|e| {
                panic!(
                    "{argv:?}: stderr is not one JSON object ({e}): {}",
                    ran.stderr
                )
            });
        assert_eq!(error["kind"], kind, "{argv:?}: {error}");
        assert_eq!(error["exit"], exit, "{argv:?}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
}
