//! The audit log: writing an entry (and forgetting those past `audit.retention`), and
//! reading it.

use rusqlite::Connection;

use crate::config::Config;
use crate::context::Context;
use crate::db;
use crate::db::audit::{Entry, NewEntry};
use crate::error::Result;

/// Old entries each write deletes at most: more than any burst of writes adds, so a
/// log that was long kept shrinks to its retention within a few writes.
const PRUNE_BATCH: u32 = 100;

/// Writes `entry`, and deletes entries older than `audit.retention`.
pub fn record(conn: &Connection, config: &Config, entry: &NewEntry) -> Result<()> {
    let now = crate::hooks::now();
    db::audit::insert(conn, entry, now)?;
    if let Some(keep) = config.audit_retention.secs() {
        db::audit::prune_before(conn, now - keep as i64, PRUNE_BATCH)?;
    }
    Ok(())
}

pub fn recent(ctx: &Context, user: Option<&str>, limit: u32) -> Result<Vec<Entry>> {
    db::audit::recent(ctx.db()?, user, limit)
}
