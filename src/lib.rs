//! basphere: self-service virtual machines on one libvirt host, reached over SSH.
//!
//! Every front door (the terminal, OpenSSH's forced command, the embedded SSH server)
//! calls [`dispatch`] with an explicit [`Caller`] and its own streams.

pub mod cli;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod mail;
pub mod man;
pub mod ops;
pub mod output;
pub mod ssh;
pub mod validate;
pub mod virt;
pub mod web;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

pub use context::Caller;
pub use output::{Io, Terminal};

/// Runs one command line for `caller` and returns its exit code. Never panics on bad input.
pub fn dispatch(
    caller: &Caller,
    argv: Vec<OsString>,
    io: &mut Io,
    env: &BTreeMap<String, String>,
) -> i32 {
    let color = io.terminal.is_some_and(|t| t.color);
    let mut command = cli::command();
    if !color {
        command = command.color(clap::ColorChoice::Never);
    }
    if let Some(term) = io.terminal {
        command = command.term_width(term.width.into());
    }
    let parsed = command
        .try_get_matches_from(argv)
        .and_then(|m| <cli::Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let text = if color {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let stream: &mut dyn Write = if e.use_stderr() { io.stderr } else { io.stdout };
            let _ = write!(stream, "{text}");
            return e.exit_code();
        }
    };
    let json = cli.global.json;
    let mut out = output::Output::new(io, json);
    match cli::execute(cli, caller, &mut out, env) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = ?e, "command failed");
            let _ = writeln!(io.stderr, "{}", error::Rendered(&e));
            e.exit_code()
        }
    }
}

/// The process entry point: this process's caller, streams, arguments and environment.
pub fn main() -> i32 {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BASPHERE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut io = Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        terminal: Terminal::detect(),
    };
    let code = dispatch(
        &Caller::current_process(),
        std::env::args_os().collect(),
        &mut io,
        &env,
    );
    let _ = io.stdout.flush();
    code
}
