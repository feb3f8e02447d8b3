//! The runner's record of each periodic job: when it last started, ended and succeeded.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Job {
    pub name: String,
    pub last_start: Option<i64>,
    pub last_end: Option<i64>,
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub runs: i64,
    pub consecutive_failures: i64,
}

const COLUMNS: &str = "name, last_start, last_end, last_success, last_error, \
    last_duration_ms, runs, consecutive_failures";

fn from_row(row: &Row) -> rusqlite::Result<Job> {
    Ok(Job {
        name: row.get(0)?,
        last_start: row.get(1)?,
        last_end: row.get(2)?,
        last_success: row.get(3)?,
        last_error: row.get(4)?,
        last_duration_ms: row.get(5)?,
        runs: row.get(6)?,
        consecutive_failures: row.get(7)?,
    })
}

/// Records that `name` started at `now`.
pub fn started(conn: &Connection, name: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO jobs (name, last_start) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET last_start = excluded.last_start",
        params![name, now],
    )?;
    Ok(())
}

/// Records how the run of `name` that started last ended: `error` is `None` on success.
pub fn finished(
    conn: &Connection,
    name: &str,
    now: i64,
    duration_ms: i64,
    error: Option<&str>,
) -> Result<()> {
    conn.execute(
        "INSERT INTO jobs (name, last_start) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        params![name, now],
    )?;
    conn.execute(
        "UPDATE jobs SET last_end = ?2, last_duration_ms = ?3, last_error = ?4,
             runs = runs + 1,
             last_success = CASE WHEN ?4 IS NULL THEN ?2 ELSE last_success END,
             consecutive_failures = CASE WHEN ?4 IS NULL THEN 0 ELSE consecutive_failures + 1 END
         WHERE name = ?1",
        params![name, now, duration_ms, error],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<Job>> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE name = ?1");
    Ok(conn.query_row(&sql, [name], from_row).optional()?)
}

/// Every job that has run, by name.
pub fn list(conn: &Connection) -> Result<Vec<Job>> {
    let sql = format!("SELECT {COLUMNS} FROM jobs ORDER BY name");
    let mut stmt = conn.prepare(&sql)?;
    let jobs = stmt.query_map([], from_row)?;
    Ok(jobs.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("sql/0009_create_jobs.sql"))
            .unwrap();
        conn
    }

    #[test]
    fn a_failure_keeps_the_last_success_and_a_success_clears_the_count() {
        let conn = conn();
        started(&conn, "prune", 100).unwrap();
        finished(&conn, "prune", 101, 1000, None).unwrap();
        started(&conn, "prune", 200).unwrap();
        finished(&conn, "prune", 202, 2000, Some("libvirt is down")).unwrap();
        let job = get(&conn, "prune").unwrap().unwrap();
        assert_eq!(job.last_success, Some(101));
        assert_eq!(job.last_error.as_deref(), Some("libvirt is down"));
        assert_eq!((job.runs, job.consecutive_failures), (2, 1));
        started(&conn, "prune", 300).unwrap();
        finished(&conn, "prune", 300, 5, None).unwrap();
        let job = get(&conn, "prune").unwrap().unwrap();
        assert_eq!((job.last_success, job.last_error), (Some(300), None));
        assert_eq!((job.runs, job.consecutive_failures), (3, 0));
        assert_eq!(list(&conn).unwrap().len(), 1);
    }
}
