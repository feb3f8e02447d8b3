//! The embedded SSH server started by a test, the OpenSSH client pointed at it, and a
//! tmux window for terminal sessions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run_piped, Bsp, Run};

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
        let log = bsp
            .dir
            .path()
            .join(format!("serve-{}.log", super::unique()));
        let serve = bsp.command(&["serve", "--ssh", "127.0.0.1:0"]);
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

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 10 s for the log to mention `text`.
    #[track_caller]
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the server never logged {text:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The OpenSSH options every test connection uses, without the destination.
    pub fn ssh_options(&self, key: &Path) -> Vec<String> {
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
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            key.display().to_string(),
        ])
        .collect()
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
