//! A small builder for running the real `basphere` binary against a temporary data
//! directory: `Bsp::new().run(&["vm", "list"]).success()`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod server;

pub const BIN: &str = env!("CARGO_BIN_EXE_basphere");

/// A fresh basphere installation: its own data directory, config file and network pool.
pub struct Bsp {
    pub dir: tempfile::TempDir,
    pub uri: String,
    pub env: Vec<(String, String)>,
    pub prefix: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A number unique to this test process and instance, so tests sharing one libvirtd
/// never touch each other's domains, networks, bridges or subnets.
pub fn unique() -> u32 {
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The libvirt of the test run's own network namespace (started by `scripts/test`).
pub fn real_libvirt() -> Option<String> {
    std::env::var("BASPHERE_TEST_LIBVIRT_URI")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Skips a test that needs the real libvirtd, saying why.
#[macro_export]
macro_rules! require_libvirt {
    () => {
        match common::real_libvirt() {
            Some(uri) => uri,
            None => {
                eprintln!("skipped: BASPHERE_TEST_LIBVIRT_URI is not set (scripts/test starts a libvirtd in a network namespace and sets it)");
                return;
            }
        }
    };
}

impl Bsp {
    /// An installation on libvirt's own `test:///default` driver.
    pub fn new() -> Bsp {
        Bsp::with_uri("test:///default")
    }

    pub fn with_uri(uri: &str) -> Bsp {
        let dir = tempfile::Builder::new()
            .prefix("bsp-test-")
            .tempdir()
            .unwrap();
        let n = unique();
        let pid = std::process::id();
        let prefix = format!("t{}x{n}", pid % 10_000);
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("name_prefix = \"{prefix}\"\n")).unwrap();
        let env = vec![
            ("BASPHERE_CONFIG".into(), config.display().to_string()),
            (
                "BASPHERE_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("BASPHERE_LIBVIRT_URI".into(), uri.to_owned()),
            ("BASPHERE_VIRT_TYPE".into(), "qemu".into()),
            // A /16 per installation, so parallel tests never share a subnet.
            (
                "BASPHERE_NETWORK_POOL".into(),
                format!("10.{}.0.0/16", 100 + (pid * 7 + n) % 150),
            ),
            ("BASPHERE_PUBLIC_HOST".into(), "bastion.test".into()),
        ];
        Bsp {
            dir,
            uri: uri.to_owned(),
            env,
            prefix,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap(), args)
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        run_piped(self.command(args), input, args)
    }

    /// Registers a user with a fresh ed25519 key; returns the private key path.
    pub fn add_user(&self, id: &str) -> PathBuf {
        let key = self.keygen(id);
        self.add_user_with_key(id, &key);
        key
    }

    /// Registers a user with the private key at `key` (its `.pub` beside it).
    pub fn add_user_with_key(&self, id: &str, key: &Path) {
        let pubkey = format!("{}.pub", key.display());
        self.run(&[
            "admin",
            "user",
            "add",
            id,
            "--email",
            &format!("{id}@example.com"),
            "--key-file",
            &pubkey,
        ])
        .success();
    }

    pub fn keygen(&self, name: &str) -> PathBuf {
        keygen(self.dir.path(), name, "ed25519", None)
    }

    /// Registers a blank qcow2 image (no OS: enough for libvirt to run the domain).
    pub fn add_blank_image(&self, name: &str) {
        let path = self.dir.path().join(format!("{name}-src.qcow2"));
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("64M")
            .status()
            .unwrap()
            .success();
        assert!(ok, "qemu-img create failed");
        self.run(&[
            "admin",
            "image",
            "add",
            name,
            path.to_str().unwrap(),
            "--os-user",
            "debian",
        ])
        .success();
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.run(&all).success();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{}", run.stdout))
    }

    /// Everything a user could see change: users, images, quotas, VMs, and files on disk.
    pub fn state(&self) -> String {
        let db = self.data_dir().join("basphere.db");
        let mut text = String::new();
        if db.exists() {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            for sql in [
                "SELECT 'user', id, email, role, state FROM users ORDER BY id",
                "SELECT 'key', fingerprint, user_id FROM ssh_keys ORDER BY fingerprint",
                "SELECT 'quota', user_id, cpus, memory_mib, disk_bytes, vms, snapshots FROM quotas ORDER BY user_id",
                "SELECT 'image', name, os_user, virtual_size FROM images ORDER BY name",
                "SELECT 'vm', owner, name, state, ip, cpus, memory_mib, disk_bytes FROM vms ORDER BY owner, name",
                "SELECT 'net', idx, user_id, name, bridge, subnet FROM networks ORDER BY idx",
            ] {
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .unwrap();
                for row in rows {
                    text.push_str(&row.unwrap().join("|"));
                    text.push('\n');
                }
            }
        }
        let mut files = Vec::new();
        for sub in ["disks", "seeds", "images"] {
            if let Ok(entries) = std::fs::read_dir(self.data_dir().join(sub)) {
                for e in entries.flatten() {
                    files.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        files.sort();
        format!("{text}\n{}", files.join("\n"))
    }
}

/// Runs `cmd` with `input` on its stdin; `args` names the run in failure messages.
pub fn run_piped(mut cmd: Command, input: &str, args: &[&str]) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap(), args)
}

/// The `SHA256:...` fingerprint of the key pair at `key`, as ssh-keygen prints it.
pub fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

pub fn keygen(dir: &Path, name: &str, kind: &str, bits: Option<&str>) -> PathBuf {
    let path = dir.join(format!("key-{name}"));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        kind,
        "-N",
        "",
        "-C",
        &format!("{name}@test"),
        "-f",
    ])
    .arg(&path);
    if let Some(bits) = bits {
        cmd.args(["-b", bits]);
    }
    assert!(cmd.status().unwrap().success(), "ssh-keygen failed");
    path
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Run {
    pub fn from(out: Output, args: &[&str]) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.join(" "),
        }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(
            self.code, 0,
            "`basphere {}` failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "`basphere {}`: expected exit {code}:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Run {
        assert!(
            self.stderr.contains(text),
            "`basphere {}`: stderr lacks {text:?}:\n{}",
            self.args,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(self, text: &str) -> Run {
        assert!(
            self.stdout.contains(text),
            "`basphere {}`: stdout lacks {text:?}:\n{}",
            self.args,
            self.stdout
        );
        self
    }
}

// ---- a real libvirtd: its objects, and cleaning them up -------------------------

pub fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// libvirt's view of this installation: its domains and networks.
pub fn libvirt_objects(bsp: &Bsp) -> (Vec<String>, Vec<String>) {
    objects(&bsp.uri, &bsp.prefix)
}

pub fn objects(uri: &str, prefix: &str) -> (Vec<String>, Vec<String>) {
    let domains = virsh(uri, &["list", "--all", "--name"])
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}.")))
        .map(str::to_owned)
        .collect();
    let networks = virsh(uri, &["net-list", "--all", "--name"])
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect();
    (domains, networks)
}

/// Removes every libvirt object of this installation, so a failed test leaves nothing behind.
pub struct Cleanup {
    uri: String,
    prefix: String,
}

impl Cleanup {
    pub fn new(bsp: &Bsp) -> Cleanup {
        Cleanup {
            uri: bsp.uri.clone(),
            prefix: bsp.prefix.clone(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (domains, networks) = objects(&self.uri, &self.prefix);
        for d in domains {
            virsh(&self.uri, &["destroy", &d]);
            virsh(&self.uri, &["undefine", &d, "--snapshots-metadata"]);
        }
        for n in networks {
            virsh(&self.uri, &["net-destroy", &n]);
            virsh(&self.uri, &["net-undefine", &n]);
        }
    }
}
