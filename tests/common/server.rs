//! The embedded SSH server started by a test, the OpenSSH client pointed at it, a
//! tmux window for terminal sessions, and Debian's sshd in OpenSSH mode.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run_piped, Bsp, Run, BIN};

/// `basphere serve --ssh 127.0.0.1:0`, killed when dropped.
pub struct SshServer {
    pub port: u16,
    pub host_key: String,
    /// The server's log (stderr, at `info`).
    pub log: PathBuf,
    child: Child,
}

impl SshServer {
    pub fn start(bsp: &Bsp) -> SshServer {
        SshServer::start_in(bsp, None)
    }

    /// Starts the server inside network namespace `netns`, if given.
    pub fn start_in(bsp: &Bsp, netns: Option<&str>) -> SshServer {
        SshServer::start_with(bsp, netns, &[])
    }

    /// Starts the server with more flags for `serve`.
    pub fn start_with(bsp: &Bsp, netns: Option<&str>, flags: &[&str]) -> SshServer {
        let log = bsp
            .dir
            .path()
            .join(format!("serve-{}.log", super::unique()));
        let mut args = vec!["serve", "--ssh", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let serve = bsp.command(&args);
        let mut cmd = match netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns])
                    .arg(serve.get_program())
                    .args(serve.get_args())
                    .env_clear()
                    .envs(serve.get_envs().filter_map(|(k, v)| Some((k, v?))));
                cmd
            }
            None => serve,
        };
        let mut child = cmd
            .env("BASPHERE_LOG", "basphere=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
            log,
            child,
        }
    }

    /// A session that stays open: `key add` waiting for the stdin it is given.
    pub fn waiting_session(&self, key: &Path) -> Child {
        self.ssh_command(key, "basphere", &["key", "add"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 10 s for the log to mention `text`.
    #[track_caller]
    pub fn wait_log(&self, text: &str) -> String {
        wait_for_log(&self.log, text)
    }

    /// The OpenSSH options every test connection uses, without the destination.
    pub fn ssh_options(&self, key: &Path) -> Vec<String> {
        client_options(key, self.port)
    }

    pub fn ssh_command(&self, key: &Path, login: &str, command: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-T")
            .args(self.ssh_options(key))
            .arg(format!("{login}@127.0.0.1"))
            .args(command)
            .stdin(Stdio::null());
        cmd
    }

    /// `ssh basphere@127.0.0.1 COMMAND...` with `key`.
    pub fn ssh(&self, key: &Path, command: &[&str]) -> Run {
        self.ssh_as(key, "basphere", command)
    }

    pub fn ssh_as(&self, key: &Path, login: &str, command: &[&str]) -> Run {
        let out = self.ssh_command(key, login, command).output().unwrap();
        run_of(out, command)
    }

    pub fn ssh_with_stdin(&self, key: &Path, command: &[&str], input: &str) -> Run {
        let mut run = run_piped(self.ssh_command(key, "basphere", command), input, command);
        run.args = format!("(over ssh) {}", command.join(" "));
        run
    }
}

impl SshServer {
    /// Sends the server a signal, e.g. `HUP`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_of(out: std::process::Output, command: &[&str]) -> Run {
    let mut run = Run::from(out, command);
    run.args = format!("(over ssh) {}", command.join(" "));
    run
}

/// `ssh -tt OPTIONS basphere@127.0.0.1 ARGS...`: a session on a terminal, for [`Tmux`].
pub fn terminal_ssh(options: Vec<String>, args: &[&str]) -> Vec<String> {
    ["ssh", "-tt"]
        .iter()
        .map(|s| s.to_string())
        .chain(options)
        .chain(std::iter::once("basphere@127.0.0.1".to_owned()))
        .chain(args.iter().map(|s| s.to_string()))
        .collect()
}

/// Waits up to 10 s for the log file at `path` to mention `text`; its text.
#[track_caller]
pub fn wait_for_log(path: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{} never mentioned {text:?}:\n{log}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The OpenSSH client options of every test connection, without the destination:
/// no config file, agent or prompts, only `key`, any host key accepted, port `port`.
pub fn client_options(key: &Path, port: u16) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "-i".into(),
        key.display().to_string(),
        "-p".into(),
        port.to_string(),
    ])
    .collect()
}

/// A detached tmux window running one command on a real terminal of a known size.
pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `command` in a `cols` x `rows` window.
    pub fn start(dir: &Path, cols: u16, rows: u16, command: &[String]) -> Tmux {
        let n = super::unique();
        let tmux = Tmux {
            socket: dir.join(format!("tmux-{n}")),
        };
        // Scrollback for long sessions, set before the window exists.
        let conf = dir.join(format!("tmux-{n}.conf"));
        std::fs::write(&conf, "set -g history-limit 5000\n").unwrap();
        let ok = tmux
            .cmd()
            .arg("-f")
            .arg(&conf)
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            // The exit status is printed by a shell around the command: it is read off
            // the screen, which does not depend on tmux reaping the command in time.
            .args(["sh", "-c", "\"$@\"; echo \"[exited $?]\"; sleep 600", "sh"])
            .args(command)
            .env("TERM", "xterm-256color")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux did not start");
        tmux
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).stdin(Stdio::null());
        cmd
    }

    /// Types `keys` (tmux key names such as `Enter` or `C-c` are keys, the rest text).
    pub fn send(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys failed");
    }

    /// Types `text` literally, then Enter.
    pub fn line(&self, text: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "t", "-l", text])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys failed");
        self.send(&["Enter"]);
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let ok = self
            .cmd()
            .args([
                "resize-window",
                "-t",
                "t",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux resize-window failed");
    }

    /// Everything on the screen and in the scrollback.
    pub fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-J", "-t", "t", "-S", "-5000"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits up to `secs` for `text` to appear `count` times on the screen.
    #[track_caller]
    pub fn wait_for_count(&self, text: &str, count: usize, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= count {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {text:?} x{count} on the terminal:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    pub fn wait_for(&self, text: &str, secs: u64) -> String {
        self.wait_for_count(text, 1, secs)
    }

    /// Whether the command has exited, and with what status.
    pub fn exit_status(&self) -> Option<i32> {
        let screen = self.screen();
        let (_, rest) = screen.rsplit_once("[exited ")?;
        rest.split(']').next()?.parse().ok()
    }

    /// Waits up to `secs` for the command to exit; its status.
    #[track_caller]
    pub fn wait_exit(&self, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(code) = self.exit_status() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not exit:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

// ---------------------------------------------------------------------------------------
// Debian's sshd in OpenSSH mode: the `basphere sshd-config` block, the AuthorizedKeysCommand
// and the forced command, with the OpenSSH client pointed at it.

const SSHD: &str = "/usr/sbin/sshd";

/// Debian's sshd on a loopback port, killed when dropped.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    /// Root-owned and not writable by others, as sshd wants the AuthorizedKeysCommand's path.
    pub dir: tempfile::TempDir,
    /// The network namespace sshd (and so every client) runs in, if any.
    pub netns: Option<String>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// The OpenSSH options every test connection uses, without the destination. The
    /// first value of an option wins, so options given before these override them.
    pub fn ssh_options(&self, key: &Path) -> Vec<String> {
        client_options(key, self.port)
    }

    /// `ssh EXTRA... basphere@127.0.0.1 [COMMAND]` with `key`, `stdin` piped in.
    pub fn ssh(
        &self,
        key: &Path,
        extra: &[&str],
        command: Option<&str>,
        stdin: Option<&str>,
    ) -> Run {
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns, "ssh"]);
                cmd
            }
            None => Command::new("ssh"),
        };
        cmd.args(extra)
            .args(self.ssh_options(key))
            .arg("basphere@127.0.0.1");
        if let Some(command) = command {
            // A command may start with `-`: no more options for ssh.
            cmd.arg("--").arg(command);
        }
        let name = format!("(through sshd) {}", command.unwrap_or(""));
        let mut run = run_piped(cmd, stdin.unwrap_or(""), &[]);
        run.args = name;
        run
    }

    /// What sshd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 10 s for sshd's log to mention `text`.
    #[track_caller]
    pub fn wait_log(&self, text: &str) -> String {
        wait_for_log(&self.log, text)
    }
}

/// The Unix account sshd logs tenants in as; created when missing, with a password
/// field sshd does not take for locked (the test runs sshd without PAM).
fn ensure_service_account() -> Result<(), String> {
    let exists = Command::new("id")
        .arg("basphere")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !exists {
        let ok = Command::new("useradd")
            .args([
                "--system",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/sh",
                "-p",
                "*",
                "basphere",
            ])
            .status()
            .map_err(|e| e.to_string())?
            .success();
        // Another test process may have won the race.
        if !ok
            && !Command::new("id")
                .arg("basphere")
                .status()
                .unwrap()
                .success()
        {
            return Err("useradd basphere failed".into());
        }
    }
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let locked = shadow
        .lines()
        .find_map(|l| l.strip_prefix("basphere:"))
        .is_some_and(|rest| rest.starts_with('!'));
    if locked {
        eprintln!("note: unlocking the `basphere` account's password field for sshd without PAM");
        Command::new("usermod")
            .args(["-p", "*", "basphere"])
            .status()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Starts sshd with the `basphere sshd-config` block, its AuthorizedKeysCommand going
/// through a wrapper that points basphere at `bsp`'s state (its environment as it is now).
/// `Err` says why this machine cannot run it.
pub fn start_sshd(bsp: &Bsp) -> Result<Sshd, String> {
    start_sshd_in(bsp, None)
}

/// `start_sshd` inside network namespace `netns`, if given: whatever sshd forwards to
/// is reached from there.
pub fn start_sshd_in(bsp: &Bsp, netns: Option<&str>) -> Result<Sshd, String> {
    use std::os::unix::fs::PermissionsExt;
    if !Path::new(SSHD).exists() {
        return Err(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ));
    }
    if !nix::unistd::getuid().is_root() {
        return Err("sshd needs root to switch to the `basphere` account".into());
    }
    ensure_service_account()?;
    std::fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
    // sshd runs an AuthorizedKeysCommand only if no directory on its path is writable
    // by others, which rules out /tmp and wherever the checkout happens to live; /run is
    // root's own.
    let dir = tempfile::Builder::new()
        .prefix("basphere-sshd-")
        .tempdir_in("/run")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let host_key = dir.path().join("host_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen for the host key failed");

    let wrapper = dir.path().join("basphere");
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in &bsp.env {
        script.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    script.push_str(&format!("exec {} \"$@\"\n", shell_quote(BIN)));
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let snippet = bsp.run(&["sshd-config"]).success().stdout;
    let expected = format!("AuthorizedKeysCommand {BIN} auth-keys %u %t %k");
    assert!(snippet.contains(&expected), "{snippet}");
    let wrapper = wrapper.to_str().unwrap();
    let snippet = snippet.replace(
        &expected,
        &format!("AuthorizedKeysCommand {wrapper} auth-keys --exe {wrapper} %u %t %k"),
    );
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {}\n\
             PidFile none\n\
             UsePAM no\n\
             StrictModes no\n\
             LogLevel VERBOSE\n\
             PubkeyAuthentication yes\n\
             AuthorizedKeysFile none\n\
             AllowUsers basphere\n\
             {snippet}",
            host_key.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("sshd.log");
    let port = free_port();
    let mut sshd = match netns {
        Some(netns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", netns, SSHD]);
            cmd
        }
        None => Command::new(SSHD),
    };
    let child = sshd
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .args(["-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("cannot start sshd: {e}"))?;
    let mut sshd = Sshd {
        child,
        port,
        log,
        dir,
        netns: netns.map(str::to_owned),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Inside a namespace the port is out of reach from here; sshd says when it listens.
        let listening = match netns {
            Some(_) => sshd.log().contains("Server listening on"),
            None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        if listening {
            break;
        }
        if let Ok(Some(status)) = sshd.child.try_wait() {
            panic!("sshd exited with {status}:\n{}", sshd.log());
        }
        assert!(
            Instant::now() < deadline,
            "sshd never listened:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(sshd)
}

/// Hands `path` (recursively) to the service account, as the forced command runs as it
/// and owns the state on a real install.
pub fn chown_to_service_account(path: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "basphere:"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown failed");
}

/// A socket the service account may open, relaying to the test libvirtd's root-only
/// socket (on a real install the account is in the `libvirt` group instead).
pub struct LibvirtRelay {
    /// `qemu+unix:///system?socket=...` of the relay.
    pub uri: String,
    _dir: tempfile::TempDir,
}

impl LibvirtRelay {
    /// Relays to the unix socket named in `uri` (`...?socket=PATH`).
    pub fn start(uri: &str) -> LibvirtRelay {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::net::{UnixListener, UnixStream};
        let target = PathBuf::from(
            uri.split_once("socket=")
                .unwrap_or_else(|| panic!("no socket in the libvirt URI {uri}"))
                .1
                .split('&')
                .next()
                .unwrap(),
        );
        let dir = tempfile::Builder::new()
            .prefix("bsp-virt-")
            .tempdir_in("/run")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The accept loop lives as long as the test process; the socket goes with `_dir`.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(daemon) = UnixStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: UnixStream, mut to: UnixStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(client.try_clone().unwrap(), daemon.try_clone().unwrap());
                pipe(daemon, client);
            }
        });
        LibvirtRelay {
            uri: format!("qemu+unix:///system?socket={}", path.display()),
            _dir: dir,
        }
    }
}
