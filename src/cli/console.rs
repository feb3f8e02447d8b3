//! `basphere console NAME`: the terminal on a VM's serial console until Ctrl-].

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::{Error, Result};
use crate::ops::vm;
use crate::output::{Output, Report};
use crate::validate::VmName;
use crate::virt::console::End;

/// Ctrl-], the byte that detaches (as in `virsh console` and telnet).
const ESCAPE: u8 = 0x1d;

/// Attach your terminal to a VM's serial console (Ctrl-] detaches)
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Attach your terminal to a VM's serial console, like `virsh console`. Everything \
you type goes to the VM; Ctrl-] detaches and leaves the VM running.\n\nIt needs a terminal: over \
SSH, ask for one with `ssh -t`. One session at a time uses a console: while another is attached, \
`console` refuses, and --force takes the console over and ends the other session.",
    after_help = "Examples:\n  ssh -t basphere@HOST console web1\n  ssh -t basphere@HOST console --force web1   # take over a console left attached elsewhere"
)]
pub struct Args {
    /// The VM, one of yours
    pub name: VmName,
    /// Take the console over from another session, which is disconnected
    #[arg(long)]
    pub force: bool,
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn speaks_json(&self) -> bool {
        false
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        let name = &self.name;
        // The dispatcher's promise: a terminal means this process's stdin and stdout are it.
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        if out.terminal().is_none() || !stdin.is_terminal() || !stdout.is_terminal() {
            // Report a missing VM first, so the retry with a terminal is not in vain.
            vm::get_mine(ctx, name.as_str())?;
            return Err(needs_terminal(ctx, name));
        }
        let mut console = vm::console(ctx, name.as_str(), self.force)?;
        out.note(format!("Connected to VM {name} (press Ctrl-] to detach)"))?;
        let end = {
            let _raw = RawMode::enter(stdin.as_fd())?;
            console.pump(stdin.as_fd(), stdout.as_fd(), ESCAPE, &ctx.cancel)?
            // The terminal is restored here, also when the pump fails.
        };
        match end {
            End::Detached => {
                out.note(format!("\nDetached from {name}"))?;
                Ok(Report::streamed(0))
            }
            End::Hangup => Ok(Report::streamed(0)),
            End::Closed { reason } => {
                tracing::debug!(vm = %name, reason, "console stream ended");
                // The end of the stream comes with a stop; an error with a takeover.
                let settle = if reason.is_none() {
                    Duration::from_secs(3)
                } else {
                    Duration::ZERO
                };
                if console.stopped_within(settle, &ctx.cancel) {
                    out.note(format!("\nVM {name} stopped; console closed"))?;
                    Ok(Report::streamed(0))
                } else {
                    out.note(format!(
                        "\nThe console of {name} was closed; another session may have taken it over with `console --force`"
                    ))?;
                    Ok(Report::streamed(1))
                }
            }
        }
    }
}

fn needs_terminal(ctx: &Context, name: &VmName) -> Error {
    let host = &ctx.config.public_host();
    let port = match ctx.config.public_port {
        22 => String::new(),
        port => format!(" -p {port}"),
    };
    Error::invalid_with_help(
        "`console` needs a terminal",
        format!("run it with `ssh -t{port} basphere@{host} console {name}`"),
    )
}

/// Raw mode on the terminal for as long as it lives: keys go to the VM as typed
/// (Ctrl-C included) and its output reaches the screen unchanged.
struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    fn enter(fd: BorrowedFd<'fd>) -> Result<Self> {
        let err = |e: nix::errno::Errno| Error::io("cannot set the terminal mode", e.into());
        let saved = termios::tcgetattr(fd).map_err(err)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw).map_err(err)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Err(e) = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved) {
            tracing::warn!(error = %e, "cannot restore the terminal mode");
        }
    }
}
