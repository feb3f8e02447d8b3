//! Tenant networks: one /24 of the pool per user.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Network {
    pub idx: u32,
    pub user_id: String,
    pub name: String,
    pub bridge: String,
    /// The network address, e.g. `10.100.3.0`.
    pub subnet: String,
}

const COLUMNS: &str = "idx, user_id, name, bridge, subnet";

fn from_row(row: &Row) -> rusqlite::Result<Network> {
    Ok(Network {
        idx: row.get::<_, i64>(0)? as u32,
        user_id: row.get(1)?,
        name: row.get(2)?,
        bridge: row.get(3)?,
        subnet: row.get(4)?,
    })
}

pub fn for_user(conn: &Connection, user_id: &str) -> Result<Option<Network>> {
    let sql = format!("SELECT {COLUMNS} FROM networks WHERE user_id = ?1");
    Ok(conn.query_row(&sql, [user_id], from_row).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Network>> {
    let sql = format!("SELECT {COLUMNS} FROM networks ORDER BY idx");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The lowest pool index no network uses yet.
pub fn free_index(conn: &Connection) -> Result<u32> {
    let mut stmt = conn.prepare("SELECT idx FROM networks ORDER BY idx")?;
    let used = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    let mut next = 0i64;
    for idx in used {
        if idx? != next {
            break;
        }
        next += 1;
    }
    Ok(next as u32)
}

pub fn insert(conn: &Connection, net: &Network) -> Result<()> {
    conn.execute(
        "INSERT INTO networks (idx, user_id, name, bridge, subnet) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            net.idx as i64,
            net.user_id,
            net.name,
            net.bridge,
            net.subnet
        ],
    )?;
    Ok(())
}
