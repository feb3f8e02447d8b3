//! Users and their SSH keys.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// The role a row names; only `admin` is one.
    fn of(text: &str) -> Role {
        match text {
            "admin" => Role::Admin,
            _ => Role::User,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub role: Role,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Key {
    pub fingerprint: String,
    pub user_id: String,
    pub algorithm: String,
    pub public_key: String,
    pub comment: String,
    pub created_at: i64,
}

pub struct NewKey<'a> {
    pub fingerprint: &'a str,
    pub user_id: &'a str,
    pub algorithm: &'a str,
    pub public_key: &'a str,
    pub comment: &'a str,
}

const USER_COLUMNS: &str = "id, email, role, state, created_at";

fn user_from_row(row: &Row) -> rusqlite::Result<User> {
    let role: String = row.get(2)?;
    let state: String = row.get(3)?;
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        role: Role::of(&role),
        disabled: state == "disabled",
        created_at: row.get(4)?,
    })
}

/// Adds a user; the database gives it the next serial.
pub fn insert(conn: &Connection, user: &NewUser, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO users (id, email, role, state, created_at) VALUES (?1, ?2, ?3, 'active', ?4)",
        params![user.id, user.email, user.role.as_str(), now],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], user_from_row).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], user_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_disabled(conn: &Connection, id: &str, disabled: bool) -> Result<bool> {
    let state = if disabled { "disabled" } else { "active" };
    Ok(conn.execute(
        "UPDATE users SET state = ?2 WHERE id = ?1",
        params![id, state],
    )? == 1)
}

/// Gives user `id` another email and role (`admin init --force` for its first administrator).
pub fn set_email_and_role(conn: &Connection, id: &str, email: &str, role: Role) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE users SET email = ?2, role = ?3 WHERE id = ?1",
        params![id, email, role.as_str()],
    )? == 1)
}

pub fn delete(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id])? == 1)
}

pub fn exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM users WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

const KEY_COLUMNS: &str = "fingerprint, user_id, algorithm, public_key, comment, created_at";

fn key_from_row(row: &Row) -> rusqlite::Result<Key> {
    Ok(Key {
        fingerprint: row.get(0)?,
        user_id: row.get(1)?,
        algorithm: row.get(2)?,
        public_key: row.get(3)?,
        comment: row.get(4)?,
        created_at: row.get(5)?,
    })
}

pub fn insert_key(conn: &Connection, key: &NewKey, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO ssh_keys (fingerprint, user_id, algorithm, public_key, comment, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.fingerprint,
            key.user_id,
            key.algorithm,
            key.public_key,
            key.comment,
            now
        ],
    )?;
    Ok(())
}

pub fn keys(conn: &Connection, user_id: &str) -> Result<Vec<Key>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM ssh_keys WHERE user_id = ?1 ORDER BY created_at, fingerprint"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([user_id], key_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn key_by_fingerprint(conn: &Connection, fingerprint: &str) -> Result<Option<Key>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM ssh_keys WHERE fingerprint = ?1");
    Ok(conn
        .query_row(&sql, [fingerprint], key_from_row)
        .optional()?)
}

pub fn key_counts(conn: &Connection) -> Result<std::collections::HashMap<String, u64>> {
    let mut stmt = conn.prepare("SELECT user_id, COUNT(*) FROM ssh_keys GROUP BY user_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Who a key belongs to, for the SSH front doors: one indexed lookup by fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOwner {
    pub user_id: String,
    /// The user's serial, never reused.
    pub serial: i64,
    pub role: Role,
    pub disabled: bool,
    /// `type base64`, as stored.
    pub public_key: String,
}

pub fn key_owner(conn: &Connection, fingerprint: &str) -> Result<Option<KeyOwner>> {
    let mut stmt = conn.prepare_cached(
        "SELECT k.user_id, u.state, k.public_key, u.serial, u.role
         FROM ssh_keys k JOIN users u ON u.id = k.user_id
         WHERE k.fingerprint = ?1",
    )?;
    Ok(stmt
        .query_row([fingerprint], |r| {
            Ok(KeyOwner {
                user_id: r.get(0)?,
                disabled: r.get::<_, String>(1)? == "disabled",
                public_key: r.get(2)?,
                serial: r.get(3)?,
                role: Role::of(&r.get::<_, String>(4)?),
            })
        })
        .optional()?)
}

pub fn key_count(conn: &Connection, user_id: &str) -> Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM ssh_keys WHERE user_id = ?1",
        [user_id],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Deletes one of `user_id`'s keys; false when that user has no such key.
pub fn delete_key(conn: &Connection, user_id: &str, fingerprint: &str) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM ssh_keys WHERE user_id = ?1 AND fingerprint = ?2",
        [user_id, fingerprint],
    )? == 1)
}

/// A key added but not yet proven by a connection authenticated with it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PendingKey {
    pub id: i64,
    pub fingerprint: String,
    pub user_id: String,
    pub algorithm: String,
    pub public_key: String,
    pub comment: String,
    #[serde(skip)]
    pub code_hash: String,
    #[serde(skip)]
    pub attempts: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

const PENDING_COLUMNS: &str = "id, fingerprint, user_id, algorithm, public_key, comment, code_hash, attempts, created_at, expires_at";

fn pending_from_row(row: &Row) -> rusqlite::Result<PendingKey> {
    Ok(PendingKey {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        user_id: row.get(2)?,
        algorithm: row.get(3)?,
        public_key: row.get(4)?,
        comment: row.get(5)?,
        code_hash: row.get(6)?,
        attempts: row.get(7)?,
        created_at: row.get(8)?,
        expires_at: row.get(9)?,
    })
}

/// Stores `key` as pending for its user, replacing one pending before for that user.
pub fn insert_pending_key(
    conn: &Connection,
    key: &NewKey,
    code_hash: &str,
    now: i64,
    expires_at: i64,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO pending_keys
             (fingerprint, user_id, algorithm, public_key, comment, code_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            key.fingerprint,
            key.user_id,
            key.algorithm,
            key.public_key,
            key.comment,
            code_hash,
            now,
            expires_at
        ],
    )?;
    Ok(())
}

/// The keys waiting for proof with this fingerprint, of any user, not expired.
pub fn pending_by_fingerprint(
    conn: &Connection,
    fingerprint: &str,
    now: i64,
) -> Result<Vec<PendingKey>> {
    let sql = format!(
        "SELECT {PENDING_COLUMNS} FROM pending_keys WHERE fingerprint = ?1 AND expires_at > ?2 ORDER BY id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![fingerprint, now], pending_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One user's keys waiting for proof, not expired.
pub fn pending_keys(conn: &Connection, user_id: &str, now: i64) -> Result<Vec<PendingKey>> {
    let sql = format!(
        "SELECT {PENDING_COLUMNS} FROM pending_keys WHERE user_id = ?1 AND expires_at > ?2 ORDER BY id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![user_id, now], pending_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Counts a wrong code against every pending key with this fingerprint; those that had
/// `max` wrong codes are dropped.
pub fn pending_wrong_code(conn: &Connection, fingerprint: &str, max: i64) -> Result<()> {
    conn.execute(
        "UPDATE pending_keys SET attempts = attempts + 1 WHERE fingerprint = ?1",
        [fingerprint],
    )?;
    conn.execute(
        "DELETE FROM pending_keys WHERE fingerprint = ?1 AND attempts >= ?2",
        params![fingerprint, max],
    )?;
    Ok(())
}

/// Drops pending keys: all with this fingerprint, or only one user's.
pub fn delete_pending(
    conn: &Connection,
    fingerprint: &str,
    user_id: Option<&str>,
) -> Result<usize> {
    Ok(match user_id {
        Some(user) => conn.execute(
            "DELETE FROM pending_keys WHERE fingerprint = ?1 AND user_id = ?2",
            params![fingerprint, user],
        )?,
        None => conn.execute(
            "DELETE FROM pending_keys WHERE fingerprint = ?1",
            [fingerprint],
        )?,
    })
}
