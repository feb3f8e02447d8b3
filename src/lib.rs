//! basphere: self-service virtual machines on one libvirt host, reached over SSH.
//!
//! Every front door (the terminal, OpenSSH's forced command, the embedded SSH server)
//! calls [`dispatch`] with an explicit [`Caller`] and its own streams.

pub mod cancel;
pub mod cli;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod files;
pub mod hooks;
pub mod mail;
pub mod man;
pub mod ops;
pub mod output;
pub mod routes;
pub mod secret;
pub mod session;
pub mod ssh;
pub mod sudo;
pub mod validate;
pub mod virt;
pub mod web;

#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::sync::Arc;

pub use cancel::Cancel;
pub use config::Config;
pub use context::Caller;
pub use output::{Io, Terminal};

/// A parsed command line and the name of its command (`admin user list`), or the exit
/// code of a usage error already written to `io`.
fn parse(argv: Vec<OsString>, io: &mut Io) -> Result<(cli::Cli, String), i32> {
    let json = argv
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    let color = io.terminal.is_some_and(|t| t.color) && !json;
    let mut command = cli::command();
    if !color {
        command = command.color(clap::ColorChoice::Never);
    }
    if let Some(term) = io.terminal {
        command = command.term_width(term.width.into());
    }
    let parsed = command.try_get_matches_from(argv).and_then(|m| {
        let mut name = Vec::new();
        let mut sub = m.subcommand();
        while let Some((n, inner)) = sub {
            name.push(n);
            sub = inner.subcommand();
        }
        let name = name.join(" ");
        <cli::Cli as clap::FromArgMatches>::from_arg_matches(&m).map(|cli| (cli, name))
    });
    parsed.map_err(|e| {
        if json && e.use_stderr() {
            let message = e.render().to_string();
            let message = message.trim_end().trim_start_matches("error: ");
            let value =
                serde_json::json!({ "error": message, "kind": "invalid", "exit": e.exit_code() });
            let _ = writeln!(io.stderr, "{value}");
            return e.exit_code();
        }
        let text = if color {
            e.render().ansi().to_string()
        } else {
            e.render().to_string()
        };
        let stream: &mut dyn Write = if e.use_stderr() { io.stderr } else { io.stdout };
        match write!(stream, "{text}").and_then(|()| stream.flush()) {
            Ok(()) => e.exit_code(),
            // The help or usage never reached its reader: a closed pipe, a stalled client.
            Err(_) => error::exit::FAILURE,
        }
    })
}

/// Runs a parsed command line; errors are rendered to stderr as the exit code says.
fn run(
    cli: cli::Cli,
    name: &str,
    caller: &Caller,
    config: Result<Arc<Config>, error::Error>,
    cancel: &Cancel,
    io: &mut Io,
) -> i32 {
    let mut out = output::Output::new(io, cli.global.json);
    let result = config
        .and_then(|config| cli::execute(&cli, name, caller, config, cancel.clone(), &mut out))
        .and_then(|report| out.report(report));
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = ?e, "command failed");
            out.error(&e);
            e.exit_code()
        }
    }
}

/// Runs one command line for `caller` with a configuration already loaded, as both SSH
/// front doors do; returns its exit code. Never panics on bad input.
pub fn dispatch(
    caller: &Caller,
    argv: Vec<OsString>,
    io: &mut Io,
    config: &Arc<Config>,
    cancel: &Cancel,
) -> i32 {
    match parse(argv, io) {
        Ok((cli, name)) => run(cli, &name, caller, Ok(config.clone()), cancel, io),
        Err(code) => code,
    }
}

/// The process entry point: this process's caller, streams, arguments and environment.
pub fn main() -> i32 {
    // Whatever basphere or its tools (qemu-img, genisoimage) create is private unless
    // basphere says otherwise (see `files`, which sets every mode it means explicitly).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
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
    let code = match parse(std::env::args_os().collect(), &mut io) {
        Ok((cli, name)) => {
            // A local command reads the configuration once, with its own flags on top.
            let mut flags = cli.global.overrides();
            flags.may_be_missing = cli.command.writes_config();
            let config = match Config::load(&flags, &env) {
                // `doctor` reports a configuration that does not load as its first finding.
                Err(_) if matches!(cli.command, cli::Command::Doctor(_)) => {
                    Ok(Config::unloaded(&flags, &env))
                }
                loaded => loaded,
            };
            // Who called, before root becomes the service account (see `sudo`).
            let caller = Caller::current_process();
            let config = match cli.uses_data_dir() {
                true => {
                    let needs_root = cli.command.needs_root();
                    config.and_then(|c| sudo::reach_data_dir(c, needs_root))
                }
                false => config,
            };
            let config = config.map(Arc::new);
            run(cli, &name, &caller, config, &Cancel::new(), &mut io)
        }
        Err(code) => code,
    };
    let _ = io.stdout.flush();
    code
}
