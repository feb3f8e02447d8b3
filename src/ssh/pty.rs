//! Sessions with a terminal: the command runs in a child process (the runner's terminal
//! command) on a real pseudo-terminal, as sshd runs a forced command, so prompts,
//! progress bars, the window width, Ctrl-C and `console` behave exactly as on the
//! bastion's own terminal.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::pty::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::limits::Slot;
use super::session::{self, Input, Out};
use super::Shared;

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, Winsize);
nix::ioctl_write_int_bad!(set_controlling_terminal, nix::libc::TIOCSCTTY);

/// What the client asked for in its `pty-req`.
#[derive(Clone, Debug)]
pub struct Terminal {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

fn window(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Who runs what on the terminal.
pub struct Job {
    pub binding: crate::context::Binding,
    /// The command line, or `None` for the interactive prompt.
    pub line: Option<String>,
    pub terminal: Terminal,
}

/// Starts `job` on a new pseudo-terminal and relays it to the channel until the child
/// exits; then sends its exit status, EOF and close.
pub fn spawn(shared: Arc<Shared>, job: Job, out: Out, input: mpsc::Receiver<Input>, slot: Slot) {
    tokio::spawn(async move {
        let out = Arc::new(out);
        match run(&shared, &job, &out, input).await {
            Ok(status) => {
                drop(slot);
                session::finish(&out, status).await;
            }
            Err(e) => {
                tracing::error!(error = %e, user = job.binding.user, "cannot start a terminal session");
                drop(slot);
                session::refuse(&out, e.to_string()).await;
            }
        }
    });
}

async fn run(
    shared: &Shared,
    job: &Job,
    out: &Arc<Out>,
    mut input: mpsc::Receiver<Input>,
) -> std::io::Result<u32> {
    let pty = nix::pty::openpty(Some(&window(job.terminal.cols, job.terminal.rows)), None)?;
    let mut child = command(shared, job, &pty.slave)?.spawn()?;
    drop(pty.slave);
    let pid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    nix::fcntl::fcntl(
        pty.master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    // SAFETY: an OwnedFd stays open, and the same descriptor, for as long as it is owned.
    let master = unsafe { AsyncFd::register(pty.master) }.map_err(std::io::Error::from)?;
    let master = Arc::new(master);

    // Terminal output to the channel, until every holder of the terminal has closed it
    // or the client opens no window for the write timeout.
    let stalled = Arc::new(tokio::sync::Notify::new());
    let mut output = tokio::spawn({
        let master = master.clone();
        let mut tx = out.make_writer();
        let (timeout, stalled) = (shared.write_timeout, stalled.clone());
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let read = master
                    .async_io(tokio::io::Interest::READABLE, |fd| {
                        nix::unistd::read(fd.as_raw_fd(), &mut buf).map_err(std::io::Error::from)
                    })
                    .await;
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut piece = &buf[..n];
                while !piece.is_empty() {
                    // Each write sends what the window allows or waits for it to open.
                    match tokio::time::timeout(timeout, tx.write(piece)).await {
                        Ok(Ok(sent)) => piece = &piece[sent..],
                        Ok(Err(_)) => return,
                        Err(_) => {
                            tracing::info!(
                                ?timeout,
                                "ssh terminal hung up: its client opened no window"
                            );
                            stalled.notify_one();
                            return;
                        }
                    }
                }
            }
        }
    });

    // Client keystrokes and window changes to the terminal, while the child runs.
    let hang_up = || {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGHUP);
        }
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            () = stalled.notified() => {
                hang_up();
                break child.wait().await?;
            }
            event = input.recv() => match event {
                Some(Input::Data(data)) => write_all(&master, &data).await?,
                Some(Input::Resize { cols, rows }) => {
                    // SAFETY: the ioctl reads one `Winsize` from a valid reference.
                    unsafe { set_window_size(master.get_ref().as_raw_fd(), &window(cols, rows)) }?;
                }
                Some(Input::Eof) => {}
                None => {
                    // The channel is gone: hang up, as a terminal does when its line drops.
                    hang_up();
                    break child.wait().await?;
                }
            },
        }
    };
    // What the child wrote just before it exited is still to be relayed; a grandchild
    // that kept the terminal open does not hold the session.
    if tokio::time::timeout(Duration::from_secs(2), &mut output)
        .await
        .is_err()
    {
        output.abort();
    }
    Ok(exit_code(status))
}

/// The runner's terminal command for the tenant, with the terminal as its controlling
/// terminal, on the configuration in force.
fn command(
    shared: &Shared,
    job: &Job,
    slave: &OwnedFd,
) -> std::io::Result<tokio::process::Command> {
    let config = shared.config();
    let mut cmd = shared
        .runner
        .terminal_command(&config, &job.binding, job.line.as_deref());
    cmd.env("TERM", &job.terminal.term)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    let mut cmd = tokio::process::Command::from(cmd);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            set_controlling_terminal(0, 0)?;
            Ok(())
        });
    }
    Ok(cmd)
}

async fn write_all(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = master
            .async_io(tokio::io::Interest::WRITABLE, |fd| {
                nix::unistd::write(fd, data).map_err(std::io::Error::from)
            })
            .await?;
        data = &data[n..];
    }
    Ok(())
}

/// The exit status to report: the child's code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(signal)) => 128 + signal as u32,
        (None, None) => 1,
    }
}
