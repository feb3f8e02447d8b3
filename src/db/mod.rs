//! SQLite state: opening, migrations, and one module per table family.

pub mod audit;
pub mod images;
pub mod mail;
pub mod networks;
pub mod quotas;
pub mod signups;
pub mod snapshots;
pub mod users;
pub mod vms;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};

/// Numbered migrations; a released one is never edited, only followed by a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/0001_create_users.sql"),
    include_str!("sql/0002_create_vms.sql"),
    include_str!("sql/0003_create_snapshots.sql"),
    include_str!("sql/0004_create_signups.sql"),
    include_str!("sql/0005_user_serials.sql"),
    include_str!("sql/0006_pending_keys.sql"),
];

/// Writers wait this long for each other before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn open(path: &Path) -> Result<Connection> {
    // The database holds every tenant's keys: made private before SQLite opens it, as
    // its WAL and shared memory then are (SQLite gives them the database's mode). What
    // stops this stops SQLite too, which says so in its own words.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let conn = Connection::open(path).map_err(|source| Error::DatabaseOpen {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn)?;
    Ok(conn)
}

pub fn schema_version(conn: &Connection) -> Result<usize> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok(v as usize)
}

/// Applies every migration newer than `user_version`, each in its own transaction.
pub fn migrate(conn: &Connection) -> Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

pub fn migrate_to(conn: &Connection, target: usize) -> Result<()> {
    let current = schema_version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(Error::conflict(
            format!(
                "the database schema ({current}) is newer than this basphere ({})",
                MIGRATIONS.len()
            ),
            Some("upgrade basphere"),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        // IMMEDIATE so two processes starting at once do not both apply it.
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        if schema_version(&tx)? > i {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Runs `f` inside `BEGIN IMMEDIATE`: the write lock is taken before anything is read.
pub fn immediate<T>(
    conn: &Connection,
    f: impl FnOnce(&rusqlite::Transaction) -> Result<T>,
) -> Result<T> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = open(&path).unwrap();
        let before = tables(&conn);
        migrate(&conn).unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        assert_eq!(tables(&conn), before);
        assert_eq!(schema_version(&conn).unwrap(), MIGRATIONS.len());
        assert!(before.contains(&"vms".to_string()));
    }

    #[test]
    fn opens_a_database_written_by_an_older_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            migrate_to(&conn, 1).unwrap();
            conn.execute(
                "INSERT INTO users (id, email, role, state, created_at) VALUES ('alice', 'a@example.com', 'user', 'active', 1)",
                [],
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), MIGRATIONS.len());
        let email: String = conn
            .query_row("SELECT email FROM users WHERE id = 'alice'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(email, "a@example.com");
        assert!(tables(&conn).contains(&"vms".to_string()));
        assert_eq!(serial(&conn, "alice"), 1, "an existing user gets a serial");
    }

    fn serial(conn: &Connection, id: &str) -> i64 {
        conn.query_row("SELECT serial FROM users WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn user_serials_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("db")).unwrap();
        let add = |id: &str| {
            let user = users::NewUser {
                id,
                email: "x@example.com",
                role: users::Role::User,
            };
            users::insert(&conn, &user, 0).unwrap();
        };
        add("alice");
        add("carol");
        let first = serial(&conn, "carol");
        conn.execute("DELETE FROM users WHERE id = 'carol'", [])
            .unwrap();
        add("carol");
        assert!(serial(&conn, "carol") > first);
        assert!(serial(&conn, "alice") < first);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = open(&path).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        assert!(open(&path).is_err());
    }

    #[test]
    fn uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("db")).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
