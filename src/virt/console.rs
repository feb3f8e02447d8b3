//! A domain's serial console: a nonblocking libvirt stream pumped to and from a terminal.
//!
//! How the bytes move: libvirt's default event loop runs on a thread of its own and
//! drives the connection's socket (stream data, keepalives), queueing console output
//! inside the stream; a nonblocking `virStreamRecv` only takes from that queue and
//! never reads the socket itself. The calling thread alone touches the stream: it
//! polls the terminal with a short timeout, sends what was typed and drains what
//! arrived. No stream callbacks, so no cross-thread lifetimes: the virt crate frees
//! a callback's state while the event thread may still be running it.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use uuid::Uuid;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::stream::Stream;
use virt::sys;

use crate::cancel::Cancel;

use super::{is_code, libvirt, Hypervisor, Result, VirtError};

/// How long the pump waits for typing before it looks for console output again:
/// the worst added delay on output, and the idle wake-up rate (50 per second).
const TICK: Duration = Duration::from_millis(20);

/// Client keepalive: a dead libvirtd ends the session within about half a minute.
const KEEPALIVE_INTERVAL_SECS: i32 = 5;
const KEEPALIVE_COUNT: u32 = 5;

/// Starts libvirt's default event loop once per process, on a thread that lives as
/// long as the process. Only connections opened after this use it.
fn start_event_loop() -> Result<()> {
    static STARTED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        virt::event::event_register_default_impl().map_err(|e| e.message().to_string())?;
        std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!(error = %e.message(), "libvirt event loop");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    started.clone().map_err(|message| VirtError::Libvirt {
        action: "starting the libvirt event loop".into(),
        message,
    })
}

/// What attaching found.
pub enum Attach {
    Ready(Console),
    /// No such domain in libvirt.
    Missing,
    /// The domain is defined but not running.
    NotRunning,
    /// Another session holds the console (and `force` was not given).
    Busy,
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The user typed the escape byte.
    Detached,
    /// libvirt ended the stream: the guest stopped, or another session took over.
    Closed { reason: Option<String> },
    /// The terminal went away (hang-up, closed input).
    Hangup,
}

/// An open console stream, on a connection of its own.
pub struct Console {
    // Dropped in this order: the stream before the domain and the connection.
    stream: Option<Stream>,
    domain: Domain,
    name: String,
    _hv: Hypervisor,
}

/// Attaches to the serial console of domain `uuid`. Without `force` an existing
/// session is left alone ([`Attach::Busy`]); with it, that session is cut off.
///
/// The connection is opened here, after the event loop started, because a
/// connection opened before it would never receive stream data.
pub fn attach(uri: &str, uuid: Uuid, force: bool) -> Result<Attach> {
    start_event_loop()?;
    let hv = Hypervisor::open(uri)?;
    // Local drivers refuse keepalive; they need none.
    let _ = hv
        .conn
        .set_keep_alive(KEEPALIVE_INTERVAL_SECS, KEEPALIVE_COUNT);
    let Some(domain) = hv.lookup_domain(uuid)? else {
        return Ok(Attach::Missing);
    };
    let name = domain.name().unwrap_or_else(|_| uuid.to_string());
    if !domain
        .is_active()
        .map_err(libvirt(format!("reading state of domain `{name}`")))?
    {
        return Ok(Attach::NotRunning);
    }
    let stream = Stream::new(&hv.conn, sys::VIR_STREAM_NONBLOCK)
        .map_err(libvirt(format!("opening a stream for domain `{name}`")))?;
    let mut flags = sys::VIR_DOMAIN_CONSOLE_SAFE;
    if force {
        flags |= sys::VIR_DOMAIN_CONSOLE_FORCE;
    }
    match domain.open_console(None, &stream, flags) {
        Ok(()) => {}
        // Stopped since the check above.
        Err(e) if is_code(&e, ErrorNumber::OperationInvalid) => return Ok(Attach::NotRunning),
        // "Active console session exists for this domain".
        Err(e) if !force && is_code(&e, ErrorNumber::OperationFailed) => {
            tracing::debug!(domain = %name, error = %e.message(), "console busy");
            return Ok(Attach::Busy);
        }
        Err(e) => {
            return Err(libvirt(format!("opening the console of domain `{name}`"))(
                e,
            ))
        }
    }
    tracing::info!(domain = %name, force, "console attached");
    Ok(Attach::Ready(Console {
        stream: Some(stream),
        domain,
        name,
        _hv: hv,
    }))
}

impl Console {
    /// Whether the domain is shut off, or shuts off `within` this long: a stopping
    /// domain closes its console a moment before libvirt marks it inactive.
    pub fn stopped_within(&self, within: Duration, cancel: &Cancel) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.domain.is_active() {
                Ok(false) => return true,
                Ok(true) if std::time::Instant::now() < deadline => {
                    if cancel.sleep(Duration::from_millis(100)).is_err() {
                        return false;
                    }
                }
                // Still running, or libvirt cannot say.
                _ => return false,
            }
        }
    }

    /// Copies typed bytes from `input` to the console and console output to `output`
    /// until the user types `escape` (never sent), libvirt ends the stream, or the
    /// terminal goes away (or the command is cancelled, which reads as a hangup).
    /// Bytes typed before the escape in the same read are sent.
    pub fn pump(
        &mut self,
        input: BorrowedFd,
        output: BorrowedFd,
        escape: u8,
        cancel: &Cancel,
    ) -> Result<End> {
        let stream = self.stream.as_ref().expect("the stream lives until drop");
        let mut buf = [0u8; 4096];
        // Typed bytes libvirt has not taken yet; nothing more is read until it has.
        let mut typed: Vec<u8> = Vec::new();
        loop {
            if cancel.is_cancelled() {
                return Ok(End::Hangup);
            }
            // Console → terminal: everything queued so far.
            loop {
                match stream.recv(&mut buf) {
                    Ok(0) => return Ok(End::Closed { reason: None }),
                    // -2: nothing queued.
                    Ok(n) if n < 0 => break,
                    Ok(n) => {
                        if !write_all(output, &buf[..n as usize], cancel)? {
                            return Ok(End::Hangup);
                        }
                    }
                    Err(e) => {
                        return Ok(End::Closed {
                            reason: Some(e.message().to_string()),
                        })
                    }
                }
            }
            // Terminal → console.
            if !typed.is_empty() {
                match stream.send(&typed) {
                    Ok(n) if n > 0 => drop(typed.drain(..n as usize)),
                    // -2: libvirt's queue is full; try again shortly.
                    Ok(_) => std::thread::sleep(TICK),
                    Err(e) => {
                        return Ok(End::Closed {
                            reason: Some(e.message().to_string()),
                        })
                    }
                }
                continue;
            }
            let mut fds = [PollFd::new(input, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(io_error("waiting for the terminal", e)),
            }
            let ready = fds[0].revents().unwrap_or(PollFlags::empty());
            if !ready.contains(PollFlags::POLLIN) {
                // POLLHUP, POLLERR or POLLNVAL without data.
                return Ok(End::Hangup);
            }
            match nix::unistd::read(input.as_raw_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => return Ok(End::Hangup),
                Ok(n) => {
                    let chunk = &buf[..n];
                    if let Some(at) = chunk.iter().position(|&b| b == escape) {
                        // Best effort: what was typed just before the escape.
                        let _ = stream.send(&chunk[..at]);
                        return Ok(End::Detached);
                    }
                    typed.extend_from_slice(chunk);
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(io_error("reading the terminal", e)),
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            // Tells libvirtd the session is over, so the console is free at once.
            if let Err(e) = stream.abort() {
                tracing::debug!(domain = %self.name, error = %e.message(), "closing the console stream");
            }
        }
    }
}

fn io_error(context: &str, e: Errno) -> VirtError {
    VirtError::Io {
        context: context.into(),
        source: std::io::Error::from(e),
    }
}

/// Writes all of `bytes`, waiting while `fd` is full. `false` when the terminal is gone
/// or the command is cancelled.
fn write_all(fd: BorrowedFd, mut bytes: &[u8], cancel: &Cancel) -> Result<bool> {
    while !bytes.is_empty() {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(io_error("waiting for the terminal", e)),
                }
            }
            Err(Errno::EIO | Errno::EPIPE) => return Ok(false),
            Err(e) => return Err(io_error("writing to the terminal", e)),
        }
    }
    Ok(true)
}
