//! Settings: the default, then the TOML file, then `BASPHERE_*` variables, then flags.
//!
//! The file is flattened to dotted keys (`[quota] memory` is `quota.memory`) and every
//! source is parsed by the same row of the table in `keys`, which also keeps where each
//! value came from. Test hooks (crash points, the clock) are not settings: see `hooks`.

mod keys;
mod template;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use crate::secret::Secret;
pub use keys::{Config, Row, ROWS};
pub use template::template;
pub use value::{
    Door, Duration, Flavor, Flavors, IpNet, NetworkPool, Networks, SmtpSecurity, Value,
};

use crate::error::{Error, Result};
use keys::Raw;

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
        f.write_str(["default", "file", "env", "flag"][*self as usize])
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

/// What the command line sets: another file, and values by key.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub file: Option<PathBuf>,
    /// `(key, text)`, e.g. `("virt_type", "kvm")` for `--virt-type kvm`.
    pub keys: Vec<(&'static str, String)>,
    /// A file named by `--config` or `BASPHERE_CONFIG` may be missing: `admin init`
    /// is about to write it.
    pub may_be_missing: bool,
}

/// The configuration a server runs with: each command takes the one in force when it
/// starts, and a reload replaces it whole.
#[derive(Debug)]
pub struct Live(RwLock<Arc<Config>>);

impl Live {
    pub fn new(config: Config) -> Live {
        Live(RwLock::new(Arc::new(config)))
    }

    pub fn get(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, config: Config) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

/// One line of `basphere config`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub source: Source,
}

fn row(key: &str) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.key == key)
}

/// The built-in size presets; `flavors` in the configuration adds to them.
fn builtin_flavors() -> BTreeMap<String, Flavor> {
    let presets = "small=1/1G/10G,medium=2/4G/20G,large=4/8G/40G,xlarge=8/16G/80G";
    Flavors::parse(presets)
        .expect("the built-in flavors parse")
        .0
}

/// The file as dotted keys: a table is walked into only where no row takes it whole.
fn flatten<'a>(
    prefix: &str,
    table: &'a toml::Table,
    out: &mut Vec<(String, &'a toml::Value)>,
) -> Result<(), String> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let section = ROWS.iter().any(|r| r.key.starts_with(&format!("{key}.")));
        match value {
            _ if row(&key).is_some() => out.push((key, value)),
            toml::Value::Table(inner) if section => flatten(&key, inner, out)?,
            _ => return Err(format!("unknown key `{key}`")),
        }
    }
    Ok(())
}

/// The file to read: `--config`, else `BASPHERE_CONFIG`, else the default; and whether
/// it was named (a named file must exist).
fn file_to_read(flags: &Overrides, env: &BTreeMap<String, String>) -> (PathBuf, bool) {
    match (&flags.file, env.get("BASPHERE_CONFIG")) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

impl Config {
    /// Loads the configuration from `env` (a snapshot of the process environment).
    pub fn load(flags: &Overrides, env: &BTreeMap<String, String>) -> Result<Config> {
        let mut config = Config::defaults();
        let (path, explicit) = file_to_read(flags, env);
        config.path = path.clone();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let at = |e: String| Error::Config(format!("{}: {e}", path.display()));
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| at(e.message().into()))?;
                let mut values = Vec::new();
                flatten("", &table, &mut values).map_err(at)?;
                for (key, value) in values {
                    let set = config.set_raw(&key, Raw::Toml(value), Source::File);
                    set.map_err(|e| at(format!("{key}: {e}")))?;
                }
                config.file = Some(path);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && (!explicit || flags.may_be_missing) => {}
            Err(e) => {
                let path = path.display();
                return Err(Error::Config(format!("cannot read `{path}`: {e}")));
            }
        }
        for row in ROWS {
            let name = row.env_name();
            if let Some(text) = env.get(&name).filter(|v| !v.is_empty()) {
                let raw = Raw::Text(text);
                let set = config.set_raw(row.key, raw, Source::Env);
                set.map_err(|e| Error::Config(format!("{name} `{text}`: {e}")))?;
            }
        }
        for (key, text) in &flags.keys {
            config.set(key, text, Source::Flag)?;
        }
        config.check()?;
        config.flags = flags.clone();
        Ok(config)
    }

    /// Every setting at its default, remembering `flags` so that [`Config::reload`] reads
    /// the same sources again, and naming as `file` the one it would read: what `doctor`
    /// runs with when the configuration does not load, so that it can report why.
    pub fn unloaded(flags: &Overrides, env: &BTreeMap<String, String>) -> Config {
        let path = file_to_read(flags, env).0;
        Config {
            file: Some(path.clone()),
            path,
            flags: flags.clone(),
            ..Config::defaults()
        }
    }

    /// The configuration read again, from the same flags and this process's environment.
    pub fn reload(&self) -> Result<Config> {
        Config::load(&self.flags, &std::env::vars().collect())
    }

    /// Sets `key` from its text form, as a flag or the server itself does.
    pub fn set(&mut self, key: &str, text: &str, source: Source) -> Result<()> {
        self.set_raw(key, Raw::Text(text), source)
            .map_err(|e| Error::Config(format!("{key}: {e}")))
    }

    fn set_raw(&mut self, key: &str, raw: Raw, source: Source) -> Result<(), String> {
        let row = row(key).ok_or_else(|| format!("unknown key `{key}`"))?;
        self.set_field(row.key, raw)?;
        self.sources.insert(row.key, source);
        Ok(())
    }

    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).copied().unwrap_or(Source::Default)
    }

    fn check(&self) -> Result<()> {
        let counts = [
            ("signup.per_ip_per_hour", self.signup_per_ip_per_hour),
            ("signup.per_email_per_day", self.signup_per_email_per_day),
            ("ssh.max_auth_attempts", self.ssh_max_auth_attempts),
            (
                "ssh.connections_per_minute",
                self.ssh_connections_per_minute,
            ),
            ("ssh.max_sessions", self.ssh_max_sessions),
            ("ssh.max_connections", self.ssh_max_connections),
            ("ssh.max_startups", self.ssh_max_startups),
            (
                "ssh.per_source_max_startups",
                self.ssh_per_source_max_startups,
            ),
            ("ssh.max_channels", self.ssh_max_channels),
            ("ssh.connection_burst", self.ssh_connection_burst),
            ("ssh.max_sessions_total", self.ssh_max_sessions_total),
        ];
        // An empty text is "not set" in the environment, so none of these can be empty.
        let required = [
            ("libvirt_uri", &self.libvirt_uri),
            ("service_user", &self.service_user),
            ("admin_group", &self.admin_group),
        ];
        let prefix = &self.name_prefix;
        let url = self.public_url();
        let emails = self.admin_emails.iter().map(|a| ("admin_emails", a));
        let emails = emails.chain(self.smtp_from.iter().map(|a| ("smtp.from", a)));
        let problem = if !self.data_dir.is_absolute() {
            format!(
                "data_dir `{}` must be an absolute path",
                self.data_dir.display()
            )
        } else if let Some((key, _)) = required.iter().find(|(_, v)| v.trim().is_empty()) {
            format!("{key} is empty")
        } else if let Some((key, _)) = counts.iter().find(|(_, n)| *n == 0) {
            format!("{key} must be at least 1")
        } else if !matches!(self.ssh_login_grace_time.secs(), Some(s) if s > 0) {
            "ssh.login_grace_time must be a positive duration, not `never`".into()
        } else if !matches!(self.signup_token_lifetime.secs(), Some(s) if s > 0) {
            "signup.token_lifetime must be a positive duration, not `never`".into()
        } else if !((1..=8).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        {
            format!("name_prefix `{prefix}`: 1 to 8 lowercase letters or digits, starting with a letter")
        } else if !self.flavors().contains_key(&self.default_flavor) {
            format!(
                "default_flavor `{}` is not a defined flavor",
                self.default_flavor
            )
        } else if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            format!("public_url `{url}`: expected an http:// or https:// URL")
        } else if let Some((key, a)) = emails
            .into_iter()
            .find(|(_, a)| crate::validate::email(a).is_err())
        {
            format!("{key}: `{a}` is not an email address")
        } else {
            return Ok(());
        };
        Err(Error::Config(problem))
    }

    /// Every setting as `basphere config` lists it, flavors one line each.
    pub fn entries(&self) -> Vec<Entry> {
        let entry = |key: String, value: String, source| Entry { key, value, source };
        let file = self.file.as_ref().map(|p| p.display().to_string());
        let source = [Source::Default, Source::File][file.is_some() as usize];
        let mut entries = vec![entry(
            "config_file".into(),
            file.unwrap_or("(none)".into()),
            source,
        )];
        for row in ROWS.iter().filter(|r| r.key != "flavors") {
            let (text, shown) = self.field_text(row.key);
            let value = match (row.key, text.is_empty()) {
                ("public_host", _) => self.public_host(),
                ("public_url", _) => self.public_url(),
                ("smtp.port", true) => self.smtp_port().to_string(),
                ("smtp.from", true) => self.mail_from(),
                ("smtp.host", true) => "(none: mail is written to the spool directory)".into(),
                ("default_image", true) => "(only image)".into(),
                _ => shown,
            };
            entries.push(entry(row.key.into(), value, self.source(row.key)));
        }
        for (name, flavor) in self.flavors() {
            let configured = self.flavors.0.contains_key(&name);
            let source = if configured {
                self.source("flavors")
            } else {
                Source::Default
            };
            entries.push(entry(format!("flavors.{name}"), flavor.to_string(), source));
        }
        entries
    }

    /// The environment that gives a child process exactly this configuration.
    ///
    /// Every set value goes as its text form: lists comma-separated, flavors as
    /// `NAME=CPUS/MEMORY/DISK` items. An unset value (empty text) is left out, and
    /// `BASPHERE_CONFIG` names `/dev/null`, an empty file, so the child reads no file that
    /// could set it: what is unset here stays unset there.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("BASPHERE_CONFIG".to_owned(), "/dev/null".to_owned())]);
        for row in ROWS {
            let (text, _) = self.field_text(row.key);
            if !text.is_empty() {
                env.insert(row.env_name(), text);
            }
        }
        env
    }

    /// The bastion's name as people reach it: `public_host`, else this host's name.
    /// How tenants reach this bastion: `ssh [-p PORT] USER@HOST`.
    pub fn ssh_command(&self) -> String {
        let target = format!("{}@{}", self.service_user, self.public_host());
        match self.public_port {
            22 => format!("ssh {target}"),
            port => format!("ssh -p {port} {target}"),
        }
    }

    pub fn public_host(&self) -> String {
        if !self.public_host.is_empty() {
            return self.public_host.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned())
    }

    /// Base of the links in mail: `public_url`, else `http://PUBLIC_HOST:8080`.
    pub fn public_url(&self) -> String {
        match self.public_url.as_str() {
            "" => format!("http://{}:8080", self.public_host()),
            url => url.to_owned(),
        }
    }

    /// Built-in flavors, with the configured ones added or put in their place.
    pub fn flavors(&self) -> BTreeMap<String, Flavor> {
        let mut all = builtin_flavors();
        all.extend(self.flavors.0.clone());
        all
    }

    /// The default limits for every user.
    pub fn limits(&self) -> Limits {
        Limits {
            cpus: self.quota_cpus,
            memory_mib: self.quota_memory.mib(),
            disk_bytes: self.quota_disk.bytes(),
            vms: self.quota_vms,
            snapshots: self.quota_snapshots,
            snapshot_expire_secs: self.quota_snapshot_expire.secs().unwrap_or(0),
            snapshot_keep_last: self.quota_snapshot_keep_last,
        }
    }

    /// The SMTP port in force: the configured one, or the usual one for the security mode.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.smtp_security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }

    /// The sender of every mail: `smtp.from`, else `basphere@PUBLIC_HOST`.
    pub fn mail_from(&self) -> String {
        match &self.smtp_from {
            Some(from) => from.clone(),
            None => format!("basphere@{}", self.public_host()),
        }
    }

    /// How long a signup's confirmation link works, in seconds (always positive).
    pub fn token_lifetime_secs(&self) -> i64 {
        self.signup_token_lifetime.secs().unwrap_or(0) as i64
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("basphere.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_and_every_env_name_is_distinct() {
        let config = Config::defaults();
        let names: std::collections::BTreeSet<_> = ROWS.iter().map(Row::env_name).collect();
        assert_eq!(names.len(), ROWS.len());
        assert_eq!(config.limits().memory_mib, 96 * 1024);
        assert_eq!(
            row("quota.snapshot_keep_last").unwrap().env_name(),
            "BASPHERE_QUOTA_SNAPSHOT_KEEP_LAST"
        );
    }

    #[test]
    fn network_pool() {
        let p = NetworkPool::parse("10.100.0.0/16").unwrap();
        assert_eq!(p.capacity(), 256);
        assert_eq!(p.subnet(3), std::net::Ipv4Addr::new(10, 100, 3, 0));
        for bad in [
            "10.100.0.1/16",
            "10.100.0.0/25",
            "10.100.0.0",
            "x/16",
            "10.0.0.0/7",
        ] {
            assert!(NetworkPool::parse(bad).is_err(), "{bad}");
        }
    }

    /// `service_user = ""` loaded, but a child given `to_env`, which leaves empty text
    /// out, got the default `basphere` instead.
    #[test]
    fn settings_that_cannot_be_unset_cannot_be_empty() {
        let env = BTreeMap::from([("BASPHERE_CONFIG".to_owned(), "/dev/null".to_owned())]);
        for key in ["service_user", "admin_group", "libvirt_uri"] {
            let flags = Overrides {
                file: None,
                keys: vec![(key, String::new())],
                ..Overrides::default()
            };
            let e = Config::load(&flags, &env).unwrap_err();
            assert!(e.to_string().contains(&format!("{key} is empty")), "{e}");
        }
    }

    /// The environment a terminal session's child gets gives back every value.
    #[test]
    fn to_env_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "admin_emails = [\"a@example.com\", \"b@example.com\"]\n[quota]\nmemory = \"64G\"\n\
             [smtp]\npassword = \"pw\"\n[flavors.build]\ncpus = 8\nmemory = \"16G\"\ndisk = \"100G\"\n",
        )
        .unwrap();
        let flags = Overrides {
            file: Some(file),
            keys: vec![("virt_type", "kvm".into())],
            ..Overrides::default()
        };
        let env = BTreeMap::from([("BASPHERE_SSH_IDLE_TIMEOUT".to_owned(), "never".to_owned())]);
        let parent = Config::load(&flags, &env).unwrap();
        let child = Config::load(&Overrides::default(), &parent.to_env()).unwrap();
        for row in ROWS {
            assert_eq!(
                parent.field_text(row.key),
                child.field_text(row.key),
                "{}",
                row.key
            );
        }
        assert_eq!(child.smtp_host, None);
        assert_eq!(child.admin_emails, ["a@example.com", "b@example.com"]);
        assert_eq!(child.flavors()["build"].cpus, 8);
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::testing::{any_text, config};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::TestRunner;
    use value::prop::{setting_text, toml_value};

    /// A row of the table, or now and then a key that is none.
    fn key() -> impl Strategy<Value = &'static str> {
        let keys: Vec<&'static str> = ROWS.iter().map(|r| r.key).collect();
        prop_oneof![9 => select(keys), 1 => Just("quota.nope")]
    }

    /// Text typical of a setting's kind, mostly well-formed.
    fn typical(kind: &str) -> BoxedStrategy<String> {
        match kind {
            "integer" => "[0-9]{1,5}".boxed(),
            "size" => "[1-9][0-9]{0,3}[kKmMgGtT]".boxed(),
            "duration" => "([1-9][0-9]{0,3}[smhdw]|never)".boxed(),
            "path" => "/[a-z/]{0,12}".boxed(),
            "list" => "[a-z]{1,4}@[a-z]{1,4}\\.com( ?, ?[a-z]{1,4}@example\\.com){0,2}".boxed(),
            "list of addresses" => {
                "(10\\.[0-9]{1,3}\\.0\\.0/(8|16|24)|127\\.0\\.0\\.1|fd00::/8|::1)( ?, ?192\\.0\\.2\\.[0-9]{1,3}){0,2}"
                    .boxed()
            }
            "IPv4 network" => "10\\.[0-9]{1,3}\\.0\\.0/(8|12|16|20|24)".boxed(),
            "flavors" => "([a-z]{1,5}=[1-8]/[1-9][0-9]{0,2}[kMG]/[1-9][0-9]{0,2}G,?){1,3}".boxed(),
            "auto|kvm|qemu" => select(vec!["auto", "kvm", "qemu"])
                .prop_map(str::to_owned)
                .boxed(),
            "starttls|tls|none" => "(starttls|tls|none)".boxed(),
            _ => any_text(10).boxed(),
        }
    }

    /// What a setting may be given as text: its default, text typical of its kind, or
    /// text like any kind's.
    fn text_for(key: &'static str) -> impl Strategy<Value = String> {
        let (default, kind) = row(key).map_or(("", ""), |r| (r.default, r.kind));
        prop_oneof![1 => Just(default.to_owned()), 3 => typical(kind), 1 => setting_text()]
    }

    /// What a setting may be given in the file: as text, as the TOML its kind takes
    /// (numbers, arrays, tables of flavors), or as any TOML.
    fn toml_for(key: &'static str) -> impl Strategy<Value = toml::Value> {
        let kind = row(key).map_or("", |r| r.kind);
        let native = match kind {
            "integer" => prop_oneof![(0i64..100_000), any::<i64>()]
                .prop_map(toml::Value::Integer)
                .boxed(),
            "list" | "list of addresses" => vec(typical(kind), 0..3)
                .prop_map(|items| items.into_iter().map(toml::Value::String).collect())
                .prop_map(toml::Value::Array)
                .boxed(),
            "flavors" => {
                let flavor = (0i64..10, typical("size"), typical("size")).prop_map(|(c, m, d)| {
                    let spec = [
                        ("cpus".to_owned(), toml::Value::Integer(c)),
                        ("memory".to_owned(), toml::Value::String(m)),
                        ("disk".to_owned(), toml::Value::String(d)),
                    ];
                    toml::Value::Table(spec.into_iter().collect())
                });
                proptest::collection::btree_map("[a-z]{1,5}", flavor, 0..3)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
                    .boxed()
            }
            _ => text_for(key).prop_map(toml::Value::String).boxed(),
        };
        prop_oneof![4 => native, 1 => toml_value()]
    }

    /// A TOML file setting a few keys (each row's key has at most one dot), each to a
    /// string, a number, a list or a table.
    fn file() -> impl Strategy<Value = String> {
        let value = key().prop_flat_map(|k| (Just(k), toml_for(k)));
        vec(value, 0..4).prop_map(|values| {
            let mut root = toml::Table::new();
            for (key, value) in values {
                let (table, name) = match key.split_once('.') {
                    Some((section, name)) => {
                        let section = root
                            .entry(section)
                            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                        (section.as_table_mut(), name)
                    }
                    None => (Some(&mut root), key),
                };
                if let Some(table) = table {
                    table.insert(name.to_owned(), value);
                }
            }
            toml::to_string(&root).unwrap()
        })
    }

    /// Flags and `BASPHERE_*` variables for a few keys.
    fn texts() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        vec(key().prop_flat_map(|k| (Just(k), text_for(k))), 0..3)
    }

    /// Whatever a file, the environment and flags say, the configuration loads or is
    /// refused; a loaded one, handed to a child through `to_env`, is the same there.
    #[test]
    fn loaded_settings_pass_on_through_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let mut runner = TestRunner::new(config());
        let sources = (
            prop_oneof![4 => file(), 1 => any_text(60)],
            texts(),
            texts(),
        );
        runner
            .run(&sources, |(text, env, flags)| {
                std::fs::write(&path, &text).unwrap();
                let overrides = Overrides {
                    file: Some(path.clone()),
                    keys: flags,
                    ..Overrides::default()
                };
                let env = env.into_iter().map(|(k, v)| {
                    let name = row(k).map_or("BASPHERE_NOPE".to_owned(), Row::env_name);
                    (name, v)
                });
                let Ok(parent) = Config::load(&overrides, &env.collect()) else {
                    return Ok(());
                };
                let child = Config::load(&Overrides::default(), &parent.to_env());
                prop_assert!(child.is_ok(), "{:?}", child.err());
                let child = child.unwrap();
                for row in ROWS {
                    prop_assert_eq!(
                        parent.field_text(row.key),
                        child.field_text(row.key),
                        "{}",
                        row.key
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}
