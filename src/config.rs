//! Settings: defaults, then the TOML file, then `BASPHERE_*` variables, then flags.
//!
//! Every value remembers where it came from so `basphere config` can say so.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::validate::{Size, GIB};
use crate::virt::VirtTypeSetting;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/basphere/config.toml";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        })
    }
}

/// An IPv4 pool cut into /24 networks, one per tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkPool {
    pub base: Ipv4Addr,
    pub prefix: u8,
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

impl FromStr for NetworkPool {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "network pool `{s}`: {why} (example: 10.100.0.0/16)"
            ))
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
        if !(8..=24).contains(&prefix) {
            return Err(bad("the prefix must be between /8 and /24"));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(base) & !mask != 0 {
            return Err(bad("host bits are set"));
        }
        Ok(NetworkPool { base, prefix })
    }
}

impl fmt::Display for NetworkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Limits on what one user may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    pub cpus: u64,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub vms: u64,
    pub snapshots: u64,
    /// Expiry of a snapshot made without `--expire`, in seconds; 0 means never.
    pub snapshot_expire_secs: u64,
    /// Snapshots per VM that `snapshot prune` keeps.
    pub snapshot_keep_last: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Flavor {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
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

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
    }
}

fn parse_smtp_security(s: &str) -> Result<SmtpSecurity> {
    match s {
        "starttls" => Ok(SmtpSecurity::Starttls),
        "tls" => Ok(SmtpSecurity::Tls),
        "none" => Ok(SmtpSecurity::None),
        other => Err(Error::Config(format!(
            "smtp.security `{other}`: expected `starttls`, `tls` or `none`"
        ))),
    }
}

/// Where mail goes. Without a host, mail is written as `.eml` files to the spool directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smtp {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
}

impl Smtp {
    /// The port in force: the configured one, or the usual one for the security mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// Limits on the web signup form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignupLimits {
    /// Signup form submissions accepted from one address per hour.
    pub per_ip_per_hour: u32,
    /// Signups accepted for one email address per day.
    pub per_email_per_day: u32,
    /// How long the confirmation link works, in seconds.
    pub token_lifetime_secs: i64,
}

/// Limits on the embedded SSH server (`serve --ssh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SshLimits {
    /// Failed authentication attempts a connection may make before it is dropped.
    pub max_auth_attempts: u32,
    /// New connections accepted from one address per minute.
    pub connections_per_minute: u32,
    /// Commands and shells one user may have running at once.
    pub max_sessions: u32,
    /// A connection with no traffic for this long is closed, in seconds; 0 means never.
    pub idle_timeout_secs: u64,
}

fn parse_duration_setting(key: &str, s: &str) -> Result<i64> {
    s.parse::<crate::validate::Span>()
        .map(|span| span.0 as i64)
        .map_err(|e| Error::Config(format!("{key}: {e}")))
}

#[derive(Clone, Debug)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting {
            value,
            source: Source::Default,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: Option<PathBuf>,
    pub data_dir: Setting<PathBuf>,
    pub libvirt_uri: Setting<String>,
    pub virt_type: Setting<VirtTypeSetting>,
    pub network_pool: Setting<NetworkPool>,
    /// Host name people use to reach the bastion, shown in `ssh -J` lines.
    pub public_host: Setting<String>,
    pub public_port: Setting<u16>,
    /// Unix account that OpenSSH runs `basphere shell` as.
    pub service_user: Setting<String>,
    pub admin_group: Setting<String>,
    pub default_image: Setting<Option<String>>,
    pub default_flavor: Setting<String>,
    /// Starts the name of every libvirt object basphere makes, so that objects of
    /// other tools, or of another basphere sharing the libvirtd, are never touched.
    pub name_prefix: Setting<String>,
    pub quota: Setting<Limits>,
    pub flavors: Setting<BTreeMap<String, Flavor>>,
    /// Base of the links in signup mail: `http://<public_host>:8080` unless set.
    pub public_url: Setting<String>,
    pub smtp: Setting<Smtp>,
    /// Who is told about new signups.
    pub admin_emails: Setting<Vec<String>>,
    pub signup: Setting<SignupLimits>,
    pub ssh: Setting<SshLimits>,
    /// Test hook: `create-vm` and `snapshot prune` kill themselves at this step (`BASPHERE_CRASH_AT`).
    pub crash_at: Option<String>,
    /// Test hook: the clock, in Unix seconds, for snapshot expiry (`BASPHERE_NOW`).
    pub now: Option<i64>,
}

/// Command-line flags that override the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub libvirt_uri: Option<String>,
    pub virt_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileQuota {
    cpus: Option<u64>,
    memory: Option<String>,
    disk: Option<String>,
    vms: Option<u64>,
    snapshots: Option<u64>,
    snapshot_expire: Option<String>,
    snapshot_keep_last: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFlavor {
    cpus: u32,
    memory: String,
    disk: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSmtp {
    host: Option<String>,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSignup {
    per_ip_per_hour: Option<u32>,
    per_email_per_day: Option<u32>,
    token_lifetime: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSsh {
    max_auth_attempts: Option<u32>,
    connections_per_minute: Option<u32>,
    max_sessions: Option<u32>,
    idle_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    libvirt_uri: Option<String>,
    virt_type: Option<String>,
    network_pool: Option<String>,
    public_host: Option<String>,
    public_port: Option<u16>,
    service_user: Option<String>,
    admin_group: Option<String>,
    default_image: Option<String>,
    default_flavor: Option<String>,
    name_prefix: Option<String>,
    quota: Option<FileQuota>,
    flavors: Option<BTreeMap<String, FileFlavor>>,
    public_url: Option<String>,
    smtp: Option<FileSmtp>,
    admin_emails: Option<Vec<String>>,
    signup: Option<FileSignup>,
    ssh: Option<FileSsh>,
}

pub fn default_limits() -> Limits {
    Limits {
        cpus: 32,
        memory_mib: 96 * 1024,
        disk_bytes: 1024 * GIB,
        vms: 20,
        snapshots: 100,
        snapshot_expire_secs: 30 * 86_400,
        snapshot_keep_last: 10,
    }
}

fn default_flavors() -> BTreeMap<String, Flavor> {
    let f = |cpus, memory_gib: u64, disk_gib: u64| Flavor {
        cpus,
        memory_mib: memory_gib * 1024,
        disk_bytes: disk_gib * GIB,
    };
    BTreeMap::from([
        ("small".to_owned(), f(1, 1, 10)),
        ("medium".to_owned(), f(2, 4, 20)),
        ("large".to_owned(), f(4, 8, 40)),
        ("xlarge".to_owned(), f(8, 16, 80)),
    ])
}

fn parse_virt_type(s: &str) -> Result<VirtTypeSetting> {
    match s {
        "auto" => Ok(VirtTypeSetting::Auto),
        "kvm" => Ok(VirtTypeSetting::Kvm),
        "qemu" => Ok(VirtTypeSetting::Qemu),
        other => Err(Error::Config(format!(
            "virt_type `{other}`: expected `auto`, `kvm` or `qemu`"
        ))),
    }
}

pub fn virt_type_name(v: VirtTypeSetting) -> &'static str {
    match v {
        VirtTypeSetting::Auto => "auto",
        VirtTypeSetting::Kvm => "kvm",
        VirtTypeSetting::Qemu => "qemu",
    }
}

/// A snapshot expiry: a span such as `30d`, or `never` (stored as 0).
pub fn expire_setting(key: &str, s: &str) -> Result<u64> {
    if s == "never" {
        return Ok(0);
    }
    s.parse::<crate::validate::Span>()
        .map(|span| span.0)
        .map_err(|e| Error::Config(format!("{key}: {e}")))
}

pub fn expire_name(secs: u64) -> String {
    if secs == 0 {
        "never".to_owned()
    } else {
        crate::validate::Span(secs).to_string()
    }
}

fn size_setting(key: &str, s: &str) -> Result<Size> {
    s.parse::<Size>()
        .map_err(|e| Error::Config(format!("{key}: {e}")))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Config {
    /// Loads the configuration from `env` (a snapshot of the process environment).
    pub fn load(flags: &Overrides, env: &BTreeMap<String, String>) -> Result<Config> {
        let mut config = Config {
            file: None,
            data_dir: Setting::default(PathBuf::from("/var/lib/basphere")),
            libvirt_uri: Setting::default("qemu:///system".to_owned()),
            virt_type: Setting::default(VirtTypeSetting::Auto),
            network_pool: Setting::default(NetworkPool {
                base: Ipv4Addr::new(10, 100, 0, 0),
                prefix: 16,
            }),
            public_host: Setting::default(hostname()),
            public_port: Setting::default(22),
            service_user: Setting::default("basphere".to_owned()),
            admin_group: Setting::default("basphere-admin".to_owned()),
            default_image: Setting::default(None),
            default_flavor: Setting::default("small".to_owned()),
            name_prefix: Setting::default("bsp".to_owned()),
            quota: Setting::default(default_limits()),
            flavors: Setting::default(default_flavors()),
            public_url: Setting::default(String::new()),
            smtp: Setting::default(Smtp {
                host: None,
                port: None,
                security: SmtpSecurity::Starttls,
                username: None,
                password: None,
                from: None,
            }),
            admin_emails: Setting::default(Vec::new()),
            signup: Setting::default(SignupLimits {
                per_ip_per_hour: 30,
                per_email_per_day: 3,
                token_lifetime_secs: 24 * 3600,
            }),
            ssh: Setting::default(SshLimits {
                max_auth_attempts: 6,
                connections_per_minute: 60,
                max_sessions: 10,
                idle_timeout_secs: 30 * 60,
            }),
            crash_at: env.get("BASPHERE_CRASH_AT").cloned(),
            now: env.get("BASPHERE_NOW").and_then(|v| v.parse().ok()),
        };

        let (path, explicit) = match (&flags.config, env.get("BASPHERE_CONFIG")) {
            (Some(p), _) => (p.clone(), true),
            (None, Some(p)) => (PathBuf::from(p), true),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                config.apply_file(&path, &text)?;
                config.file = Some(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read `{}`: {e}",
                    path.display()
                )))
            }
        }
        config.apply_env(env)?;
        config.apply_flags(flags)?;
        if config.public_url.value.is_empty() {
            config.public_url.value = format!("http://{}:8080", config.public_host.value);
        }
        config.check()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<()> {
        let file: File = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))?;
        let src = Source::File;
        if let Some(v) = file.data_dir {
            self.data_dir = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.libvirt_uri {
            self.libvirt_uri = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.virt_type {
            self.virt_type = Setting {
                value: parse_virt_type(&v)?,
                source: src,
            };
        }
        if let Some(v) = file.network_pool {
            self.network_pool = Setting {
                value: v.parse()?,
                source: src,
            };
        }
        if let Some(v) = file.public_host {
            self.public_host = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.public_port {
            self.public_port = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.service_user {
            self.service_user = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.admin_group {
            self.admin_group = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.default_image {
            self.default_image = Setting {
                value: Some(v),
                source: src,
            };
        }
        if let Some(v) = file.default_flavor {
            self.default_flavor = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(v) = file.name_prefix {
            self.name_prefix = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(q) = file.quota {
            let mut limits = self.quota.value;
            if let Some(v) = q.cpus {
                limits.cpus = v;
            }
            if let Some(v) = q.memory {
                limits.memory_mib = size_setting("quota.memory", &v)?.mib();
            }
            if let Some(v) = q.disk {
                limits.disk_bytes = size_setting("quota.disk", &v)?.bytes();
            }
            if let Some(v) = q.vms {
                limits.vms = v;
            }
            if let Some(v) = q.snapshots {
                limits.snapshots = v;
            }
            if let Some(v) = q.snapshot_expire {
                limits.snapshot_expire_secs = expire_setting("quota.snapshot_expire", &v)?;
            }
            if let Some(v) = q.snapshot_keep_last {
                limits.snapshot_keep_last = v;
            }
            self.quota = Setting {
                value: limits,
                source: src,
            };
        }
        if let Some(v) = file.public_url {
            self.public_url = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(f) = file.smtp {
            let mut smtp = self.smtp.value.clone();
            if let Some(v) = f.security {
                smtp.security = parse_smtp_security(&v)?;
            }
            smtp.host = f.host.or(smtp.host);
            smtp.port = f.port.or(smtp.port);
            smtp.username = f.username.or(smtp.username);
            smtp.password = f.password.or(smtp.password);
            smtp.from = f.from.or(smtp.from);
            self.smtp = Setting {
                value: smtp,
                source: src,
            };
        }
        if let Some(v) = file.admin_emails {
            self.admin_emails = Setting {
                value: v,
                source: src,
            };
        }
        if let Some(f) = file.signup {
            let mut limits = self.signup.value;
            if let Some(v) = f.per_ip_per_hour {
                limits.per_ip_per_hour = v;
            }
            if let Some(v) = f.per_email_per_day {
                limits.per_email_per_day = v;
            }
            if let Some(v) = f.token_lifetime {
                limits.token_lifetime_secs = parse_duration_setting("signup.token_lifetime", &v)?;
            }
            self.signup = Setting {
                value: limits,
                source: src,
            };
        }
        if let Some(f) = file.ssh {
            let mut limits = self.ssh.value;
            if let Some(v) = f.max_auth_attempts {
                limits.max_auth_attempts = v;
            }
            if let Some(v) = f.connections_per_minute {
                limits.connections_per_minute = v;
            }
            if let Some(v) = f.max_sessions {
                limits.max_sessions = v;
            }
            if let Some(v) = f.idle_timeout {
                limits.idle_timeout_secs = expire_setting("ssh.idle_timeout", &v)?;
            }
            self.ssh = Setting {
                value: limits,
                source: src,
            };
        }
        if let Some(flavors) = file.flavors {
            let mut all = self.flavors.value.clone();
            for (name, f) in flavors {
                let flavor = Flavor {
                    cpus: f.cpus,
                    memory_mib: size_setting(&format!("flavors.{name}.memory"), &f.memory)?.mib(),
                    disk_bytes: size_setting(&format!("flavors.{name}.disk"), &f.disk)?.bytes(),
                };
                all.insert(name, flavor);
            }
            self.flavors = Setting {
                value: all,
                source: src,
            };
        }
        Ok(())
    }

    fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<()> {
        let src = Source::Env;
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
        if let Some(v) = get("BASPHERE_DATA_DIR") {
            self.data_dir = Setting {
                value: PathBuf::from(v),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_LIBVIRT_URI") {
            self.libvirt_uri = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_VIRT_TYPE") {
            self.virt_type = Setting {
                value: parse_virt_type(v)?,
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_NETWORK_POOL") {
            self.network_pool = Setting {
                value: v.parse()?,
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_PUBLIC_HOST") {
            self.public_host = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_PUBLIC_PORT") {
            let port = v
                .parse()
                .map_err(|_| Error::Config(format!("BASPHERE_PUBLIC_PORT `{v}`: not a port")))?;
            self.public_port = Setting {
                value: port,
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_SERVICE_USER") {
            self.service_user = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_ADMIN_GROUP") {
            self.admin_group = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_DEFAULT_IMAGE") {
            self.default_image = Setting {
                value: Some(v.clone()),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_NAME_PREFIX") {
            self.name_prefix = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_DEFAULT_FLAVOR") {
            self.default_flavor = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_PUBLIC_URL") {
            self.public_url = Setting {
                value: v.clone(),
                source: src,
            };
        }
        let mut smtp = self.smtp.value.clone();
        let mut smtp_from_env = false;
        for (key, field) in [
            ("BASPHERE_SMTP_HOST", &mut smtp.host),
            ("BASPHERE_SMTP_USERNAME", &mut smtp.username),
            ("BASPHERE_SMTP_PASSWORD", &mut smtp.password),
            ("BASPHERE_SMTP_FROM", &mut smtp.from),
        ] {
            if let Some(v) = get(key) {
                *field = Some(v.clone());
                smtp_from_env = true;
            }
        }
        if let Some(v) = get("BASPHERE_SMTP_PORT") {
            smtp.port = Some(
                v.parse()
                    .map_err(|_| Error::Config(format!("BASPHERE_SMTP_PORT `{v}`: not a port")))?,
            );
            smtp_from_env = true;
        }
        if let Some(v) = get("BASPHERE_SMTP_SECURITY") {
            smtp.security = parse_smtp_security(v)?;
            smtp_from_env = true;
        }
        if smtp_from_env {
            self.smtp = Setting {
                value: smtp,
                source: src,
            };
        }
        if let Some(v) = get("BASPHERE_ADMIN_EMAILS") {
            self.admin_emails = Setting {
                value: v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                source: src,
            };
        }
        let mut signup = self.signup.value;
        let mut signup_from_env = false;
        let small = |key: &str, v: &str| -> Result<u32> {
            v.parse()
                .map_err(|_| Error::Config(format!("{key} `{v}`: not a whole number")))
        };
        if let Some(v) = get("BASPHERE_SIGNUP_PER_IP_PER_HOUR") {
            signup.per_ip_per_hour = small("BASPHERE_SIGNUP_PER_IP_PER_HOUR", v)?;
            signup_from_env = true;
        }
        if let Some(v) = get("BASPHERE_SIGNUP_PER_EMAIL_PER_DAY") {
            signup.per_email_per_day = small("BASPHERE_SIGNUP_PER_EMAIL_PER_DAY", v)?;
            signup_from_env = true;
        }
        if let Some(v) = get("BASPHERE_SIGNUP_TOKEN_LIFETIME") {
            signup.token_lifetime_secs =
                parse_duration_setting("BASPHERE_SIGNUP_TOKEN_LIFETIME", v)?;
            signup_from_env = true;
        }
        if signup_from_env {
            self.signup = Setting {
                value: signup,
                source: src,
            };
        }
        let mut ssh = self.ssh.value;
        let mut ssh_from_env = false;
        for (key, field) in [
            ("BASPHERE_SSH_MAX_AUTH_ATTEMPTS", &mut ssh.max_auth_attempts),
            (
                "BASPHERE_SSH_CONNECTIONS_PER_MINUTE",
                &mut ssh.connections_per_minute,
            ),
            ("BASPHERE_SSH_MAX_SESSIONS", &mut ssh.max_sessions),
        ] {
            if let Some(v) = get(key) {
                *field = small(key, v)?;
                ssh_from_env = true;
            }
        }
        if let Some(v) = get("BASPHERE_SSH_IDLE_TIMEOUT") {
            ssh.idle_timeout_secs = expire_setting("BASPHERE_SSH_IDLE_TIMEOUT", v)?;
            ssh_from_env = true;
        }
        if ssh_from_env {
            self.ssh = Setting {
                value: ssh,
                source: src,
            };
        }
        let mut limits = self.quota.value;
        let mut quota_from_env = false;
        let number = |key: &str, v: &str| -> Result<u64> {
            v.parse()
                .map_err(|_| Error::Config(format!("{key} `{v}`: not a whole number")))
        };
        if let Some(v) = get("BASPHERE_QUOTA_CPUS") {
            limits.cpus = number("BASPHERE_QUOTA_CPUS", v)?;
            quota_from_env = true;
        }
        if let Some(v) = get("BASPHERE_QUOTA_MEMORY") {
            limits.memory_mib = size_setting("BASPHERE_QUOTA_MEMORY", v)?.mib();
            quota_from_env = true;
        }
        if let Some(v) = get("BASPHERE_QUOTA_DISK") {
            limits.disk_bytes = size_setting("BASPHERE_QUOTA_DISK", v)?.bytes();
            quota_from_env = true;
        }
        if let Some(v) = get("BASPHERE_QUOTA_VMS") {
            limits.vms = number("BASPHERE_QUOTA_VMS", v)?;
            quota_from_env = true;
        }
        if let Some(v) = get("BASPHERE_QUOTA_SNAPSHOT_EXPIRE") {
            limits.snapshot_expire_secs = expire_setting("BASPHERE_QUOTA_SNAPSHOT_EXPIRE", v)?;
            quota_from_env = true;
        }
        if let Some(v) = get("BASPHERE_QUOTA_SNAPSHOT_KEEP_LAST") {
            limits.snapshot_keep_last = number("BASPHERE_QUOTA_SNAPSHOT_KEEP_LAST", v)?;
            quota_from_env = true;
        }
        if let Some(v) = get("BASPHERE_QUOTA_SNAPSHOTS") {
            limits.snapshots = number("BASPHERE_QUOTA_SNAPSHOTS", v)?;
            quota_from_env = true;
        }
        if quota_from_env {
            self.quota = Setting {
                value: limits,
                source: src,
            };
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) -> Result<()> {
        let src = Source::Flag;
        if let Some(v) = &flags.data_dir {
            self.data_dir = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = &flags.libvirt_uri {
            self.libvirt_uri = Setting {
                value: v.clone(),
                source: src,
            };
        }
        if let Some(v) = &flags.virt_type {
            self.virt_type = Setting {
                value: parse_virt_type(v)?,
                source: src,
            };
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if !self.data_dir.value.is_absolute() {
            return Err(Error::Config(format!(
                "data_dir `{}` must be an absolute path",
                self.data_dir.value.display()
            )));
        }
        if self.libvirt_uri.value.trim().is_empty() {
            return Err(Error::Config("libvirt_uri is empty".into()));
        }
        let signup = &self.signup.value;
        if signup.per_ip_per_hour == 0 || signup.per_email_per_day == 0 {
            return Err(Error::Config(
                "signup.per_ip_per_hour and signup.per_email_per_day must be at least 1".into(),
            ));
        }
        let ssh = &self.ssh.value;
        if ssh.max_auth_attempts == 0 || ssh.connections_per_minute == 0 || ssh.max_sessions == 0 {
            return Err(Error::Config(
                "ssh.max_auth_attempts, ssh.connections_per_minute and ssh.max_sessions must be at least 1"
                    .into(),
            ));
        }
        let prefix = &self.name_prefix.value;
        let ok = (1..=8).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(Error::Config(format!(
                "name_prefix `{prefix}`: 1 to 8 lowercase letters or digits, starting with a letter"
            )));
        }
        if !self.flavors.value.contains_key(&self.default_flavor.value) {
            return Err(Error::Config(format!(
                "default_flavor `{}` is not a defined flavor",
                self.default_flavor.value
            )));
        }
        let url = &self.public_url.value;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Config(format!(
                "public_url `{url}`: expected an http:// or https:// URL"
            )));
        }
        for address in &self.admin_emails.value {
            crate::validate::email(address).map_err(|_| {
                Error::Config(format!("admin_emails: `{address}` is not an email address"))
            })?;
        }
        if let Some(from) = &self.smtp.value.from {
            crate::validate::email(from).map_err(|_| {
                Error::Config(format!("smtp.from: `{from}` is not an email address"))
            })?;
        }
        if self.signup.value.token_lifetime_secs <= 0 {
            return Err(Error::Config(
                "signup.token_lifetime must be positive".into(),
            ));
        }
        for (name, f) in &self.flavors.value {
            if f.cpus == 0 {
                return Err(Error::Config(format!(
                    "flavors.{name}.cpus must be at least 1"
                )));
            }
        }
        Ok(())
    }

    /// Every setting as (key, value, source), in a stable order.
    pub fn entries(&self) -> Vec<(String, String, Source)> {
        let mut rows = vec![
            (
                "config_file".to_owned(),
                self.file
                    .as_ref()
                    .map_or("(none)".to_owned(), |p| p.display().to_string()),
                if self.file.is_some() {
                    Source::File
                } else {
                    Source::Default
                },
            ),
            (
                "data_dir".to_owned(),
                self.data_dir.value.display().to_string(),
                self.data_dir.source,
            ),
            (
                "libvirt_uri".to_owned(),
                self.libvirt_uri.value.clone(),
                self.libvirt_uri.source,
            ),
            (
                "virt_type".to_owned(),
                virt_type_name(self.virt_type.value).to_owned(),
                self.virt_type.source,
            ),
            (
                "network_pool".to_owned(),
                self.network_pool.value.to_string(),
                self.network_pool.source,
            ),
            (
                "public_host".to_owned(),
                self.public_host.value.clone(),
                self.public_host.source,
            ),
            (
                "public_port".to_owned(),
                self.public_port.value.to_string(),
                self.public_port.source,
            ),
            (
                "service_user".to_owned(),
                self.service_user.value.clone(),
                self.service_user.source,
            ),
            (
                "admin_group".to_owned(),
                self.admin_group.value.clone(),
                self.admin_group.source,
            ),
            (
                "default_image".to_owned(),
                self.default_image
                    .value
                    .clone()
                    .unwrap_or_else(|| "(only image)".to_owned()),
                self.default_image.source,
            ),
            (
                "default_flavor".to_owned(),
                self.default_flavor.value.clone(),
                self.default_flavor.source,
            ),
            (
                "name_prefix".to_owned(),
                self.name_prefix.value.clone(),
                self.name_prefix.source,
            ),
        ];
        rows.push((
            "public_url".into(),
            self.public_url.value.clone(),
            self.public_url.source,
        ));
        let smtp = &self.smtp.value;
        let ss = self.smtp.source;
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
        rows.push((
            "smtp.host".into(),
            smtp.host
                .clone()
                .unwrap_or_else(|| "(none: mail is written to the spool directory)".to_owned()),
            ss,
        ));
        rows.push(("smtp.port".into(), smtp.port().to_string(), ss));
        rows.push((
            "smtp.security".into(),
            smtp.security.as_str().to_owned(),
            ss,
        ));
        rows.push(("smtp.username".into(), or_none(&smtp.username), ss));
        // The password is a secret: say whether it is set, never what it is.
        rows.push((
            "smtp.password".into(),
            if smtp.password.is_some() {
                "(set)"
            } else {
                "(none)"
            }
            .to_owned(),
            ss,
        ));
        rows.push(("smtp.from".into(), self.mail_from(), ss));
        rows.push((
            "admin_emails".into(),
            if self.admin_emails.value.is_empty() {
                "(none)".to_owned()
            } else {
                self.admin_emails.value.join(", ")
            },
            self.admin_emails.source,
        ));
        let sg = &self.signup.value;
        rows.push((
            "signup.per_ip_per_hour".into(),
            sg.per_ip_per_hour.to_string(),
            self.signup.source,
        ));
        rows.push((
            "signup.per_email_per_day".into(),
            sg.per_email_per_day.to_string(),
            self.signup.source,
        ));
        rows.push((
            "signup.token_lifetime".into(),
            crate::validate::Span(sg.token_lifetime_secs as u64).to_string(),
            self.signup.source,
        ));
        let ssh = &self.ssh.value;
        for (key, value) in [
            ("ssh.max_auth_attempts", ssh.max_auth_attempts.to_string()),
            (
                "ssh.connections_per_minute",
                ssh.connections_per_minute.to_string(),
            ),
            ("ssh.max_sessions", ssh.max_sessions.to_string()),
            ("ssh.idle_timeout", expire_name(ssh.idle_timeout_secs)),
        ] {
            rows.push((key.into(), value, self.ssh.source));
        }
        let q = &self.quota.value;
        let qs = self.quota.source;
        rows.push(("quota.cpus".into(), q.cpus.to_string(), qs));
        rows.push((
            "quota.memory".into(),
            Size::from_mib(q.memory_mib).to_string(),
            qs,
        ));
        rows.push((
            "quota.disk".into(),
            Size::from_bytes(q.disk_bytes).to_string(),
            qs,
        ));
        rows.push(("quota.vms".into(), q.vms.to_string(), qs));
        rows.push(("quota.snapshots".into(), q.snapshots.to_string(), qs));
        rows.push((
            "quota.snapshot_expire".into(),
            expire_name(q.snapshot_expire_secs),
            qs,
        ));
        rows.push((
            "quota.snapshot_keep_last".into(),
            q.snapshot_keep_last.to_string(),
            qs,
        ));
        for (name, f) in &self.flavors.value {
            rows.push((
                format!("flavors.{name}"),
                format!(
                    "cpus={} memory={} disk={}",
                    f.cpus,
                    Size::from_mib(f.memory_mib),
                    Size::from_bytes(f.disk_bytes)
                ),
                self.flavors.source,
            ));
        }
        rows
    }

    /// The sender of every mail: `smtp.from`, else `basphere@<public_host>`.
    pub fn mail_from(&self) -> String {
        self.smtp
            .value
            .from
            .clone()
            .unwrap_or_else(|| format!("basphere@{}", self.public_host.value))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.value.join("basphere.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "data_dir = \"/from/file\"\nlibvirt_uri = \"test:///file\"\nvirt_type = \"kvm\"\n",
        );
        let flags = Overrides {
            config: Some(path),
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        let c = Config::load(
            &flags,
            &env(&[
                ("BASPHERE_DATA_DIR", "/from/env"),
                ("BASPHERE_LIBVIRT_URI", "test:///env"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir.value, PathBuf::from("/from/flag"));
        assert_eq!(c.data_dir.source, Source::Flag);
        assert_eq!(c.libvirt_uri.value, "test:///env");
        assert_eq!(c.libvirt_uri.source, Source::Env);
        assert_eq!(c.virt_type.value, VirtTypeSetting::Kvm);
        assert_eq!(c.virt_type.source, Source::File);
        assert_eq!(c.network_pool.source, Source::Default);
        assert_eq!(c.quota.value.cpus, 32);
        assert_eq!(c.quota.value.memory_mib, 96 * 1024);
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "data_dir = \"/x\"\nlibvirt_url = \"oops\"\n");
        let flags = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load(&flags, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("libvirt_url"), "{err}");
        let path = write(dir.path(), "[quota]\ncpu = 3\n");
        let flags = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load(&flags, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("cpu"), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let flags = Overrides {
            config: Some("/nonexistent/basphere.toml".into()),
            ..Default::default()
        };
        assert!(Config::load(&flags, &env(&[])).is_err());
    }

    #[test]
    fn quota_and_flavors_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[quota]\ncpus = 8\nmemory = \"16G\"\n\n[flavors.tiny]\ncpus = 1\nmemory = \"512M\"\ndisk = \"4G\"\n");
        let flags = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let c = Config::load(&flags, &env(&[])).unwrap();
        assert_eq!(c.quota.value.cpus, 8);
        assert_eq!(c.quota.value.memory_mib, 16 * 1024);
        assert_eq!(c.quota.value.vms, default_limits().vms);
        assert_eq!(c.flavors.value["tiny"].memory_mib, 512);
        assert!(c.flavors.value.contains_key("small"));
    }

    #[test]
    fn network_pool() {
        let p: NetworkPool = "10.100.0.0/16".parse().unwrap();
        assert_eq!(p.capacity(), 256);
        assert_eq!(p.subnet(3), Ipv4Addr::new(10, 100, 3, 0));
        for bad in [
            "10.100.0.1/16",
            "10.100.0.0/25",
            "10.100.0.0",
            "x/16",
            "10.0.0.0/7",
        ] {
            assert!(bad.parse::<NetworkPool>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_signup_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[signup]\nper_ip_per_hour = 0\n");
        let flags = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load(&flags, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("per_ip_per_hour"), "{err}");
    }

    #[test]
    fn bad_env_values_are_errors() {
        assert!(Config::load(
            &Overrides::default(),
            &env(&[("BASPHERE_VIRT_TYPE", "xen")])
        )
        .is_err());
        assert!(Config::load(
            &Overrides::default(),
            &env(&[("BASPHERE_NETWORK_POOL", "nope")])
        )
        .is_err());
        assert!(Config::load(
            &Overrides::default(),
            &env(&[("BASPHERE_DATA_DIR", "relative/dir")])
        )
        .is_err());
    }
}
