//! `basphere admin init`: a host set up from a preseed for each front door, or from the
//! questions on a real pseudo-terminal; a second run that changes nothing; a changed
//! preseed shown and applied only with --force; bad answers that change nothing; runs
//! killed part way and finished; the sshd drop-in checked by the real `sshd -t` inside a
//! private mount namespace, so the host's /etc is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::bin::{public_key, Bsp, BIN};
use crate::fixtures::terminal::Terminal;

const USAGE: i32 = 2;
const CONFLICT: i32 = 6;

const UNITS_BY_HAND: &str = "systemd is not running: start the units yourself: \
systemctl enable --now basphere.service basphere-jobs.timer basphere-reconcile.service";

/// A route table as the kernel prints it in `/proc/net/route`: device, destination
/// and mask in hex (the host's byte order), after the default route.
fn write_routes(path: &std::path::Path, routes: &[(&str, &str, &str)]) {
    let mut text = String::from(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
    );
    for (dev, dest, mask) in routes {
        text.push_str(&format!(
            "{dev}\t{dest}\t00000000\t0001\t0\t0\t0\t{mask}\t0\t0\t0\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// An installation that `admin init` has not set up: a config path in a directory that
/// does not exist yet, no data directory, an administrator's key and a small image.
struct Host {
    bsp: Bsp,
    config: PathBuf,
    key: String,
    image: PathBuf,
}

impl Host {
    fn new() -> Host {
        let mut bsp = Bsp::without_database("test:///default");
        let config = bsp.dir.path().join("etc/basphere/config.toml");
        bsp.set_env("BASPHERE_CONFIG", config.to_str().unwrap());
        // What the file says is what is read back.
        bsp.set_env("BASPHERE_PUBLIC_HOST", "");
        bsp.set_env("BASPHERE_NETWORK_POOL", "");
        // No such account: root keeps the data (`admins` tests the hand-over to one).
        bsp.set_env("BASPHERE_SERVICE_USER", "bspnobody");
        // The routes of the host are its own business: init reads these instead.
        let routes = bsp.dir.path().join("route");
        write_routes(&routes, &[("eth0", "000200C0", "00FFFFFF")]);
        bsp.set_env("BASPHERE_TEST_ROUTES", routes.to_str().unwrap());
        let key = public_key(&bsp.keygen("alice"));
        let image = bsp.dir.path().join("debian-12-src.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("64M")
            .status()
            .unwrap();
        assert!(made.success());
        Host {
            bsp,
            config,
            key,
            image,
        }
    }

    /// A preseed for the embedded server on `port`, with SMTP and the image.
    fn embedded(&self, port: u16) -> String {
        format!(
            "public_host = \"bastion.example.org\"\n\
             network_pool = \"10.231.0.0/16\"\n\
             admin_emails = [\"ops@example.org\"]\n\
             [ssh]\ndoor = \"embedded\"\nport = {port}\n\
             [smtp]\nhost = \"smtp.example.org\"\nport = 587\nsecurity = \"starttls\"\n\
             username = \"basphere\"\npassword = \"hunter2\"\n\
             [admin]\nid = \"alice\"\nemail = \"alice@example.org\"\nkey = \"{}\"\n\
             [image]\nname = \"debian-12\"\nfile = \"{}\"\nos_user = \"debian\"\n",
            self.key,
            self.image.display()
        )
    }

    fn write_preseed(&self, text: &str) -> PathBuf {
        let path = self.bsp.dir.path().join("preseed.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn init(&self, preseed: &str, extra: &[&str]) -> crate::fixtures::bin::Run {
        let path = self.write_preseed(preseed);
        let mut args = vec!["admin", "init", "--preseed", path.to_str().unwrap()];
        args.extend(extra);
        self.bsp.run(&args)
    }

    /// The configuration file and every copy kept beside it.
    fn files(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.config.parent().unwrap()) else {
            return Vec::new();
        };
        let mut files: Vec<(String, String)> = entries
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect();
        files.sort();
        files
    }

    fn setting(&self, key: &str) -> String {
        let listed = self.bsp.json(&["config"]);
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {listed}"));
        assert_eq!(entry["source"], "file", "{key}: {entry}");
        entry["value"].as_str().unwrap().to_owned()
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_embedded_door_from_a_preseed_then_a_second_run_changes_nothing() {
    let host = Host::new();
    let run = host.init(&host.embedded(2222), &[]).success();
    for line in [
        "serve.ssh: (none) → 0.0.0.0:2222",
        "smtp.password: (none) → (set)",
        "wrote ",
        "created the database",
        "added the administrator alice",
        "registered the image debian-12",
        UNITS_BY_HAND,
        "ssh -p 2222 basphere@bastion.example.org",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    // The settings, as basphere reads them back.
    assert_eq!(host.setting("serve.ssh"), "0.0.0.0:2222");
    assert_eq!(host.setting("smtp.password"), "(set)");
    assert_eq!(host.setting("admin_emails"), "ops@example.org");
    let text = std::fs::read_to_string(&host.config).unwrap();
    assert!(text.contains("password = \"hunter2\""), "{text}");
    assert!(
        text.contains("# quota.cpus") || text.contains("# cpus = 32"),
        "{text}"
    );
    // It holds the SMTP password: the service account's group reads it, nobody else.
    // Here no such account: nobody else.
    assert_eq!(mode(&host.config), 0o600);
    assert_eq!(mode(host.config.parent().unwrap()), 0o755);
    let users = host.bsp.json(&["admin", "user", "list"]);
    assert_eq!(users[0]["id"], "alice");
    assert_eq!(users[0]["role"], "admin");
    let images = host.bsp.json(&["admin", "image", "list"]);
    assert_eq!(images[0]["os_user"], "debian");
    assert!(!host.bsp.data_dir().join("init.incomplete").exists());

    let (files, state) = (host.files(), host.bsp.state());
    host.init(&host.embedded(2222), &[])
        .success()
        .stdout_has("nothing changed");
    assert_eq!(host.files(), files, "a second run wrote something");
    assert_eq!(host.bsp.state(), state);
}

#[test]
fn a_changed_preseed_shows_the_difference_and_is_applied_only_with_force() {
    let host = Host::new();
    host.init(&host.embedded(2222), &[]).success();
    let (files, state) = (host.files(), host.bsp.state());
    let changed = host
        .embedded(2200)
        .replace("alice@example.org", "alice@corp.example.org")
        .replace("hunter2", "correct-horse")
        .replace("os_user = \"debian\"", "os_user = \"admin\"");
    let run = host.init(&changed, &[]).code(CONFLICT);
    for line in [
        "serve.ssh: 0.0.0.0:2222 → 0.0.0.0:2200",
        "smtp.password: (set) → (another)",
        "first administrator: admin alice <alice@example.org>",
        "→ admin alice <alice@corp.example.org>",
        "image: debian-12 (login debian, 64M) → debian-12 (login admin, 64M)",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert!(!format!("{}{}", run.stdout, run.stderr).contains("correct-horse"));
    assert_eq!(host.files(), files, "refused, yet something was written");
    assert_eq!(host.bsp.state(), state);

    let run = host.init(&changed, &["--force"]).success();
    assert!(
        run.stdout.contains("kept the previous configuration as"),
        "{}",
        run.stdout
    );
    assert_eq!(host.setting("serve.ssh"), "0.0.0.0:2200");
    let user = host.bsp.json(&["admin", "user", "show", "alice"]);
    assert_eq!(user["email"], "alice@corp.example.org");
    let images = host.bsp.json(&["admin", "image", "list"]);
    assert_eq!(images[0]["os_user"], "admin");
    // The replaced file is kept, dated, and private: it holds the old password.
    let files = host.files();
    let copies: Vec<_> = files
        .iter()
        .filter(|(name, _)| name.starts_with("config.toml."))
        .collect();
    assert_eq!(copies.len(), 1, "{files:?}");
    assert!(copies[0].1.contains("hunter2") && copies[0].1.contains("0.0.0.0:2222"));
    let copy = host.config.with_file_name(&copies[0].0);
    assert_eq!(mode(&copy), 0o600);
    host.init(&changed, &[])
        .success()
        .stdout_has("nothing changed");
}

#[test]
fn settings_the_file_has_beside_the_answers_are_kept() {
    let host = Host::new();
    std::fs::create_dir_all(host.config.parent().unwrap()).unwrap();
    let prefix = format!("name_prefix = \"{}\"\n", host.bsp.prefix);
    let hand = format!("{prefix}[quota]\ncpus = 64\n[flavors.build]\ncpus = 8\nmemory = \"16G\"\ndisk = \"100G\"\n");
    std::fs::write(&host.config, hand).unwrap();
    // Settings added to a file that has none of them need no --force.
    host.init(&host.embedded(2222), &[]).success();
    assert_eq!(host.setting("quota.cpus"), "64");
    assert_eq!(host.setting("name_prefix"), host.bsp.prefix);
    assert_eq!(host.setting("flavors.build"), "cpus=8 memory=16G disk=100G");
}

#[test]
fn bad_preseeds_change_nothing() {
    let host = Host::new();
    let good = host.embedded(2222);
    let missing = host.bsp.dir.path().join("no-such-image.qcow2");
    let cases = [
        (
            good.replace("[ssh]", "colour = \"blue\"\n[ssh]"),
            "unknown field `colour`",
        ),
        (
            good.replace("ops@example.org", "ops at example.org"),
            "invalid email address",
        ),
        (
            good.replace(&host.key, "ssh-ed25519 AAAAnotakey alice"),
            "not a valid SSH public key",
        ),
        (
            good.replace("10.231.0.0/16", "10.231.0.0/33"),
            "network_pool",
        ),
        (
            good.replace("10.231.0.0/16", "10.231.0.1/16"),
            "host bits are set",
        ),
        (
            good.replace("bastion.example.org", "bastion example"),
            "invalid host name",
        ),
        (
            good.replace("door = \"embedded\"", "door = \"telnet\""),
            "ssh.door",
        ),
        (
            good.replace(host.image.to_str().unwrap(), missing.to_str().unwrap()),
            "cannot read image file",
        ),
        (
            good.replace("[image]", "unix_user = \"no-such-account\"\n[image]"),
            "no Unix account `no-such-account`",
        ),
    ];
    for (preseed, error) in cases {
        host.init(&preseed, &[]).code(USAGE).stderr_has(error);
        assert!(host.files().is_empty(), "{error}: a file was written");
        assert!(
            !host.bsp.data_dir().exists(),
            "{error}: the data directory was made"
        );
    }
    // After a good run, a bad one leaves everything as it was too.
    host.init(&good, &[]).success();
    let (files, state) = (host.files(), host.bsp.state());
    let bad = good.replace("alice@example.org", "alice@");
    host.init(&bad, &["--force"])
        .code(USAGE)
        .stderr_has("invalid email address");
    assert_eq!(host.files(), files);
    assert_eq!(host.bsp.state(), state);
}

#[test]
fn without_a_terminal_or_a_preseed_it_is_a_usage_error() {
    let host = Host::new();
    host.bsp
        .run(&["admin", "init"])
        .code(USAGE)
        .stderr_has("--preseed FILE")
        .stderr_has("--database-only");
    assert!(host.files().is_empty());
    assert!(!host.bsp.data_dir().exists());
    host.bsp
        .run(&["admin", "init", "--database-only", "--force"])
        .code(USAGE);
}

/// Killed after each step, the next run with the same preseed finishes the job.
#[test]
fn a_run_killed_at_any_step_is_finished_by_the_next() {
    for step in [
        "init-config-written",
        "init-admin-added",
        "init-image-added",
    ] {
        let mut host = Host::new();
        host.bsp.set_env("BASPHERE_CRASH_AT", step);
        let run = host.init(&host.embedded(2222), &[]);
        assert_eq!(run.code, -1, "{step}: not killed: {}", run.stderr);
        host.bsp.set_env("BASPHERE_CRASH_AT", "");
        let run = host.init(&host.embedded(2222), &[]).success();
        assert!(run.stdout.contains(UNITS_BY_HAND), "{step}: {}", run.stdout);
        let users = host.bsp.json(&["admin", "user", "list"]);
        assert_eq!(users[0]["role"], "admin", "{step}");
        assert_eq!(
            host.bsp.json(&["admin", "image", "list"])[0]["name"],
            "debian-12"
        );
        host.init(&host.embedded(2222), &[])
            .success()
            .stdout_has("nothing changed");
    }
}

/// The questions, answered on a real pseudo-terminal; a bad answer is asked again.
#[test]
fn on_a_terminal_it_asks_for_each_answer() {
    let host = Host::new();
    // The default pool overlaps a route of eth1; basphere's own bridge does not count.
    write_routes(
        &host.bsp.dir.path().join("route"),
        &[
            ("eth1", "0000640A", "00FFFFFF"),
            ("bsp0a6400", "0001640A", "00FFFFFF"),
        ],
    );
    let mut term = Terminal::start(host.bsp.command(&["admin", "init"]), 120, 40);
    term.wait_for("Public host name", 20);
    term.line("bastion.example.org");
    term.wait_for("SSH front door", 20);
    // Up from the OpenSSH default to basphere's own server.
    term.send(b"\x1b[A");
    term.send(b"\r");
    term.wait_for("Port of basphere's SSH server", 20);
    term.line("");
    term.wait_for("Network pool", 20);
    term.line("");
    term.wait_for("Use it anyway?", 20);
    term.send(b"n");
    term.wait_for_count("Network pool", 2, 20);
    term.line("10.200.0.0/16");
    term.wait_for("Send mail through an SMTP relay?", 20);
    term.send(b"y");
    term.wait_for("SMTP host", 20);
    term.line("smtp.example.org");
    term.wait_for("SMTP security", 20);
    term.send(b"\r");
    term.wait_for("SMTP port", 20);
    term.line("");
    term.wait_for("SMTP user name", 20);
    term.line("basphere");
    term.wait_for("SMTP password", 20);
    term.line("hunter2");
    term.wait_for("Administrators' mail addresses", 20);
    term.line("");
    term.wait_for("First administrator's user id", 20);
    term.line("alice");
    term.wait_for("Their email address", 20);
    term.line("alice at example");
    term.wait_for("invalid email address", 20);
    term.line("alice@example.org");
    term.wait_for("Their SSH public key", 20);
    term.line(&host.key);
    // Asked only where the group is there to join.
    if nix::unistd::Group::from_name("basphere-admin")
        .unwrap()
        .is_some()
    {
        term.wait_for("group?", 20);
        term.send(b"n");
    }
    term.wait_for("Register a first base image?", 20);
    term.send(b"n");
    let code = term.wait_exit(60);
    let screen = term.screen();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("added the administrator alice"), "{screen}");
    assert_eq!(host.setting("serve.ssh"), "0.0.0.0:2222");
    assert_eq!(host.setting("public_host"), "bastion.example.org");
    assert_eq!(host.setting("network_pool"), "10.200.0.0/16");
    assert!(
        screen.contains("overlaps the host's route 10.100.0.0/24 (dev eth1)")
            && !screen.contains("dev bsp0a6400"),
        "{screen}"
    );
    assert_eq!(host.setting("smtp.host"), "smtp.example.org");
    assert_eq!(host.setting("smtp.username"), "basphere");
    assert!(
        !screen.contains("hunter2"),
        "the password was echoed: {screen}"
    );
    let text = std::fs::read_to_string(&host.config).unwrap();
    assert!(text.contains("password = \"hunter2\""), "{text}");
    let users = host.bsp.json(&["admin", "user", "list"]);
    assert_eq!(users[0]["email"], "alice@example.org");
}

/// Runs `script` as root in private mount and network namespaces where
/// /etc/ssh/sshd_config.d and /run are empty tmpfs: what the host has there is never
/// seen nor touched. `$B` is basphere with the host's environment.
fn in_private_namespaces(host: &Host, script: &str) -> (bool, String) {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--net", "sh", "-ec"])
        .arg(format!(
            "mount -t tmpfs tmpfs /etc/ssh/sshd_config.d\n\
             mount -t tmpfs tmpfs /run\nmkdir -p /run/sshd\nip link set lo up\n\
             B={BIN}\n{script}"
        ))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(host.bsp.env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_openssh_door_writes_a_drop_in_that_sshd_accepts_and_puts_back_one_it_refuses() {
    if !Path::new("/usr/sbin/sshd").exists() {
        eprintln!("skipped: no /usr/sbin/sshd");
        return;
    }
    let mut host = Host::new();
    // The kernel's own route table, in the namespace below.
    host.bsp.set_env("BASPHERE_TEST_ROUTES", "");
    let preseed = host
        .embedded(2222)
        .replace("door = \"embedded\"\nport = 2222", "door = \"openssh\"");
    let path = host.write_preseed(&preseed);
    let out = host.bsp.dir.path();
    let port = crate::fixtures::free_port();
    let script = format!(
        "P={preseed}; O={out}\n\
         # A route inside the pool: a warning, not a refusal.\n\
         ip link add lan0 type veth peer name lan1 && ip addr add 10.231.7.1/24 dev lan0\n\
         ip link set lan0 up && ip link set lan1 up\n\
         # A real sshd, so the reload is seen: it logs the SIGHUP.\n\
         /usr/sbin/sshd -o ListenAddress=127.0.0.1:{port} -E $O/sshd.log\n\
         # Up once it listens again after every SIGHUP it logged (the pidfile of the\n\
         # sshd before a restart is still there while the next one reads its files).\n\
         n() {{ cat $O/sshd.log 2>/dev/null | grep -c \"$1\"; }}\n\
         up() {{ i=0; while [ $(n 'Server listening') -le $(n 'Received SIGHUP') ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; }}\n\
         up\n\
         $B admin init --preseed $P > $O/first.out 2>&1\n\
         up; cp /etc/ssh/sshd_config.d/basphere.conf $O/drop-in\n\
         $B sshd-config > $O/expected\n\
         $B admin init --preseed $P > $O/second.out 2>&1\n\
         # Killed after writing the drop-in: the next run checks it and reloads sshd.\n\
         echo '# by hand' > /etc/ssh/sshd_config.d/basphere.conf\n\
         BASPHERE_CRASH_AT=init-drop-in-written $B admin init --preseed $P --force > $O/killed.out 2>&1 || echo $? > $O/killed.code\n\
         up; $B admin init --preseed $P > $O/resumed.out 2>&1\n\
         up\n\
         # sshd -t fails on another file: the previous drop-in is put back.\n\
         echo '# by hand' > /etc/ssh/sshd_config.d/basphere.conf\n\
         echo 'NoSuchOption yes' > /etc/ssh/sshd_config.d/00-broken.conf\n\
         $B admin init --preseed $P --force > $O/refused.out 2>&1 || echo $? > $O/refused.code\n\
         cp /etc/ssh/sshd_config.d/basphere.conf $O/after-refusal\n\
         ls /etc/ssh/sshd_config.d > $O/listing\n\
         # An sshd_config that includes no drop-ins: said, not hidden.\n\
         rm /etc/ssh/sshd_config.d/00-broken.conf\n\
         grep -v '^Include' /etc/ssh/sshd_config > $O/sshd_config\n\
         mount --bind $O/sshd_config /etc/ssh/sshd_config\n\
         up; $B admin init --preseed $P --force > $O/unread.out 2>&1\n\
         up; kill $(cat /run/sshd.pid)\n",
        preseed = path.display(),
        out = out.display(),
    );
    let (ok, text) = in_private_namespaces(&host, &script);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    assert!(ok, "{text}\nsshd's log:\n{}", read("sshd.log"));
    let first = read("first.out");
    for line in [
        "/etc/ssh/sshd_config.d/basphere.conf: (none) → `basphere sshd-config`",
        "(`sshd -t` accepts it)",
        "reloaded sshd (SIGHUP to process",
        "serve.ssh: (none) → off",
        "warning: network_pool 10.231.0.0/16 overlaps the host's route 10.231.7.0/24 (dev lan0)",
        UNITS_BY_HAND,
    ] {
        assert!(first.contains(line), "no {line:?} in:\n{first}");
    }
    assert!(
        read("sshd.log").contains("Received SIGHUP"),
        "{}",
        read("sshd.log")
    );
    assert_eq!(read("drop-in"), read("expected"));
    assert!(
        read("second.out").contains("nothing changed"),
        "{}",
        read("second.out")
    );
    assert_eq!(read("killed.code").trim(), "137", "{}", read("killed.out"));
    let resumed = read("resumed.out");
    assert!(resumed.contains("(`sshd -t` accepts it)"), "{resumed}");
    assert!(resumed.contains("reloaded sshd"), "{resumed}");
    let refused = read("refused.out");
    assert_eq!(read("refused.code").trim(), "6", "{refused}");
    assert!(refused.contains("NoSuchOption"), "{refused}");
    assert!(
        refused.contains("the previous drop-in was put back"),
        "{refused}"
    );
    assert_eq!(read("after-refusal"), "# by hand\n");
    assert_eq!(read("listing"), "00-broken.conf\nbasphere.conf\n");
    assert!(!first.contains("sshd does not read"), "{first}");
    let unread = read("unread.out");
    assert!(
        unread.contains("warning: sshd does not read /etc/ssh/sshd_config.d/basphere.conf"),
        "{unread}"
    );
    // The host's own directory was never touched.
    assert!(!Path::new("/etc/ssh/sshd_config.d/00-broken.conf").exists());
}

/// `unix_user` joins the administrators' group, in a private copy of /etc (`usermod`
/// writes /etc/group and /etc/gshadow); a second run finds it a member already.
#[test]
fn a_unix_account_joins_the_administrators_group() {
    let host = Host::new();
    let preseed = host
        .embedded(2222)
        .replace("[image]", "unix_user = \"carol\"\n[image]");
    let path = host.write_preseed(&preseed);
    let out = host.bsp.dir.path();
    let script = format!(
        "P={preseed}; O={out}\n\
         cp -a /etc $O/etc && mount --bind $O/etc /etc\n\
         (getent group basphere-admin || groupadd basphere-admin) && useradd -M carol\n\
         $B admin init --preseed $P > $O/first.out 2>&1\n\
         id -nG carol > $O/groups\n\
         $B admin init --preseed $P > $O/second.out 2>&1\n",
        preseed = path.display(),
        out = out.display(),
    );
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let (ok, text) = in_private_namespaces(&host, &script);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    assert!(ok, "{text}{}", read("first.out"));
    assert_eq!(std::fs::read_to_string("/etc/group").unwrap(), groups);
    let first = read("first.out");
    assert!(
        first.contains("group basphere-admin: (none) → +carol"),
        "{first}"
    );
    assert!(
        first.contains("added the Unix account carol to the group basphere-admin"),
        "{first}"
    );
    assert_eq!(
        read("groups").split_whitespace().last(),
        Some("basphere-admin")
    );
    assert!(
        read("second.out").contains("nothing changed"),
        "{}",
        read("second.out")
    );
    assert!(nix::unistd::Group::from_name("basphere-admin")
        .unwrap()
        .is_none());
}
