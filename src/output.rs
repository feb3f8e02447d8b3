//! The one writer: tables sized to a terminal, stable plain text otherwise, or JSON.
//! Progress bars and confirmations appear only when a person is at a terminal.

use std::io::{Read, Write};
use std::time::Duration;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

use crate::error::{Error, Result};

/// What is known about the terminal on the other end, if there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub width: u16,
    pub color: bool,
}

impl Terminal {
    /// The terminal attached to this process's stdout, if any.
    pub fn detect() -> Option<Terminal> {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            return None;
        }
        let (_, width) = console::Term::stdout().size();
        Some(Terminal {
            width: width.max(40),
            color: std::env::var_os("NO_COLOR").is_none(),
        })
    }
}

/// The streams a command reads and writes: the process's own, or an SSH channel's.
pub struct Io<'a> {
    pub stdin: &'a mut (dyn Read + Send),
    pub stdout: &'a mut (dyn Write + Send),
    pub stderr: &'a mut (dyn Write + Send),
    pub terminal: Option<Terminal>,
}

pub struct Output<'a, 'io> {
    io: &'a mut Io<'io>,
    pub json: bool,
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("cannot write output", e)
}

impl<'a, 'io> Output<'a, 'io> {
    pub fn new(io: &'a mut Io<'io>, json: bool) -> Self {
        Output { io, json }
    }

    /// The underlying streams, for a command that runs another command line.
    pub fn io(&mut self) -> &mut Io<'io> {
        self.io
    }

    pub fn terminal(&self) -> Option<Terminal> {
        self.io.terminal
    }

    pub fn stdin(&mut self) -> &mut (dyn Read + Send) {
        self.io.stdin
    }

    pub fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        writeln!(self.io.stdout, "{}", text.as_ref()).map_err(write_err)
    }

    /// A remark for people (stderr), never part of the parseable output.
    pub fn note(&mut self, text: impl AsRef<str>) -> Result<()> {
        writeln!(self.io.stderr, "{}", text.as_ref()).map_err(write_err)
    }

    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Error::io("cannot encode JSON", std::io::Error::other(e)))?;
        self.line(text)
    }

    /// A table: boxed and fitted to the width on a terminal, aligned columns otherwise.
    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
        match self.io.terminal {
            Some(term) => {
                let mut table = Table::new();
                table
                    .load_preset(presets::UTF8_FULL_CONDENSED)
                    .set_content_arrangement(ContentArrangement::Dynamic)
                    .set_width(term.width)
                    .set_header(headers.iter().copied());
                for row in rows {
                    table.add_row(row.into_iter().map(|c| sanitize(&c)));
                }
                self.line(table.to_string())
            }
            None => {
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|r| r.into_iter().map(|c| sanitize(&c)).collect())
                    .collect();
                let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
                for row in &rows {
                    for (i, cell) in row.iter().enumerate() {
                        widths[i] = widths[i].max(cell.chars().count());
                    }
                }
                let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
                for row in std::iter::once(&header).chain(rows.iter()) {
                    let mut text = String::new();
                    for (i, cell) in row.iter().enumerate() {
                        if i + 1 == row.len() {
                            text.push_str(cell);
                        } else {
                            text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                        }
                    }
                    self.line(text.trim_end())?;
                }
                Ok(())
            }
        }
    }

    /// `key: value` lines, keys aligned.
    pub fn fields(&mut self, pairs: &[(&str, String)]) -> Result<()> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        for (key, value) in pairs {
            let key = format!("{key}:");
            self.line(format!("{key:<width$} {}", sanitize(value)))?;
        }
        Ok(())
    }

    /// A spinner on stderr while a long step runs, only on a terminal.
    pub fn spinner(&self) -> indicatif::ProgressBar {
        if self.io.terminal.is_none() || self.json {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// Asks before something destructive. Off a terminal the caller must pass `--yes`.
    pub fn confirm(&mut self, prompt: &str, yes: bool) -> Result<bool> {
        if yes {
            return Ok(true);
        }
        if self.io.terminal.is_none() {
            return Err(Error::invalid_with_help(
                format!("{prompt}: confirmation needed, but no terminal is attached"),
                "pass --yes to confirm",
            ));
        }
        dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(false)
            .interact_on(&console::Term::stderr())
            .map_err(|e| Error::io("cannot read the answer", std::io::Error::other(e)))
    }
}

/// Neutralises control characters so stored text cannot steer a terminal.
pub fn sanitize(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    } else {
        text.to_owned()
    }
}

pub fn timestamp(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_table_is_aligned_and_stable() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut input = std::io::empty();
        let mut io = Io {
            stdin: &mut input,
            stdout: &mut out,
            stderr: &mut err,
            terminal: None,
        };
        Output::new(&mut io, false)
            .table(
                &["NAME", "STATE"],
                vec![
                    vec!["web1".into(), "running".into()],
                    vec!["database".into(), "shut\x1b off".into()],
                ],
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME      STATE\nweb1      running\ndatabase  shut? off\n"
        );
    }

    #[test]
    fn confirmation_off_a_terminal_needs_yes() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut input = std::io::empty();
        let mut io = Io {
            stdin: &mut input,
            stdout: &mut out,
            stderr: &mut err,
            terminal: None,
        };
        let mut output = Output::new(&mut io, false);
        assert!(output.confirm("delete web1", false).is_err());
        assert!(output.confirm("delete web1", true).unwrap());
    }
}
