//! The installation this database belongs to.

use rusqlite::Connection;

use crate::error::Result;

/// This installation's id: 32 lowercase hex digits, made with the database.
pub fn id(conn: &Connection) -> Result<String> {
    Ok(
        conn.query_row("SELECT id FROM installation WHERE singleton = 1", [], |r| {
            r.get(0)
        })?,
    )
}
