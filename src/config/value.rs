//! The types a setting can have, each read alike from the file, the environment and flags.
//!
//! Every type has one text form: `BASPHERE_*` variables and flags are that text, a TOML
//! string is that text, and `show` writes it back so that `parse(show(v)) == v`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::validate::{Size, Span};
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
                text.trim()
                    .parse()
                    .map_err(|_| format!("`{text}` is not a whole number from 0 to {}", <$ty>::MAX))
            }
            fn show(&self) -> String {
                self.to_string()
            }
            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                match value {
                    toml::Value::Integer(n) => <$ty>::try_from(*n)
                        .map_err(|_| format!("{n} is not a whole number from 0 to {}", <$ty>::MAX)),
                    other => Err(format!("expected an integer, found {}", other.type_str())),
                }
            }
        }
    )*};
}
integer!(u16, u32, u64);

impl Value for String {
    const KIND: &'static str = "string";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn show(&self) -> String {
        self.clone()
    }
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

/// Unset is the empty text, so an empty `BASPHERE_*` variable means "not set".
impl<T: Value> Value for Option<T> {
    const KIND: &'static str = T::KIND;
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Ok(None),
            text => T::parse(text).map(Some),
        }
    }
    fn show(&self) -> String {
        self.as_ref().map(T::show).unwrap_or_default()
    }
    fn display(&self) -> String {
        self.as_ref()
            .map_or_else(|| "(none)".to_owned(), T::display)
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        T::from_toml(value).map(Some)
    }
}

/// A list: a TOML array of strings, or comma-separated text (so no item holds a comma).
impl Value for Vec<String> {
    const KIND: &'static str = "list";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
    fn show(&self) -> String {
        self.join(",")
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let toml::Value::Array(items) = value else {
            return Err(format!("expected an array, found {}", value.type_str()));
        };
        let items = items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or("expected strings"))
            .collect::<Result<Vec<_>, _>>()?;
        match items
            .iter()
            .find(|i| i.contains(',') || i.trim().is_empty())
        {
            Some(bad) => Err(format!("`{bad}`: items cannot be empty or hold a comma")),
            None => Ok(items),
        }
    }
}

impl Value for Size {
    const KIND: &'static str = "size";
    fn parse(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: crate::error::Error| e.to_string())
    }
    fn show(&self) -> String {
        self.to_string()
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
            text => text
                .parse::<Span>()
                .map(|s| Duration::Secs(s.0))
                .map_err(|e| e.to_string()),
        }
    }
    fn show(&self) -> String {
        match self {
            Duration::Never => "never".to_owned(),
            Duration::Secs(s) => Span(*s).to_string(),
        }
    }
}

/// A password or token: shown by `basphere config` only as `(set)`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Value for Secret {
    const KIND: &'static str = "secret";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Secret(text.to_owned()))
    }
    fn show(&self) -> String {
        self.0.clone()
    }
    fn display(&self) -> String {
        "(set)".to_owned()
    }
}

impl Value for VirtTypeSetting {
    const KIND: &'static str = "auto|kvm|qemu";
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn show(&self) -> String {
        match self {
            VirtTypeSetting::Auto => "auto",
            VirtTypeSetting::Kvm => "kvm",
            VirtTypeSetting::Qemu => "qemu",
        }
        .to_owned()
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

impl Value for SmtpSecurity {
    const KIND: &'static str = "starttls|tls|none";
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "starttls" => Ok(SmtpSecurity::Starttls),
            "tls" => Ok(SmtpSecurity::Tls),
            "none" => Ok(SmtpSecurity::None),
            other => Err(format!("`{other}`: expected `starttls`, `tls` or `none`")),
        }
    }
    fn show(&self) -> String {
        match self {
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
        .to_owned()
    }
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
        format!("{}/{}", self.base, self.prefix)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Flavor {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
}

impl Flavor {
    fn show(&self) -> String {
        format!(
            "cpus={} memory={} disk={}",
            self.cpus,
            Size::from_mib(self.memory_mib),
            Size::from_bytes(self.disk_bytes)
        )
    }
}

/// Size presets by name. In the file, a table per flavor (`[flavors.build]` with
/// `cpus`, `memory` and `disk`); as text, `NAME=CPUS/MEMORY/DISK` items joined by commas.
/// They add to, or replace by name, the built-in ones (see `Config::flavors`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flavors(pub BTreeMap<String, Flavor>);

impl Flavors {
    fn insert(&mut self, name: &str, cpus: u32, memory: &str, disk: &str) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "flavor name `{name}`: lowercase letters, digits and `-`"
            ));
        }
        if cpus == 0 {
            return Err(format!("flavor `{name}`: cpus must be at least 1"));
        }
        let size = |what: &str, s: &str| {
            Size::parse(s).map_err(|e| format!("flavor `{name}` {what}: {e}"))
        };
        let flavor = Flavor {
            cpus,
            memory_mib: size("memory", memory)?.mib(),
            disk_bytes: size("disk", disk)?.bytes(),
        };
        self.0.insert(name.to_owned(), flavor);
        Ok(())
    }

    /// One flavor as `basphere config` shows it.
    pub fn describe(flavor: &Flavor) -> String {
        flavor.show()
    }
}

impl Value for Flavors {
    const KIND: &'static str = "flavors";
    fn parse(text: &str) -> Result<Self, String> {
        let mut flavors = Flavors::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("`{item}`: expected NAME=CPUS/MEMORY/DISK, e.g. build=8/16G/100G");
            let (name, spec) = item.split_once('=').ok_or_else(bad)?;
            let parts: Vec<&str> = spec.split('/').collect();
            let [cpus, memory, disk] = parts[..] else {
                return Err(bad());
            };
            flavors.insert(name.trim(), u32::parse(cpus)?, memory, disk)?;
        }
        Ok(flavors)
    }
    fn show(&self) -> String {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(name, f)| {
                let (memory, disk) = (Size::from_mib(f.memory_mib), Size::from_bytes(f.disk_bytes));
                format!("{name}={}/{memory}/{disk}", f.cpus)
            })
            .collect();
        items.join(",")
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let table = value.as_table().ok_or("expected a table of flavors")?;
        let mut flavors = Flavors::default();
        for (name, spec) in table {
            let field = |key: &str| {
                spec.get(key)
                    .ok_or_else(|| format!("flavors.{name}: `{key}` is missing"))
            };
            if let Some(extra) = spec.as_table().and_then(|t| {
                t.keys()
                    .find(|k| !["cpus", "memory", "disk"].contains(&k.as_str()))
            }) {
                return Err(format!("flavors.{name}: unknown key `{extra}`"));
            }
            let cpus =
                u32::from_toml(field("cpus")?).map_err(|e| format!("flavors.{name}.cpus: {e}"))?;
            let text = |key: &str| {
                field(key)?
                    .as_str()
                    .ok_or_else(|| format!("flavors.{name}.{key}: expected a string"))
            };
            flavors.insert(name, cpus, text("memory")?, text("disk")?)?;
        }
        Ok(flavors)
    }
}
