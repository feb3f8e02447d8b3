//! What an SSH session may do once its key is known, and running it off the async runtime.

use std::io::{LineWriter, Read, Write};
use std::sync::Arc;

use russh::server::Msg;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::limits::Slot;
use super::Shared;
use crate::cancel::{Cancel, TICK};
use crate::context::{Binding, Caller};
use crate::error::Result;
use crate::ops::key::Login;
use crate::output::Io;

/// The exit status of a command that failed by a bug (sysexits' EX_SOFTWARE).
const INTERNAL_ERROR: i32 = 70;

/// What the client sends a running session.
#[derive(Debug)]
pub enum Input {
    Data(Vec<u8>),
    /// The client's window changed (terminal sessions only).
    Resize {
        cols: u16,
        rows: u16,
    },
    Eof,
}

/// Who a connection authenticated as.
#[derive(Clone, Debug)]
pub enum Identity {
    Known(Binding),
    /// A key no user has: the session only shows how to sign up.
    Unknown {
        fingerprint: String,
    },
}

/// Whether a verified key logs in, and as whom. `blob` is its base64 body.
pub fn lookup(shared: &Shared, fingerprint: &str, blob: &str) -> Result<Login> {
    let db = shared.db.lock().unwrap_or_else(|e| e.into_inner());
    crate::ops::key::login(&db, fingerprint, blob)
}

/// The sending half of a session channel. Its writers wait for the client's window,
/// where the connection's handle would queue without bound.
pub type Out = russh::ChannelWriteHalf<Msg>;

/// Ends a session: its exit status, then EOF and close, in that order.
pub async fn finish(out: &Out, status: u32) {
    let _ = out.exit_status(status).await;
    let _ = out.eof().await;
    let _ = out.close().await;
}

/// What one session channel runs, and its handles.
pub struct Job {
    pub binding: Binding,
    pub line: Option<String>,
    pub out: Out,
    pub stdin: mpsc::Receiver<Input>,
    pub slot: Option<Slot>,
    /// Cancelled when the channel closes or the server stops.
    pub cancel: Cancel,
}

/// Runs the job's line (or the welcome) on a blocking thread, then sends the exit
/// status, EOF and close, in that order.
pub fn spawn(shared: Arc<Shared>, job: Job) {
    let Job {
        binding,
        line,
        out,
        stdin,
        slot,
        cancel,
    } = job;
    let rt = tokio::runtime::Handle::current();
    let out = Arc::new(out);
    let (refuse_out, refuse_rt) = (out.clone(), rt.clone());
    // A thread of its own, never one of the runtime's blocking pool: key lookups and
    // web handlers there never wait behind tenant commands. The session limits bound
    // how many there are.
    let thread = std::thread::Builder::new().name("basphere-session".into());
    let started = thread.spawn(move || {
        // The streams wait with the runtime's timers.
        let _runtime = rt.enter();
        let writer = |ext| ChannelWriter {
            rt: rt.clone(),
            tx: Some(Box::pin(out.make_writer_ext(ext))),
            timeout: shared.write_timeout,
            cancel: cancel.clone(),
        };
        let mut stdout = LineWriter::new(writer(None));
        let mut stderr = LineWriter::new(writer(Some(1)));
        let mut stdin = ChannelReader {
            rt: rt.clone(),
            rx: Some(stdin),
            cancel: cancel.clone(),
            buf: Vec::new(),
            pos: 0,
        };
        let code = {
            let mut io = Io {
                stdin: &mut stdin,
                stdout: &mut stdout,
                stderr: &mut stderr,
                terminal: None,
            };
            // A panic is a bug, but the client still gets an exit status and a closed
            // channel instead of waiting forever.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&shared, &binding, line.as_deref(), &mut io, &cancel)
            }));
            ran.unwrap_or_else(|_| {
                tracing::error!(line = %crate::validate::quoted(line.as_deref().unwrap_or("")), "a command panicked");
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    writeln!(io.stderr, "basphere: internal error; it is logged on the server")
                }));
                INTERNAL_ERROR
            })
        };
        let _ = stdout.flush();
        let _ = stderr.flush();
        drop(slot);
        let status = u32::try_from(code.clamp(0, 255)).unwrap_or(1);
        rt.block_on(finish(&out, status));
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start a session thread");
        let message = "the server cannot start a session now; try again soon".to_owned();
        refuse_rt.spawn(async move { refuse(&refuse_out, message).await });
    }
}

/// How long a short message may wait for the client's window before the session ends
/// without it.
const MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends a session that may not run: `message` on stderr, exit status 1.
pub async fn refuse(out: &Out, message: String) {
    let mut stderr = out.make_writer_ext(Some(1));
    let text = format!("basphere: {message}\n");
    let _ = tokio::time::timeout(MESSAGE_TIMEOUT, stderr.write_all(text.as_bytes())).await;
    finish(out, 1).await;
}

/// The session proper: blocking, with plain streams, on the configuration in force.
fn run(
    shared: &Shared,
    binding: &Binding,
    line: Option<&str>,
    io: &mut Io,
    cancel: &Cancel,
) -> i32 {
    let tenant = Caller::Ssh(binding.clone());
    shared
        .runner
        .run(&shared.config(), &tenant, line, io, cancel)
}

/// The one channel of an unregistered key: `key confirm CODE`, or the screen, sent
/// without a thread of its own, within `MESSAGE_TIMEOUT` whatever the client's window;
/// then the connection closes.
pub fn greet(
    shared: Arc<Shared>,
    ssh: russh::server::Handle,
    out: Out,
    fingerprint: String,
    line: Option<String>,
    hangup: Arc<tokio::sync::Notify>,
) {
    tokio::spawn(async move {
        let config = shared.config();
        let lookup = {
            let (shared, fingerprint) = (shared.clone(), fingerprint.clone());
            tokio::task::spawn_blocking(move || {
                let db = shared.db.lock().unwrap_or_else(|e| e.into_inner());
                crate::session::unregistered(&db, &config, &fingerprint, line.as_deref())
            })
        };
        let sent = tokio::time::timeout(MESSAGE_TIMEOUT, async {
            let answer = lookup.await.unwrap_or_else(|_| crate::session::Answer {
                stderr: "basphere: internal error; it is logged on the server\n".to_owned(),
                code: INTERNAL_ERROR,
                ..Default::default()
            });
            let _ = out.make_writer().write_all(answer.stdout.as_bytes()).await;
            let stderr = answer.stderr.as_bytes();
            let _ = out.make_writer_ext(Some(1)).write_all(stderr).await;
            finish(&out, u32::try_from(answer.code).unwrap_or(1)).await;
        });
        match sent.await {
            // A client closes the connection when its channel closes; one that does
            // not is closed a moment later, after it had time to read its exit status.
            Ok(()) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            Err(_) => {
                tracing::info!(%fingerprint, "ssh: an unknown key's client took no screen; closed")
            }
        }
        let reason = "this key is not registered".to_owned();
        let bye = ssh.disconnect(russh::Disconnect::ByApplication, reason, String::new());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), bye).await;
        hangup.notify_one();
    });
}

/// Writes one stream of a channel (stdout as data, stderr as extended data 1) as the
/// client's window allows.
struct ChannelWriter {
    rt: tokio::runtime::Handle,
    /// `None` once the client stopped taking output: nothing more is sent.
    tx: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    /// The longest the client may open no window; then the command is cancelled.
    timeout: std::time::Duration,
    cancel: Cancel,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(tx) = &mut self.tx else {
            return Err(std::io::ErrorKind::TimedOut.into());
        };
        // One write sends what the window allows now, or waits for it to open: the
        // timeout measures no progress at all, not a slow client.
        match self
            .rt
            .block_on(tokio::time::timeout(self.timeout, tx.write(buf)))
        {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the SSH channel is closed",
            )),
            Err(_) => {
                tracing::info!(timeout = ?self.timeout, "ssh command cancelled: its client opened no window");
                self.tx = None;
                self.cancel.cancel();
                Err(std::io::ErrorKind::TimedOut.into())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The channel's data, as the command's stdin; ends at the client's EOF, and fails
/// once the command is cancelled.
struct ChannelReader {
    rt: tokio::runtime::Handle,
    rx: Option<mpsc::Receiver<Input>>,
    cancel: Cancel,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(rx) = &mut self.rx else {
                return Ok(0);
            };
            if self.cancel.is_cancelled() {
                return Err(std::io::ErrorKind::ConnectionAborted.into());
            }
            let next = self.rt.block_on(tokio::time::timeout(TICK, rx.recv()));
            let Ok(next) = next else {
                continue;
            };
            match next {
                Some(Input::Data(data)) => {
                    self.buf = data;
                    self.pos = 0;
                }
                Some(Input::Resize { .. }) => {}
                Some(Input::Eof) | None => self.rx = None,
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
