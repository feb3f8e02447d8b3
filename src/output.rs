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

/// How a command's result is written, decided once from `--json` and the streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One JSON document on stdout; an error is one JSON object on stderr.
    Json,
    /// Tables boxed and fitted to the window; progress and confirmations.
    Terminal(Terminal),
    /// No terminal: the table's columns, one header line, no colour, no truncation.
    Plain,
}

/// What people see of a result.
#[derive(Debug)]
pub enum Human {
    /// Rows under headers.
    Table {
        headers: Vec<&'static str>,
        rows: Vec<Vec<String>>,
    },
    /// `key: value` lines, keys aligned.
    Fields(Vec<(&'static str, String)>),
    /// Lines of text, such as an acknowledgement.
    Lines(Vec<String>),
    /// Text basphere generated for another program, written as it is.
    Text(String),
    /// One part after another, a blank line between them.
    Parts(Vec<Human>),
    /// Nothing: the command already wrote to its streams (a console, a session).
    Nothing,
}

/// A value that knows how people see it; its JSON form is its `Serialize`.
pub trait Render: Serialize {
    fn human(&self) -> Human;
}

/// What a command hands back to be written: its value as JSON, its human form, remarks
/// for people, and its exit status.
#[derive(Debug)]
pub struct Report {
    json: Option<serde_json::Result<serde_json::Value>>,
    human: Human,
    /// On a terminal, in place of an empty table.
    hint: Option<String>,
    notes: Vec<String>,
    pub code: i32,
}

impl Report {
    pub fn new(value: &(impl Serialize + ?Sized), human: Human) -> Report {
        Report {
            json: Some(serde_json::to_value(value)),
            ..Report::without_json(human)
        }
    }

    /// Output that has no JSON form.
    fn without_json(human: Human) -> Report {
        Report {
            json: None,
            human,
            hint: None,
            notes: Vec::new(),
            code: 0,
        }
    }

    /// A value that renders itself.
    pub fn of(value: &(impl Render + ?Sized)) -> Report {
        Report::new(value, value.human())
    }

    /// A change done: `value` describes it, `line` tells people.
    pub fn done(value: &(impl Serialize + ?Sized), line: impl Into<String>) -> Report {
        Report::new(value, Human::Lines(vec![line.into()]))
    }

    /// Text for another program; a command that makes it has no JSON form.
    pub fn text(text: String) -> Report {
        Report::without_json(Human::Text(text))
    }

    /// The command wrote its own output while it ran.
    pub fn streamed(code: i32) -> Report {
        Report::without_json(Human::Nothing).exit(code)
    }

    /// A confirmation was declined: nothing changed, exit status 1.
    pub fn declined(note: &str) -> Report {
        let value = serde_json::json!({ "confirmed": false });
        Report::new(&value, Human::Nothing).note(note).exit(1)
    }

    /// A remark for people on stderr, never part of the parseable output.
    pub fn note(mut self, text: impl Into<String>) -> Report {
        self.notes.push(text.into());
        self
    }

    /// What a terminal shows instead of an empty table.
    pub fn hint(mut self, text: impl Into<String>) -> Report {
        self.hint = Some(text.into());
        self
    }

    pub fn exit(mut self, code: i32) -> Report {
        self.code = code;
        self
    }

    /// Whether the report has a JSON form.
    pub fn speaks_json(&self) -> bool {
        self.json.is_some()
    }
}

/// The one writer: every command's report, and errors, in the mode of the invocation.
pub struct Output<'a, 'io> {
    io: &'a mut Io<'io>,
    mode: Mode,
}

fn write_err(e: std::io::Error) -> Error {
    Error::io("cannot write output", e)
}

impl<'a, 'io> Output<'a, 'io> {
    pub fn new(io: &'a mut Io<'io>, json: bool) -> Self {
        let mode = match io.terminal {
            _ if json => Mode::Json,
            Some(term) => Mode::Terminal(term),
            None => Mode::Plain,
        };
        Output { io, mode }
    }

    /// The underlying streams, for a command that runs another command line.
    pub fn io(&mut self) -> &mut Io<'io> {
        self.io
    }

    /// The terminal the streams reach, whatever the mode (a console needs one).
    pub fn terminal(&self) -> Option<Terminal> {
        self.io.terminal
    }

    pub fn stdin(&mut self) -> &mut (dyn Read + Send) {
        self.io.stdin
    }

    /// A remark for people (stderr), never part of the parseable output.
    pub fn note(&mut self, text: impl AsRef<str>) -> Result<()> {
        writeln!(self.io.stderr, "{}", text.as_ref()).map_err(write_err)
    }

    /// A line on stdout while a command that streams runs (`serve` says where it listens).
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        writeln!(self.io.stdout, "{}", text.as_ref()).map_err(write_err)
    }

    /// Writes a command's report; returns its exit status.
    pub fn report(&mut self, report: Report) -> Result<i32> {
        match (self.mode, report.json) {
            (Mode::Json, Some(json)) => {
                let json = json.map_err(|e| Error::io("cannot encode JSON", e.into()))?;
                let text = serde_json::to_string_pretty(&json).unwrap_or_default();
                self.line(text)?;
            }
            (Mode::Json, None) if !matches!(report.human, Human::Nothing) => {
                return Err(Error::invalid("this command has no JSON output"));
            }
            _ => {
                let empty = matches!(&report.human, Human::Table { rows, .. } if rows.is_empty());
                match (&report.hint, self.mode) {
                    (Some(hint), Mode::Terminal(_)) if empty => self.note(hint)?,
                    _ => self.human(report.human)?,
                }
            }
        }
        for note in &report.notes {
            self.note(note)?;
        }
        Ok(report.code)
    }

    fn human(&mut self, human: Human) -> Result<()> {
        match human {
            Human::Table { headers, rows } => self.table(&headers, rows),
            Human::Fields(pairs) => self.fields(&pairs),
            Human::Lines(lines) => lines.iter().try_for_each(|l| self.line(sanitize(l))),
            Human::Text(text) if text.is_empty() => Ok(()),
            Human::Text(text) => self.line(text.trim_end()),
            Human::Parts(parts) => {
                for (i, part) in parts.into_iter().enumerate() {
                    if i > 0 {
                        self.line("")?;
                    }
                    self.human(part)?;
                }
                Ok(())
            }
            Human::Nothing => Ok(()),
        }
    }

    /// An error: `error:` and `help:` lines, or in JSON one object with `error`, `kind`,
    /// `exit` (and `help` when there is one).
    pub fn error(&mut self, e: &Error) {
        let text = match self.mode {
            Mode::Json => {
                let mut value = serde_json::json!({
                    "error": e.report(),
                    "kind": e.kind(),
                    "exit": e.exit_code(),
                });
                if let Some(help) = e.help() {
                    value["help"] = help.into();
                }
                value.to_string()
            }
            _ => crate::error::Rendered(e).to_string(),
        };
        let _ = writeln!(self.io.stderr, "{text}");
    }

    /// A table: boxed and fitted to the width on a terminal, aligned columns otherwise.
    fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
        let rows = rows
            .into_iter()
            .map(|r| r.iter().map(|c| sanitize(c)).collect());
        let rows: Vec<Vec<String>> = rows.collect();
        if let Mode::Terminal(term) = self.mode {
            let mut table = Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(term.width)
                .set_header(headers.iter().copied());
            for row in rows {
                table.add_row(row);
            }
            return self.line(table.to_string());
        }
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
                match i + 1 == row.len() {
                    true => text.push_str(cell),
                    false => text.push_str(&format!("{cell:<w$}  ", w = widths[i])),
                }
            }
            self.line(text.trim_end())?;
        }
        Ok(())
    }

    fn fields(&mut self, pairs: &[(&str, String)]) -> Result<()> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        for (key, value) in pairs {
            let key = format!("{key}:");
            self.line(format!("{key:<width$} {}", sanitize(value)))?;
        }
        Ok(())
    }

    /// Runs a long step with a spinner on stderr (only on a terminal); `work` may
    /// change the message as it goes.
    pub fn working<T>(&self, message: &str, work: impl FnOnce(&dyn Fn(&str)) -> T) -> T {
        let bar = match self.mode {
            Mode::Terminal(_) => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.enable_steady_tick(Duration::from_millis(100));
                bar
            }
            _ => indicatif::ProgressBar::hidden(),
        };
        bar.set_message(message.to_owned());
        let result = work(&|step| bar.set_message(step.to_owned()));
        bar.finish_and_clear();
        result
    }

    /// What a confirmation is about, shown to a person at a terminal before `confirm`.
    pub fn preview(&mut self, human: Human) -> Result<()> {
        match self.mode {
            Mode::Terminal(_) => self.human(human),
            _ => Ok(()),
        }
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
            .map_err(|dialoguer::Error::IO(e)| Error::io("cannot read the answer", e))
    }
}

/// Neutralises control and format characters (bidi overrides, zero-width spaces, ...)
/// so stored text can neither steer a terminal nor read as something else there.
pub fn sanitize(text: &str) -> String {
    use crate::validate::steers;
    if text.chars().any(steers) {
        text.chars()
            .map(|c| if steers(c) { '?' } else { c })
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
        let rows = vec![
            vec!["web1".into(), "running".into()],
            vec!["database".into(), "shut\x1b off".into()],
        ];
        let human = Human::Table {
            headers: vec!["NAME", "STATE"],
            rows,
        };
        let report = Report::new(&(), human);
        assert_eq!(Output::new(&mut io, false).report(report).unwrap(), 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME      STATE\nweb1      running\ndatabase  shut? off\n"
        );
    }

    /// A reason with U+202E showed in `admin signups` reversed; a zero-width space made
    /// two emails look the same.
    #[test]
    fn sanitize_neutralises_format_characters() {
        assert_eq!(sanitize("gpj.\u{202e}exe"), "gpj.?exe");
        assert_eq!(sanitize("a\u{200b}b\u{2066}c\u{2069}\u{feff}"), "a?b?c??");
        assert_eq!(sanitize("naïve\tcafé"), "naïve?café");
        assert_eq!(sanitize("東京"), "東京");
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
