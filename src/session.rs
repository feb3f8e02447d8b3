//! A tenant's SSH session, whichever front door it came through: one command line, or
//! the welcome and then, on a terminal, a prompt that runs lines one by one.
//!
//! Lines are split with shell rules but never given to a shell, and run through the
//! same dispatcher as the terminal, as the tenant, with the configuration already loaded.

use std::ffi::OsString;
use std::io::Read;
use std::sync::Arc;

use nix::sys::signal::{SigHandler, Signal};

use crate::cancel::Cancel;
use crate::config::Config;
use crate::context::{Caller, Context, Role};
use crate::error::{Error, Result};
use crate::output::{Io, Output};
use crate::validate::Size;

/// What a command that runs without the dispatcher answers.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// A key that logs in to no account, through either front door: it may run exactly
/// `key confirm CODE` (a key `key add` or a signup left pending proves itself); any
/// other line gets the screen of an unregistered key: its fingerprint, what is waiting
/// for it, and where to sign up.
pub fn unregistered(
    conn: &rusqlite::Connection,
    config: &Config,
    fingerprint: &str,
    line: Option<&str>,
) -> Answer {
    let words = line
        .map(split_command)
        .and_then(|w| w.ok())
        .unwrap_or_default();
    if let [key, confirm, code] = words.as_slice() {
        if key == "key" && confirm == "confirm" {
            return match crate::ops::key::confirm(conn, fingerprint, code) {
                Ok(crate::ops::key::Confirmed::Key { user, fingerprint }) => Answer {
                    stdout: format!("confirmed key {fingerprint}: it logs in to `{user}` now\n"),
                    ..Answer::default()
                },
                Ok(crate::ops::key::Confirmed::Signup { user, fingerprint }) => Answer {
                    stdout: format!(
                        "confirmed key {fingerprint} for the signup `{user}`; a mail tells you when an administrator decides\n"
                    ),
                    ..Answer::default()
                },
                Err(e) => Answer {
                    stderr: format!("{}\n", crate::error::Rendered(&e)),
                    code: e.exit_code(),
                    ..Answer::default()
                },
            };
        }
    }
    Answer {
        stderr: unregistered_screen(conn, config, fingerprint),
        code: 1,
        ..Answer::default()
    }
}

fn unregistered_screen(conn: &rusqlite::Connection, config: &Config, fingerprint: &str) -> String {
    let now = crate::hooks::now();
    let signup = match crate::db::signups::open_for_key(conn, fingerprint, now) {
        Ok(Some(s)) => format!(
            "a signup for `{}` with this key is pending ({})",
            s.user_id,
            s.state.as_str().replace('_', " ")
        ),
        Ok(None) => "no signup with this key is pending".to_owned(),
        Err(e) => {
            tracing::error!(error = %e, "cannot look up signups");
            "cannot tell whether a signup with this key is pending".to_owned()
        }
    };
    let pending = crate::db::users::pending_by_fingerprint(conn, fingerprint, now)
        .map(|p| !p.is_empty())
        .unwrap_or(false);
    let confirm = if pending {
        format!(
            "\nThis key was added to an account and waits for proof: run\n  {} key confirm CODE\nwith the code `key add` showed.\n",
            config.ssh_command()
        )
    } else {
        String::new()
    };
    format!(
        "basphere: this key is not registered\n\n  key:     {fingerprint}\n  signup:  {signup}\n{confirm}\nSign up at {}\nIf you registered another key, connect with it: ssh -o IdentitiesOnly=yes -i PATH ...\n",
        config.public_url()
    )
}

/// The longest command line read at the prompt.
const MAX_LINE: usize = 64 * 1024;

/// Splits a command line the way a POSIX shell would, without running one.
pub fn split_command(line: &str) -> Result<Vec<String>> {
    if line.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
        return Err(Error::invalid(
            "the command contains a newline or NUL character",
        ));
    }
    shell_words::split(line).map_err(|e| Error::invalid(format!("cannot parse the command: {e}")))
}

/// A tenant's command line as arguments for the dispatcher.
fn argv(line: &str) -> Result<Vec<OsString>> {
    let mut words = split_command(line)?;
    if words.first().map(String::as_str) == Some("basphere") {
        words.remove(0);
    }
    Ok(std::iter::once("basphere".to_owned())
        .chain(words)
        .map(Into::into)
        .collect())
}

/// Runs `line` for `tenant` (an SSH caller), or with none the welcome, then on a
/// terminal the prompt.
/// Returns the exit status; errors are written to stderr.
pub fn run(
    config: &Arc<Config>,
    tenant: &Caller,
    line: Option<&str>,
    io: &mut Io,
    cancel: &Cancel,
) -> i32 {
    let line = line.unwrap_or("").trim();
    let result = if line.is_empty() {
        let mut out = Output::new(io, false);
        welcome(config, tenant, &mut out, cancel).and_then(|role| match out.terminal() {
            Some(_) => prompt(config, tenant, role, &mut out, cancel),
            None => Ok(0),
        })
    } else {
        argv(line).map(|argv| crate::dispatch(tenant, argv, io, config, cancel))
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(io.stderr, "{}", crate::error::Rendered(&e));
        e.exit_code()
    })
}

/// What a tenant sees on logging in without a command: who they are, their quota,
/// their VMs and what they can run. Returns their role.
fn welcome(
    config: &Arc<Config>,
    tenant: &Caller,
    out: &mut Output,
    cancel: &Cancel,
) -> Result<Role> {
    let ctx = Context::new(config.clone(), tenant, None, cancel.clone())?;
    let user = ctx.tenant()?;
    let report = crate::ops::quota::show(&ctx, &user)?;
    let (l, u) = (&report.limits, &report.usage);
    out.line(format!("basphere: signed in as {user}"))?;
    out.line("")?;
    out.line(format!(
        "Quota: {}/{} vCPUs, {}/{} memory, {}/{} VMs, {}/{} snapshots",
        u.cpus,
        l.cpus,
        Size::from_mib(u.memory_mib),
        Size::from_mib(l.memory_mib),
        u.vms,
        l.vms,
        report.snapshots,
        l.snapshots,
    ))?;
    out.line("")?;
    match crate::ops::vm::list_mine(&ctx) {
        Ok(vms) if vms.is_empty() => {
            out.line("You have no VMs yet: create one with `create-vm NAME`.")?
        }
        Ok(vms) => {
            out.line("Your VMs:")?;
            let views = crate::cli::vm::Vms {
                views: vms,
                with_owner: false,
            };
            out.report(views.report())?;
        }
        Err(e) => out.line(format!("Your VMs: cannot list them now ({e})"))?,
    }
    out.line("")?;
    commands(config, ctx.actor.role, out)?;
    Ok(ctx.actor.role)
}

/// The commands `role` may run over SSH, one line each, and how to run one.
fn commands(config: &Config, role: Role, out: &mut Output) -> Result<()> {
    out.line("Commands:")?;
    for (name, about) in crate::cli::offered_to(role) {
        out.line(format!("  {name:<12} {about}"))?;
    }
    out.line("")?;
    if out.terminal().is_some() {
        return out.line(
            "Type a command (`help` for this list, `COMMAND --help` for details), `exit` to leave.",
        );
    }
    let ssh = config.ssh_command();
    out.line(format!(
        "Run a command with: {ssh} COMMAND, e.g. {ssh} vm list"
    ))
}

/// The interactive prompt of a terminal session: commands run one by one until `exit`.
fn prompt(
    config: &Arc<Config>,
    tenant: &Caller,
    role: Role,
    out: &mut Output,
    cancel: &Cancel,
) -> Result<i32> {
    // Ctrl-C at the prompt drops the line typed so far instead of ending the session;
    // the terminal still delivers it as a key to confirmations and the console.
    for signal in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: ignoring a signal installs no handler.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) };
    }
    loop {
        let io = out.io();
        write!(io.stdout, "{}@basphere> ", user_of(tenant)).map_err(write_err)?;
        io.stdout.flush().map_err(write_err)?;
        let Some(line) = read_line(io.stdin, cancel)? else {
            out.line("")?;
            return Ok(0);
        };
        let line = line.trim();
        match line {
            "" => continue,
            "exit" | "quit" | "logout" => return Ok(0),
            "help" | "?" => {
                commands(config, role, out)?;
                continue;
            }
            _ => {}
        }
        let argv = match argv(line) {
            Ok(argv) => argv,
            Err(e) => {
                out.note(format!("{}", crate::error::Rendered(&e)))?;
                continue;
            }
        };
        let io = out.io();
        // The window may have changed size since the last command.
        io.terminal = crate::output::Terminal::detect();
        crate::dispatch(tenant, argv, io, config, cancel);
    }
}

/// The user a tenant caller is, for the prompt.
fn user_of(tenant: &Caller) -> &str {
    match tenant {
        Caller::Ssh(binding) => &binding.user,
        Caller::Local { .. } | Caller::Sudo { .. } => "local",
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("cannot write to the terminal", e)
}

/// One line from the terminal (which edits it), or `None` at end of input.
fn read_line(input: &mut (dyn Read + Send), cancel: &Cancel) -> Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        cancel.check()?;
        match input.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot read from the terminal", e)),
        }
        if line.len() > MAX_LINE {
            return Err(Error::invalid("the command line is too long"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell_without_one() {
        assert_eq!(
            split_command("create-vm 'web 1' --cpus 2").unwrap(),
            ["create-vm", "web 1", "--cpus", "2"]
        );
        assert_eq!(
            split_command("vm list; rm -rf /").unwrap(),
            ["vm", "list;", "rm", "-rf", "/"]
        );
        assert_eq!(split_command("echo $(id)").unwrap(), ["echo", "$(id)"]);
        assert!(split_command("vm list\nwhoami").is_err());
        assert!(split_command("vm\0list").is_err());
        assert!(split_command("vm 'list").is_err());
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::testing::{any_bytes, config, text_near};
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Characters that mean something to a shell, and plain ones.
    const SHELLISH: &str = "ab1 -'\"\\$`;|&<>(){}*?~#=\t\u{a0}\u{3000}";

    /// A word as a tenant might type one: anything but a line break or NUL.
    fn word() -> impl Strategy<Value = String> {
        text_near(SHELLISH, 12).prop_map(|w| w.replace(['\n', '\r', '\0'], ""))
    }

    proptest! {
        #![proptest_config(config())]

        /// Any line is split or refused, and no word ever holds a line break or NUL.
        #[test]
        fn no_word_holds_a_line_break(line in text_near(SHELLISH, 60)) {
            if let Ok(words) = split_command(&line) {
                for w in words {
                    prop_assert!(!w.contains(['\n', '\r', '\0']), "{w:?}");
                }
            } else {
                prop_assert!(argv(&line).is_err());
            }
        }

        /// Bytes off the wire, decoded as the prompt decodes them, never panic the splitter.
        #[test]
        fn any_bytes_split_or_are_refused(bytes in any_bytes(80)) {
            let line = String::from_utf8_lossy(&bytes);
            let _ = split_command(&line);
        }

        /// Words quoted for a shell split back into exactly those words.
        #[test]
        fn quoted_words_split_back(words in vec(word(), 0..6)) {
            let line = shell_words::join(&words);
            prop_assert_eq!(split_command(&line).unwrap(), words);
        }

        /// The dispatcher gets `basphere` and then the words, one leading `basphere` dropped.
        #[test]
        fn argv_is_basphere_then_the_words(
            words in vec(prop_oneof![Just("basphere".to_owned()), word()], 0..5)
        ) {
            let line = shell_words::join(&words);
            let rest = match words.first().map(String::as_str) {
                Some("basphere") => &words[1..],
                _ => &words[..],
            };
            let expected: Vec<OsString> = std::iter::once("basphere")
                .chain(rest.iter().map(String::as_str))
                .map(Into::into)
                .collect();
            prop_assert_eq!(argv(&line).unwrap(), expected);
        }

        /// The prompt reads up to the first newline and keeps every byte before it.
        #[test]
        fn read_line_stops_at_the_first_newline(bytes in any_bytes(200)) {
            let mut input: &[u8] = &bytes;
            let got = read_line(&mut input, &Cancel::new()).unwrap();
            let line = bytes.split(|b| *b == b'\n').next().unwrap();
            let expected = (!bytes.is_empty()).then(|| String::from_utf8_lossy(line).into_owned());
            prop_assert_eq!(got, expected);
        }
    }
}
