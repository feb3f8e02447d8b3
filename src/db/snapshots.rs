//! Snapshot rows: the record of each VM's snapshots, kept in step with libvirt.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::db::vms::State;
use crate::error::Result;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Snapshot {
    pub id: i64,
    pub vm_id: String,
    pub owner: String,
    /// The VM's name, joined in for display.
    pub vm: String,
    pub name: String,
    pub state: State,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub description: String,
    /// Guest RAM the snapshot stores (a snapshot of a running VM), held against the
    /// disk quota.
    pub memory_bytes: u64,
}

pub struct NewSnapshot<'a> {
    pub vm_id: &'a str,
    pub owner: &'a str,
    pub name: &'a str,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub description: &'a str,
    pub memory_bytes: u64,
}

const SELECT: &str = "SELECT s.id, s.vm_id, s.owner, v.name, s.name, s.state, s.created_at, s.expires_at, s.description, s.memory_bytes
     FROM snapshots s JOIN vms v ON v.id = s.vm_id";

fn from_row(row: &Row) -> rusqlite::Result<Snapshot> {
    Ok(Snapshot {
        id: row.get(0)?,
        vm_id: row.get(1)?,
        owner: row.get(2)?,
        vm: row.get(3)?,
        name: row.get(4)?,
        state: State::parse(&row.get::<_, String>(5)?),
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        description: row.get(8)?,
        memory_bytes: row.get::<_, i64>(9)? as u64,
    })
}

/// Inserts a snapshot in state `creating`, or `ready` when `ready` (an adopted one).
pub fn insert(conn: &Connection, s: &NewSnapshot, ready: bool) -> Result<i64> {
    conn.execute(
        "INSERT INTO snapshots (vm_id, owner, name, state, created_at, expires_at, description, memory_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            s.vm_id,
            s.owner,
            s.name,
            if ready { "ready" } else { "creating" },
            s.created_at,
            s.expires_at,
            s.description,
            s.memory_bytes as i64
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn get(conn: &Connection, vm_id: &str, name: &str) -> Result<Option<Snapshot>> {
    let sql = format!("{SELECT} WHERE s.vm_id = ?1 AND s.name = ?2");
    Ok(conn.query_row(&sql, [vm_id, name], from_row).optional()?)
}

/// Snapshots of one VM, of one owner, or of everyone; oldest first within a VM.
pub fn list(conn: &Connection, owner: Option<&str>, vm_id: Option<&str>) -> Result<Vec<Snapshot>> {
    let sql = format!(
        "{SELECT} WHERE (?1 IS NULL OR s.owner = ?1) AND (?2 IS NULL OR s.vm_id = ?2)
         ORDER BY s.owner, v.name, s.created_at, s.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![owner, vm_id], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn count_for_owner(conn: &Connection, owner: &str) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM snapshots WHERE owner = ?1",
        [owner],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

pub fn set_state(conn: &Connection, id: i64, state: State) -> Result<()> {
    conn.execute(
        "UPDATE snapshots SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Sets what the snapshot holds of guest RAM, once libvirt says what it stored.
pub fn set_memory(conn: &Connection, id: i64, memory_bytes: u64) -> Result<()> {
    conn.execute(
        "UPDATE snapshots SET memory_bytes = ?2 WHERE id = ?1",
        params![id, memory_bytes as i64],
    )?;
    Ok(())
}

pub fn delete(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn.execute("DELETE FROM snapshots WHERE id = ?1", [id])? == 1)
}
