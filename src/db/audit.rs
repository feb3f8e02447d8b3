//! The audit log: who changed what, when, and how it ended.

use rusqlite::{params, Connection, Row};

use crate::error::Result;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub via: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: String,
}

pub struct NewEntry<'a> {
    pub actor: &'a str,
    pub via: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub result: &'a str,
    pub detail: &'a str,
}

pub fn insert(conn: &Connection, e: &NewEntry, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, via, action, target, result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![now, e.actor, e.via, e.action, e.target, e.result, e.detail])?;
    Ok(())
}

/// Deletes those of the `batch` oldest entries (by id) that were written before
/// `before`. Looking at the oldest few alone keeps this cheap on every write however
/// long the log is; entries are written in time order, so the oldest go first.
pub fn prune_before(conn: &Connection, before: i64, batch: u32) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM audit_log
             WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT ?2) AND at < ?1",
        )?
        .execute(params![before, batch])?)
}

fn from_row(row: &Row) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        via: row.get(3)?,
        action: row.get(4)?,
        target: row.get(5)?,
        result: row.get(6)?,
        detail: row.get(7)?,
    })
}

/// The newest `limit` entries, oldest first; with `user`, those by or about that user.
pub fn recent(conn: &Connection, user: Option<&str>, limit: u32) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = match user {
        Some(user) => {
            let mut stmt = conn.prepare(
                "SELECT id, at, actor, via, action, target, result, detail FROM audit_log
                 WHERE actor = ?1 OR target = ?1 OR target LIKE ?2 ESCAPE '\\'
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let prefix = format!(
                "{}/%",
                user.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            let rows = stmt.query_map(params![user, prefix, limit], from_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
        None => {
            let mut stmt = conn.prepare(
                "SELECT id, at, actor, via, action, target, result, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], from_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
    };
    entries.reverse();
    Ok(entries)
}
