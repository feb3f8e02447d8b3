//! The catalogue of base images.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Image {
    pub name: String,
    pub path: String,
    pub format: String,
    pub virtual_size: u64,
    pub os_user: String,
    pub created_at: i64,
}

pub struct NewImage<'a> {
    pub name: &'a str,
    pub path: &'a str,
    pub format: &'a str,
    pub virtual_size: u64,
    pub os_user: &'a str,
}

const COLUMNS: &str = "name, path, format, virtual_size, os_user, created_at";

fn from_row(row: &Row) -> rusqlite::Result<Image> {
    Ok(Image {
        name: row.get(0)?,
        path: row.get(1)?,
        format: row.get(2)?,
        virtual_size: row.get::<_, i64>(3)? as u64,
        os_user: row.get(4)?,
        created_at: row.get(5)?,
    })
}

pub fn insert(conn: &Connection, image: &NewImage, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO images (name, path, format, virtual_size, os_user, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![image.name, image.path, image.format, image.virtual_size as i64, image.os_user, now],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<Image>> {
    let sql = format!("SELECT {COLUMNS} FROM images WHERE name = ?1");
    Ok(conn.query_row(&sql, [name], from_row).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Image>> {
    let sql = format!("SELECT {COLUMNS} FROM images ORDER BY name");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn users_of(conn: &Connection, name: &str) -> Result<u64> {
    Ok(
        conn.query_row("SELECT COUNT(*) FROM vms WHERE image = ?1", [name], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

pub fn delete(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM images WHERE name = ?1", [name])? == 1)
}
