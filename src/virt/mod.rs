//! libvirt access: connection, domains, networks, DHCP reservations; disk
//! overlays ([`disk`]), cloud-init seeds ([`seed`]), serial consoles
//! ([`console`]) and the XML we hand to libvirt ([`xml`]).
//!
//! This layer knows libvirt and the external tools, nothing else: no quota, no
//! ownership checks, no printing. Names and sizes are validated by the caller;
//! every value that reaches XML or YAML is escaped here anyway.

pub mod console;
pub mod disk;
pub mod seed;
pub mod snapshot;
pub mod xml;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;
use virt::network::Network;
use virt::sys;

/// Default start of every libvirt object basphere owns: domains `bsp.OWNER.VM`,
/// networks `bsp-OWNER`, bridges `bspXXXXXX`.
pub const DEFAULT_PREFIX: &str = "bsp";

/// The XML namespace of the installation id that every domain and network basphere
/// defines carries in its `<metadata>`: whose object it is, whatever its name says.
pub const INSTALLATION_NS: &str = "https://basphere.dev/xmlns/installation/1";

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
const MAX_BRIDGE_NAME: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    /// The connection could not be opened.
    #[error("cannot connect to libvirt at `{uri}`: {reason}")]
    Unavailable { uri: String, reason: String },
    /// A libvirt call failed; `action` says what we were doing and names the object.
    #[error("libvirt: {action}: {message}")]
    Libvirt { action: String, message: String },
    /// An external tool failed or is missing.
    #[error("`{tool}` failed: {message}")]
    Tool { tool: String, message: String },
    #[error("template: {0}")]
    Template(String),
    /// A domain or network basphere would use or change carries another installation's
    /// id: another basphere on the same libvirtd with the same name prefix.
    #[error("{what} belongs to another basphere installation (`{installation}`)")]
    NotOurs { what: String, installation: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, VirtError>;

impl VirtError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VirtError {
        let context = context.into();
        move |source| VirtError::Io { context, source }
    }
}

impl From<minijinja::Error> for VirtError {
    fn from(e: minijinja::Error) -> Self {
        VirtError::Template(e.to_string())
    }
}

/// Builds the error for a failed libvirt call: `action` reads like
/// "defining domain `bsp.alice.web1`".
fn libvirt(action: impl Into<String>) -> impl FnOnce(virt::error::Error) -> VirtError {
    let action = action.into();
    move |e| VirtError::Libvirt {
        action,
        message: e.message().to_string(),
    }
}

fn is_code(e: &virt::error::Error, code: ErrorNumber) -> bool {
    e.code().is(code)
}

/// "unsupported flags": an older libvirt, or a driver (like `test://`) that
/// implements the call without the flag.
fn is_unsupported(e: &virt::error::Error) -> bool {
    is_code(e, ErrorNumber::InvalidArg) || is_code(e, ErrorNumber::NoSupport)
}

/// The one rule for objects with basphere's names: one that carries another
/// installation's id than `ours` is not ours to use, change or remove. One that carries
/// none was defined before ids existed, and is judged by the caller.
fn refuse_others(what: impl FnOnce() -> String, found: Option<String>, ours: &str) -> Result<()> {
    match found {
        Some(other) if other != ours => Err(VirtError::NotOurs {
            what: what(),
            installation: other,
        }),
        _ => Ok(()),
    }
}

/// The `<domain type=...>` basphere renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainType {
    Kvm,
    Qemu,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

impl fmt::Display for DomainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the configuration asks for: a fixed type, or detect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtTypeSetting {
    Auto,
    Kvm,
    Qemu,
}

/// A domain's power state, reduced to what people need to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Other,
}

impl PowerState {
    fn from_libvirt(state: virt::domain::DomainStateEnum) -> Self {
        match state.unwrap_or(DomainState::NoState) {
            DomainState::Running | DomainState::Blocked => PowerState::Running,
            DomainState::Paused => PowerState::Paused,
            DomainState::Shutdown => PowerState::ShuttingDown,
            DomainState::Shutoff => PowerState::ShutOff,
            DomainState::Crashed => PowerState::Crashed,
            DomainState::NoState | DomainState::PMSuspended => PowerState::Other,
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::ShuttingDown => "shutting down",
            PowerState::ShutOff => "shut off",
            PowerState::Crashed => "crashed",
            PowerState::Other => "other",
        })
    }
}

/// A static DHCP reservation on a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub name: String,
}

/// A tenant's NAT network.
#[derive(Clone, Debug)]
pub struct NetworkSpec<'a> {
    pub name: &'a str,
    pub bridge: &'a str,
    pub gateway: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub dhcp_start: Ipv4Addr,
    pub dhcp_end: Ipv4Addr,
    /// Static reservations, part of the network from its definition on.
    pub hosts: &'a [DhcpHost],
    /// This installation's id, written into the network's metadata.
    pub installation: &'a str,
}

/// Everything the domain XML needs.
#[derive(Clone, Debug)]
pub struct DomainSpec<'a> {
    pub name: &'a str,
    pub uuid: Uuid,
    pub domain_type: DomainType,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_path: &'a Path,
    pub seed_path: &'a Path,
    /// libvirt network the NIC joins. Empty renders a domain without a NIC.
    pub network: &'a str,
    pub mac: &'a str,
    pub owner: &'a str,
    pub vm_name: &'a str,
    /// This installation's id, written into the domain's metadata.
    pub installation: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    pub uuid: Uuid,
    pub name: String,
    pub state: PowerState,
}

/// `{prefix}.{owner}.{vm}`: the libvirt domain name of a user's VM.
pub fn domain_name(prefix: &str, owner: &str, vm: &str) -> String {
    format!("{prefix}.{owner}.{vm}")
}

/// `{prefix}-{owner}`: the libvirt network of a user.
pub fn network_name(prefix: &str, owner: &str) -> String {
    format!("{prefix}-{owner}")
}

/// `{prefix}{hex of the /24}`, e.g. `bsp0a6403` for 10.100.3.0/24: unique per
/// subnet, and within the 15 bytes Linux allows for an interface name as long
/// as the prefix has at most 8 characters.
pub fn bridge_name(prefix: &str, subnet: std::net::Ipv4Addr) -> String {
    let [a, b, c, _] = subnet.octets();
    let name = format!("{prefix}{a:02x}{b:02x}{c:02x}");
    assert!(
        name.len() <= MAX_BRIDGE_NAME,
        "bridge name `{name}` too long"
    );
    name
}

/// The MAC reserved for host address `host` of the network with pool index
/// `network`: QEMU's locally administered range, `52:54:00:NN:NN:HH`. Unique for
/// every address of a pool of up to 65,536 networks.
pub fn reserved_mac(network: u32, host: u8) -> String {
    assert!(network <= 0xffff, "network index {network} out of range");
    format!(
        "52:54:00:{:02x}:{:02x}:{host:02x}",
        network >> 8,
        network & 0xff
    )
}

/// One libvirt connection.
pub struct Hypervisor {
    conn: Connect,
    uri: String,
    /// Only objects whose names start with this are basphere's.
    prefix: String,
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hypervisor")
            .field("uri", &self.uri)
            .finish()
    }
}

/// True when the URI has no host part (`qemu:///system`, `test:///default`),
/// i.e. the hypervisor runs on this machine.
fn is_local_uri(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/'),
        None => true,
    }
}

/// Whether a capabilities document offers `<domain type='kvm'>` for an
/// x86_64 hvm guest.
fn caps_offer_kvm(caps: &str) -> bool {
    caps.split("<guest>").skip(1).any(|guest| {
        let guest = guest.split("</guest>").next().unwrap_or("");
        guest.contains("<os_type>hvm</os_type>")
            && guest.contains("<arch name='x86_64'>")
            && guest.contains("<domain type='kvm'")
    })
}

fn dev_kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

const UNDEFINE_FLAGS: [sys::virDomainUndefineFlagsValues; 3] = [
    sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_NVRAM
        | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
    sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    0,
];

impl Hypervisor {
    /// Opens a connection. Fails fast with [`VirtError::Unavailable`].
    pub fn open(uri: &str) -> Result<Self> {
        static QUIET: std::sync::Once = std::sync::Once::new();
        QUIET.call_once(virt::error::clear_error_callback);
        let conn = Connect::open(Some(uri)).map_err(|e| VirtError::Unavailable {
            uri: uri.to_string(),
            reason: e.message().to_string(),
        })?;
        tracing::debug!(uri, "connected to libvirt");
        Ok(Hypervisor {
            conn,
            uri: uri.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
        })
    }

    /// Sets the prefix that marks basphere's domains and networks (default `bsp`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Resolves the configured virtualization type. `Auto` picks kvm when
    /// the capabilities offer it for x86_64 hvm and, on a local URI, /dev/kvm
    /// opens read-write; otherwise qemu (TCG).
    pub fn domain_type(&self, setting: VirtTypeSetting) -> Result<DomainType> {
        match setting {
            VirtTypeSetting::Qemu => Ok(DomainType::Qemu),
            VirtTypeSetting::Kvm => {
                if self.offers_kvm()? {
                    Ok(DomainType::Kvm)
                } else {
                    Err(VirtError::Libvirt {
                        action: format!("checking capabilities of `{}`", self.uri),
                        message: "kvm is configured but the hypervisor does not offer \
                                  domain type kvm for x86_64"
                            .to_string(),
                    })
                }
            }
            VirtTypeSetting::Auto => {
                let local_ok = !is_local_uri(&self.uri) || dev_kvm_usable();
                if local_ok && self.offers_kvm()? && self.kvm_guest_starts() {
                    Ok(DomainType::Kvm)
                } else {
                    Ok(DomainType::Qemu)
                }
            }
        }
    }

    /// Starts and destroys a tiny transient kvm guest with the CPU model real VMs use.
    /// `/dev/kvm` and the capabilities can both say yes on hosts where guests still
    /// die at start (nested virtualisation refusing MSRs, for one), so only a start
    /// really tells.
    fn kvm_guest_starts(&self) -> bool {
        let name = format!("{}-kvm-probe-{}", self.prefix, Uuid::new_v4().simple());
        let xml = format!(
            "<domain type='kvm'><name>{name}</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os><cpu mode='host-passthrough'/>\
             <devices><graphics type='none'/><memballoon model='none'/></devices></domain>"
        );
        match self
            .conn
            .create_domain_xml(&xml, sys::VIR_DOMAIN_START_AUTODESTROY)
        {
            Ok(dom) => {
                let _ = dom.destroy();
                tracing::info!(uri = %self.uri, "kvm probe guest started: using kvm");
                true
            }
            Err(e) => {
                tracing::info!(uri = %self.uri, error = %e.message(), "kvm probe guest failed: using qemu");
                false
            }
        }
    }

    fn offers_kvm(&self) -> Result<bool> {
        let caps = self
            .conn
            .capabilities()
            .map_err(libvirt(format!("reading capabilities of `{}`", self.uri)))?;
        Ok(caps_offer_kvm(&caps))
    }

    // ---- networks -------------------------------------------------------

    fn lookup_network(&self, name: &str) -> Result<Option<Network>> {
        match self.conn.lookup_network_by_name(name) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_code(&e, ErrorNumber::NoNetwork) => Ok(None),
            Err(e) => Err(libvirt(format!("looking up network `{name}`"))(e)),
        }
    }

    fn network(&self, name: &str) -> Result<Network> {
        self.lookup_network(name)?
            .ok_or_else(|| VirtError::Libvirt {
                action: format!("looking up network `{name}`"),
                message: "no such network".to_string(),
            })
    }

    /// Defines the network if missing, starts it if inactive and marks it
    /// autostart. An existing network is not compared with `spec`, but one that
    /// carries another installation's id is refused: it is not ours to use.
    pub fn ensure_network(&self, spec: &NetworkSpec) -> Result<()> {
        let name = spec.name;
        let net = match self.lookup_network(name)? {
            Some(n) => {
                let found = xml::installation_of(&Self::net_xml(&n, name)?);
                refuse_others(|| format!("network `{name}`"), found, spec.installation)?;
                n
            }
            None => {
                let xml = xml::network_xml(spec)?;
                match self.conn.define_network_xml(&xml) {
                    Ok(n) => {
                        tracing::info!(network = name, "defined network");
                        n
                    }
                    // Someone else defined it between our lookup and define.
                    Err(e) => match self.lookup_network(name)? {
                        Some(n) => n,
                        None => return Err(libvirt(format!("defining network `{name}`"))(e)),
                    },
                }
            }
        };
        let active = net
            .is_active()
            .map_err(libvirt(format!("reading state of network `{name}`")))?;
        if !active {
            if let Err(e) = net.create() {
                // A concurrent caller may have started it.
                if !net.is_active().unwrap_or(false) {
                    return Err(libvirt(format!("starting network `{name}`"))(e));
                }
            } else {
                tracing::info!(network = name, "started network");
            }
        }
        let autostart = net
            .autostart()
            .map_err(libvirt(format!("reading autostart of network `{name}`")))?;
        if !autostart {
            net.set_autostart(true)
                .map_err(libvirt(format!("setting autostart on network `{name}`")))?;
        }
        Ok(())
    }

    /// Stops and undefines a network; a missing one is fine. One that carries another
    /// installation's id than `installation` is refused.
    pub fn remove_network(&self, name: &str, installation: &str) -> Result<()> {
        let Some(net) = self.lookup_network(name)? else {
            return Ok(());
        };
        let found = xml::installation_of(&Self::net_xml(&net, name)?);
        refuse_others(|| format!("network `{name}`"), found, installation)?;
        if net.is_active().unwrap_or(false) {
            if let Err(e) = net.destroy() {
                if !is_code(&e, ErrorNumber::OperationInvalid) {
                    return Err(libvirt(format!("stopping network `{name}`"))(e));
                }
            }
        }
        match net.undefine() {
            Ok(()) => {
                tracing::info!(network = name, "removed network");
                Ok(())
            }
            Err(e) if is_code(&e, ErrorNumber::NoNetwork) => Ok(()),
            Err(e) => Err(libvirt(format!("undefining network `{name}`"))(e)),
        }
    }

    /// The DHCP reservations in the network's persistent configuration.
    pub fn dhcp_hosts(&self, network: &str) -> Result<Vec<DhcpHost>> {
        let net = self.network(network)?;
        Self::net_dhcp_hosts(&net, network)
    }

    fn net_dhcp_hosts(net: &Network, name: &str) -> Result<Vec<DhcpHost>> {
        Ok(xml::parse_dhcp_hosts(&Self::net_xml(net, name)?))
    }

    /// The network's persistent configuration; drivers without INACTIVE have only one.
    fn net_xml(net: &Network, name: &str) -> Result<String> {
        net.xml_desc(sys::VIR_NETWORK_XML_INACTIVE)
            .or_else(|e| {
                if is_unsupported(&e) {
                    net.xml_desc(0)
                } else {
                    Err(e)
                }
            })
            .map_err(libvirt(format!("reading network `{name}`")))
    }

    /// basphere's networks (names starting with `bsp-`), each with the installation id
    /// it carries, if any.
    pub fn network_installations(&self) -> Result<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        for name in self.networks()? {
            // Removed between the listing and now: nothing to judge.
            let Some(net) = self.lookup_network(&name)? else {
                continue;
            };
            let id = xml::installation_of(&Self::net_xml(&net, &name)?);
            out.push((name, id));
        }
        Ok(out)
    }

    /// Records `installation` in a network that carries no id yet (one defined before
    /// basphere wrote ids). Only the persistent definition changes: the running
    /// network, its bridge and its guests are not touched.
    pub fn stamp_network(&self, name: &str, installation: &str) -> Result<()> {
        let net = self.network(name)?;
        let doc = Self::net_xml(&net, name)?;
        let found = xml::installation_of(&doc);
        if found.as_deref() == Some(installation) {
            return Ok(());
        }
        refuse_others(|| format!("network `{name}`"), found, installation)?;
        let stamped = xml::with_installation(&doc, installation)?;
        self.conn
            .define_network_xml(&stamped)
            .map_err(libvirt(format!(
                "recording the installation id in network `{name}`"
            )))?;
        tracing::info!(network = name, installation, "recorded installation id");
        Ok(())
    }

    fn update_dhcp(
        net: &Network,
        name: &str,
        command: sys::virNetworkUpdateCommand,
        host: &DhcpHost,
    ) -> Result<()> {
        let active = net
            .is_active()
            .map_err(libvirt(format!("reading state of network `{name}`")))?;
        let flags = if active {
            sys::VIR_NETWORK_UPDATE_AFFECT_LIVE | sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
        } else {
            sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
        };
        let verb = if command == sys::VIR_NETWORK_UPDATE_COMMAND_DELETE {
            "removing"
        } else {
            "adding"
        };
        net.update(
            command,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            &xml::dhcp_host_xml(host),
            flags,
        )
        .map_err(libvirt(format!(
            "{verb} DHCP host {} ({}) on network `{name}`",
            host.ip, host.mac
        )))
    }

    /// Reserves `host.ip` for `host.mac`. Any entry already holding the same
    /// MAC or IP is removed first, so a stale reservation never blocks.
    pub fn add_dhcp_host(&self, network: &str, host: &DhcpHost) -> Result<()> {
        let net = self.network(network)?;
        let clashing: Vec<DhcpHost> = Self::net_dhcp_hosts(&net, network)?
            .into_iter()
            .filter(|old| old.mac.eq_ignore_ascii_case(&host.mac) || old.ip == host.ip)
            .collect();
        if clashing.len() == 1 && clashing[0] == *host {
            return Ok(());
        }
        for old in &clashing {
            tracing::info!(network, mac = %old.mac, ip = %old.ip, "replacing stale DHCP host");
            Self::update_dhcp(&net, network, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, old)?;
        }
        Self::update_dhcp(
            &net,
            network,
            sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            host,
        )
    }

    /// Removes the reservation for `host.mac` / `host.ip`; a missing network
    /// or entry is fine.
    pub fn remove_dhcp_host(&self, network: &str, host: &DhcpHost) -> Result<()> {
        let Some(net) = self.lookup_network(network)? else {
            return Ok(());
        };
        for old in Self::net_dhcp_hosts(&net, network)? {
            if old.mac.eq_ignore_ascii_case(&host.mac) || old.ip == host.ip {
                Self::update_dhcp(&net, network, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, &old)?;
            }
        }
        Ok(())
    }

    /// basphere's networks (names starting with `bsp-`).
    pub fn networks(&self) -> Result<Vec<String>> {
        let nets = self
            .conn
            .list_all_networks(0)
            .map_err(libvirt(format!("listing networks on `{}`", self.uri)))?;
        let mut names = Vec::new();
        for n in nets {
            let name = n.name().map_err(libvirt("reading network name"))?;
            if name.starts_with(&format!("{}-", self.prefix)) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    // ---- domains --------------------------------------------------------

    fn lookup_domain(&self, uuid: Uuid) -> Result<Option<Domain>> {
        match self.conn.lookup_domain_by_uuid(uuid) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(libvirt(format!("looking up domain `{uuid}`"))(e)),
        }
    }

    fn domain(&self, uuid: Uuid) -> Result<(Domain, String)> {
        let dom = self
            .lookup_domain(uuid)?
            .ok_or_else(|| VirtError::Libvirt {
                action: format!("looking up domain `{uuid}`"),
                message: "no such domain".to_string(),
            })?;
        let name = dom.name().unwrap_or_else(|_| uuid.to_string());
        Ok((dom, name))
    }

    /// Renders the domain XML and defines (persists) the domain.
    pub fn define_domain(&self, spec: &DomainSpec) -> Result<()> {
        let xml = xml::domain_xml(spec)?;
        self.conn
            .define_domain_xml(&xml)
            .map_err(libvirt(format!("defining domain `{}`", spec.name)))?;
        tracing::info!(domain = spec.name, uuid = %spec.uuid, "defined domain");
        Ok(())
    }

    pub fn start(&self, uuid: Uuid) -> Result<()> {
        let (dom, name) = self.domain(uuid)?;
        dom.create()
            .map_err(libvirt(format!("starting domain `{name}`")))?;
        tracing::info!(domain = %name, "started domain");
        Ok(())
    }

    /// Asks the guest to power off (ACPI power button; a driver without that
    /// flag, like `test://`, uses its default graceful method). Returns at once.
    pub fn shutdown(&self, uuid: Uuid) -> Result<()> {
        let (dom, name) = self.domain(uuid)?;
        dom.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            .or_else(|e| {
                if is_unsupported(&e) {
                    dom.shutdown()
                } else {
                    Err(e)
                }
            })
            .map_err(libvirt(format!("shutting down domain `{name}`")))
    }

    /// Pulls the plug. A domain that is not running is fine.
    pub fn destroy(&self, uuid: Uuid) -> Result<()> {
        let (dom, name) = self.domain(uuid)?;
        Self::destroy_dom(&dom, &name)
    }

    fn destroy_dom(dom: &Domain, name: &str) -> Result<()> {
        match dom.destroy() {
            Ok(()) => {
                tracing::info!(domain = name, "destroyed domain");
                Ok(())
            }
            Err(e) if is_code(&e, ErrorNumber::OperationInvalid) => Ok(()),
            Err(e) => Err(libvirt(format!("stopping domain `{name}`"))(e)),
        }
    }

    /// Asks the guest to reboot (ACPI power button, or the driver's default).
    pub fn reboot(&self, uuid: Uuid) -> Result<()> {
        let (dom, name) = self.domain(uuid)?;
        dom.reboot(sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
            .or_else(|e| {
                if is_unsupported(&e) {
                    dom.reboot(0)
                } else {
                    Err(e)
                }
            })
            .map_err(libvirt(format!("rebooting domain `{name}`")))
    }

    /// Stops the domain if needed and removes its definition. Its snapshots' XML is
    /// first written to `snapshots_to` (beside the disk), so that
    /// [`Hypervisor::restore_snapshots`] can define them again: libvirt forgets them
    /// with the domain, while the disk keeps their data. Checkpoint, managed-save and
    /// NVRAM metadata go; disks stay. A missing domain is fine; one that carries another
    /// installation's id than `installation` is refused.
    pub fn undefine(&self, uuid: Uuid, installation: &str, snapshots_to: &Path) -> Result<()> {
        let Some(dom) = self.lookup_domain(uuid)? else {
            return Ok(());
        };
        let name = dom.name().unwrap_or_else(|_| uuid.to_string());
        let doc = match dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
            Ok(doc) => doc,
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => return Ok(()),
            Err(e) => return Err(libvirt(format!("reading domain `{name}`"))(e)),
        };
        refuse_others(
            || format!("domain `{name}`"),
            xml::installation_of(&doc),
            installation,
        )?;
        // Before anything stops: if they cannot be kept, the domain stays as it is.
        snapshot::save_snapshots(&dom, &name, snapshots_to)?;
        if dom.is_active().unwrap_or(true) {
            Self::destroy_dom(&dom, &name)?;
        }
        let mut last = None;
        for flags in UNDEFINE_FLAGS {
            match dom.undefine_flags(flags) {
                Ok(()) => {
                    tracing::info!(domain = %name, "undefined domain");
                    return Ok(());
                }
                Err(e) if is_code(&e, ErrorNumber::NoDomain) => return Ok(()),
                // Older libvirt or another driver: retry with fewer flags.
                Err(e) if is_unsupported(&e) => {
                    last = Some(e);
                }
                Err(e) => return Err(libvirt(format!("undefining domain `{name}`"))(e)),
            }
        }
        Err(libvirt(format!("undefining domain `{name}`"))(
            last.expect("at least one undefine attempt"),
        ))
    }

    /// The domain's power state, or `None` when there is no such domain.
    pub fn power_state(&self, uuid: Uuid) -> Result<Option<PowerState>> {
        let Some(dom) = self.lookup_domain(uuid)? else {
            return Ok(None);
        };
        match dom.state() {
            Ok((state, _)) => Ok(Some(PowerState::from_libvirt(state))),
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(libvirt(format!("reading state of domain `{uuid}`"))(e)),
        }
    }

    /// basphere's domains (names starting with `bsp.`), sorted by name.
    ///
    /// One `virConnectListAllDomains` call gives the set (so no domain is
    /// missed while others change state); names and UUIDs come with it, and
    /// each basphere domain costs one state query.
    pub fn domains(&self) -> Result<Vec<DomainInfo>> {
        self.domains_matching(&format!("{}.", self.prefix))
    }

    /// The domains of one owner: only theirs cost a state query.
    pub fn domains_of(&self, owner: &str) -> Result<Vec<DomainInfo>> {
        self.domains_matching(&format!("{}.{owner}.", self.prefix))
    }

    /// basphere's domains (names starting with `bsp.`), each with the installation id
    /// it carries in its persistent definition, if any.
    pub fn domain_installations(&self) -> Result<Vec<(DomainInfo, Option<String>)>> {
        let mut out = Vec::new();
        for info in self.domains()? {
            // Undefined between the listing and now: nothing to judge.
            let Some(dom) = self.lookup_domain(info.uuid)? else {
                continue;
            };
            let doc = match dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
                Ok(doc) => doc,
                Err(e) if is_code(&e, ErrorNumber::NoDomain) => continue,
                Err(e) => return Err(libvirt(format!("reading domain `{}`", info.name))(e)),
            };
            out.push((info, xml::installation_of(&doc)));
        }
        Ok(out)
    }

    /// Records `installation` in a domain that carries no id yet (one defined before
    /// basphere wrote ids), in its persistent definition and, while it runs, its live one:
    /// the guest is not touched.
    pub fn stamp_domain(&self, uuid: Uuid, installation: &str) -> Result<()> {
        let (dom, name) = self.domain(uuid)?;
        let doc = dom
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(libvirt(format!("reading domain `{name}`")))?;
        let found = xml::installation_of(&doc);
        if found.as_deref() == Some(installation) {
            return Ok(());
        }
        refuse_others(|| format!("domain `{name}`"), found, installation)?;
        let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
        if dom.is_active().unwrap_or(false) {
            flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        let element = format!("<installation>{}</installation>", xml::escape(installation));
        dom.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&element),
            Some("bsp"),
            Some(INSTALLATION_NS),
            flags,
        )
        .map_err(libvirt(format!(
            "recording the installation id in domain `{name}`"
        )))?;
        tracing::info!(domain = %name, installation, "recorded installation id");
        Ok(())
    }

    fn domains_matching(&self, start: &str) -> Result<Vec<DomainInfo>> {
        let all = self
            .conn
            .list_all_domains(0)
            .map_err(libvirt(format!("listing domains on `{}`", self.uri)))?;
        let mut out = Vec::new();
        for dom in all {
            let name = dom.name().map_err(libvirt("reading domain name"))?;
            if !name.starts_with(start) {
                continue;
            }
            let uuid = dom
                .uuid()
                .map_err(libvirt(format!("reading uuid of domain `{name}`")))?;
            let state = match dom.state() {
                Ok((s, _)) => PowerState::from_libvirt(s),
                // Undefined between the listing and now.
                Err(e) if is_code(&e, ErrorNumber::NoDomain) => continue,
                Err(e) => return Err(libvirt(format!("reading state of domain `{name}`"))(e)),
            };
            out.push(DomainInfo { uuid, name, state });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(domain_name("bsp", "alice", "web1"), "bsp.alice.web1");
        assert_eq!(network_name("bsp", "alice"), "bsp-alice");
        let net = |a, b, c| std::net::Ipv4Addr::new(a, b, c, 0);
        assert_eq!(bridge_name("bsp", net(10, 100, 3)), "bsp0a6403");
        assert_eq!(bridge_name("abcdefgh", net(255, 255, 255)).len(), 14);
    }

    #[test]
    fn reserved_macs_are_qemu_local_and_distinct() {
        assert_eq!(reserved_mac(0, 10), "52:54:00:00:00:0a");
        assert_eq!(reserved_mac(0x1234, 254), "52:54:00:12:34:fe");
        let all: std::collections::HashSet<String> = (0..300)
            .flat_map(|n| (10..=254).map(move |h| reserved_mac(n, h)))
            .collect();
        assert_eq!(all.len(), 300 * 245);
    }

    #[test]
    fn power_state_display() {
        assert_eq!(PowerState::ShutOff.to_string(), "shut off");
        assert_eq!(PowerState::ShuttingDown.to_string(), "shutting down");
        assert_eq!(
            serde_json::to_string(&PowerState::ShutOff).unwrap(),
            "\"shut_off\""
        );
    }

    #[test]
    fn local_uris() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("test:///default"));
        assert!(is_local_uri("qemu+unix:///system?socket=/x"));
        assert!(!is_local_uri("qemu+ssh://hv2/system"));
    }

    #[test]
    fn kvm_in_capabilities() {
        let with = "<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>\
                    <domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";
        let without = "<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>\
                       <domain type='qemu'/></arch></guest><guest><os_type>hvm</os_type>\
                       <arch name='aarch64'><domain type='kvm'/></arch></guest></capabilities>";
        assert!(caps_offer_kvm(with));
        assert!(!caps_offer_kvm(without));
    }
}
