//! The mail outbox: every message is stored here before anything tries to send it.

use rusqlite::{params, Connection, Row};

use crate::error::Result;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Mail {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    #[serde(skip)]
    pub body: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
}

pub struct NewMail<'a> {
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

const COLUMNS: &str =
    "id, recipient, subject, body, created_at, attempts, next_attempt_at, last_error, sent_at";

fn from_row(row: &Row) -> rusqlite::Result<Mail> {
    Ok(Mail {
        id: row.get(0)?,
        recipient: row.get(1)?,
        subject: row.get(2)?,
        body: row.get(3)?,
        created_at: row.get(4)?,
        attempts: row.get(5)?,
        next_attempt_at: row.get(6)?,
        last_error: row.get(7)?,
        sent_at: row.get(8)?,
    })
}

pub fn insert(conn: &Connection, m: &NewMail, now: i64) -> Result<i64> {
    conn.execute(
        "INSERT INTO mail_outbox (recipient, subject, body, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![m.recipient, m.subject, m.body, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Unsent mail, oldest first; with `all`, sent mail too.
pub fn list(conn: &Connection, all: bool) -> Result<Vec<Mail>> {
    let filter = if all { "" } else { "WHERE sent_at IS NULL" };
    let sql = format!("SELECT {COLUMNS} FROM mail_outbox {filter} ORDER BY id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Takes the unsent mail due by `due` (or `only` these ids) and leases it until `lease_until`,
/// so a second sender running at the same time leaves it alone.
pub fn claim(
    conn: &Connection,
    due: i64,
    lease_until: i64,
    only: Option<&[i64]>,
) -> Result<Vec<Mail>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= ?1 ORDER BY id LIMIT 100"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mails: Vec<Mail> = stmt
        .query_map([due], from_row)?
        .collect::<rusqlite::Result<Vec<Mail>>>()?
        .into_iter()
        .filter(|m| only.is_none_or(|ids| ids.contains(&m.id)))
        .collect();
    for m in &mails {
        conn.execute(
            "UPDATE mail_outbox SET next_attempt_at = ?2 WHERE id = ?1",
            params![m.id, lease_until],
        )?;
    }
    Ok(mails)
}

pub fn mark_sent(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE mail_outbox SET sent_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

pub fn mark_failed(conn: &Connection, id: i64, error: &str, next_attempt_at: i64) -> Result<()> {
    conn.execute(
        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
        params![id, error, next_attempt_at],
    )?;
    Ok(())
}
