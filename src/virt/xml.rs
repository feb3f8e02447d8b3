//! The XML basphere gives libvirt, rendered from `templates/*.xml`.
//!
//! Every value printed by a template is XML-escaped (`& < > " '`, tabs and line
//! breaks); only the template text itself is trusted. Undefined variables are errors,
//! and so is a value holding a character XML cannot carry (most C0 controls).

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use minijinja::value::Value;
use minijinja::{context, AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use super::{DhcpHost, DomainSpec, NetworkSpec, Result, VirtError, INSTALLATION_NS};

const DOMAIN_TEMPLATE: &str = include_str!("../../templates/domain.xml");
const NETWORK_TEMPLATE: &str = include_str!("../../templates/network.xml");

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|_| AutoEscape::Custom("xml"));
        env.set_formatter(|out, _state, value| {
            let text = value.to_string();
            if value.is_safe() {
                out.write_str(&text)?;
            } else if let Some(c) = text.chars().find(|c| !is_xml_char(*c)) {
                let why = format!("{c:?} cannot be written in XML");
                return Err(minijinja::Error::new(ErrorKind::InvalidOperation, why));
            } else {
                out.write_str(&escape(&text))?;
            }
            Ok(())
        });
        env.add_template("domain.xml", DOMAIN_TEMPLATE)
            .expect("templates/domain.xml parses");
        env.add_template("network.xml", NETWORK_TEMPLATE)
            .expect("templates/network.xml parses");
        env
    })
}

fn render(name: &str, ctx: Value) -> Result<String> {
    Ok(env().get_template(name)?.render(ctx)?)
}

fn path_str<'a>(what: &str, path: &'a std::path::Path) -> Result<&'a str> {
    path.to_str()
        .ok_or_else(|| VirtError::Template(format!("{what} `{}` is not UTF-8", path.display())))
}

/// Whether XML 1.0 can carry `c` at all, escaped or not.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Escapes text for XML content and attribute values (either quote style). Tabs and
/// line breaks become character references: a parser turns literal ones in an
/// attribute into spaces, and a `\r` anywhere into `\n`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses XML escaping: the five named entities and numeric references.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The domain XML for `spec`.
pub fn domain_xml(spec: &DomainSpec) -> Result<String> {
    render(
        "domain.xml",
        context! {
            name => spec.name,
            uuid => spec.uuid.to_string(),
            domain_type => spec.domain_type.as_str(),
            vcpus => spec.vcpus,
            memory_mib => spec.memory_mib,
            disk_path => path_str("disk path", spec.disk_path)?,
            seed_path => path_str("seed path", spec.seed_path)?,
            network => spec.network,
            mac => spec.mac,
            owner => spec.owner,
            vm_name => spec.vm_name,
            installation => spec.installation,
        },
    )
}

/// The NAT network XML for `spec`.
pub fn network_xml(spec: &NetworkSpec) -> Result<String> {
    render(
        "network.xml",
        context! {
            name => spec.name,
            bridge => spec.bridge,
            gateway => spec.gateway.to_string(),
            netmask => spec.netmask.to_string(),
            dhcp_start => spec.dhcp_start.to_string(),
            dhcp_end => spec.dhcp_end.to_string(),
            hosts => spec.hosts.iter().map(|h| context! { mac => h.mac, ip => h.ip.to_string() }).collect::<Vec<_>>(),
            installation => spec.installation,
        },
    )
}

/// The installation id in a domain or network document: the text of the
/// `<installation>` element of [`INSTALLATION_NS`] in its top-level `<metadata>`.
/// `None` when it has none (or an empty one), or the document does not parse.
pub fn installation_of(doc: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(doc).ok()?;
    let metadata = doc
        .root_element()
        .children()
        .find(|n| n.is_element() && n.has_tag_name("metadata"))?;
    let element = metadata
        .children()
        .find(|n| n.has_tag_name((INSTALLATION_NS, "installation")))?;
    let id = element.text().unwrap_or("").trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The `<installation>` element for the id `id`, in basphere's namespace.
fn installation_element(id: &str) -> String {
    format!(
        "<bsp:installation xmlns:bsp=\"{INSTALLATION_NS}\">{}</bsp:installation>",
        escape(id)
    )
}

/// `doc` (a network's XML, as libvirt gives it) with the installation id `id` added to
/// its `<metadata>`, which is made if missing. A document that already carries an id
/// is refused: it is changed only by being stamped once.
pub fn with_installation(doc: &str, id: &str) -> Result<String> {
    let bad = |why: &str| VirtError::Template(format!("cannot add the installation id: {why}"));
    if let Some(found) = installation_of(doc) {
        return Err(bad(&format!("the document already carries `{found}`")));
    }
    let parsed = roxmltree::Document::parse(doc).map_err(|e| bad(&e.to_string()))?;
    let root = parsed.root_element();
    let child = |name: &str| {
        root.children()
            .find(|n| n.is_element() && n.has_tag_name(name))
    };
    let element = installation_element(id);
    let (at, insert) = match child("metadata") {
        Some(metadata) => {
            let range = metadata.range();
            let text = &doc[range.clone()];
            match text.strip_suffix("</metadata>") {
                Some(_) => (range.end - "</metadata>".len(), element),
                // `<metadata/>`: put a whole element in its place.
                None => {
                    let mut out = doc.to_owned();
                    out.replace_range(range, &format!("<metadata>{element}</metadata>"));
                    return Ok(out);
                }
            }
        }
        None => {
            let after = child("uuid").or_else(|| child("name"));
            let after = after.ok_or_else(|| bad("it has no <name>"))?;
            (
                after.range().end,
                format!("\n  <metadata>{element}</metadata>"),
            )
        }
    };
    let mut out = doc.to_owned();
    out.insert_str(at, &insert);
    Ok(out)
}

/// The `<host/>` element of a DHCP reservation, for `virNetworkUpdate`.
pub fn dhcp_host_xml(host: &DhcpHost) -> String {
    let mut xml = format!("<host mac='{}'", escape(&host.mac));
    if !host.name.is_empty() {
        xml.push_str(&format!(" name='{}'", escape(&host.name)));
    }
    xml.push_str(&format!(" ip='{}'/>", host.ip));
    xml
}

/// Attributes of one start tag's inner text (`mac='..' ip=".."`).
fn attributes(mut tag: &str) -> Vec<(&str, String)> {
    let mut attrs = Vec::new();
    loop {
        tag = tag.trim_start();
        let Some(eq) = tag.find('=') else { break };
        let key = tag[..eq].trim();
        let after = tag[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            break;
        };
        let Some(close) = after[1..].find(quote) else {
            break;
        };
        attrs.push((key, unescape(&after[1..1 + close])));
        tag = &after[close + 2..];
    }
    attrs
}

/// The IPv4 reservations (`<ip><dhcp><host mac=.. ip=../>`) in a network
/// XML document. Entries without a MAC or an IPv4 address are skipped.
pub fn parse_dhcp_hosts(doc: &str) -> Vec<DhcpHost> {
    let mut hosts = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("<dhcp>") {
        let section = &rest[start + "<dhcp>".len()..];
        let end = section.find("</dhcp>").unwrap_or(section.len());
        let mut body = &section[..end];
        while let Some(h) = body.find("<host") {
            body = &body[h + "<host".len()..];
            if !body.starts_with(|c: char| c.is_whitespace()) {
                continue;
            }
            let close = body.find('>').unwrap_or(body.len());
            let tag = body[..close].trim_end_matches('/');
            let attrs = attributes(tag);
            let get = |k: &str| attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            if let (Some(mac), Some(ip)) = (get("mac"), get("ip")) {
                if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                    hosts.push(DhcpHost {
                        mac,
                        ip,
                        name: get("name").unwrap_or_default(),
                    });
                }
            }
            body = &body[close..];
        }
        rest = &section[end..];
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::super::DomainType;
    use super::*;
    use std::path::Path;

    fn spec<'a>(domain_type: DomainType, owner: &'a str, vm_name: &'a str) -> DomainSpec<'a> {
        DomainSpec {
            name: "bsp.alice.web1",
            uuid: uuid::Uuid::parse_str("5b5e0c1e-8d43-4c0a-9a43-3f1b2b0e7a11").unwrap(),
            domain_type,
            vcpus: 2,
            memory_mib: 2048,
            disk_path: Path::new("/var/lib/basphere/disks/web1.qcow2"),
            seed_path: Path::new("/var/lib/basphere/seeds/web1.iso"),
            network: "bsp-alice",
            mac: "52:54:00:12:34:56",
            owner,
            vm_name,
            installation: "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        }
    }

    #[test]
    fn domain_xml_has_the_devices_we_rely_on() {
        let xml = domain_xml(&spec(DomainType::Kvm, "alice", "web1")).unwrap();
        for part in [
            "<domain type='kvm'>",
            "<name>bsp.alice.web1</name>",
            "<uuid>5b5e0c1e-8d43-4c0a-9a43-3f1b2b0e7a11</uuid>",
            "<memory unit='MiB'>2048</memory>",
            "<vcpu placement='static'>2</vcpu>",
            "<type arch='x86_64' machine='pc'>hvm</type>",
            "<boot dev='hd'/>",
            "<acpi/>",
            "<apic/>",
            "<clock offset='utc'/>",
            "<on_poweroff>destroy</on_poweroff>",
            "<on_reboot>restart</on_reboot>",
            "<on_crash>destroy</on_crash>",
            "<driver name='qemu' type='qcow2' cache='none' discard='unmap'/>",
            "<source file='/var/lib/basphere/disks/web1.qcow2'/>",
            "<target dev='vda' bus='virtio'/>",
            "<source file='/var/lib/basphere/seeds/web1.iso'/>",
            "<target dev='sda' bus='sata'/>",
            "<readonly/>",
            "<source network='bsp-alice'/>",
            "<mac address='52:54:00:12:34:56'/>",
            "<model type='virtio'/>",
            "<serial type='pty'>",
            "<console type='pty'>",
            "<target type='virtio' name='org.qemu.guest_agent.0'/>",
            "<memballoon model='virtio'/>",
            "<backend model='random'>/dev/urandom</backend>",
            "<bsp:vm xmlns:bsp=\"https://basphere.dev/xmlns/vm/1\">",
            "<bsp:owner>alice</bsp:owner>",
            "<bsp:name>web1</bsp:name>",
            "<bsp:installation xmlns:bsp=\"https://basphere.dev/xmlns/installation/1\">0f1e2d3c4b5a69788796a5b4c3d2e1f0</bsp:installation>",
            "<cpu mode='host-passthrough'",
        ] {
            assert!(xml.contains(part), "missing {part} in\n{xml}");
        }
        // SeaBIOS: no UEFI firmware, or internal snapshots break.
        assert!(!xml.contains("<loader"), "{xml}");
        assert!(!xml.contains("firmware="), "{xml}");
        assert!(!xml.contains("{{") && !xml.contains("{%"), "{xml}");
    }

    #[test]
    fn host_passthrough_only_for_kvm() {
        let xml = domain_xml(&spec(DomainType::Qemu, "alice", "web1")).unwrap();
        assert!(xml.starts_with("<domain type='qemu'>"), "{xml}");
        assert!(!xml.contains("host-passthrough"), "{xml}");
        assert!(
            xml.contains("<model fallback='allow'>qemu64</model>"),
            "{xml}"
        );
    }

    #[test]
    fn empty_network_means_no_nic() {
        let mut s = spec(DomainType::Qemu, "alice", "web1");
        s.network = "";
        let xml = domain_xml(&s).unwrap();
        assert!(!xml.contains("<interface"), "{xml}");
    }

    #[test]
    fn every_value_is_escaped() {
        let mut s = spec(DomainType::Kvm, "o<&'\"wner", "vm</bsp:name><x a='1'>&amp;");
        let disk = Path::new("/tmp/a'b<c>&d\".qcow2");
        s.disk_path = disk;
        s.mac = "52:54:00:00:00:01'/><evil/";
        let xml = domain_xml(&s).unwrap();
        assert!(
            xml.contains("<bsp:owner>o&lt;&amp;&#39;&quot;wner</bsp:owner>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<bsp:name>vm&lt;/bsp:name&gt;&lt;x a=&#39;1&#39;&gt;&amp;amp;</bsp:name>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<source file='/tmp/a&#39;b&lt;c&gt;&amp;d&quot;.qcow2'/>"),
            "{xml}"
        );
        assert!(
            xml.contains("52:54:00:00:00:01&#39;/&gt;&lt;evil/"),
            "{xml}"
        );
        assert!(!xml.contains("o<&'\"wner"), "{xml}");
        assert!(!xml.contains("<x a="), "{xml}");
        assert!(!xml.contains("<evil"), "{xml}");
        // Exactly the tags the template has, nothing smuggled in.
        assert_eq!(xml.matches('<').count(), {
            let clean = domain_xml(&spec(DomainType::Kvm, "a", "b")).unwrap();
            clean.matches('<').count()
        });
    }

    /// A tab or line break in a path reached libvirt as a space; a control character
    /// made XML that does not parse.
    #[test]
    fn line_breaks_survive_and_control_characters_are_refused() {
        let mut s = spec(DomainType::Kvm, "alice", "web1");
        let disk = Path::new("/srv/a\tb\nc\rd.qcow2");
        s.disk_path = disk;
        let xml = domain_xml(&s).unwrap();
        assert!(
            xml.contains("<source file='/srv/a&#9;b&#10;c&#13;d.qcow2'/>"),
            "{xml}"
        );
        let bad = Path::new("/srv/a\u{1}b.qcow2");
        s.disk_path = bad;
        assert!(domain_xml(&s).is_err());
    }

    #[test]
    fn network_xml_is_nat_with_dhcp_range() {
        let xml = network_xml(&NetworkSpec {
            name: "bsp-alice",
            bridge: "bsp-n7",
            gateway: "10.77.7.1".parse().unwrap(),
            netmask: "255.255.255.0".parse().unwrap(),
            dhcp_start: "10.77.7.2".parse().unwrap(),
            dhcp_end: "10.77.7.9".parse().unwrap(),
            hosts: &[DhcpHost {
                mac: "52:54:00:00:07:0a".into(),
                ip: "10.77.7.10".parse().unwrap(),
                name: String::new(),
            }],
            installation: "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        })
        .unwrap();
        assert_eq!(
            installation_of(&xml).as_deref(),
            Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        );
        for part in [
            "<name>bsp-alice</name>",
            "<forward mode='nat'/>",
            "<bridge name='bsp-n7' stp='on' delay='0'/>",
            "<ip address='10.77.7.1' netmask='255.255.255.0'>",
            "<range start='10.77.7.2' end='10.77.7.9'/>",
            "<host mac='52:54:00:00:07:0a' ip='10.77.7.10'/>",
        ] {
            assert!(xml.contains(part), "missing {part} in\n{xml}");
        }
    }

    #[test]
    fn dhcp_hosts_round_trip_through_xml() {
        let host = DhcpHost {
            mac: "52:54:00:aa:bb:cc".into(),
            ip: "10.0.0.5".parse().unwrap(),
            name: "we'b<1>".into(),
        };
        let elem = dhcp_host_xml(&host);
        assert_eq!(
            elem,
            "<host mac='52:54:00:aa:bb:cc' name='we&#39;b&lt;1&gt;' ip='10.0.0.5'/>"
        );
        let doc = format!(
            "<network><dns><host ip='10.0.0.9'><hostname>x</hostname></host></dns>\
             <ip address='10.0.0.1'><dhcp><range start='10.0.0.2' end='10.0.0.3'/>{elem}\
             <host mac=\"52:54:00:00:00:02\" ip=\"10.0.0.6\"/>\
             <host id='0:1' ip='10.0.0.7'/></dhcp></ip></network>"
        );
        let hosts = parse_dhcp_hosts(&doc);
        assert_eq!(
            hosts,
            vec![
                host,
                DhcpHost {
                    mac: "52:54:00:00:00:02".into(),
                    ip: "10.0.0.6".parse().unwrap(),
                    name: String::new(),
                }
            ]
        );
    }

    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

    /// Networks defined before installation ids existed are given ours, wherever
    /// libvirt put (or left out) their metadata.
    #[test]
    fn an_installation_id_is_added_to_a_network_once() {
        let plain = "<network>\n  <name>bsp-alice</name>\n  <uuid>6c1f</uuid>\n  <forward mode='nat'/>\n</network>\n";
        let with_other =
            "<network><name>n</name><metadata><x:y xmlns:x='urn:x'>keep</x:y></metadata></network>";
        let empty = "<network><name>n</name><metadata/></network>";
        for doc in [plain, with_other, empty] {
            assert_eq!(installation_of(doc), None, "{doc}");
            let stamped = with_installation(doc, ID).unwrap();
            assert_eq!(installation_of(&stamped).as_deref(), Some(ID), "{stamped}");
            let parsed = roxmltree::Document::parse(&stamped).unwrap();
            let metadata = parsed
                .descendants()
                .filter(|n| n.has_tag_name("metadata"))
                .count();
            assert_eq!(metadata, 1, "{stamped}");
            assert!(with_installation(&stamped, ID).is_err(), "stamped twice");
        }
        let stamped = with_installation(plain, ID).unwrap();
        assert!(
            stamped.contains("<uuid>6c1f</uuid>\n  <metadata>"),
            "{stamped}"
        );
        assert!(with_installation(with_other, ID)
            .unwrap()
            .contains("keep</x:y>"));
        // Another namespace's `installation` is not ours.
        let lookalike =
            "<network><name>n</name><metadata><installation>x</installation></metadata></network>";
        assert_eq!(installation_of(lookalike), None);
        assert_eq!(installation_of("not xml"), None);
    }

    #[test]
    fn unescape_reverses_escape() {
        let s = "a&b<c>d\"e'f &#x41;&#66;&unknown; &";
        assert_eq!(unescape(&escape(s)), s);
        assert_eq!(unescape("&#x41;&#66;&apos;"), "AB'");
    }
}

#[cfg(test)]
mod prop {
    use super::super::{bridge_name, domain_name, network_name, reserved_mac, DomainType};
    use super::*;
    use crate::context::Paths;
    use crate::testing::{any_text, config, text_near};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use roxmltree::{Document, Node};
    use std::path::PathBuf;

    const BSP: &str = "https://basphere.dev/xmlns/vm/1";

    /// Characters that mean something to XML, line breaks, and plain ones.
    const XMLISH: &str = "a1 &<>\"';#x/=\t\n\r";

    /// Any text XML can carry: every character but the few it has no place for.
    fn xml_text(max: usize) -> impl Strategy<Value = String> {
        text_near(XMLISH, max).prop_map(|s| s.chars().filter(|c| is_xml_char(*c)).collect())
    }

    /// A name prefix, user id and VM name as the configuration and validators accept them.
    fn names() -> impl Strategy<Value = (String, String, String)> {
        let user = "[a-z][a-z0-9-]{2,31}".prop_filter("a user id", |u| {
            u.parse::<crate::validate::UserId>().is_ok()
        });
        ("[a-z][a-z0-9]{0,7}", user, "[a-z][a-z0-9-]{0,62}")
    }

    /// Everything a domain's XML is rendered from, as owned values.
    #[derive(Clone, Debug)]
    struct Domain {
        name: String,
        uuid: uuid::Uuid,
        domain_type: DomainType,
        vcpus: u32,
        memory_mib: u64,
        disk: PathBuf,
        seed: PathBuf,
        network: String,
        mac: String,
        owner: String,
        vm_name: String,
        installation: String,
    }

    impl Domain {
        fn spec(&self) -> DomainSpec<'_> {
            DomainSpec {
                name: &self.name,
                uuid: self.uuid,
                domain_type: self.domain_type,
                vcpus: self.vcpus,
                memory_mib: self.memory_mib,
                disk_path: &self.disk,
                seed_path: &self.seed,
                network: &self.network,
                mac: &self.mac,
                owner: &self.owner,
                vm_name: &self.vm_name,
                installation: &self.installation,
            }
        }

        /// Every string the template prints: the MAC only with a network.
        fn texts(&self) -> [&str; 8] {
            let disk = self.disk.to_str().unwrap_or("");
            let seed = self.seed.to_str().unwrap_or("");
            let mac = if self.network.is_empty() {
                ""
            } else {
                &self.mac
            };
            [
                &self.name,
                disk,
                seed,
                &self.network,
                mac,
                &self.owner,
                &self.vm_name,
                &self.installation,
            ]
        }
    }

    /// A VM as `create-vm` makes one: validated names, an id, any sizes, any absolute
    /// data directory the configuration accepts.
    fn accepted_domain() -> impl Strategy<Value = Domain> {
        let data_dir = prop_oneof![
            Just("/var/lib/basphere".to_owned()),
            text_near("ab/ .-'&<\t\n", 20).prop_map(|d| format!("/{d}")),
        ];
        let mac = (0u32..=0xffff, any::<u8>()).prop_map(|(n, h)| reserved_mac(n, h));
        (
            names(),
            any::<u128>(),
            prop_oneof![Just(DomainType::Kvm), Just(DomainType::Qemu)],
            any::<u32>(),
            any::<u64>(),
            data_dir,
            mac,
            any::<bool>(),
        )
            .prop_map(
                |((prefix, owner, vm), id, domain_type, vcpus, memory_mib, data_dir, mac, nic)| {
                    let uuid = uuid::Uuid::from_u128(id);
                    let paths = Paths {
                        root: data_dir.into(),
                    };
                    Domain {
                        name: domain_name(&prefix, &owner, &vm),
                        uuid,
                        domain_type,
                        vcpus,
                        memory_mib,
                        disk: paths.disk(&uuid.to_string()),
                        seed: paths.seed(&uuid.to_string()),
                        network: if nic {
                            network_name(&prefix, &owner)
                        } else {
                            String::new()
                        },
                        mac,
                        owner,
                        vm_name: vm,
                        installation: format!("{id:032x}"),
                    }
                },
            )
    }

    /// A domain whose every string is any text at all.
    fn any_domain() -> impl Strategy<Value = Domain> {
        let text = || prop_oneof![xml_text(20), any_text(20)];
        (
            accepted_domain(),
            [
                text(),
                text(),
                text(),
                text(),
                text(),
                text(),
                text(),
                text(),
            ],
        )
            .prop_map(
                |(d, [name, disk, seed, network, mac, owner, vm_name, installation])| Domain {
                    name,
                    disk: disk.into(),
                    seed: seed.into(),
                    network,
                    mac,
                    owner,
                    vm_name,
                    installation,
                    ..d
                },
            )
    }

    /// The first element named `name` in the namespace `ns` (`None`: in none).
    fn element<'a, 'i>(doc: &'a Document<'i>, ns: Option<&str>, name: &str) -> Node<'a, 'i> {
        let found = doc.descendants().find(|n| {
            let tag = n.tag_name();
            n.is_element() && tag.namespace() == ns && tag.name() == name
        });
        found.unwrap_or_else(|| panic!("no <{name}>"))
    }

    fn text_of<'a>(doc: &'a Document, name: &str) -> &'a str {
        element(doc, None, name).text().unwrap_or("")
    }

    /// The values `d` was rendered from, read back from `xml` by an XML parser.
    fn reads_back(xml: &str, d: &Domain) -> std::result::Result<(), TestCaseError> {
        let doc = Document::parse(xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        let root = doc.root_element();
        prop_assert_eq!(root.attribute("type"), Some(d.domain_type.as_str()));
        prop_assert_eq!(text_of(&doc, "name"), &d.name);
        prop_assert_eq!(text_of(&doc, "uuid"), d.uuid.to_string());
        prop_assert_eq!(
            element(&doc, Some(BSP), "owner").text().unwrap_or(""),
            &d.owner
        );
        prop_assert_eq!(
            element(&doc, Some(BSP), "name").text().unwrap_or(""),
            &d.vm_name
        );
        prop_assert_eq!(
            element(&doc, Some(INSTALLATION_NS), "installation")
                .text()
                .unwrap_or(""),
            &d.installation
        );
        let id = d.installation.trim();
        prop_assert_eq!(
            installation_of(xml),
            (!id.is_empty()).then(|| id.to_owned())
        );
        for tag in ["memory", "currentMemory"] {
            prop_assert_eq!(text_of(&doc, tag), d.memory_mib.to_string());
            prop_assert_eq!(element(&doc, None, tag).attribute("unit"), Some("MiB"));
        }
        prop_assert_eq!(text_of(&doc, "vcpu"), d.vcpus.to_string());
        let sources: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk"))
            .map(|disk| {
                disk.children()
                    .find(|n| n.has_tag_name("source"))
                    .and_then(|s| s.attribute("file"))
            })
            .collect();
        prop_assert_eq!(sources, [d.disk.to_str(), d.seed.to_str()]);
        let nic = doc.descendants().find(|n| n.has_tag_name("interface"));
        prop_assert_eq!(nic.is_some(), !d.network.is_empty());
        if let Some(nic) = nic {
            let attr = |tag: &str, name: &str| {
                let node = nic.children().find(|n| n.has_tag_name(tag));
                node.and_then(|n| n.attribute(name)).map(str::to_owned)
            };
            prop_assert_eq!(attr("source", "network"), Some(d.network.clone()));
            prop_assert_eq!(attr("mac", "address"), Some(d.mac.clone()));
        }
        let log = element(&doc, None, "log").attribute("file");
        let expected = format!("/var/log/libvirt/qemu/{}-serial0.log", d.name);
        prop_assert_eq!(log, Some(expected.as_str()));
        Ok(())
    }

    /// The element names of `xml`, in document order: its structure.
    fn tags(xml: &str) -> Vec<String> {
        let doc = Document::parse(xml).unwrap();
        let names = doc.descendants().filter(|n| n.is_element());
        names.map(|n| n.tag_name().name().to_owned()).collect()
    }

    /// A network as `create-vm` makes one, reservations included.
    fn accepted_network() -> impl Strategy<Value = (String, String, [Ipv4Addr; 4], Vec<DhcpHost>)> {
        let ip = || any::<u32>().prop_map(Ipv4Addr::from);
        let host = (0u32..=0xffff, any::<u8>(), ip()).prop_map(|(n, h, ip)| DhcpHost {
            mac: reserved_mac(n, h),
            ip,
            name: String::new(),
        });
        (names(), ip(), [ip(), ip(), ip(), ip()], vec(host, 0..6)).prop_map(
            |((prefix, owner, _), subnet, ips, hosts)| {
                let subnet = Ipv4Addr::from(u32::from(subnet) & 0xffff_ff00);
                (
                    network_name(&prefix, &owner),
                    bridge_name(&prefix, subnet),
                    ips,
                    hosts,
                )
            },
        )
    }

    /// Fragments of network XML, and any text between them.
    fn network_ish() -> impl Strategy<Value = String> {
        let fragment = select(vec![
            "<dhcp>",
            "</dhcp>",
            "<host",
            " mac=",
            "'",
            "\"",
            " ip=",
            "10.0.0.1",
            "/>",
            ">",
            " name=",
            "&amp;",
            "&#x",
            "&#",
            ";",
            " ",
            "=",
            "52:54:00:00:00:01",
        ]);
        let piece = prop_oneof![4 => fragment.prop_map(str::to_owned), 1 => any_text(3)];
        vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(config())]

        /// A VM's domain XML parses, and gives back its names, sizes, paths and MAC; only a
        /// data directory holding a character XML cannot carry is refused.
        #[test]
        fn domain_xml_gives_back_every_value(d in accepted_domain()) {
            match domain_xml(&d.spec()) {
                Ok(xml) => reads_back(&xml, &d)?,
                Err(_) => prop_assert!(d.disk.to_str().unwrap().chars().any(|c| !is_xml_char(c))),
            }
        }

        /// Whatever text the values hold, the domain XML is refused or has exactly the
        /// template's elements and gives back every value.
        #[test]
        fn domain_xml_cannot_be_injected(d in any_domain()) {
            let carried = d.texts().iter().all(|t| t.chars().all(is_xml_char));
            match domain_xml(&d.spec()) {
                Ok(xml) => {
                    prop_assert!(carried);
                    reads_back(&xml, &d)?;
                    let plain = Domain {
                        name: "n".into(),
                        disk: "/d".into(),
                        seed: "/s".into(),
                        network: if d.network.is_empty() { String::new() } else { "n".into() },
                        mac: "m".into(),
                        owner: "o".into(),
                        vm_name: "v".into(),
                        installation: "i".into(),
                        ..d.clone()
                    };
                    prop_assert_eq!(tags(&xml), tags(&domain_xml(&plain.spec()).unwrap()));
                }
                Err(_) => prop_assert!(!carried),
            }
        }

        /// A tenant's network XML parses, and gives back its name, bridge, addresses and
        /// every reservation, which `parse_dhcp_hosts` reads back too.
        #[test]
        fn network_xml_gives_back_every_value(
            (name, bridge, [gateway, netmask, dhcp_start, dhcp_end], hosts) in accepted_network()
        ) {
            let spec = NetworkSpec {
                name: &name,
                bridge: &bridge,
                gateway,
                netmask,
                dhcp_start,
                dhcp_end,
                hosts: &hosts,
                installation: "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            };
            let xml = network_xml(&spec).unwrap();
            let found = installation_of(&xml);
            prop_assert_eq!(found.as_deref(), Some(spec.installation));
            let doc = Document::parse(&xml).unwrap();
            let attr = |tag: &str, name: &str| {
                element(&doc, None, tag).attribute(name).map(str::to_owned)
            };
            prop_assert_eq!(text_of(&doc, "name"), &name);
            prop_assert_eq!(attr("bridge", "name"), Some(bridge.clone()));
            prop_assert_eq!(attr("ip", "address"), Some(gateway.to_string()));
            prop_assert_eq!(attr("ip", "netmask"), Some(netmask.to_string()));
            prop_assert_eq!(attr("range", "start"), Some(dhcp_start.to_string()));
            prop_assert_eq!(attr("range", "end"), Some(dhcp_end.to_string()));
            let read: Vec<(&str, String)> = doc
                .descendants()
                .filter(|n| n.has_tag_name("host"))
                .map(|n| (n.attribute("mac").unwrap(), n.attribute("ip").unwrap().to_owned()))
                .collect();
            let expected: Vec<(&str, String)> =
                hosts.iter().map(|h| (h.mac.as_str(), h.ip.to_string())).collect();
            prop_assert_eq!(read, expected);
            prop_assert_eq!(parse_dhcp_hosts(&xml), hosts);
        }

        /// A reservation's `<host/>` element gives back its MAC, name and address to an XML
        /// parser and to `parse_dhcp_hosts`, whatever text they hold.
        #[test]
        fn dhcp_host_elements_read_back(
            mac in xml_text(20),
            name in xml_text(20),
            ip in any::<u32>(),
        ) {
            let host = DhcpHost { mac, ip: Ipv4Addr::from(ip), name };
            let elem = dhcp_host_xml(&host);
            let doc = Document::parse(&elem).unwrap();
            let root = doc.root_element();
            prop_assert_eq!(root.attribute("mac"), Some(host.mac.as_str()));
            prop_assert_eq!(root.attribute("name").unwrap_or(""), host.name.as_str());
            let ip = host.ip.to_string();
            prop_assert_eq!(root.attribute("ip"), Some(ip.as_str()));
            let network = format!("<network><ip><dhcp>{elem}</dhcp></ip></network>");
            prop_assert_eq!(parse_dhcp_hosts(&network), vec![host]);
        }

        /// Any text escaped into an element and into attributes of either quote style
        /// reads back exactly, and nothing else is read.
        #[test]
        fn escaped_text_reads_back_exactly(s in xml_text(40)) {
            let e = escape(&s);
            let xml = format!("<a one='{e}' two=\"{e}\">{e}</a>");
            let doc = Document::parse(&xml).unwrap();
            let root = doc.root_element();
            prop_assert_eq!(root.attribute("one"), Some(s.as_str()));
            prop_assert_eq!(root.attribute("two"), Some(s.as_str()));
            prop_assert_eq!(root.attributes().len(), 2);
            prop_assert_eq!(root.text().unwrap_or(""), s.as_str());
            prop_assert_eq!(root.children().filter(|n| n.is_element()).count(), 0);
        }

        /// `unescape` undoes `escape` for any text at all.
        #[test]
        fn unescape_undoes_escape(s in text_near(XMLISH, 40)) {
            prop_assert_eq!(unescape(&escape(&s)), s);
        }

        /// Any text, such as libvirt's own network XML, is read for reservations without a
        /// panic, and every one found has an IPv4 address.
        #[test]
        fn any_network_text_is_read_without_panic(doc in network_ish()) {
            for host in parse_dhcp_hosts(&doc) {
                prop_assert!(doc.contains(&host.ip.to_string()));
            }
        }
    }
}
