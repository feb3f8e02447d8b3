//! Snapshots: protect a VM before a risky change, roll it back, and prune by rule.
//!
//! SQLite is the record (owner, VM, name, created, expires); libvirt holds the
//! internal qcow2 snapshots. Every change marks the row first, so a command cut
//! short leaves a row that `snapshot prune` or `admin reconcile` finishes.

use std::collections::HashMap;

use crate::context::Context;
use crate::db;
use crate::db::snapshots::{NewSnapshot, Snapshot};
use crate::db::vms::State;
use crate::error::{Error, Result};
use crate::ops::{lock, quota, vm};
use crate::validate::{SnapshotName, Span, MIB};
use crate::virt::PowerState;

fn target(s: &Snapshot) -> String {
    format!("{}/{}/{}", s.owner, s.vm, s.name)
}

/// The default name: the creation time, `YYYYMMDD-HHMMSS` in UTC.
fn timestamp_name(now: i64) -> String {
    jiff::Timestamp::from_second(now)
        .map(|t| t.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| now.to_string())
}

pub struct CreateRequest<'a> {
    pub vm: &'a str,
    pub name: Option<SnapshotName>,
    pub expire: Option<Span>,
    pub description: String,
}

pub fn create(ctx: &Context, req: &CreateRequest) -> Result<Snapshot> {
    let owner = ctx.tenant()?;
    let name = match &req.name {
        Some(n) => n.to_string(),
        None => timestamp_name(crate::hooks::now()),
    };
    let outcome = create_inner(ctx, &owner, &name, req);
    ctx.audit(
        "snapshot.create",
        &format!("{owner}/{}/{name}", req.vm),
        &outcome,
    );
    outcome
}

fn create_inner(ctx: &Context, owner: &str, name: &str, req: &CreateRequest) -> Result<Snapshot> {
    let vm = vm::owned(ctx, owner, req.vm)?;
    if vm.state != State::Ready {
        return Err(Error::conflict(
            format!("VM `{}` is {}", vm.name, vm.state.as_str()),
            None,
        ));
    }
    quota::ensure_free_space(&ctx.config)?;
    let uuid = vm::uuid_of(&vm)?;
    let hv = ctx.hypervisor()?;
    let limits = quota::limits_for(ctx.db()?, &ctx.config, owner)?;
    let created_at = crate::hooks::now();
    let expires_at = match (req.expire, limits.snapshot_expire_secs) {
        (Some(span), _) => Some(created_at + span.0 as i64),
        (None, 0) => None,
        (None, secs) => Some(created_at + secs as i64),
    };
    let _lock = lock::exclusive(&ctx.paths.lock(&vm.id))?;
    // A running VM's snapshot stores its RAM in the overlay: that is held against the
    // disk quota, like the disk itself.
    let memory_bytes = |running: bool| if running { vm.memory_mib * MIB } else { 0 };
    let reserved = memory_bytes(hv.power_state(uuid)?.is_some_and(holds_memory));
    let id = db::immediate(ctx.db()?, |tx| {
        if db::snapshots::get(tx, &vm.id, name)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: "snapshot",
                name: name.to_owned(),
            });
        }
        let used = db::snapshots::count_for_owner(tx, owner)?;
        if used >= limits.snapshots {
            return Err(Error::QuotaExceeded {
                resource: "snapshots",
                limit: limits.snapshots.to_string(),
                used: used.to_string(),
                requested: "1".into(),
            });
        }
        let usage = db::vms::usage(tx, owner)?;
        quota::check(&limits, &usage, &quota::Request::snapshot(reserved))?;
        let new = NewSnapshot {
            vm_id: &vm.id,
            owner,
            name,
            created_at,
            expires_at,
            description: &req.description,
            memory_bytes: reserved,
        };
        db::snapshots::insert(tx, &new, false)
    })?;
    if let Err(e) = hv.create_snapshot(uuid, name, &req.description) {
        db::snapshots::delete(ctx.db()?, id)?;
        return Err(e.into());
    }
    // The VM may have started or stopped since its state was read: what libvirt stored
    // decides. RAM that was not reserved is not kept.
    let stored = memory_bytes(hv.snapshot_holds_memory(uuid, name)?);
    if stored != reserved {
        let held = db::immediate(ctx.db()?, |tx| {
            if stored > reserved {
                let usage = db::vms::usage(tx, owner)?;
                quota::check(
                    &limits,
                    &usage,
                    &quota::Request::snapshot(stored - reserved),
                )?;
            }
            db::snapshots::set_memory(tx, id, stored)
        });
        if let Err(e) = held {
            hv.delete_snapshot(uuid, name)?;
            db::snapshots::delete(ctx.db()?, id)?;
            return Err(e);
        }
    }
    db::snapshots::set_state(ctx.db()?, id, State::Ready)?;
    Ok(db::snapshots::get(ctx.db()?, &vm.id, name)?.expect("created above"))
}

/// Whether a snapshot of a domain in `state` stores its memory: it does unless the
/// domain is off.
fn holds_memory(state: PowerState) -> bool {
    !matches!(state, PowerState::ShutOff | PowerState::Crashed)
}

/// The tenant's snapshots, of one VM or all of them.
pub fn list(ctx: &Context, vm_name: Option<&str>) -> Result<Vec<Snapshot>> {
    let owner = ctx.tenant()?;
    let vm_id = match vm_name {
        Some(name) => Some(vm::owned(ctx, &owner, name)?.id),
        None => None,
    };
    db::snapshots::list(ctx.db()?, Some(&owner), vm_id.as_deref())
}

/// The tenant's snapshot `name` of VM `vm_name`.
pub fn get(ctx: &Context, vm_name: &str, name: &str) -> Result<Snapshot> {
    let owner = ctx.tenant()?;
    let vm = vm::owned(ctx, &owner, vm_name)?;
    db::snapshots::get(ctx.db()?, &vm.id, name)?.ok_or_else(|| Error::not_found("snapshot", name))
}

pub fn restore(ctx: &Context, vm_name: &str, name: &str) -> Result<Snapshot> {
    let owner = ctx.tenant()?;
    let outcome = (|| {
        let snap = get(ctx, vm_name, name)?;
        if snap.state != State::Ready {
            return Err(Error::conflict(
                format!("snapshot `{name}` is {}", snap.state.as_str()),
                None,
            ));
        }
        let vm = vm::owned(ctx, &owner, vm_name)?;
        let hv = ctx.hypervisor()?;
        let _lock = lock::exclusive(&ctx.paths.lock(&vm.id))?;
        hv.revert_snapshot(vm::uuid_of(&vm)?, name)?;
        Ok(snap)
    })();
    ctx.audit(
        "snapshot.restore",
        &format!("{owner}/{vm_name}/{name}"),
        &outcome,
    );
    outcome
}

pub fn delete(ctx: &Context, vm_name: &str, name: &str) -> Result<()> {
    let owner = ctx.tenant()?;
    let outcome = (|| {
        let snap = get(ctx, vm_name, name)?;
        ctx.hypervisor()?;
        remove(ctx, &snap)
    })();
    ctx.audit(
        "snapshot.delete",
        &format!("{owner}/{vm_name}/{name}"),
        &outcome,
    );
    outcome
}

/// Deletes one snapshot from libvirt and the record, under its VM's lock. Safe to
/// repeat: a snapshot already gone from either side is fine.
pub(crate) fn remove(ctx: &Context, snap: &Snapshot) -> Result<()> {
    let Some(vm) = db::vms::get_by_id(ctx.db()?, &snap.vm_id)? else {
        return Ok(());
    };
    let _lock = lock::exclusive(&ctx.paths.lock(&vm.id))?;
    let Some(current) = db::snapshots::get(ctx.db()?, &vm.id, &snap.name)? else {
        return Ok(());
    };
    db::snapshots::set_state(ctx.db()?, current.id, State::Deleting)?;
    crate::hooks::crash_point("snapshot-deleting");
    ctx.hypervisor()?
        .delete_snapshot(vm::uuid_of(&vm)?, &snap.name)?;
    db::snapshots::delete(ctx.db()?, current.id)?;
    Ok(())
}

/// Whose snapshots a prune looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Mine,
    User(String),
    All,
}

pub struct PruneRequest {
    pub scope: Scope,
    pub older_than: Option<Span>,
    pub keep_last: Option<u64>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PruneOutcome {
    pub owner: String,
    pub vm: String,
    pub snapshot: String,
    /// `delete` or `keep`.
    pub action: &'static str,
    pub reason: String,
    /// `planned` on a dry run; `deleted`, `kept` or `failed: ...` otherwise.
    pub result: String,
}

/// Decides, for every snapshot in scope, whether a prune deletes or keeps it: first
/// what expired (or is older than `--older-than`), then what is beyond the owner's
/// keep-last per VM. Snapshots still being created are left alone.
pub fn plan(
    snapshots: Vec<Snapshot>,
    now: i64,
    req: &PruneRequest,
    keep_last_of: &dyn Fn(&str) -> u64,
) -> Vec<(Snapshot, &'static str, String)> {
    let mut by_vm: Vec<(String, Vec<Snapshot>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for s in snapshots {
        let i = *index.entry(s.vm_id.clone()).or_insert_with(|| {
            by_vm.push((s.vm_id.clone(), Vec::new()));
            by_vm.len() - 1
        });
        by_vm[i].1.push(s);
    }
    let mut decisions = Vec::new();
    for (_, mut snaps) in by_vm {
        // Newest first, so keep-last keeps the first N survivors.
        snaps.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
        let keep = req
            .keep_last
            .unwrap_or_else(|| keep_last_of(&snaps[0].owner));
        let mut kept = 0;
        for s in snaps {
            let verdict = match s.state {
                State::Creating => None,
                State::Deleting => Some("delete interrupted earlier".to_owned()),
                State::Ready if s.expires_at.is_some_and(|e| e <= now) => {
                    Some("expired".to_owned())
                }
                State::Ready
                    if req
                        .older_than
                        .is_some_and(|d| s.created_at <= now - d.0 as i64) =>
                {
                    Some(format!("older than {}", req.older_than.expect("checked")))
                }
                State::Ready if kept >= keep => Some(format!("beyond keep-last {keep}")),
                State::Ready => {
                    kept += 1;
                    None
                }
            };
            match verdict {
                Some(reason) => decisions.push((s, "delete", reason)),
                None if s.state == State::Creating => {}
                None => decisions.push((s, "keep", format!("within keep-last {keep}"))),
            }
        }
    }
    decisions
}

pub fn prune(ctx: &Context, req: &PruneRequest) -> Result<Vec<PruneOutcome>> {
    let owner = match &req.scope {
        Scope::Mine => Some(ctx.tenant()?),
        Scope::User(user) => {
            if !db::users::exists(ctx.db()?, user)? {
                return Err(Error::not_found("user", user.clone()));
            }
            Some(user.clone())
        }
        Scope::All => None,
    };
    if !req.dry_run {
        ctx.hypervisor()?;
    }
    // One prune at a time: a second waits, then finds the work done.
    let _lock = lock::exclusive(&ctx.paths.lock("prune"))?;
    let snapshots = db::snapshots::list(ctx.db()?, owner.as_deref(), None)?;
    let mut keep_last = HashMap::<String, u64>::new();
    for s in &snapshots {
        if !keep_last.contains_key(&s.owner) {
            let limits = quota::limits_for(ctx.db()?, &ctx.config, &s.owner)?;
            keep_last.insert(s.owner.clone(), limits.snapshot_keep_last);
        }
    }
    let decisions = plan(snapshots, crate::hooks::now(), req, &|owner| {
        keep_last.get(owner).copied().unwrap_or(0)
    });
    let mut outcomes = Vec::with_capacity(decisions.len());
    for (snap, action, reason) in decisions {
        let result = match (action, req.dry_run) {
            ("keep", _) => "kept".to_owned(),
            (_, true) => "planned".to_owned(),
            _ => {
                let r = remove(ctx, &snap);
                ctx.audit("snapshot.prune", &target(&snap), &r);
                match r {
                    Ok(()) => "deleted".to_owned(),
                    Err(e) => format!("failed: {e}"),
                }
            }
        };
        outcomes.push(PruneOutcome {
            owner: snap.owner,
            vm: snap.vm,
            snapshot: snap.name,
            action,
            reason,
            result,
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: i64, vm: &str, created_at: i64, expires_at: Option<i64>) -> Snapshot {
        Snapshot {
            id,
            vm_id: vm.into(),
            owner: "alice".into(),
            vm: vm.into(),
            name: format!("s{id}"),
            state: State::Ready,
            created_at,
            expires_at,
            description: String::new(),
            memory_bytes: 0,
        }
    }

    fn req(keep_last: Option<u64>, older_than: Option<Span>) -> PruneRequest {
        PruneRequest {
            scope: Scope::All,
            older_than,
            keep_last,
            dry_run: true,
        }
    }

    fn deleted(d: &[(Snapshot, &str, String)]) -> Vec<String> {
        d.iter()
            .filter(|(_, a, _)| *a == "delete")
            .map(|(s, _, _)| s.name.clone())
            .collect()
    }

    #[test]
    fn expired_first_then_beyond_keep_last_per_vm() {
        let snaps = vec![
            snap(1, "web", 100, Some(150)),
            snap(2, "web", 200, None),
            snap(3, "web", 300, None),
            snap(4, "web", 400, None),
            snap(5, "db", 100, None),
        ];
        let d = plan(snaps, 1000, &req(None, None), &|_| 2);
        assert_eq!(deleted(&d), ["s2", "s1"]);
        let reasons: Vec<&str> = d.iter().map(|(_, _, r)| r.as_str()).collect();
        assert!(reasons.contains(&"expired") && reasons.contains(&"beyond keep-last 2"));
        assert_eq!(d.iter().filter(|(_, a, _)| *a == "keep").count(), 3);
    }

    #[test]
    fn older_than_and_flags_override_policy() {
        let snaps = vec![snap(1, "web", 100, None), snap(2, "web", 900, None)];
        let d = plan(snaps.clone(), 1000, &req(None, Some(Span(500))), &|_| 10);
        assert_eq!(deleted(&d), ["s1"]);
        let d = plan(snaps, 1000, &req(Some(0), None), &|_| 10);
        assert_eq!(deleted(&d), ["s2", "s1"]);
    }

    #[test]
    fn interrupted_deletes_are_finished_and_creates_left_alone() {
        let mut a = snap(1, "web", 100, None);
        a.state = State::Deleting;
        let mut b = snap(2, "web", 200, None);
        b.state = State::Creating;
        let d = plan(vec![a, b], 1000, &req(None, None), &|_| 10);
        assert_eq!(deleted(&d), ["s1"]);
        assert_eq!(d.len(), 1);
    }
}
