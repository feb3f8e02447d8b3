//! Per-user limits; a missing value falls back to the configured default.

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::Limits;
use crate::error::Result;

/// What an admin set for one user; `None` keeps the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub cpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub vms: Option<u64>,
    pub snapshots: Option<u64>,
    /// Expiry of snapshots made without `--expire`, in seconds; 0 is "never".
    pub snapshot_expire_secs: Option<u64>,
    /// How many snapshots per VM a prune keeps.
    pub snapshot_keep_last: Option<u64>,
}

impl Overrides {
    pub fn apply(&self, defaults: Limits) -> Limits {
        Limits {
            cpus: self.cpus.unwrap_or(defaults.cpus),
            memory_mib: self.memory_mib.unwrap_or(defaults.memory_mib),
            disk_bytes: self.disk_bytes.unwrap_or(defaults.disk_bytes),
            vms: self.vms.unwrap_or(defaults.vms),
            snapshots: self.snapshots.unwrap_or(defaults.snapshots),
            snapshot_expire_secs: self
                .snapshot_expire_secs
                .unwrap_or(defaults.snapshot_expire_secs),
            snapshot_keep_last: self
                .snapshot_keep_last
                .unwrap_or(defaults.snapshot_keep_last),
        }
    }
}

fn opt(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
}

pub fn get(conn: &Connection, user_id: &str) -> Result<Overrides> {
    let row = conn
        .query_row(
            "SELECT cpus, memory_mib, disk_bytes, vms, snapshots, snapshot_expire_secs, snapshot_keep_last
             FROM quotas WHERE user_id = ?1",
            [user_id],
            |r| {
                Ok(Overrides {
                    cpus: opt(r.get(0)?),
                    memory_mib: opt(r.get(1)?),
                    disk_bytes: opt(r.get(2)?),
                    vms: opt(r.get(3)?),
                    snapshots: opt(r.get(4)?),
                    snapshot_expire_secs: opt(r.get(5)?),
                    snapshot_keep_last: opt(r.get(6)?),
                })
            },
        )
        .optional()?;
    Ok(row.unwrap_or_default())
}

pub fn set(conn: &Connection, user_id: &str, q: &Overrides) -> Result<()> {
    let i = |v: Option<u64>| v.map(|n| n as i64);
    conn.execute(
        "INSERT INTO quotas (user_id, cpus, memory_mib, disk_bytes, vms, snapshots, snapshot_expire_secs, snapshot_keep_last)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id) DO UPDATE SET
           cpus = excluded.cpus, memory_mib = excluded.memory_mib, disk_bytes = excluded.disk_bytes,
           vms = excluded.vms, snapshots = excluded.snapshots,
           snapshot_expire_secs = excluded.snapshot_expire_secs, snapshot_keep_last = excluded.snapshot_keep_last",
        params![
            user_id,
            i(q.cpus),
            i(q.memory_mib),
            i(q.disk_bytes),
            i(q.vms),
            i(q.snapshots),
            i(q.snapshot_expire_secs),
            i(q.snapshot_keep_last)
        ],
    )?;
    Ok(())
}
