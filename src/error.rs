//! The error type every operation returns, with the message people see and the exit code.

use std::fmt;

use crate::virt::VirtError;

/// Exit codes, stable and documented in the README and man pages.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 4;
    pub const QUOTA_EXCEEDED: i32 = 5;
    pub const CONFLICT: i32 = 6;
    pub const UNAVAILABLE: i32 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the caller: a name, a size, a key, a flag combination.
    #[error("{message}")]
    Invalid {
        message: String,
        help: Option<String>,
    },

    #[error("{kind} `{name}` not found")]
    NotFound { kind: &'static str, name: String },

    #[error("{kind} `{name}` already exists")]
    AlreadyExists { kind: &'static str, name: String },

    /// The request contradicts the current state (image in use, VM not running, ...).
    #[error("{message}")]
    Conflict {
        message: String,
        help: Option<String>,
    },

    #[error("permission denied: {reason}")]
    PermissionDenied { reason: String },

    #[error("quota exceeded: {resource}: limit {limit}, used {used}, requested {requested}")]
    QuotaExceeded {
        resource: &'static str,
        limit: String,
        used: String,
        requested: String,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// basphere is installed or run in a way it cannot work with (its own path, say).
    #[error("installation: {0}")]
    Install(String),

    /// A database row or a state file that basphere wrote no longer holds what it must.
    #[error("corrupt state: {0}")]
    Corrupt(String),

    /// A form with wrong fields: a message per field, keyed by the field's name.
    #[error("invalid fields: {}", .0.keys().copied().collect::<Vec<_>>().join(", "))]
    Fields(std::collections::BTreeMap<&'static str, String>),

    /// Too many requests; the text is for people.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<std::time::Duration>,
    },

    #[error(transparent)]
    Virt(#[from] VirtError),

    /// A multi-step operation failed part way; everything done so far was undone.
    #[error("{operation} failed at step `{step}`: {source}")]
    Step {
        operation: &'static str,
        step: &'static str,
        #[source]
        source: Box<Error>,
        undo_failures: Vec<String>,
    },

    /// The command was cancelled: its client went away, or the server is stopping.
    #[error("cancelled")]
    Cancelled,

    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),

    /// The data directory holds no database: a wrong `--data-dir`, a volume not mounted
    /// yet, or an installation never initialised. Nothing is created in its place.
    #[error("no basphere database at `{}`", .dir.display())]
    NoDatabase { dir: std::path::PathBuf },

    #[error("cannot open database `{}`: {source}", .path.display())]
    DatabaseOpen {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("SSH key `{}`: {source}", .path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: russh::keys::ssh_key::Error,
    },

    #[error("mail template: {0}")]
    Template(#[from] minijinja::Error),

    /// A background task panicked or was dropped.
    #[error("a task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            help: None,
        }
    }

    pub fn invalid_with_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            help: Some(help.into()),
        }
    }

    pub fn conflict(message: impl Into<String>, help: Option<&str>) -> Self {
        Error::Conflict {
            message: message.into(),
            help: help.map(str::to_owned),
        }
    }

    pub fn denied(reason: impl Into<String>) -> Self {
        Error::PermissionDenied {
            reason: reason.into(),
        }
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } => exit::USAGE,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => exit::CONFLICT,
            Error::PermissionDenied { .. } => exit::PERMISSION_DENIED,
            Error::QuotaExceeded { .. } => exit::QUOTA_EXCEEDED,
            Error::Virt(VirtError::Unavailable { .. }) => exit::UNAVAILABLE,
            Error::Virt(VirtError::NotOurs { .. }) => exit::CONFLICT,
            Error::Fields(_) => exit::USAGE,
            Error::Step { source, .. } => source.exit_code(),
            _ => exit::FAILURE,
        }
    }

    /// The kind of error, as `--json` names it: stable words for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } | Error::Fields(_) => "invalid",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Conflict { .. } => "conflict",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::Config(_) => "config",
            Error::Install(_) => "install",
            Error::Corrupt(_) => "corrupt",
            Error::RateLimited { .. } => "rate_limited",
            Error::Virt(VirtError::Unavailable { .. }) => "unavailable",
            Error::Virt(VirtError::NotOurs { .. }) => "conflict",
            Error::Virt(_) => "libvirt",
            Error::Step { source, .. } => source.kind(),
            Error::Cancelled => "cancelled",
            Error::Database(_) | Error::DatabaseOpen { .. } | Error::NoDatabase { .. } => {
                "database"
            }
            Error::Key { .. } | Error::Template(_) | Error::Task(_) | Error::Json(_) => "internal",
            Error::Io { .. } => "io",
        }
    }

    /// A hint on how to fix the problem, shown as `help:` under the error.
    pub fn help(&self) -> Option<String> {
        match self {
            Error::Invalid { help, .. } | Error::Conflict { help, .. } => help.clone(),
            Error::QuotaExceeded { .. } => Some(
                "see `basphere quota`; delete a VM or ask an administrator for a larger quota"
                    .into(),
            ),
            Error::Virt(VirtError::Unavailable { .. }) => {
                Some("is libvirtd running? check `libvirt_uri` in `basphere config`".into())
            }
            Error::Step { source, .. } => source.help(),
            Error::NoDatabase { .. } => Some(
                "check `--data-dir` (or `data_dir` in `basphere config`); a new installation starts with `basphere admin init --database-only`".into(),
            ),
            Error::Corrupt(_) => Some(
                "run `basphere admin reconcile --dry-run` to see what it would repair, then `basphere admin reconcile`".into(),
            ),
            Error::Database(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                Some("another basphere command holds the database; try again".into())
            }
            _ => None,
        }
    }

    /// The message and its hint on one line, for places that show one string.
    pub fn with_help(&self) -> String {
        match self.help() {
            Some(help) => format!("{self} ({help})"),
            None => self.to_string(),
        }
    }

    /// The message followed by any problems met while undoing a failed operation.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        if let Error::Step { undo_failures, .. } = self {
            if undo_failures.is_empty() {
                text.push_str("\nnote: every step already taken was undone");
            } else {
                text.push_str(
                    "\nnote: some steps could not be undone; run `basphere admin reconcile`:",
                );
                for failure in undo_failures {
                    text.push_str("\n  - ");
                    text.push_str(failure);
                }
            }
        }
        text
    }
}

/// Displays an error the way the CLI prints it: `error: ...` and an optional `help: ...`.
pub struct Rendered<'a>(pub &'a Error);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.0.report())?;
        if let Some(help) = self.0.help() {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}
