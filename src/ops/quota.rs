//! Quotas: limits per user and the check that keeps usage within them.

use rusqlite::Connection;

use crate::config::{Config, Limits};
use crate::context::Context;
use crate::db;
use crate::db::vms::Usage;
use crate::error::{Error, Result};
use crate::validate::Size;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Standing {
    pub user: String,
    pub limits: Limits,
    pub usage: Usage,
    pub snapshots: u64,
}

/// What a new VM, or a snapshot, would add to its owner's usage.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub vms: u64,
    pub cpus: u64,
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

impl Request {
    /// A snapshot that stores `memory_bytes` of guest RAM on the bastion's disk.
    pub fn snapshot(memory_bytes: u64) -> Request {
        Request {
            vms: 0,
            cpus: 0,
            memory_mib: 0,
            disk_bytes: memory_bytes,
        }
    }
}

pub fn limits_for(conn: &Connection, config: &Config, user: &str) -> Result<Limits> {
    Ok(db::quotas::get(conn, user)?.apply(config.limits()))
}

/// Refuses a request that would take any resource it asks for past its limit; what it
/// does not ask for is not checked (a snapshot needs no room for another VM).
pub fn check(limits: &Limits, usage: &Usage, req: &Request) -> Result<()> {
    let exceeded = |resource, limit: String, used: String, requested: String| {
        Err(Error::QuotaExceeded {
            resource,
            limit,
            used,
            requested,
        })
    };
    if req.vms > 0 && usage.vms + req.vms > limits.vms {
        return exceeded(
            "vms",
            limits.vms.to_string(),
            usage.vms.to_string(),
            req.vms.to_string(),
        );
    }
    if req.cpus > 0 && usage.cpus + req.cpus > limits.cpus {
        return exceeded(
            "cpus",
            limits.cpus.to_string(),
            usage.cpus.to_string(),
            req.cpus.to_string(),
        );
    }
    if req.memory_mib > 0 && usage.memory_mib + req.memory_mib > limits.memory_mib {
        let s = |m| Size::from_mib(m).to_string();
        return exceeded(
            "memory",
            s(limits.memory_mib),
            s(usage.memory_mib),
            s(req.memory_mib),
        );
    }
    if req.disk_bytes > 0 && usage.disk_bytes + req.disk_bytes > limits.disk_bytes {
        let s = |b| Size::from_bytes(b).to_string();
        return exceeded(
            "disk",
            s(limits.disk_bytes),
            s(usage.disk_bytes),
            s(req.disk_bytes),
        );
    }
    Ok(())
}

/// Refuses to write anything new (a VM's disk, a snapshot) to the data directory while
/// its free space is below `storage.min_free`: a full disk pauses every guest on it.
pub fn ensure_free_space(config: &Config) -> Result<()> {
    let free = free_space(&config.data_dir)?;
    let floor = config.storage_min_free;
    if free < floor.bytes() {
        return Err(Error::conflict(
            format!(
                "the bastion is short of disk space: {} free in the data directory, below `storage.min_free` ({floor}); nothing new is written there",
                Size::from_bytes(free)
            ),
            Some("an administrator frees space on the bastion (old snapshots, unused images) or lowers `storage.min_free`"),
        ));
    }
    Ok(())
}

/// The bytes an unprivileged writer may still use on the file system of `dir`.
pub fn free_space(dir: &std::path::Path) -> Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        Error::io(
            format!("cannot read the free space of `{}`", dir.display()),
            e.into(),
        )
    })?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

pub fn show(ctx: &Context, user: &str) -> Result<Standing> {
    if !db::users::exists(ctx.db()?, user)? {
        return Err(Error::not_found("user", user));
    }
    Ok(Standing {
        user: user.to_owned(),
        limits: limits_for(ctx.db()?, &ctx.config, user)?,
        usage: db::vms::usage(ctx.db()?, user)?,
        snapshots: db::snapshots::count_for_owner(ctx.db()?, user)?,
    })
}

/// Changes some of a user's limits; the others keep their current value.
pub fn set(ctx: &Context, user: &str, change: &db::quotas::Overrides) -> Result<Standing> {
    let outcome = db::immediate(ctx.db()?, |tx| {
        if !db::users::exists(tx, user)? {
            return Err(Error::not_found("user", user));
        }
        let current = db::quotas::get(tx, user)?;
        let merged = db::quotas::Overrides {
            cpus: change.cpus.or(current.cpus),
            memory_mib: change.memory_mib.or(current.memory_mib),
            disk_bytes: change.disk_bytes.or(current.disk_bytes),
            vms: change.vms.or(current.vms),
            snapshots: change.snapshots.or(current.snapshots),
            snapshot_expire_secs: change.snapshot_expire_secs.or(current.snapshot_expire_secs),
            snapshot_keep_last: change.snapshot_keep_last.or(current.snapshot_keep_last),
        };
        db::quotas::set(tx, user, &merged)
    });
    ctx.audit("quota.set", user, &outcome);
    outcome?;
    show(ctx, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            cpus: 4,
            memory_mib: 4096,
            disk_bytes: 100 << 30,
            vms: 2,
            snapshots: 1,
            snapshot_expire_secs: 0,
            snapshot_keep_last: 1,
        }
    }

    #[test]
    fn refuses_each_resource_with_numbers() {
        let usage = Usage {
            cpus: 3,
            memory_mib: 1024,
            disk_bytes: 10 << 30,
            vms: 1,
        };
        let req = Request {
            vms: 1,
            cpus: 2,
            memory_mib: 1024,
            disk_bytes: 10 << 30,
        };
        let err = check(&limits(), &usage, &req).unwrap_err().to_string();
        assert_eq!(err, "quota exceeded: cpus: limit 4, used 3, requested 2");
        let req = Request {
            vms: 1,
            cpus: 1,
            memory_mib: 4096,
            disk_bytes: 1,
        };
        let err = check(&limits(), &usage, &req).unwrap_err().to_string();
        assert_eq!(
            err,
            "quota exceeded: memory: limit 4G, used 1G, requested 4G"
        );
        let full = Usage { vms: 2, ..usage };
        assert!(check(
            &limits(),
            &full,
            &Request {
                vms: 1,
                cpus: 1,
                memory_mib: 1,
                disk_bytes: 1
            }
        )
        .is_err());
        let req = Request {
            vms: 1,
            cpus: 1,
            memory_mib: 3072,
            disk_bytes: 90 << 30,
        };
        assert!(check(&limits(), &usage, &req).is_ok());
    }
}
