//! The types a setting can have, each read alike from the file, the environment and flags.
//!
//! Every type has one text form: `BASPHERE_*` variables and flags are that text, a TOML
//! string is that text, and `show` writes it back so that `parse(show(v)) == v`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::secret::Secret;
use crate::validate::{Size, Span, MIB};
use crate::virt::VirtTypeSetting;

/// A setting's type: its text form, and what a TOML value of it may be.
pub trait Value: Sized {
    /// What the rows table says the type is (`basphere config --help`, errors).
    const KIND: &'static str;

    fn parse(text: &str) -> Result<Self, String>;

    /// The text form, parsed back by `parse` to the same value.
    fn show(&self) -> String;

    /// What `basphere config` prints: the text form, unless that is a secret.
    fn display(&self) -> String {
        self.show()
    }

    /// Most settings are strings in the file; counts are integers, lists are arrays.
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(s) => Self::parse(s),
            other => Err(format!("expected a string, found {}", other.type_str())),
        }
    }
}

macro_rules! integer {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            const KIND: &'static str = "integer";
            fn parse(text: &str) -> Result<Self, String> {
                let range = || format!("`{text}` is not a whole number from 0 to {}", <$ty>::MAX);
                text.trim().parse().map_err(|_| range())
            }
            fn show(&self) -> String {
                self.to_string()
            }
            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                match value {
                    toml::Value::Integer(n) => Self::parse(&n.to_string()),
                    other => Err(format!("expected an integer, found {}", other.type_str())),
                }
            }
        }
    )*};
}
integer!(u16, u32, u64);

/// Types whose text form is `Display` and `FromStr`.
macro_rules! text {
    ($($ty:ty = $kind:literal),*) => {$(
        impl Value for $ty {
            const KIND: &'static str = $kind;
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e| format!("{e}"))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
text!(String = "string", Size = "size");

/// Settings that are one of a few words.
macro_rules! words {
    ($($ty:ident $kind:literal { $($variant:ident = $word:literal),+ })*) => {$(
        impl Value for $ty {
            const KIND: &'static str = $kind;
            fn parse(text: &str) -> Result<Self, String> {
                match text {
                    $($word => Ok($ty::$variant),)+
                    other => Err(format!("`{other}`: expected one of {}", $kind)),
                }
            }
            fn show(&self) -> String {
                match self { $($ty::$variant => $word,)+ }.to_owned()
            }
        }
    )*};
}
words! {
    VirtTypeSetting "auto|kvm|qemu" { Auto = "auto", Kvm = "kvm", Qemu = "qemu" }
    SmtpSecurity "starttls|tls|none" { Starttls = "starttls", Tls = "tls", None = "none" }
}

impl Value for PathBuf {
    const KIND: &'static str = "path";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn show(&self) -> String {
        self.as_path().display().to_string()
    }
}

/// A front door of `serve`: `off`, or the address it listens on (port 0 picks one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Off,
    At(SocketAddr),
}

impl Door {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Door::Off => None,
            Door::At(addr) => Some(addr),
        }
    }
}

impl Value for Door {
    const KIND: &'static str = "address or off";
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Door::Off),
            addr => addr.parse().map(Door::At).map_err(|_| {
                format!("`{text}` is not `off` or an address with a port, e.g. 127.0.0.1:8080 or [::]:2222")
            }),
        }
    }
    fn show(&self) -> String {
        match self {
            Door::Off => "off".to_owned(),
            Door::At(addr) => addr.to_string(),
        }
    }
}

/// Unset is the empty text, so an empty `BASPHERE_*` variable (or TOML string) means
/// "not set".
impl<T: Value> Value for Option<T> {
    const KIND: &'static str = T::KIND;
    fn parse(text: &str) -> Result<Self, String> {
        Some(text)
            .filter(|t| !t.is_empty())
            .map(T::parse)
            .transpose()
    }
    fn show(&self) -> String {
        self.as_ref().map(T::show).unwrap_or_default()
    }
    fn display(&self) -> String {
        self.as_ref()
            .map_or_else(|| "(none)".to_owned(), T::display)
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(s) if s.is_empty() => Ok(None),
            value => T::from_toml(value).map(Some),
        }
    }
}

/// A list: a TOML array of strings, or comma-separated text (so no item holds a comma).
/// Items are trimmed either way.
impl Value for Vec<String> {
    const KIND: &'static str = "list";
    fn parse(text: &str) -> Result<Self, String> {
        let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
        Ok(items.map(str::to_owned).collect())
    }
    fn show(&self) -> String {
        self.join(",")
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let items: Vec<String> = value
            .clone()
            .try_into()
            .map_err(|_| format!("expected an array of strings, found {}", value.type_str()))?;
        match items
            .iter()
            .find(|i| i.contains(',') || i.trim().is_empty())
        {
            Some(bad) => Err(format!("`{bad}`: items cannot be empty or hold a comma")),
            None => Ok(items.iter().map(|i| i.trim().to_owned()).collect()),
        }
    }
}

/// A span of time such as `90s`, `30m` or `7d`, or `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duration {
    Never,
    Secs(u64),
}

impl Duration {
    /// Seconds, with `never` as `None`.
    pub fn secs(self) -> Option<u64> {
        match self {
            Duration::Never => None,
            Duration::Secs(s) => Some(s),
        }
    }
}

impl Value for Duration {
    const KIND: &'static str = "duration";
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "never" => Ok(Duration::Never),
            text => Ok(Duration::Secs(
                text.parse::<Span>().map_err(|e| e.to_string())?.0,
            )),
        }
    }
    fn show(&self) -> String {
        self.secs()
            .map_or("never".to_owned(), |s| Span(s).to_string())
    }
}

/// A password: shown by `basphere config` only as `(set)`, never logged.
impl Value for Secret {
    const KIND: &'static str = "secret";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Secret::new(text.to_owned()))
    }
    fn show(&self) -> String {
        self.expose().clone()
    }
    fn display(&self) -> String {
        "(set)".to_owned()
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption: only for a relay on the same host or in tests.
    None,
}

/// An IPv4 pool cut into /24 networks, one per tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkPool {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl fmt::Display for NetworkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl NetworkPool {
    /// How many /24 networks the pool holds.
    pub fn capacity(&self) -> u32 {
        1 << (24 - self.prefix)
    }

    /// The gateway address (`.1`) of the `index`th /24 of the pool.
    pub fn subnet(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + (index << 8))
    }
}

impl Value for NetworkPool {
    const KIND: &'static str = "IPv4 network";
    fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{s}`: {why} (example: 10.100.0.0/16)");
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
        if !(8..=24).contains(&prefix) {
            return Err(bad("the prefix must be between /8 and /24"));
        }
        if u32::from(base) & !(u32::MAX << (32 - prefix)) != 0 {
            return Err(bad("host bits are set"));
        }
        Ok(NetworkPool { base, prefix })
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// One address (`192.0.2.10`, `2001:db8::5`) or network (`10.0.0.0/8`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The top `bits` of 128 set: an IPv6 netmask, or an IPv4 one as its mapped form.
fn mask(bits: u32) -> u128 {
    u128::MAX.checked_shl(128 - bits).unwrap_or(0)
}

impl IpNet {
    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// `ip` with the host bits of this network cleared, as 128 bits (IPv4 mapped), or
    /// `None` for an address of the other family.
    fn network_of(&self, ip: IpAddr) -> Option<u128> {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(_), IpAddr::V4(ip)) => {
                Some(u128::from(ip.to_ipv6_mapped()) & mask(u32::from(self.prefix) + 96))
            }
            (IpAddr::V6(_), IpAddr::V6(ip)) => Some(u128::from(ip) & mask(u32::from(self.prefix))),
            _ => None,
        }
    }

    /// Whether `ip` is in the network; an IPv4 address written as IPv6 (`::ffff:a.b.c.d`)
    /// is the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.network_of(ip).is_some() && self.network_of(ip) == self.network_of(self.addr)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == IpNet::max_prefix(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{s}`: {why} (examples: 192.0.2.10, 10.0.0.0/8, fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| bad("not an IP address"))?
            .to_canonical();
        let max = IpNet::max_prefix(addr);
        let prefix = match prefix.map(str::parse::<u8>) {
            None => max,
            Some(Ok(p)) if p <= max => p,
            Some(_) => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
        };
        let net = IpNet { addr, prefix };
        let host = match addr {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => u128::from(a),
        };
        if net.network_of(addr) != Some(host) {
            return Err(bad("host bits are set"));
        }
        Ok(net)
    }
}

/// Addresses and networks: a TOML array of strings, or comma-separated text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

impl Networks {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

impl Value for Networks {
    const KIND: &'static str = "list of addresses";
    fn parse(text: &str) -> Result<Self, String> {
        let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
        items
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Networks)
    }
    fn show(&self) -> String {
        let items: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        items.join(",")
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let items = Vec::<String>::from_toml(value)?;
        Networks::parse(&items.join(","))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Flavor {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

impl Flavor {
    /// Memory and disk, as sizes to show.
    fn sizes(&self) -> (Size, Size) {
        (
            Size::from_mib(self.memory_mib),
            Size::from_bytes(self.disk_bytes),
        )
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (memory, disk) = self.sizes();
        write!(f, "cpus={} memory={memory} disk={disk}", self.cpus)
    }
}

/// One flavor as the file writes it: `[flavors.build]` with `cpus`, `memory` and `disk`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorSpec {
    cpus: u32,
    memory: String,
    disk: String,
}

impl FlavorSpec {
    fn check(self, name: &str) -> Result<Flavor, String> {
        let ok = (1..=32).contains(&name.len())
            && (name.chars()).all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "flavor name `{name}`: lowercase letters, digits and `-`"
            ));
        }
        if self.cpus == 0 {
            return Err(format!("flavor `{name}`: cpus must be at least 1"));
        }
        let size =
            |what, s: &str| Size::parse(s).map_err(|e| format!("flavor `{name}` {what}: {e}"));
        Ok(Flavor {
            cpus: self.cpus,
            // Rounded up to whole MiB, as `create-vm --memory` is.
            memory_mib: size("memory", &self.memory)?.bytes().div_ceil(MIB),
            disk_bytes: size("disk", &self.disk)?.bytes(),
        })
    }
}

/// Size presets by name, beside (or in place of) the built-in ones (`Config::flavors`).
/// As text, `NAME=CPUS/MEMORY/DISK` items joined by commas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flavors(pub BTreeMap<String, Flavor>);

impl Value for Flavors {
    const KIND: &'static str = "flavors";
    fn parse(text: &str) -> Result<Self, String> {
        let mut flavors = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("`{item}`: expected NAME=CPUS/MEMORY/DISK, e.g. build=8/16G/100G");
            let (name, spec) = item.split_once('=').ok_or_else(bad)?;
            let parts: Vec<&str> = spec.split('/').collect();
            let [cpus, memory, disk] = parts[..] else {
                return Err(bad());
            };
            let (memory, disk) = (memory.to_owned(), disk.to_owned());
            let spec = FlavorSpec {
                cpus: u32::parse(cpus)?,
                memory,
                disk,
            };
            flavors.insert(name.trim().to_owned(), spec.check(name.trim())?);
        }
        Ok(Flavors(flavors))
    }
    fn show(&self) -> String {
        let item = |(name, f): (&String, &Flavor)| {
            let (memory, disk) = f.sizes();
            format!("{name}={}/{memory}/{disk}", f.cpus)
        };
        self.0.iter().map(item).collect::<Vec<_>>().join(",")
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let table = value.as_table().ok_or("expected a table of flavors")?;
        let flavor = |(name, spec): (&String, &toml::Value)| {
            let spec: FlavorSpec = (spec.clone().try_into())
                .map_err(|e: toml::de::Error| format!("`{name}`: {}", e.message()))?;
            Ok((name.clone(), spec.check(name)?))
        };
        table
            .iter()
            .map(flavor)
            .collect::<Result<_, String>>()
            .map(Flavors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `smtp.host = ""` in the file was a relay named "" while the same empty
    /// `BASPHERE_SMTP_HOST` was no relay; a child given the environment disagreed.
    #[test]
    fn an_empty_toml_string_is_unset() {
        let empty = toml::Value::String(String::new());
        assert_eq!(Option::<String>::from_toml(&empty), Ok(None));
        let set = toml::Value::String("mail".into());
        assert_eq!(Option::<String>::from_toml(&set), Ok(Some("mail".into())));
    }

    /// `[" a"]` in the file stayed `" a"`, but its text form ` a` parses as `a`.
    #[test]
    fn toml_list_items_are_trimmed_as_text_items_are() {
        let list = toml::Value::Array(vec![toml::Value::String(" a@example.com ".into())]);
        let items = Vec::<String>::from_toml(&list).unwrap();
        assert_eq!(items, ["a@example.com"]);
        assert_eq!(Vec::<String>::parse(&items.show()), Ok(items));
    }

    #[test]
    fn networks_hold_addresses_and_prefixes() {
        let n = Networks::parse("127.0.0.1, 10.0.0.0/8,fd00::/8, ::1").unwrap();
        assert_eq!(n.show(), "127.0.0.1,10.0.0.0/8,fd00::/8,::1");
        for (ip, inside) in [
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.200.3.4", true),
            ("11.0.0.1", false),
            ("::ffff:10.1.2.3", true),
            ("fd12:3456::1", true),
            ("fe80::1", false),
            ("::1", true),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(n.contains(ip), inside, "{ip}");
        }
        assert!(Networks::parse("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap()));
        assert!(!Networks::parse("0.0.0.0/0")
            .unwrap()
            .contains("::2".parse().unwrap()));
        assert_eq!(Networks::parse(""), Ok(Networks::default()));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "fd00::/129",
            "proxy",
            "10.0.0.0/",
            "::1/x",
        ] {
            assert!(Networks::parse(bad).is_err(), "{bad}");
        }
        let list = toml::Value::Array(vec![toml::Value::String("192.0.2.0/24".into())]);
        assert_eq!(Networks::from_toml(&list).unwrap().show(), "192.0.2.0/24");
    }

    /// `memory = "1k"` made a flavor of 0 MiB, shown as `0`, which does not parse.
    #[test]
    fn flavor_memory_is_rounded_up_to_whole_mib() {
        let flavors = Flavors::parse("a=1/1k/1G").unwrap();
        assert_eq!(flavors.0["a"].memory_mib, 1);
        assert_eq!(Flavors::parse(&flavors.show()), Ok(flavors));
        assert_eq!(Flavors::parse("a=1/1025k/1G").unwrap().0["a"].memory_mib, 2);
    }
}

#[cfg(test)]
pub(super) mod prop {
    use super::*;
    use crate::testing::{any_text, config, text_of};
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    /// Text a setting might be given: anything, or something close to each type's form.
    pub(in crate::config) fn setting_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any_text(16),
            "[ ]?[+-]?[0-9]{1,6}[ ]?",
            "[0-9]{1,5}(k|m|g|t|K|M|G|T|KiB|mib|s|m|h|d|w|D|x)?",
            "(never|auto|kvm|qemu|starttls|tls|none|Auto|NEVER| never)",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}",
            "( ?[a-z0-9-]{0,5} ?= ?[0-9]{1,2} ?/ ?[0-9]{1,4}[kmgtKMGT] ?/ ?[0-9]{1,4}\
             [kmgtKMGT] ?,?){0,3}",
            text_of(" ,ab@.", 12),
            text_of("/var/lib/ \n\t", 16),
        ]
    }

    /// A value a TOML file might hold for a setting, tables of flavors included.
    pub(in crate::config) fn toml_value() -> impl Strategy<Value = toml::Value> {
        let leaf = prop_oneof![
            setting_text().prop_map(toml::Value::String),
            any::<i64>().prop_map(toml::Value::Integer),
            (0i64..70_000).prop_map(toml::Value::Integer),
            any::<bool>().prop_map(toml::Value::Boolean),
            any::<f64>().prop_map(toml::Value::Float),
        ];
        let key = prop_oneof![
            Just("cpus".to_owned()),
            Just("memory".to_owned()),
            Just("disk".to_owned()),
            text_of("abc1-", 6),
            any_text(4),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    /// `parse(show(v)) == v` for whatever value of `T` `read` gives.
    fn shows_back<T: Value + PartialEq + fmt::Debug>(
        read: Result<T, String>,
    ) -> Result<(), TestCaseError> {
        if let Ok(v) = read {
            let shown = v.show();
            prop_assert_eq!(T::parse(&shown), Ok(v), "{} shown as {:?}", T::KIND, shown);
        }
        Ok(())
    }

    fn text_shows_back<T: Value + PartialEq + fmt::Debug>(text: &str) -> Result<(), TestCaseError> {
        shows_back(T::parse(text))
    }

    fn toml_shows_back<T: Value + PartialEq + fmt::Debug>(
        value: &toml::Value,
    ) -> Result<(), TestCaseError> {
        shows_back(T::from_toml(value))
    }

    /// Calls `check::<T>(arg)` for the type `T` of every setting.
    macro_rules! for_each_type {
        ($check:ident($arg:expr)) => {
            $check::<u16>($arg)?;
            $check::<u32>($arg)?;
            $check::<u64>($arg)?;
            $check::<String>($arg)?;
            $check::<Size>($arg)?;
            $check::<VirtTypeSetting>($arg)?;
            $check::<SmtpSecurity>($arg)?;
            $check::<Door>($arg)?;
            $check::<PathBuf>($arg)?;
            $check::<Option<String>>($arg)?;
            $check::<Option<u16>>($arg)?;
            $check::<Option<Secret>>($arg)?;
            $check::<Vec<String>>($arg)?;
            $check::<Duration>($arg)?;
            $check::<NetworkPool>($arg)?;
            $check::<Flavors>($arg)?;
            $check::<Networks>($arg)?;
        };
    }

    proptest! {
        #![proptest_config(config())]

        /// Any text is a value of each type or refused, and an accepted value's text form
        /// parses back to it.
        #[test]
        fn accepted_text_round_trips_through_show(text in setting_text()) {
            for_each_type!(text_shows_back(&text));
        }

        /// Any TOML value is a value of each type or refused, and an accepted value's
        /// text form parses back to it: the environment gives a child the same setting.
        #[test]
        fn accepted_toml_round_trips_through_show(value in toml_value()) {
            for_each_type!(toml_shows_back(&value));
        }
    }
}
