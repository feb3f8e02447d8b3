//! `admin reconcile`: brings the database and libvirt back into agreement after a crash.
//!
//! The database is the record of what users own. A create or delete that was cut short
//! leaves a row in `creating` or `deleting` whose lock nobody holds; anything in libvirt
//! or the data directory that no row explains is an orphan. Rows whose domain vanished
//! are rebuilt from their disk, or forgotten when the disk is gone too.
//!
//! It never destroys what it does not know. It runs only on an existing database, and
//! judges only libvirt objects that carry this installation's id (objects made before
//! ids existed are given it when a row explains them); anything else with basphere's
//! name prefix is reported and left alone. A plan that removes more than a few objects,
//! or more than it keeps, runs only with `--force`.

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

/// A plan may remove at most this many objects without `--force`.
pub const MAX_REMOVALS_UNFORCED: usize = 3;

#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Repair {
    /// A domain of one of our VMs, defined before basphere wrote installation ids.
    StampDomain { name: String, uuid: String },
    /// A network of one of our users, defined before basphere wrote installation ids.
    StampNetwork { name: String },
    /// A VM whose domain was undefined with snapshots: define them again from the XML
    /// saved beside its disk.
    RestoreSnapshots {
        owner: String,
        vm: String,
        id: String,
        snapshots: usize,
    },
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
            Repair::StampDomain { name, .. } => {
                ("record installation id on domain".into(), name.clone())
            }
            Repair::StampNetwork { name } => {
                ("record installation id on network".into(), name.clone())
            }
            Repair::RestoreSnapshots {
                owner,
                vm,
                snapshots,
                ..
            } => (
                "define saved snapshots again".into(),
                format!("{owner}/{vm} ({snapshots})"),
            ),
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

impl Repair {
    /// Whether this repair removes something no interrupted operation explains: a
    /// domain, a network or a disk, or the record of a VM or a snapshot. These are what
    /// `--force` guards; finishing a create or delete that was cut short is not.
    pub fn is_removal(&self) -> bool {
        match self {
            Repair::RemoveDomain { .. }
            | Repair::RemoveNetwork { .. }
            | Repair::Forget { .. }
            | Repair::ForgetSnapshot { .. } => true,
            Repair::RemoveFile { path } => path.extension().is_some_and(|e| e == "qcow2"),
            _ => false,
        }
    }
}

/// An object with basphere's name prefix that is not this installation's: reported,
/// never touched.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Foreign {
    /// `domain` or `network`.
    pub object: &'static str,
    pub name: String,
    /// The installation id it carries; `None` when it carries none and no row of this
    /// installation explains it.
    pub installation: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub repair: Repair,
    /// `planned` on a dry run, `needs --force` when the plan was refused, else `done`
    /// or `failed: ...`.
    pub result: String,
}

/// What a reconcile found and did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reconciled {
    /// This installation's id: the objects it judged carry it.
    pub installation: String,
    pub repairs: Vec<Outcome>,
    /// Objects with basphere's name prefix that are not this installation's.
    pub left_alone: Vec<Foreign>,
    /// How many repairs remove something (see [`Repair::is_removal`]).
    pub removals: usize,
    /// This installation's VMs and networks that stay.
    pub kept: usize,
    /// Whether the plan removes more than [`MAX_REMOVALS_UNFORCED`] objects, or more
    /// than it keeps, and so runs only with `--force`.
    pub needs_force: bool,
    /// Whether the repairs ran: not on a dry run, nor when `--force` was needed and not given.
    pub applied: bool,
}

/// The one rule for when a plan needs `--force`.
pub fn needs_force(removals: usize, kept: usize) -> bool {
    removals > MAX_REMOVALS_UNFORCED || removals > kept
}

/// What `plan` found: the repairs, the objects left alone, and what stays.
struct Plan {
    repairs: Vec<Repair>,
    foreign: Vec<Foreign>,
    kept: usize,
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
/// under the VM's lock), saved snapshots not yet in place (`UUID.snapshots.xml.tmp`,
/// under the VM's lock too) or an image copy (`NAME.partial`, under the image's lock).
fn plan_leftovers(ctx: &Context, repairs: &mut Vec<Repair>) -> Result<()> {
    let vm_lock = |rest: &str| {
        let id = rest.get(..36)?;
        Uuid::parse_str(id).ok().map(|_| id.to_owned())
    };
    for dir in [ctx.paths.seeds(), ctx.paths.disks(), ctx.paths.images()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lock = if dir == ctx.paths.seeds() {
                match name.strip_prefix('.').filter(|_| name.ends_with(".tmp")) {
                    Some(rest) => vm_lock(rest),
                    None => None,
                }
            } else if dir == ctx.paths.disks() {
                match name.strip_suffix(".snapshots.xml.tmp") {
                    Some(id) if id.len() == 36 => vm_lock(id),
                    _ => None,
                }
            } else {
                name.strip_suffix(".partial")
                    .map(|image| format!("image-{image}"))
            };
            let Some(lock) = lock else {
                continue;
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

fn plan(ctx: &Context) -> Result<Plan> {
    let installation = ctx.installation()?;
    let hv = ctx.hypervisor()?;
    let rows = db::vms::list(ctx.db()?, None)?;
    let row_ids: HashSet<String> = rows.iter().map(|v| v.id.clone()).collect();
    let mut repairs = Vec::new();
    let mut foreign = Vec::new();

    // Whose each domain with our prefix is. One without an id is ours only when a row
    // of ours has its UUID: then it was defined before ids existed, and gets ours.
    let mut domains = Vec::new();
    let mut others: HashSet<String> = HashSet::new();
    for (d, id) in hv.domain_installations()? {
        let uuid = d.uuid.to_string();
        match id {
            Some(id) if id == installation => domains.push(d),
            None if row_ids.contains(&uuid) => {
                repairs.push(Repair::StampDomain {
                    name: d.name.clone(),
                    uuid,
                });
                domains.push(d);
            }
            id => {
                others.insert(uuid);
                foreign.push(Foreign {
                    object: "domain",
                    name: d.name,
                    installation: id,
                });
            }
        }
    }
    let domain_ids: HashSet<String> = domains.iter().map(|d| d.uuid.to_string()).collect();

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
            // A domain with this UUID that is someone else's is reported above; defining
            // ours would overwrite it.
            State::Ready if !domain_ids.contains(&vm.id) && !others.contains(&vm.id) => {
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
        let saved = crate::virt::snapshot::saved_snapshots(&ctx.paths.snapshots(&vm.id))?;
        if saved.is_empty() {
            plan_snapshots(ctx, vm, &mut repairs)?;
        } else if abandoned(ctx, vm)? {
            // Rows are compared with libvirt once the saved snapshots are back.
            repairs.push(Repair::RestoreSnapshots {
                owner: vm.owner.clone(),
                vm: vm.name.clone(),
                id: vm.id.clone(),
                snapshots: saved.len(),
            });
        }
    }

    for d in &domains {
        if !row_ids.contains(&d.uuid.to_string()) {
            repairs.push(Repair::RemoveDomain {
                name: d.name.clone(),
                uuid: d.uuid.to_string(),
            });
        }
    }

    plan_files(ctx, &row_ids, &mut repairs)?;
    plan_leftovers(ctx, &mut repairs)?;

    let networks = db::networks::list(ctx.db()?)?;
    let known: HashSet<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    let mut live = HashSet::new();
    for (name, id) in hv.network_installations()? {
        match id {
            Some(id) if id == installation => {}
            None if known.contains(name.as_str()) => {
                repairs.push(Repair::StampNetwork { name: name.clone() })
            }
            id => {
                foreign.push(Foreign {
                    object: "network",
                    name,
                    installation: id,
                });
                continue;
            }
        }
        if !known.contains(name.as_str()) {
            repairs.push(Repair::RemoveNetwork { name: name.clone() });
        }
        live.insert(name);
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

    // What stays: the ready VMs not forgotten, and every user's network.
    let ready = rows.iter().filter(|v| v.state == State::Ready).count();
    let forgotten = repairs
        .iter()
        .filter(|r| matches!(r, Repair::Forget { .. }))
        .count();
    Ok(Plan {
        repairs,
        foreign,
        kept: ready - forgotten + networks.len(),
    })
}

/// Disks, seeds, saved snapshots and locks in the data directory that no row explains.
/// They are this installation's by where they are.
fn plan_files(ctx: &Context, row_ids: &HashSet<String>, repairs: &mut Vec<Repair>) -> Result<()> {
    for (dir, ext) in [
        (ctx.paths.disks(), "qcow2"),
        (ctx.paths.disks(), "snapshots.xml"),
        (ctx.paths.seeds(), "iso"),
        (ctx.paths.locks(), "lock"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let file = entry.file_name();
            let Some(stem) = file
                .to_str()
                .and_then(|f| f.strip_suffix(ext))
                .and_then(|f| f.strip_suffix('.'))
            else {
                continue;
            };
            // Only files named after a VM id are ours to judge (locks also guard networks).
            if Uuid::parse_str(stem).is_err() || row_ids.contains(stem) {
                continue;
            }
            if ext == "lock" && lock::try_exclusive(&path)?.is_none() {
                continue;
            }
            // Saved snapshots go with their disk, and on their own once it is gone.
            if ext == "snapshots.xml" && ctx.paths.disk(stem).exists() {
                continue;
            }
            repairs.push(Repair::RemoveFile { path });
        }
    }
    Ok(())
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

/// The VM id a file in the data directory is named after: its name up to the first dot.
fn vm_id_of(path: &std::path::Path) -> &str {
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    name.split('.').next().unwrap_or_default()
}

fn apply(ctx: &Context, repair: &Repair) -> Result<()> {
    let hv = ctx.hypervisor()?;
    let installation = ctx.installation()?;
    let row = |id: &str| db::vms::get_by_id(ctx.db()?, id);
    match repair {
        Repair::StampDomain { uuid, .. } => {
            if let Ok(id) = Uuid::parse_str(uuid) {
                hv.stamp_domain(id, installation)?;
            }
        }
        Repair::StampNetwork { name } => {
            let net = db::networks::list(ctx.db()?)?
                .into_iter()
                .find(|n| &n.name == name)
                .ok_or_else(|| crate::error::Error::not_found("network", name.clone()))?;
            let _lock = lock::exclusive(&ctx.paths.lock(&format!("net-{}", net.user_id)))?;
            hv.stamp_network(name, installation)?;
        }
        Repair::RestoreSnapshots { id, .. } => {
            if let (Some(vm), Some(_lock)) = (row(id)?, lock::try_exclusive(&ctx.paths.lock(id))?) {
                vm::restore_snapshots(ctx, &vm)?;
            }
        }
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
                // Its snapshots' XML stays beside the disk, and goes only with it.
                vm::undefine(ctx, id, uuid)?;
                let _ = fs::remove_file(ctx.paths.lock(uuid));
            }
        }
        Repair::RemoveFile { path } => {
            let stem = vm_id_of(path);
            let is_lock = path.extension().is_some_and(|e| e == "lock");
            // A lock file is checked by taking it; for the others, take their VM's lock.
            let guard = if is_lock { None } else { unclaimed(ctx, stem)? };
            if is_lock || guard.is_some() {
                remove_file(path)?;
                if path == &ctx.paths.disk(stem) {
                    // The snapshots described there were in the disk.
                    remove_file(&ctx.paths.snapshots(stem))?;
                }
            }
            if guard.is_some() {
                // Taking the lock created its file; it has nothing left to guard.
                remove_file(&ctx.paths.lock(stem))?;
            }
        }
        Repair::RemoveNetwork { name } => hv.remove_network(name, installation)?,
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

/// What `admin reconcile` would repair now, changing nothing but lock files, and taking
/// no lock that could make it wait (for `doctor`).
pub fn drift(ctx: &Context) -> Result<Vec<Repair>> {
    Ok(plan(ctx)?.repairs)
}

/// Plans the repairs and, unless `dry_run`, applies them: a plan that needs `--force`
/// only with `force`.
pub fn reconcile(ctx: &Context, dry_run: bool, force: bool) -> Result<Reconciled> {
    // A missing database stops it here, before even the lock file is made.
    let installation = ctx.installation()?.to_owned();
    // One reconcile at a time; creates and deletes in progress hold their own locks.
    let _lock = lock::exclusive(&ctx.paths.lock("reconcile"))?;
    let Plan {
        repairs,
        foreign,
        kept,
    } = plan(ctx)?;
    let removals = repairs.iter().filter(|r| r.is_removal()).count();
    let needs_force = needs_force(removals, kept);
    let applied = !dry_run && (force || !needs_force);
    for f in &foreign {
        tracing::info!(object = f.object, name = f.name, installation = ?f.installation, "not this installation's: left alone");
    }
    let mut outcomes = Vec::new();
    for repair in repairs {
        let result = if dry_run {
            "planned".to_owned()
        } else if !applied {
            "needs --force".to_owned()
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
    Ok(Reconciled {
        installation,
        repairs: outcomes,
        left_alone: foreign,
        removals,
        kept,
        needs_force,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_three_removals_or_more_than_kept_need_force() {
        assert!(!needs_force(0, 0));
        assert!(!needs_force(1, 1));
        assert!(!needs_force(3, 10));
        assert!(needs_force(4, 10), "more than three");
        assert!(needs_force(1, 0), "more than kept");
        assert!(needs_force(3, 2), "more than kept");
    }

    #[test]
    fn what_counts_as_a_removal() {
        let path = |p: &str| PathBuf::from(p);
        let id = "0e0c5c3e-0000-4000-8000-000000000000".to_owned();
        let removal = |r: Repair| r.is_removal();
        assert!(removal(Repair::RemoveDomain {
            name: "bsp.a.b".into(),
            uuid: id.clone()
        }));
        assert!(removal(Repair::RemoveNetwork {
            name: "bsp-a".into()
        }));
        assert!(removal(Repair::RemoveFile {
            path: path("/d/disks/x.qcow2")
        }));
        assert!(!removal(Repair::RemoveFile {
            path: path("/d/seeds/x.iso")
        }));
        assert!(!removal(Repair::RemoveFile {
            path: path("/d/locks/x.lock")
        }));
        assert!(!removal(Repair::RollBackCreate {
            owner: "a".into(),
            vm: "b".into(),
            id: id.clone()
        }));
        assert!(!removal(Repair::StampDomain {
            name: "bsp.a.b".into(),
            uuid: id
        }));
    }

    #[test]
    fn files_are_named_after_their_vm() {
        let id = "0e0c5c3e-0000-4000-8000-000000000000";
        for name in ["qcow2", "iso", "lock", "snapshots.xml"] {
            let path = PathBuf::from(format!("/d/x/{id}.{name}"));
            assert_eq!(vm_id_of(&path), id);
        }
    }
}
