//! Who may read what basphere keeps: its files are its own (0600) and the directories
//! QEMU passes through are 0711, so another local account reaches nothing, while a VM
//! still runs under a libvirtd that keeps Debian's defaults (QEMU as `libvirt-qemu`,
//! each disk handed to it while its VM runs).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use basphere::config::{Config, Overrides};
use basphere::mail;

use crate::fixtures::bin::{fingerprint, public_key, Bsp, Run};
use crate::fixtures::libvirt::{require_debian_libvirt, Cleanup, LibvirtRelay};
use crate::fixtures::poll;
use crate::fixtures::sshd::{chown_to_service_account, ensure_service_account};
use crate::fixtures::web::{Http, Server};

/// An account that is neither root nor the service account, in none of their groups.
const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ])
    .arg(program);
    cmd
}

/// What `nobody` gets opening `path` for reading: `Ok` if it read a byte, the error
/// otherwise.
fn nobody_reads(path: &Path) -> Result<(), String> {
    let read = as_nobody("head")
        .args(["-c", "1", "--"])
        .arg(path)
        .output()
        .unwrap();
    if read.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&read.stderr).trim().to_owned())
    }
}

/// What is wrong with `file` for a private file: not 0600, or (as root, which can drop
/// to `nobody`) readable by another account.
fn private_file(file: &Path, problems: &mut Vec<String>) {
    let m = mode(file);
    if m != 0o600 {
        problems.push(format!("{} is {m:04o}, not 0600", file.display()));
    }
    if !nix::unistd::getuid().is_root() {
        return;
    }
    match nobody_reads(file) {
        Ok(()) => problems.push(format!("nobody read {}", file.display())),
        Err(e) if e.contains("Permission denied") => {}
        Err(e) => problems.push(format!("nobody reading {}: {e}", file.display())),
    }
}

fn dir_mode(dir: &Path, want: u32, problems: &mut Vec<String>) {
    let m = mode(dir);
    if m != want {
        problems.push(format!("{} is {m:04o}, not {want:04o}", dir.display()));
    }
}

/// The directories QEMU passes through (0711), and those only basphere uses (0700).
fn data_dirs(data: &Path, problems: &mut Vec<String>) {
    for sub in ["", "disks", "seeds", "images"] {
        dir_mode(&data.join(sub), 0o711, problems);
    }
    for sub in ["locks", "spool"] {
        dir_mode(&data.join(sub), 0o700, problems);
    }
}

/// The spooled mails, oldest first.
fn spooled(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("spool"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
}

/// Signs `id` up through the form; waits for the confirmation mail in `data`'s spool.
fn sign_up(bsp: &Bsp, data: &Path, server: &Server, id: &str) -> PathBuf {
    let key = public_key(&bsp.keygen(id));
    let email = format!("{id}@example.com");
    let reply = Http::new().signup(
        server,
        &[
            ("user_id", id),
            ("email", &email),
            ("public_key", &key),
            ("reason", "builds"),
            ("website", ""),
        ],
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    poll::eventually(Duration::from_secs(20), || {
        spooled(data)
            .into_iter()
            .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&email)))
            .ok_or("no confirmation mail in the spool yet")
    })
}

#[test]
fn serve_on_a_fresh_data_dir_keeps_the_database_and_the_mail_spool_private() {
    let mut bsp = Bsp::new();
    // Two levels that do not exist yet: QEMU must pass through both.
    let data = bsp.dir.path().join("srv/basphere");
    bsp.set_env("BASPHERE_DATA_DIR", data.to_str().unwrap());
    bsp.run(&["admin", "init", "--database-only"]).success();
    let server = Server::start(&mut bsp);
    let mail = sign_up(&bsp, &data, &server, "carol");

    // The server holds the database open, so its WAL and shared memory are there too.
    let mut problems = Vec::new();
    for name in [
        "basphere.db",
        "basphere.db-wal",
        "basphere.db-shm",
        "web-secret",
    ] {
        private_file(&data.join(name), &mut problems);
    }
    private_file(&mail, &mut problems);
    data_dirs(&data, &mut problems);
    dir_mode(data.parent().unwrap(), 0o711, &mut problems);
    // Whatever else it made.
    let mut all = vec![data.clone()];
    while let Some(dir) = all.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                all.push(path);
            } else if kind.is_file() && mode(&path) != 0o600 {
                problems.push(format!(
                    "{} is {:04o}, not 0600",
                    path.display(),
                    mode(&path)
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The library itself, called in this process (whose umask is the test runner's, not the
/// 077 the binary sets), makes the same modes: they are basphere's, not the umask's.
#[test]
fn the_modes_are_set_explicitly_not_left_to_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let paths = basphere::context::Paths { root: data.clone() };
    paths.create().unwrap();
    let db = data.join("basphere.db");
    let (conn, _) = basphere::db::create(&db).unwrap();
    let env = [("BASPHERE_CONFIG", "/dev/null")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let flags = Overrides {
        file: None,
        keys: vec![("data_dir", data.display().to_string())],
        ..Overrides::default()
    };
    let config = Config::load(&flags, &env).unwrap();
    mail::enqueue(&conn, "erin@example.com", "hello", "a link").unwrap();
    let flushed = mail::flush(&conn, &mail::Mailer::new(&config).unwrap(), true, None).unwrap();
    assert_eq!(flushed.sent.len(), 1, "{:?}", flushed.failed);

    let mut problems = Vec::new();
    for file in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ]
    .into_iter()
    .chain(spooled(&data))
    {
        let m = mode(&file);
        if m != 0o600 {
            problems.push(format!("{} is {m:04o}, not 0600", file.display()));
        }
    }
    // A directory that was there already gets its mode too.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    paths.create().unwrap();
    data_dirs(&data, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The pid of the QEMU that runs `domain`.
fn qemu_pid(domain: &str) -> u32 {
    let guest = format!("guest={domain},");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                line.split(|b| *b == 0)
                    .any(|arg| arg.starts_with(guest.as_bytes()))
            })
        })
        .unwrap_or_else(|| panic!("no QEMU process runs {domain}"))
}

/// `shell --user alice --key FP` with `line`, as sshd runs the forced command.
fn tenant(bsp: &mut Bsp, fp: &str, line: &str) -> Run {
    bsp.set_env("SSH_ORIGINAL_COMMAND", line);
    let run = bsp.run(&["shell", "--user", "alice", "--key", fp]);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "");
    run
}

#[test]
fn a_vm_runs_under_debian_libvirt_while_other_accounts_cannot_read_its_files() {
    let Some(uri) = require_debian_libvirt() else {
        return;
    };
    if let Err(reason) = ensure_service_account() {
        eprintln!("skipped: {reason}");
        return;
    }
    let service = nix::unistd::User::from_name("basphere").unwrap().unwrap();
    let qemu_user = nix::unistd::User::from_name("libvirt-qemu")
        .unwrap()
        .expect("scripts/lib.sh creates libvirt-qemu");
    let mut bsp = Bsp::with_uri(&uri);
    let _cleanup = Cleanup::new(&bsp);
    // The service account may not open the test libvirtd's socket.
    let relay = LibvirtRelay::start(&uri);
    bsp.set_env("BASPHERE_LIBVIRT_URI", &relay.uri);
    // QEMU must pass through the installation's directory as it does /var/lib on a host.
    std::fs::set_permissions(bsp.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let key = bsp.add_user("alice");
    bsp.add_blank_image("blank");
    let fp = fingerprint(&key);
    chown_to_service_account(bsp.dir.path());
    bsp.run_as("basphere");

    let run = tenant(
        &mut bsp,
        &fp,
        "create-vm web1 --image blank --memory 128M --disk 1G --json",
    )
    .success();
    let vm: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(vm["state"], "running", "{}", run.stdout);
    let id = vm["id"].as_str().unwrap();
    let domain = vm["domain"].as_str().unwrap();
    let data = bsp.data_dir();
    let disk = data.join(format!("disks/{id}.qcow2"));
    let seed = data.join(format!("seeds/{id}.iso"));

    // QEMU runs as libvirt-qemu, and reads the private disk because libvirt gave it the
    // file for as long as the VM runs.
    let pid = qemu_pid(domain);
    let uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(
        uid,
        qemu_user.uid.as_raw(),
        "QEMU of {domain} runs as uid {uid}"
    );
    let owner = std::fs::metadata(&disk).unwrap().uid();
    assert_eq!(
        owner,
        qemu_user.uid.as_raw(),
        "the running VM's disk is owned by {owner}"
    );

    // The signup form, run by the service account, spools a mail and holds the database
    // open (its WAL is there).
    let server = Server::start(&mut bsp);
    let mail = sign_up(&bsp, &data, &server, "dave");
    let mut problems = Vec::new();
    let db = data.join("basphere.db");
    for file in [
        disk.clone(),
        seed,
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
        mail,
    ] {
        private_file(&file, &mut problems);
    }
    data_dirs(&data, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(server);

    // Base images are shared and read-only, not a tenant's: readable by all, because
    // libvirt never gives a read-only image back. The service account still makes an
    // overlay on one that libvirt handed to QEMU.
    let image = data.join("images/blank.qcow2");
    assert_eq!(mode(&image), 0o444);
    tenant(
        &mut bsp,
        &fp,
        "create-vm web2 --image blank --memory 128M --disk 1G --no-start",
    )
    .success();

    // Stopped, the disk is the service account's again, and it can delete the VMs.
    tenant(&mut bsp, &fp, "vm stop web1 --force").success();
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(
        meta.uid(),
        service.uid.as_raw(),
        "libvirt kept the stopped VM's disk"
    );
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    tenant(&mut bsp, &fp, "vm delete web1 --yes").success();
    tenant(&mut bsp, &fp, "vm delete web2 --yes").success();
    assert!(!disk.exists());
}
