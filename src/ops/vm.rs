//! Virtual machines: create within the quota, list, show, power, delete.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::Flavor;
use crate::context::Context;
use crate::db;
use crate::db::images::Image;
use crate::db::networks::Network;
use crate::db::vms::{NewVm, State, Vm};
use crate::error::{Error, Result};
use crate::ops::{lock, quota};
use crate::validate::{ImageName, Size, VmName, MIB};
use crate::virt::{self, seed, DhcpHost, DomainSpec, NetworkSpec, PowerState};

/// Host addresses handed to VMs in each /24 (.1 is the gateway).
const FIRST_VM_HOST: u32 = 10;
const LAST_VM_HOST: u32 = 254;
const MIN_MEMORY_MIB: u64 = 128;
const MAX_CPUS: u32 = 64;

#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: Option<VmName>,
    pub image: Option<ImageName>,
    pub flavor: Option<String>,
    pub cpus: Option<u32>,
    pub memory: Option<Size>,
    pub disk: Option<Size>,
    pub start: bool,
}

/// A VM as people see it: the database record joined with libvirt's view.
#[derive(Clone, Debug, serde::Serialize)]
pub struct View {
    pub name: String,
    pub owner: String,
    pub state: VmState,
    pub ip: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub image: String,
    pub os_user: String,
    pub ssh: String,
    pub id: String,
    pub domain: String,
    pub mac: String,
    pub created_at: i64,
}

/// What a VM is doing: its record's state, and libvirt's power state once it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Creating,
    Deleting,
    /// Ready in the database, but libvirt has no such domain.
    Missing,
    #[serde(untagged)]
    Power(PowerState),
}

impl VmState {
    fn of(vm: &Vm, power: Option<PowerState>) -> VmState {
        match (vm.state, power) {
            (State::Creating, _) => VmState::Creating,
            (State::Deleting, _) => VmState::Deleting,
            (State::Ready, Some(p)) => VmState::Power(p),
            (State::Ready, None) => VmState::Missing,
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmState::Creating => f.write_str("creating"),
            VmState::Deleting => f.write_str("deleting"),
            VmState::Missing => f.write_str("missing"),
            VmState::Power(p) => p.fmt(f),
        }
    }
}

fn ssh_line(ctx: &Context, os_user: &str, ip: &str) -> String {
    let host = &ctx.config.public_host();
    let jump = match ctx.config.public_port {
        22 => format!("basphere@{host}"),
        port => format!("basphere@{host}:{port}"),
    };
    format!("ssh -J {jump} {os_user}@{ip}")
}

fn view(
    ctx: &Context,
    vm: Vm,
    power: Option<PowerState>,
    os_users: &HashMap<String, String>,
) -> View {
    let os_user = os_users
        .get(&vm.image)
        .cloned()
        .unwrap_or_else(|| "root".into());
    View {
        state: VmState::of(&vm, power),
        ssh: ssh_line(ctx, &os_user, &vm.ip),
        name: vm.name,
        owner: vm.owner,
        ip: vm.ip,
        cpus: vm.cpus,
        memory_mib: vm.memory_mib,
        disk_bytes: vm.disk_bytes,
        image: vm.image,
        os_user,
        id: vm.id,
        domain: vm.domain,
        mac: vm.mac,
        created_at: vm.created_at,
    }
}

fn os_users(ctx: &Context) -> Result<HashMap<String, String>> {
    Ok(db::images::list(ctx.db()?)?
        .into_iter()
        .map(|i| (i.name, i.os_user))
        .collect())
}

pub(crate) fn uuid_of(vm: &Vm) -> Result<Uuid> {
    Uuid::parse_str(&vm.id).map_err(|_| {
        Error::Corrupt(format!(
            "VM `{}` has the id `{}`, not a UUID",
            vm.name, vm.id
        ))
    })
}

/// The VM `name` of the tenant; someone else's VM is indistinguishable from a missing one.
pub(crate) fn owned(ctx: &Context, owner: &str, name: &str) -> Result<Vm> {
    db::vms::get(ctx.db()?, owner, name)?.ok_or_else(|| Error::not_found("VM", name))
}

/// Host addresses of a tenant /24 handed to VMs, each with its reserved MAC.
pub(crate) fn reservations(net: &Network) -> Result<Vec<DhcpHost>> {
    let base = subnet_base(net)?;
    Ok((FIRST_VM_HOST..=LAST_VM_HOST)
        .map(|host| DhcpHost {
            mac: virt::reserved_mac(net.idx, host as u8),
            ip: Ipv4Addr::from(u32::from(base) + host),
            name: String::new(),
        })
        .collect())
}

fn subnet_base(net: &Network) -> Result<Ipv4Addr> {
    net.subnet.parse().map_err(|_| {
        Error::Corrupt(format!(
            "network {} has the subnet `{}`",
            net.idx, net.subnet
        ))
    })
}

/// The libvirt network of a tenant. Every VM address is reserved for its MAC in the
/// definition itself, so creating a VM never updates the running network (which
/// costs libvirt about half a second per change).
fn network_spec<'a>(
    net: &'a Network,
    hosts: &'a [DhcpHost],
    installation: &'a str,
) -> Result<NetworkSpec<'a>> {
    let base = subnet_base(net)?;
    let host = |n: u32| Ipv4Addr::from(u32::from(base) + n);
    Ok(NetworkSpec {
        name: &net.name,
        bridge: &net.bridge,
        gateway: host(1),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        // A few dynamic addresses below the reserved ones, for anything unexpected.
        dhcp_start: host(2),
        dhcp_end: host(FIRST_VM_HOST - 1),
        hosts,
        installation,
    })
}

/// The CPU, memory and disk a request asks for, after flavor and defaults.
fn resolve_shape(ctx: &Context, req: &CreateRequest, image: &Image) -> Result<Flavor> {
    let flavors = &ctx.config.flavors();
    let base = match &req.flavor {
        Some(name) => *flavors.get(name).ok_or_else(|| {
            Error::invalid_with_help(
                format!("unknown flavor `{}`", crate::validate::quoted(name)),
                format!(
                    "flavors: {}",
                    flavors.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?,
        None => flavors[&ctx.config.default_flavor],
    };
    let shape = Flavor {
        cpus: req.cpus.unwrap_or(base.cpus),
        memory_mib: req
            .memory
            .map_or(base.memory_mib, |m| m.bytes().div_ceil(MIB)),
        // Without --disk, an image larger than the flavor's disk sets the size.
        disk_bytes: match req.disk {
            Some(size) => size.bytes(),
            None => base.disk_bytes.max(image.virtual_size),
        },
    };
    if shape.cpus == 0 || shape.cpus > MAX_CPUS {
        return Err(Error::invalid(format!(
            "invalid CPU count `{}`: expected 1 to {MAX_CPUS}",
            shape.cpus
        )));
    }
    if shape.memory_mib < MIN_MEMORY_MIB {
        return Err(Error::invalid(format!(
            "memory `{}` is too small: at least {}",
            Size::from_mib(shape.memory_mib),
            Size::from_mib(MIN_MEMORY_MIB)
        )));
    }
    if shape.disk_bytes < image.virtual_size {
        return Err(Error::invalid(format!(
            "disk `{}` is smaller than image `{}` ({})",
            Size::from_bytes(shape.disk_bytes),
            image.name,
            Size::from_bytes(image.virtual_size)
        )));
    }
    Ok(shape)
}

fn resolve_image(ctx: &Context, requested: Option<&ImageName>) -> Result<Image> {
    let name =
        match (requested, &ctx.config.default_image) {
            (Some(name), _) => name.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => {
                let mut all = db::images::list(ctx.db()?)?;
                match all.len() {
                    1 => return Ok(all.remove(0)),
                    0 => return Err(Error::conflict(
                        "no image is registered yet",
                        Some("an administrator adds one with `basphere admin image add NAME FILE`"),
                    )),
                    _ => {
                        return Err(Error::invalid_with_help(
                            "several images are available: choose one with --image",
                            "`basphere images` lists them",
                        ))
                    }
                }
            }
        };
    db::images::get(ctx.db()?, &name)?.ok_or_else(|| Error::not_found("image", name))
}

/// A step of `create-vm`, reported to the caller as it starts.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Something `create-vm` did that must be undone if a later step fails.
enum Done {
    Row,
    Disk,
    Seed,
    Domain,
}

pub fn create(ctx: &Context, req: &CreateRequest, progress: Progress) -> Result<View> {
    let target = format!(
        "{}/{}",
        ctx.tenant_hint(),
        req.name.as_ref().map_or("-", |n| n.as_str())
    );
    let outcome = create_inner(ctx, req, progress);
    ctx.audit("vm.create", &target, &outcome);
    outcome
}

fn create_inner(ctx: &Context, req: &CreateRequest, report: Progress) -> Result<View> {
    // Each step is logged too, so `BASPHERE_LOG=debug` shows where the time goes.
    let mut progress = |step: &str| {
        tracing::debug!(step, "create-vm");
        report(step)
    };
    let owner = ctx.tenant()?;
    let name = req
        .name
        .as_ref()
        .ok_or_else(|| Error::invalid("a VM name is required"))?;
    // Held until we return: `admin user remove` waits for it.
    let _owner_lock = crate::ops::user::lock(ctx, &owner, false)?;
    let image = resolve_image(ctx, req.image.as_ref())?;
    let shape = resolve_shape(ctx, req, &image)?;
    quota::ensure_free_space(&ctx.config)?;

    // Reach libvirt before changing anything, so a dead libvirtd changes nothing.
    progress("connecting to libvirt");
    let hv = ctx.hypervisor()?;
    let domain_type = ctx.domain_type()?;

    let id = Uuid::new_v4();
    let id_text = id.to_string();
    // Held until we return; `admin reconcile` leaves a `creating` row alone while it is.
    let _lock = lock::exclusive(&ctx.paths.lock(&id_text))?;
    let domain_name = virt::domain_name(ctx.prefix(), &owner, name.as_str());

    crate::hooks::pause_point("reserve");
    progress("reserving quota");
    let (vm, net) = db::immediate(ctx.db()?, |tx| {
        // Removed before this create took the owner's lock.
        if !db::users::exists(tx, &owner)? {
            return Err(Error::not_found("user", owner.clone()));
        }
        if db::vms::get(tx, &owner, name.as_str())?.is_some() {
            return Err(Error::AlreadyExists {
                kind: "VM",
                name: name.to_string(),
            });
        }
        let limits = quota::limits_for(tx, &ctx.config, &owner)?;
        let usage = db::vms::usage(tx, &owner)?;
        let request = quota::Request {
            vms: 1,
            cpus: shape.cpus.into(),
            memory_mib: shape.memory_mib,
            disk_bytes: shape.disk_bytes,
        };
        quota::check(&limits, &usage, &request)?;
        let net = match db::networks::for_user(tx, &owner)? {
            Some(net) => net,
            None => allocate_network(ctx, tx, &owner)?,
        };
        let ip = free_ip(tx, &net)?;
        let mac = virt::reserved_mac(net.idx, ip.octets()[3]);
        let new = NewVm {
            id: &id_text,
            owner: &owner,
            name: name.as_str(),
            image: &image.name,
            cpus: shape.cpus,
            memory_mib: shape.memory_mib,
            disk_bytes: shape.disk_bytes,
            network_idx: net.idx,
            mac: &mac,
            ip,
            domain: &domain_name,
        };
        db::vms::insert(tx, &new, crate::hooks::now())?;
        Ok((
            db::vms::get_by_id(tx, &id_text)?.expect("inserted above"),
            net,
        ))
    })?;
    crate::hooks::crash_point("reserved");

    let mut done = vec![Done::Row];
    let mut step = "disk";
    // Cancelled before the VM starts (or is defined, with --no-start), the create rolls
    // back through the ledger; after that it is finished.
    let built = (|| -> Result<()> {
        ctx.cancel.check()?;
        progress("creating disk");
        virt::disk::create_overlay(
            std::path::Path::new(&image.path),
            &ctx.paths.disk(&id_text),
            shape.disk_bytes,
        )?;
        done.push(Done::Disk);
        crate::hooks::crash_point("disk");

        step = "seed";
        ctx.cancel.check()?;
        progress("writing cloud-init seed");
        write_seed(ctx, &vm, &image)?;
        done.push(Done::Seed);
        crate::hooks::crash_point("seed");

        step = "network";
        ctx.cancel.check()?;
        progress("preparing network");
        ensure_network(ctx, &net, &owner)?;
        crate::hooks::crash_point("network");

        step = "domain";
        ctx.cancel.check()?;
        progress("defining domain");
        define(ctx, &vm, &net, domain_type)?;
        done.push(Done::Domain);
        crate::hooks::crash_point("domain");

        if req.start {
            step = "start";
            ctx.cancel.check()?;
            progress("starting");
            hv.start(id)?;
            crate::hooks::crash_point("start");
        }
        step = "record";
        db::vms::set_state(ctx.db()?, &id_text, State::Ready)?;
        Ok(())
    })();

    if let Err(source) = built {
        let undo_failures = undo(ctx, &vm, done);
        return Err(Error::Step {
            operation: "create-vm",
            step,
            source: Box::new(source),
            undo_failures,
        });
    }
    let power = if req.start {
        Some(PowerState::Running)
    } else {
        Some(PowerState::ShutOff)
    };
    let vm = db::vms::get_by_id(ctx.db()?, &id_text)?.expect("created above");
    let users = HashMap::from([(image.name.clone(), image.os_user.clone())]);
    Ok(view(ctx, vm, power, &users))
}

fn allocate_network(ctx: &Context, tx: &rusqlite::Transaction, owner: &str) -> Result<Network> {
    let pool = ctx.config.network_pool;
    let idx = db::networks::free_index(tx)?;
    if idx >= pool.capacity() {
        return Err(Error::conflict(
            format!("the network pool {pool} has no free /24 left"),
            Some("an administrator can configure a larger `network_pool`"),
        ));
    }
    let net = Network {
        idx,
        user_id: owner.to_owned(),
        name: virt::network_name(ctx.prefix(), owner),
        bridge: virt::bridge_name(ctx.prefix(), pool.subnet(idx)),
        subnet: pool.subnet(idx).to_string(),
    };
    db::networks::insert(tx, &net)?;
    Ok(net)
}

fn free_ip(tx: &rusqlite::Transaction, net: &Network) -> Result<Ipv4Addr> {
    let used: std::collections::HashSet<String> =
        db::vms::ips_in_network(tx, net.idx)?.into_iter().collect();
    let base = subnet_base(net)?;
    (FIRST_VM_HOST..=LAST_VM_HOST)
        .map(|n| Ipv4Addr::from(u32::from(base) + n))
        .find(|ip| !used.contains(&ip.to_string()))
        .ok_or_else(|| {
            Error::conflict(
                format!("network {}/24 has no free address", net.subnet),
                None,
            )
        })
}

fn write_seed(ctx: &Context, vm: &Vm, image: &Image) -> Result<()> {
    let keys: Vec<String> = db::users::keys(ctx.db()?, &vm.owner)?
        .into_iter()
        .map(|k| k.public_key)
        .collect();
    let spec = seed::SeedSpec {
        instance_id: &vm.id,
        hostname: &vm.name,
        os_user: &image.os_user,
        ssh_keys: &keys,
    };
    let (meta, user) = seed::render(&spec)?;
    seed::write_seed(&ctx.paths.seed(&vm.id), &meta, &user)?;
    Ok(())
}

/// Creates the owner's libvirt network if needed; one process at a time per network.
fn ensure_network(ctx: &Context, net: &Network, owner: &str) -> Result<()> {
    let _lock = lock::exclusive(&ctx.paths.lock(&format!("net-{owner}")))?;
    let hosts = reservations(net)?;
    let spec = network_spec(net, &hosts, ctx.installation()?)?;
    ctx.hypervisor()?.ensure_network(&spec)?;
    Ok(())
}

fn define(ctx: &Context, vm: &Vm, net: &Network, domain_type: virt::DomainType) -> Result<()> {
    let disk = ctx.paths.disk(&vm.id);
    let seed = ctx.paths.seed(&vm.id);
    let spec = DomainSpec {
        name: &vm.domain,
        uuid: uuid_of(vm)?,
        domain_type,
        vcpus: vm.cpus,
        memory_mib: vm.memory_mib,
        disk_path: &disk,
        seed_path: &seed,
        network: &net.name,
        mac: &vm.mac,
        owner: &vm.owner,
        vm_name: &vm.name,
        installation: ctx.installation()?,
    };
    ctx.hypervisor()?.define_domain(&spec)?;
    Ok(())
}

fn remove_file(path: &std::path::Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove `{}`", path.display()), e)),
    }
}

/// Undoes what a create did, newest first; returns what could not be undone.
fn undo(ctx: &Context, vm: &Vm, mut done: Vec<Done>) -> Vec<String> {
    let mut failures = Vec::new();
    while let Some(d) = done.pop() {
        let (what, result) = match d {
            Done::Domain => (
                "domain",
                uuid_of(vm).and_then(|id| undefine(ctx, id, &vm.id)),
            ),
            Done::Seed => ("seed", remove_file(&ctx.paths.seed(&vm.id))),
            Done::Disk => ("disk", remove_file(&ctx.paths.disk(&vm.id))),
            Done::Row => {
                let _ = fs::remove_file(ctx.paths.lock(&vm.id));
                (
                    "quota reservation",
                    ctx.db()
                        .and_then(|db| db::vms::delete(db, &vm.id))
                        .map(|_| ()),
                )
            }
        };
        if let Err(e) = result {
            failures.push(format!("{what}: {e}"));
        }
    }
    failures
}

/// Undefines the domain of VM `id`, its snapshots' XML kept beside its disk.
pub(crate) fn undefine(ctx: &Context, uuid: Uuid, id: &str) -> Result<()> {
    let snapshots = ctx.paths.snapshots(id);
    Ok(ctx
        .hypervisor()?
        .undefine(uuid, ctx.installation()?, &snapshots)?)
}

/// Tears a VM down completely: domain, disk (and the snapshots in it), seed, row. Safe
/// to repeat. The address and its reservation stay with the network, free for the next VM.
pub(crate) fn teardown(ctx: &Context, vm: &Vm) -> Result<()> {
    undefine(ctx, uuid_of(vm)?, &vm.id)?;
    remove_file(&ctx.paths.disk(&vm.id))?;
    remove_file(&ctx.paths.snapshots(&vm.id))?;
    remove_file(&ctx.paths.seed(&vm.id))?;
    db::vms::delete(ctx.db()?, &vm.id)?;
    let _ = fs::remove_file(ctx.paths.lock(&vm.id));
    Ok(())
}

/// Rebuilds the libvirt side of a VM whose row, disk and network survive but whose domain
/// is gone, with the snapshots saved beside its disk when it was undefined.
pub(crate) fn redefine(ctx: &Context, vm: &Vm) -> Result<()> {
    let image = db::images::get(ctx.db()?, &vm.image)?
        .ok_or_else(|| Error::not_found("image", vm.image.clone()))?;
    let net = db::networks::list(ctx.db()?)?
        .into_iter()
        .find(|n| n.idx == vm.network_idx)
        .ok_or_else(|| Error::not_found("network", vm.owner.clone()))?;
    if !ctx.paths.seed(&vm.id).exists() {
        write_seed(ctx, vm, &image)?;
    }
    ensure_network(ctx, &net, &vm.owner)?;
    let domain_type = ctx.domain_type()?;
    define(ctx, vm, &net, domain_type)?;
    restore_snapshots(ctx, vm)
}

/// Defines again the snapshots saved beside the VM's disk that its domain lacks.
pub(crate) fn restore_snapshots(ctx: &Context, vm: &Vm) -> Result<()> {
    let path = ctx.paths.snapshots(&vm.id);
    ctx.hypervisor()?.restore_snapshots(uuid_of(vm)?, &path)?;
    Ok(())
}

pub fn list(ctx: &Context, owner: Option<&str>) -> Result<Vec<View>> {
    let rows = db::vms::list(ctx.db()?, owner)?;
    let hv = ctx.hypervisor()?;
    let domains = match owner {
        Some(owner) => hv.domains_of(owner)?,
        None => hv.domains()?,
    };
    let power: HashMap<String, PowerState> = domains
        .into_iter()
        .map(|d| (d.uuid.to_string(), d.state))
        .collect();
    let users = os_users(ctx)?;
    Ok(rows
        .into_iter()
        .map(|vm| {
            let p = power.get(&vm.id).copied();
            view(ctx, vm, p, &users)
        })
        .collect())
}

/// The tenant's VMs (`vm list`).
pub fn list_mine(ctx: &Context) -> Result<Vec<View>> {
    let owner = ctx.tenant()?;
    list(ctx, Some(&owner))
}

/// Every VM, or one user's (`admin vms`).
pub fn list_all(ctx: &Context, user: Option<&str>) -> Result<Vec<View>> {
    if let Some(user) = user {
        if !db::users::exists(ctx.db()?, user)? {
            return Err(Error::not_found("user", user));
        }
    }
    list(ctx, user)
}

pub fn show(ctx: &Context, name: &str) -> Result<View> {
    let owner = ctx.tenant()?;
    let vm = owned(ctx, &owner, name)?;
    let power = ctx.hypervisor()?.power_state(uuid_of(&vm)?)?;
    Ok(view(ctx, vm, power, &os_users(ctx)?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Start,
    Stop { force: bool, timeout: Duration },
    Reboot,
}

impl Power {
    fn action(self) -> &'static str {
        match self {
            Power::Start => "vm.start",
            Power::Stop { .. } => "vm.stop",
            Power::Reboot => "vm.reboot",
        }
    }
}

pub fn power(ctx: &Context, name: &str, op: Power) -> Result<View> {
    let owner = ctx.tenant()?;
    let outcome = power_inner(ctx, &owner, name, op);
    ctx.audit(op.action(), &format!("{owner}/{name}"), &outcome);
    outcome
}

fn power_inner(ctx: &Context, owner: &str, name: &str, op: Power) -> Result<View> {
    let vm = owned(ctx, owner, name)?;
    if vm.state != State::Ready {
        return Err(Error::conflict(
            format!("VM `{name}` is {}", vm.state.as_str()),
            None,
        ));
    }
    let id = uuid_of(&vm)?;
    let hv = ctx.hypervisor()?;
    let state = hv.power_state(id)?.ok_or_else(|| {
        Error::conflict(
            format!("VM `{name}` has no libvirt domain"),
            Some("an administrator can repair this with `basphere admin reconcile`"),
        )
    })?;
    let running = matches!(
        state,
        PowerState::Running | PowerState::Paused | PowerState::ShuttingDown
    );
    match op {
        Power::Start if running => {
            return Err(Error::conflict(
                format!("VM `{name}` is already running"),
                None,
            ))
        }
        Power::Start => hv.start(id)?,
        Power::Stop { .. } | Power::Reboot if !running => {
            return Err(Error::conflict(
                format!("VM `{name}` is not running"),
                Some(&format!("start it with `vm start {name}`")),
            ))
        }
        Power::Stop { force: true, .. } => hv.destroy(id)?,
        Power::Stop {
            force: false,
            timeout,
        } => {
            hv.shutdown(id)?;
            // The command line bounds the timeout; a deadline past the clock's end is none.
            let deadline = Instant::now().checked_add(timeout);
            while hv.power_state(id)? != Some(PowerState::ShutOff) {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::conflict(
                        format!(
                            "VM `{name}` did not shut down within {}s",
                            timeout.as_secs()
                        ),
                        Some(&format!(
                            "the guest may ignore ACPI; power it off with `vm stop --force {name}`"
                        )),
                    ));
                }
                ctx.cancel.sleep(Duration::from_millis(200))?;
            }
        }
        Power::Reboot => hv.reboot(id)?,
    }
    let power = hv.power_state(id)?;
    Ok(view(ctx, vm, power, &os_users(ctx)?))
}

/// Attaches to the serial console of the tenant's running VM (`console`). Without
/// `force`, a console someone already uses is refused; with it, that session ends.
pub fn console(ctx: &Context, name: &str, force: bool) -> Result<virt::console::Console> {
    use virt::console::Attach;
    let owner = ctx.tenant()?;
    let outcome = (|| {
        let vm = owned(ctx, &owner, name)?;
        if vm.state != State::Ready {
            return Err(Error::conflict(
                format!("VM `{name}` is {}", vm.state.as_str()),
                None,
            ));
        }
        match virt::console::attach(&ctx.config.libvirt_uri, uuid_of(&vm)?, force)? {
            Attach::Ready(console) => Ok(console),
            Attach::Missing => Err(Error::conflict(
                format!("VM `{name}` has no libvirt domain"),
                Some("an administrator can repair this with `basphere admin reconcile`"),
            )),
            Attach::NotRunning => Err(Error::conflict(
                format!("VM `{name}` is not running"),
                Some(&format!("start it with `vm start {name}`")),
            )),
            Attach::Busy => Err(Error::conflict(
                format!("the console of VM `{name}` is in use by another session"),
                Some(&format!(
                    "detach that session with Ctrl-], or take the console over with `console --force {name}`"
                )),
            )),
        }
    })();
    let action = if force {
        "vm.console.force"
    } else {
        "vm.console"
    };
    ctx.audit(action, &format!("{owner}/{name}"), &outcome);
    outcome
}

/// Looks up a VM for `vm delete`, so the caller can confirm before `delete` runs.
pub fn get_mine(ctx: &Context, name: &str) -> Result<View> {
    show(ctx, name)
}

pub fn delete(ctx: &Context, name: &str) -> Result<()> {
    let owner = ctx.tenant()?;
    let outcome = (|| {
        let vm = owned(ctx, &owner, name)?;
        ctx.hypervisor()?;
        let _lock = lock::exclusive(&ctx.paths.lock(&vm.id))?;
        // The point of no return: cancelled before it, nothing is deleted; after it the
        // delete runs to the end (and `admin reconcile` finishes a row left `deleting`).
        ctx.cancel.check()?;
        db::vms::set_state(ctx.db()?, &vm.id, State::Deleting)?;
        teardown(ctx, &vm)
    })();
    ctx.audit("vm.delete", &format!("{owner}/{name}"), &outcome);
    outcome
}
