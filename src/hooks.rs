//! The clock every rule reads, and the test hooks: read from the environment once per
//! process, never settings (they appear neither in the file nor in `basphere config`).
//!
//! - `BASPHERE_NOW`: Unix seconds (a fixed clock), or the absolute path of a file that
//!   holds them, read at every call, so a test can move time forward while `serve` runs.
//! - `BASPHERE_CRASH_AT`: the step at which a long operation kills its own process, so
//!   tests can show that `admin reconcile` repairs what any crash leaves.
//! - `BASPHERE_PAUSE_AT`: `STEP:FILE`; at that step an operation creates `FILE.reached`
//!   and waits while `FILE` exists (a minute at most), so tests can run two commands
//!   in exactly the order a race would.
//! - `BASPHERE_TEST_QEMU_CONF`: the `qemu.conf` that `admin adopt` edits, in place of
//!   the host's `/etc/libvirt/qemu.conf`.
//! - `BASPHERE_TEST_ROUTES`: the route table (as `/proc/net/route` prints it) that
//!   `admin init` and `doctor` read in place of the host's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

const NOW: &str = "BASPHERE_NOW";
const CRASH_AT: &str = "BASPHERE_CRASH_AT";
const PAUSE_AT: &str = "BASPHERE_PAUSE_AT";
const QEMU_CONF: &str = "BASPHERE_TEST_QEMU_CONF";
const ROUTES: &str = "BASPHERE_TEST_ROUTES";

enum Clock {
    System,
    Fixed(i64),
    File(PathBuf),
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| match std::env::var(NOW) {
        Ok(v) if v.starts_with('/') => Clock::File(v.into()),
        Ok(v) => v.trim().parse().map_or(Clock::System, Clock::Fixed),
        Err(_) => Clock::System,
    })
}

/// The time now, in Unix seconds: what expiries, leases and schedules are measured by.
pub fn now() -> i64 {
    let system = || jiff::Timestamp::now().as_second();
    match clock() {
        Clock::System => system(),
        Clock::Fixed(t) => *t,
        Clock::File(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(system),
    }
}

/// Kills the process at `step` when `BASPHERE_CRASH_AT` names it.
pub fn crash_point(step: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Waits at `step` while the gate file of `BASPHERE_PAUSE_AT` exists, when it names `step`.
pub fn pause_point(step: &str) {
    static AT: OnceLock<Option<(String, PathBuf)>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        let value = std::env::var(PAUSE_AT).ok()?;
        let (at, gate) = value.split_once(':')?;
        Some((at.to_owned(), PathBuf::from(gate)))
    });
    let Some((at, gate)) = at else { return };
    if at != step {
        return;
    }
    let mut reached = gate.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(reached, step);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gate.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The host's libvirt QEMU driver configuration, or the file a test names instead.
pub fn qemu_conf() -> PathBuf {
    match std::env::var_os(QEMU_CONF) {
        Some(path) if !path.is_empty() => path.into(),
        _ => PathBuf::from("/etc/libvirt/qemu.conf"),
    }
}

/// The kernel's IPv4 route table, or the file a test names instead.
pub fn route_table() -> PathBuf {
    match std::env::var_os(ROUTES) {
        Some(path) if !path.is_empty() => path.into(),
        _ => PathBuf::from("/proc/net/route"),
    }
}

/// The hooks set in this process, for a child process to inherit.
pub fn env() -> BTreeMap<String, String> {
    [NOW, CRASH_AT, PAUSE_AT, QEMU_CONF, ROUTES]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect()
}
