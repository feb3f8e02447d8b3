//! Account requests from the web form, from `pending_email` to a decision.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    PendingEmail,
    PendingApproval,
    Approved,
    Rejected,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::PendingEmail => "pending_email",
            State::PendingApproval => "pending_approval",
            State::Approved => "approved",
            State::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "pending_email" => State::PendingEmail,
            "pending_approval" => State::PendingApproval,
            "approved" => State::Approved,
            _ => State::Rejected,
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, State::PendingEmail | State::PendingApproval)
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Signup {
    pub id: i64,
    pub user_id: String,
    pub email: String,
    pub public_key: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub comment: String,
    pub reason: String,
    pub state: State,
    #[serde(skip)]
    pub token_hash: Option<String>,
    pub token_expires_at: i64,
    pub remote_addr: String,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_reason: Option<String>,
    /// The code that proves the key: `key confirm CODE` over SSH with it.
    #[serde(skip)]
    pub key_code: Option<String>,
    /// When a connection with the key ran `key confirm` with that code.
    pub key_confirmed_at: Option<i64>,
}

pub struct NewSignup<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    pub public_key: &'a str,
    pub fingerprint: &'a str,
    pub algorithm: &'a str,
    pub comment: &'a str,
    pub reason: &'a str,
    pub token_hash: &'a str,
    pub token_expires_at: i64,
    pub status_hash: &'a str,
    pub remote_addr: &'a str,
    pub key_code: &'a str,
}

const COLUMNS: &str = "id, user_id, email, public_key, fingerprint, algorithm, comment, reason, state, \
token_hash, token_expires_at, remote_addr, created_at, confirmed_at, decided_by, decided_at, decision_reason, key_code, key_confirmed_at";

/// An unconfirmed signup whose link has expired no longer holds its id or key.
const OPEN: &str =
    "(state = 'pending_approval' OR (state = 'pending_email' AND token_expires_at > ?2))";

fn from_row(row: &Row) -> rusqlite::Result<Signup> {
    Ok(Signup {
        id: row.get(0)?,
        user_id: row.get(1)?,
        email: row.get(2)?,
        public_key: row.get(3)?,
        fingerprint: row.get(4)?,
        algorithm: row.get(5)?,
        comment: row.get(6)?,
        reason: row.get(7)?,
        state: State::parse(&row.get::<_, String>(8)?),
        token_hash: row.get(9)?,
        token_expires_at: row.get(10)?,
        remote_addr: row.get(11)?,
        created_at: row.get(12)?,
        confirmed_at: row.get(13)?,
        decided_by: row.get(14)?,
        decided_at: row.get(15)?,
        decision_reason: row.get(16)?,
        key_code: row.get(17)?,
        key_confirmed_at: row.get(18)?,
    })
}

pub fn insert(conn: &Connection, s: &NewSignup, now: i64) -> Result<i64> {
    // Expired unconfirmed requests for the same id or key make way for this one.
    conn.execute(
        "DELETE FROM signups WHERE state = 'pending_email' AND token_expires_at <= ?3
         AND (user_id = ?1 OR fingerprint = ?2)",
        params![s.user_id, s.fingerprint, now],
    )?;
    conn.execute(
        "INSERT INTO signups (user_id, email, public_key, fingerprint, algorithm, comment, reason, state,
             token_hash, token_expires_at, status_hash, remote_addr, created_at, key_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending_email', ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            s.user_id,
            s.email,
            s.public_key,
            s.fingerprint,
            s.algorithm,
            s.comment,
            s.reason,
            s.token_hash,
            s.token_expires_at,
            s.status_hash,
            s.remote_addr,
            now,
            s.key_code
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The open signup for a user id, if any.
pub fn open_for_user(conn: &Connection, user_id: &str, now: i64) -> Result<Option<Signup>> {
    let sql = format!("SELECT {COLUMNS} FROM signups WHERE user_id = ?1 AND {OPEN}");
    Ok(conn
        .query_row(&sql, params![user_id, now], from_row)
        .optional()?)
}

/// The open signup for a key fingerprint, if any.
pub fn open_for_key(conn: &Connection, fingerprint: &str, now: i64) -> Result<Option<Signup>> {
    let sql = format!("SELECT {COLUMNS} FROM signups WHERE fingerprint = ?1 AND {OPEN}");
    Ok(conn
        .query_row(&sql, params![fingerprint, now], from_row)
        .optional()?)
}

/// How long a signup with a confirmed email holds its key against everyone else.
pub const KEY_HOLD_SECS: i64 = 14 * 86_400;

/// The signup that holds a key against everyone else: one whose email is confirmed,
/// for `KEY_HOLD_SECS` after that. An unconfirmed request holds nothing.
pub fn holding_key(conn: &Connection, fingerprint: &str, now: i64) -> Result<Option<Signup>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM signups WHERE fingerprint = ?1
         AND state = 'pending_approval' AND confirmed_at > ?2"
    );
    Ok(conn
        .query_row(&sql, params![fingerprint, now - KEY_HOLD_SECS], from_row)
        .optional()?)
}

/// Open signups for a key whose code is `code`: the one `key confirm CODE` proves.
pub fn open_with_key_code(
    conn: &Connection,
    fingerprint: &str,
    code: &str,
    now: i64,
) -> Result<Option<Signup>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM signups WHERE fingerprint = ?1 AND key_code = ?3 AND {OPEN}"
    );
    Ok(conn
        .query_row(&sql, params![fingerprint, now, code], from_row)
        .optional()?)
}

/// Records that the signup's key proved itself.
pub fn confirm_key(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE signups SET key_confirmed_at = ?2 WHERE id = ?1 AND key_confirmed_at IS NULL",
        params![id, now],
    )?;
    Ok(())
}

/// The newest signup for a user id, whatever its state.
pub fn latest_for_user(conn: &Connection, user_id: &str) -> Result<Option<Signup>> {
    let sql = format!("SELECT {COLUMNS} FROM signups WHERE user_id = ?1 ORDER BY id DESC LIMIT 1");
    Ok(conn.query_row(&sql, [user_id], from_row).optional()?)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<Signup>> {
    let sql = format!("SELECT {COLUMNS} FROM signups WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], from_row).optional()?)
}

pub fn by_token(conn: &Connection, token_hash: &str) -> Result<Option<Signup>> {
    let sql = format!("SELECT {COLUMNS} FROM signups WHERE token_hash = ?1");
    Ok(conn.query_row(&sql, [token_hash], from_row).optional()?)
}

pub fn by_status(conn: &Connection, status_hash: &str) -> Result<Option<Signup>> {
    let sql = format!("SELECT {COLUMNS} FROM signups WHERE status_hash = ?1");
    Ok(conn.query_row(&sql, [status_hash], from_row).optional()?)
}

/// `pending_email` → `pending_approval`, using up the token. False if it was not pending.
pub fn confirm(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE signups SET state = 'pending_approval', confirmed_at = ?2
         WHERE id = ?1 AND state = 'pending_email'",
        params![id, now],
    )? == 1)
}

/// Records the decision on an open signup. False if it was already decided.
pub fn decide(
    conn: &Connection,
    id: i64,
    state: State,
    by: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE signups SET state = ?2, decided_by = ?3, decided_at = ?4, decision_reason = ?5
         WHERE id = ?1 AND state IN ('pending_email', 'pending_approval')",
        params![id, state.as_str(), by, now, reason],
    )? == 1)
}

/// Signups, newest first; only open ones unless `all`.
pub fn list(conn: &Connection, all: bool) -> Result<Vec<Signup>> {
    let filter = if all {
        ""
    } else {
        "WHERE state IN ('pending_email', 'pending_approval')"
    };
    let sql = format!("SELECT {COLUMNS} FROM signups {filter} ORDER BY id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many signups came from `email` since `since`.
pub fn count_for_email_since(conn: &Connection, email: &str, since: i64) -> Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM signups WHERE email = ?1 COLLATE NOCASE AND created_at >= ?2",
        params![email, since],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Deletes unconfirmed signups created before `before`; returns the user ids removed.
pub fn prune_unconfirmed(conn: &Connection, before: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "DELETE FROM signups WHERE state = 'pending_email' AND created_at < ?1 RETURNING user_id",
    )?;
    let rows = stmt.query_map([before], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
