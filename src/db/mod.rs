//! SQLite state: opening, migrations, and one module per table family.

pub mod audit;
pub mod images;
pub mod installation;
pub mod jobs;
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

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

/// Numbered migrations; a released one is never edited, only followed by a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/0001_create_users.sql"),
    include_str!("sql/0002_create_vms.sql"),
    include_str!("sql/0003_create_snapshots.sql"),
    include_str!("sql/0004_create_signups.sql"),
    include_str!("sql/0005_user_serials.sql"),
    include_str!("sql/0006_pending_keys.sql"),
    include_str!("sql/0007_create_installation.sql"),
    include_str!("sql/0008_snapshot_memory.sql"),
    include_str!("sql/0009_create_jobs.sql"),
];

/// Writers wait this long for each other before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens the database at `path` and applies any newer migrations. A missing database is
/// an error, never created here: a wrong `--data-dir` must not look like an empty
/// installation. Only [`create`] makes one.
pub fn open(path: &Path) -> Result<Connection> {
    let missing = || Error::NoDatabase {
        dir: path.parent().unwrap_or(path).to_owned(),
    };
    if !path.exists() {
        return Err(missing());
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = connect(path, flags)?;
    // A file no basphere ever migrated (empty, or left by an `admin init` that was
    // killed at once) is no database either.
    if schema_version(&conn)? == 0 {
        return Err(missing());
    }
    configure(&conn)?;
    migrate(&conn)?;
    Ok(conn)
}

/// The schema version this basphere writes: the number of its migrations.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}

/// Opens the database at `path` whatever its schema version, to read only and migrate
/// nothing: for looking at an installation without changing it. SQLite refuses every
/// write through it (`query_only`). It is opened read-write where the caller may, all
/// the same, because SQLite removes the WAL files when the last such connection closes;
/// a connection opened read-only leaves them behind.
pub fn open_unmigrated(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::NoDatabase {
            dir: path.parent().unwrap_or(path).to_owned(),
        });
    }
    let read_write = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match connect(path, read_write) {
        Ok(conn) => conn,
        Err(_) => connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
    };
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Creates the database at `path` (its directory must exist), readable by its owner
/// only, and applies every migration; the first makes the installation id. Returns the
/// connection, and whether the database is new: an existing one is only migrated.
pub fn create(path: &Path) -> Result<(Connection, bool)> {
    // The file is made first, with its mode, so the keys it will hold are never readable
    // by others, not even for a moment.
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match made {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot create the database `{}`", path.display()),
                e,
            ))
        }
    }
    let conn = connect(path, OpenFlags::default())?;
    let fresh = schema_version(&conn)? == 0;
    configure(&conn)?;
    migrate(&conn)?;
    Ok((conn, fresh))
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags).map_err(|source| Error::DatabaseOpen {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
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
        let (conn, fresh) = create(&path).unwrap();
        assert!(fresh);
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
        let id = installation::id(&conn).unwrap();
        assert!(
            id.len() == 32
                && id
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "an upgraded database gets an installation id: {id}"
        );
    }

    /// A typo in `--data-dir` once made a fresh, empty installation there.
    #[test]
    fn open_never_creates_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("basphere.db");
        let err = open(&path).unwrap_err();
        assert!(matches!(err, Error::NoDatabase { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("no basphere database at `{}`", dir.path().display())
        );
        assert!(!path.exists());
        // An empty file (an `admin init` killed at once) is no database either.
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(open(&path), Err(Error::NoDatabase { .. })));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn create_makes_one_installation_and_then_keeps_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("basphere.db");
        let (conn, fresh) = create(&path).unwrap();
        assert!(fresh);
        let id = installation::id(&conn).unwrap();
        drop(conn);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (conn, fresh) = create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(installation::id(&conn).unwrap(), id);
        assert_eq!(installation::id(&open(&path).unwrap()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        let (conn, _) = create(&other.path().join("basphere.db")).unwrap();
        assert_ne!(installation::id(&conn).unwrap(), id);
        // One row, whatever anyone tries.
        assert!(conn
            .execute(
                "INSERT INTO installation (singleton, id) VALUES (2, 'x')",
                []
            )
            .is_err());
    }

    fn serial(conn: &Connection, id: &str) -> i64 {
        conn.query_row("SELECT serial FROM users WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn user_serials_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = create(&dir.path().join("db")).unwrap();
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
            let (conn, _) = create(&path).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        assert!(open(&path).is_err());
    }

    #[test]
    fn uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = create(&dir.path().join("db")).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
