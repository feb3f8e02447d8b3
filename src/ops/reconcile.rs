//! `admin reconcile`: brings the database and libvirt back into agreement after a crash.
//!
//! The database is the record of what users own. A create or delete that was cut short
//! leaves a row in `creating` or `deleting` whose lock nobody holds; anything in libvirt
//! or the data directory that no row explains is an orphan. Rows whose domain vanished
//! are rebuilt from their disk, or forgotten when the disk is gone too.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use uuid::Uuid;

use crate::context::Context;
use crate::db;
use crate::db::networks::Network;
use crate::db::vms::{State, Vm};
use crate::error::Result;
use crate::ops::{lock, vm};
use crate::virt::DhcpHost;

#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Repair {
    /// A create was killed part way: undo it, freeing its quota.
    RollBackCreate {
        owner: String,
        vm: String,
        id: String,
    },
    /// A delete was killed part way: finish it.
    FinishDelete {
        owner: String,
        vm: String,
        id: String,
    },
    /// A ready VM lost its domain but kept its disk: define it again.
    Redefine {
        owner: String,
        vm: String,
        id: String,
    },
    /// A ready VM lost both domain and disk: drop the row so it stops counting.
    Forget {
        owner: String,
        vm: String,
        id: String,
    },
    /// A basphere domain no row explains.
    RemoveDomain { name: String, uuid: String },
    /// A disk, seed or lock file no row explains.
    RemoveFile { path: PathBuf },
    /// A half-written file or work directory of a write that was killed.
    RemoveLeftover { path: PathBuf, lock: String },
    /// A basphere network whose user is gone.
    RemoveNetwork { name: String },
    /// A snapshot row whose snapshot libvirt does not have.
    ForgetSnapshot {
        owner: String,
        vm: String,
        snapshot: String,
        id: i64,
    },
    /// A snapshot whose create was cut short after libvirt made it: keep it.
    FinishSnapshot {
        owner: String,
        vm: String,
        snapshot: String,
        id: i64,
    },
    /// A snapshot whose delete was cut short: finish it.
    FinishSnapshotDelete {
        owner: String,
        vm: String,
        snapshot: String,
        id: i64,
    },
    /// A libvirt snapshot of a basphere VM with no row: record it (without expiry).
    AdoptSnapshot {
        owner: String,
        vm: String,
        snapshot: String,
        vm_id: String,
        created_at: i64,
        /// Guest RAM it stores, held against the owner's disk quota.
        memory_bytes: u64,
    },
    /// A tenant network whose reservations differ from the addresses it must reserve.
    RepairReservations {
        network: String,
        missing: usize,
        unexpected: usize,
    },
}

impl Repair {
    pub fn describe(&self) -> (String, String) {
        match self {
            Repair::RollBackCreate { owner, vm, .. } => (
                "roll back interrupted create".into(),
                format!("{owner}/{vm}"),
            ),
            Repair::FinishDelete { owner, vm, .. } => {
                ("finish interrupted delete".into(), format!("{owner}/{vm}"))
            }
            Repair::Redefine { owner, vm, .. } => {
                ("define missing domain".into(), format!("{owner}/{vm}"))
            }
            Repair::Forget { owner, vm, .. } => (
                "forget VM without domain or disk".into(),
                format!("{owner}/{vm}"),
            ),
            Repair::RemoveDomain { name, .. } => ("remove orphan domain".into(), name.clone()),
            Repair::RemoveFile { path } => {
                ("remove orphan file".into(), path.display().to_string())
            }
            Repair::RemoveNetwork { name } => ("remove orphan network".into(), name.clone()),
            Repair::RemoveLeftover { path, .. } => (
                "remove leftover of an interrupted write".into(),
                path.display().to_string(),
            ),
            Repair::ForgetSnapshot {
                owner,
                vm,
                snapshot,
                ..
            } => (
                "forget snapshot missing in libvirt".into(),
                format!("{owner}/{vm}/{snapshot}"),
            ),
            Repair::FinishSnapshot {
                owner,
                vm,
                snapshot,
                ..
            } => (
                "finish interrupted snapshot".into(),
                format!("{owner}/{vm}/{snapshot}"),
            ),
            Repair::FinishSnapshotDelete {
                owner,
                vm,
                snapshot,
                ..
            } => (
                "finish interrupted snapshot delete".into(),
                format!("{owner}/{vm}/{snapshot}"),
            ),
            Repair::AdoptSnapshot {
                owner,
                vm,
                snapshot,
                ..
            } => (
                "record snapshot found in libvirt".into(),
                format!("{owner}/{vm}/{snapshot}"),
            ),
            Repair::RepairReservations {
                network,
                missing,
                unexpected,
            } => (
                "repair DHCP reservations".into(),
                format!("{network} ({missing} missing, {unexpected} unexpected)"),
            ),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub repair: Repair,
    /// `planned` on a dry run, else `done` or `failed: ...`.
    pub result: String,
}

/// Rows whose operation is no longer in progress: nobody holds their lock.
fn abandoned(ctx: &Context, vm: &Vm) -> Result<bool> {
    Ok(lock::try_exclusive(&ctx.paths.lock(&vm.id))?.is_some())
}

/// The lock of VM `id` when no row has that id and no create holds it: a create takes
/// the lock before it inserts its row, so what is unclaimed now stays unclaimed.
fn unclaimed(ctx: &Context, id: &str) -> Result<Option<lock::Lock>> {
    let Some(guard) = lock::try_exclusive(&ctx.paths.lock(id))? else {
        return Ok(None);
    };
    if db::vms::get_by_id(ctx.db()?, id)?.is_some() {
        return Ok(None);
    }
    Ok(Some(guard))
}

/// Reservations a tenant network lacks, and ones it has that it should not.
fn reservation_diff(ctx: &Context, net: &Network) -> Result<(Vec<DhcpHost>, Vec<DhcpHost>)> {
    let expected = vm::reservations(net)?;
    let actual = ctx.hypervisor()?.dhcp_hosts(&net.name)?;
    let same = |a: &DhcpHost, b: &DhcpHost| a.mac.eq_ignore_ascii_case(&b.mac) && a.ip == b.ip;
    let missing = expected
        .iter()
        .filter(|e| !actual.iter().any(|a| same(a, e)))
        .cloned()
        .collect();
    let unexpected = actual
        .iter()
        .filter(|a| !expected.iter().any(|e| same(a, e)))
        .cloned()
        .collect();
    Ok((missing, unexpected))
}

/// Snapshot rows of one VM against libvirt's snapshots of it. A VM whose lock is held
/// has a snapshot operation in progress and is left alone.
fn plan_snapshots(ctx: &Context, vm: &Vm, repairs: &mut Vec<Repair>) -> Result<()> {
    let rows = db::snapshots::list(ctx.db()?, None, Some(&vm.id))?;
    let live = ctx.hypervisor()?.snapshots(vm::uuid_of(vm)?)?;
    if rows.is_empty() && live.is_empty() {
        return Ok(());
    }
    if !abandoned(ctx, vm)? {
        return Ok(());
    }
    let (owner, name) = (vm.owner.clone(), vm.name.clone());
    for row in &rows {
        let in_libvirt = live.iter().any(|l| l.name == row.name);
        let (owner, vm, snapshot, id) = (owner.clone(), name.clone(), row.name.clone(), row.id);
        match (row.state, in_libvirt) {
            (State::Deleting, _) => repairs.push(Repair::FinishSnapshotDelete {
                owner,
                vm,
                snapshot,
                id,
            }),
            (State::Creating, true) => repairs.push(Repair::FinishSnapshot {
                owner,
                vm,
                snapshot,
                id,
            }),
            (_, false) => repairs.push(Repair::ForgetSnapshot {
                owner,
                vm,
                snapshot,
                id,
            }),
            (State::Ready, true) => {}
        }
    }
    for l in live
        .iter()
        .filter(|l| !rows.iter().any(|r| r.name == l.name))
    {
        repairs.push(Repair::AdoptSnapshot {
            owner: owner.clone(),
            vm: name.clone(),
            snapshot: l.name.clone(),
            vm_id: vm.id.clone(),
            created_at: l.created_at,
            memory_bytes: if l.with_memory {
                vm.memory_mib * crate::validate::MIB
            } else {
                0
            },
        });
    }
    Ok(())
}

/// What a killed write leaves: a seed's work directory (`.UUID.iso.N.tmp`, written
/// under the VM's lock) or an image copy (`NAME.partial`, under the image's lock).
fn plan_leftovers(ctx: &Context, repairs: &mut Vec<Repair>) -> Result<()> {
    for (dir, is_seed) in [(ctx.paths.seeds(), true), (ctx.paths.images(), false)] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lock = if is_seed {
                match name.strip_prefix('.').filter(|_| name.ends_with(".tmp")) {
                    Some(rest) if rest.len() >= 36 && Uuid::parse_str(&rest[..36]).is_ok() => {
                        rest[..36].to_owned()
                    }
                    _ => continue,
                }
            } else {
                match name.strip_suffix(".partial") {
                    Some(image) => format!("image-{image}"),
                    None => continue,
                }
            };
            if lock::try_exclusive(&ctx.paths.lock(&lock))?.is_some() {
                repairs.push(Repair::RemoveLeftover {
                    path: entry.path(),
                    lock,
                });
            }
        }
    }
    Ok(())
}

fn plan(ctx: &Context) -> Result<Vec<Repair>> {
    let hv = ctx.hypervisor()?;
    let rows = db::vms::list(ctx.db()?, None)?;
    let domains = hv.domains()?;
    let domain_ids: HashSet<String> = domains.iter().map(|d| d.uuid.to_string()).collect();
    let row_ids: HashSet<String> = rows.iter().map(|v| v.id.clone()).collect();
    let mut repairs = Vec::new();

    for vm in &rows {
        let (owner, name, id) = (vm.owner.clone(), vm.name.clone(), vm.id.clone());
        match vm.state {
            State::Creating if abandoned(ctx, vm)? => repairs.push(Repair::RollBackCreate {
                owner,
                vm: name,
                id,
            }),
            State::Deleting if abandoned(ctx, vm)? => repairs.push(Repair::FinishDelete {
                owner,
                vm: name,
                id,
            }),
            State::Ready if !domain_ids.contains(&vm.id) => {
                if ctx.paths.disk(&vm.id).exists() {
                    repairs.push(Repair::Redefine {
                        owner,
                        vm: name,
                        id,
                    });
                } else {
                    repairs.push(Repair::Forget {
                        owner,
                        vm: name,
                        id,
                    });
                }
            }
            _ => {}
        }
    }

    for vm in rows
        .iter()
        .filter(|v| v.state == State::Ready && domain_ids.contains(&v.id))
    {
        plan_snapshots(ctx, vm, &mut repairs)?;
    }

    for d in &domains {
        if !row_ids.contains(&d.uuid.to_string()) {
            repairs.push(Repair::RemoveDomain {
                name: d.name.clone(),
                uuid: d.uuid.to_string(),
            });
        }
    }

    for (dir, ext) in [
        (ctx.paths.disks(), "qcow2"),
        (ctx.paths.seeds(), "iso"),
        (ctx.paths.locks(), "lock"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(ext) {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            // Only files named after a VM id are ours to judge (locks also guard networks).
            if Uuid::parse_str(stem).is_err() || row_ids.contains(stem) {
                continue;
            }
            if ext == "lock" && lock::try_exclusive(&path)?.is_none() {
                continue;
            }
            repairs.push(Repair::RemoveFile { path });
        }
    }

    plan_leftovers(ctx, &mut repairs)?;

    let networks = db::networks::list(ctx.db()?)?;
    let known: HashSet<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    let live: HashSet<String> = hv.networks()?.into_iter().collect();
    for name in &live {
        if !known.contains(name.as_str()) {
            repairs.push(Repair::RemoveNetwork { name: name.clone() });
        }
    }
    for net in networks.iter().filter(|n| live.contains(&n.name)) {
        let (missing, unexpected) = reservation_diff(ctx, net)?;
        if !missing.is_empty() || !unexpected.is_empty() {
            repairs.push(Repair::RepairReservations {
                network: net.name.clone(),
                missing: missing.len(),
                unexpected: unexpected.len(),
            });
        }
    }
    Ok(repairs)
}

fn remove_file(path: &std::path::Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::error::Error::io(
            format!("cannot remove `{}`", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}

fn apply(ctx: &Context, repair: &Repair) -> Result<()> {
    let hv = ctx.hypervisor()?;
    let row = |id: &str| db::vms::get_by_id(ctx.db()?, id);
    match repair {
        Repair::RollBackCreate { id, .. }
        | Repair::FinishDelete { id, .. }
        | Repair::Forget { id, .. } => {
            if let Some(vm) = row(id)? {
                let _lock = lock::try_exclusive(&ctx.paths.lock(&vm.id))?;
                vm::teardown(ctx, &vm)?;
            }
        }
        Repair::Redefine { id, .. } => {
            if let Some(vm) = row(id)? {
                vm::redefine(ctx, &vm)?;
            }
        }
        Repair::RemoveDomain { uuid, .. } => {
            if let (Ok(id), Some(_lock)) = (Uuid::parse_str(uuid), unclaimed(ctx, uuid)?) {
                hv.undefine(id)?;
                let _ = fs::remove_file(ctx.paths.lock(uuid));
            }
        }
        Repair::RemoveFile { path } => {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let is_lock = path.extension().is_some_and(|e| e == "lock");
            // A lock file is checked by taking it; for the others, take their VM's lock.
            let guard = if is_lock { None } else { unclaimed(ctx, stem)? };
            if is_lock || guard.is_some() {
                remove_file(path)?;
            }
            if guard.is_some() {
                // Taking the lock created its file; it has nothing left to guard.
                remove_file(&ctx.paths.lock(stem))?;
            }
        }
        Repair::RemoveNetwork { name } => hv.remove_network(name)?,
        Repair::RemoveLeftover { path, lock } => {
            if let Some(_guard) = lock::try_exclusive(&ctx.paths.lock(lock))? {
                let removed = if path.is_dir() {
                    fs::remove_dir_all(path)
                } else {
                    fs::remove_file(path)
                };
                match removed {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(crate::error::Error::io(
                            format!("cannot remove `{}`", path.display()),
                            e,
                        ))
                    }
                    _ => {}
                }
                // Taking the lock made its file; a VM lock with no VM left guards nothing.
                if Uuid::parse_str(lock).is_ok() && db::vms::get_by_id(ctx.db()?, lock)?.is_none() {
                    remove_file(&ctx.paths.lock(lock))?;
                }
            }
        }
        Repair::ForgetSnapshot { id, .. } => {
            db::snapshots::delete(ctx.db()?, *id)?;
        }
        Repair::FinishSnapshot { id, .. } => {
            db::snapshots::set_state(ctx.db()?, *id, State::Ready)?
        }
        Repair::FinishSnapshotDelete {
            owner,
            vm,
            snapshot,
            ..
        } => {
            if let Some(vm) = db::vms::get(ctx.db()?, owner, vm)? {
                if let Some(snap) = db::snapshots::get(ctx.db()?, &vm.id, snapshot)? {
                    crate::ops::snapshot::remove(ctx, &snap)?;
                }
            }
        }
        Repair::AdoptSnapshot {
            owner,
            snapshot,
            vm_id,
            created_at,
            memory_bytes,
            ..
        } => {
            let new = db::snapshots::NewSnapshot {
                vm_id,
                owner,
                name: snapshot,
                created_at: *created_at,
                expires_at: None,
                description: "",
                memory_bytes: *memory_bytes,
            };
            db::snapshots::insert(ctx.db()?, &new, true)?;
        }
        Repair::RepairReservations { network, .. } => {
            let net = db::networks::list(ctx.db()?)?
                .into_iter()
                .find(|n| &n.name == network)
                .ok_or_else(|| crate::error::Error::not_found("network", network.clone()))?;
            let (missing, unexpected) = reservation_diff(ctx, &net)?;
            for host in &unexpected {
                hv.remove_dhcp_host(network, host)?;
            }
            for host in &missing {
                hv.add_dhcp_host(network, host)?;
            }
        }
    }
    Ok(())
}

pub fn reconcile(ctx: &Context, dry_run: bool) -> Result<Vec<Outcome>> {
    // One reconcile at a time; creates and deletes in progress hold their own locks.
    let _lock = lock::exclusive(&ctx.paths.lock("reconcile"))?;
    let repairs = plan(ctx)?;
    let mut outcomes = Vec::new();
    for repair in repairs {
        let result = if dry_run {
            "planned".to_owned()
        } else {
            let (what, target) = repair.describe();
            let r = apply(ctx, &repair);
            ctx.audit("reconcile", &target, &r);
            match r {
                Ok(()) => "done".to_owned(),
                Err(e) => {
                    tracing::warn!(repair = what, target, error = %e, "repair failed");
                    format!("failed: {e}")
                }
            }
        };
        outcomes.push(Outcome { repair, result });
    }
    Ok(outcomes)
}
