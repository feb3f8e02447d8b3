//! Every setting, one row each: its dotted key, the field that holds it, its type and
//! its default. Adding a setting is one row here; the file, `BASPHERE_*` variables,
//! flags, `basphere config` and the environment of terminal sessions all follow.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::value::{Door, Duration, Flavors, NetworkPool, Networks, SmtpSecurity, Value};
use super::Source;
use crate::secret::Secret;
use crate::validate::Size;
use crate::virt::VirtTypeSetting;

/// One setting, as the table describes it.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The dotted key: `quota.memory` is `memory` in the file's `[quota]` table.
    pub key: &'static str,
    pub kind: &'static str,
    /// The text form of the default; empty for none (or one derived, see `help`).
    pub default: &'static str,
    pub help: &'static str,
}

impl Row {
    /// `BASPHERE_` and the key in upper case, dots and dashes as `_` (as cargo's
    /// `ConfigKey::as_env_key` does): `quota.memory` is `BASPHERE_QUOTA_MEMORY`.
    pub fn env_name(&self) -> String {
        format!(
            "BASPHERE_{}",
            self.key.to_ascii_uppercase().replace(['.', '-'], "_")
        )
    }
}

/// A value as it arrives: text (environment, flags, defaults) or a value from the file.
pub enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

macro_rules! keys {
    ($( $field:ident $key:literal : $ty:ty = $default:literal, $help:literal; )+) => {
        /// The settings in force, each with where it came from.
        #[derive(Clone, Debug)]
        pub struct Config {
            /// The file that was read, if any.
            pub file: Option<PathBuf>,
            /// The file settings are read from, whether or not it exists (`admin init`
            /// writes it).
            pub path: PathBuf,
            /// What the command line set, to read the configuration again with.
            pub(super) flags: super::Overrides,
            $( #[doc = $help] pub $field: $ty, )+
            pub(super) sources: BTreeMap<&'static str, Source>,
        }

        /// The table, in the order `basphere config` lists it.
        pub const ROWS: &[Row] = &[$(
            Row { key: $key, kind: <$ty as Value>::KIND, default: $default, help: $help },
        )+];

        impl Config {
            /// Every setting at its default.
            pub(super) fn defaults() -> Config {
                Config {
                    file: None,
                    path: PathBuf::from(super::DEFAULT_CONFIG_PATH),
                    flags: super::Overrides::default(),
                    $( $field: <$ty as Value>::parse($default)
                        .unwrap_or_else(|e| panic!("default of {}: {e}", $key)), )+
                    sources: BTreeMap::new(),
                }
            }

            /// Parses `raw` into the field of `key`, a key of the table.
            pub(super) fn set_field(&mut self, key: &str, raw: Raw) -> Result<(), String> {
                match key {
                    $( $key => match raw {
                        Raw::Text(text) => <$ty as Value>::parse(text),
                        Raw::Toml(value) => <$ty as Value>::from_toml(value),
                    }.map(|v| self.$field = v), )+
                    _ => unreachable!("`{key}` is not in the rows table"),
                }
            }

            /// The text form of `key`'s value and what `basphere config` shows of it.
            pub(crate) fn field_text(&self, key: &str) -> (String, String) {
                match key {
                    $( $key => (self.$field.show(), self.$field.display()), )+
                    _ => unreachable!("`{key}` is not in the rows table"),
                }
            }
        }
    };
}

keys! {
    data_dir "data_dir": PathBuf = "/var/lib/basphere", "Database, disks, seeds, images and locks.";
    libvirt_uri "libvirt_uri": String = "qemu:///system", "The libvirt connection.";
    virt_type "virt_type": VirtTypeSetting = "auto", "`kvm`, `qemu` (full emulation) or `auto` (KVM when a probe guest really starts).";
    network_pool "network_pool": NetworkPool = "10.100.0.0/16", "Each user gets the next /24 of it.";
    public_host "public_host": String = "", "The bastion's name in the `ssh` lines people are shown (default: this host's name).";
    public_port "public_port": u16 = "22", "The bastion's SSH port in those lines (default: 22, or the port `serve --ssh` listens on).";
    public_url "public_url": String = "", "Base of the links in signup mail (default: http://PUBLIC_HOST:8080).";
    service_user "service_user": String = "basphere", "Unix account that tenants log in as and sshd runs `basphere shell` as.";
    admin_group "admin_group": String = "basphere-admin", "Unix group whose members are administrators.";
    default_image "default_image": Option<String> = "", "Image for `create-vm` without `--image` (default: the only image there is).";
    default_flavor "default_flavor": String = "small", "Size for `create-vm` without sizes.";
    name_prefix "name_prefix": String = "bsp", "Starts the name of every libvirt object basphere makes; others are never touched.";
    flavors "flavors": Flavors = "", "Size presets beside the built-in small, medium, large and xlarge.";
    quota_cpus "quota.cpus": u64 = "32", "vCPUs one user may hold.";
    quota_memory "quota.memory": Size = "96G", "Memory one user may hold.";
    quota_disk "quota.disk": Size = "1T", "Disk one user may hold.";
    quota_vms "quota.vms": u64 = "20", "VMs one user may hold.";
    quota_snapshots "quota.snapshots": u64 = "100", "Snapshots one user may hold.";
    quota_snapshot_expire "quota.snapshot_expire": Duration = "30d", "Expiry of snapshots made without `--expire`.";
    quota_snapshot_keep_last "quota.snapshot_keep_last": u64 = "10", "Snapshots per VM that a prune keeps.";
    storage_min_free "storage.min_free": Size = "5G", "`create-vm` and `snapshot create` are refused while the data directory has less free space than this.";
    smtp_host "smtp.host": Option<String> = "", "SMTP relay; without one, mail is written as .eml files to the spool directory.";
    smtp_port "smtp.port": Option<u16> = "", "SMTP port (default: 587 for starttls, 465 for tls, 25 for none).";
    smtp_security "smtp.security": SmtpSecurity = "starttls", "`starttls` (required), `tls` from the first byte, or `none`.";
    smtp_username "smtp.username": Option<String> = "", "SMTP user name.";
    smtp_password "smtp.password": Option<Secret> = "", "SMTP password; shown only as `(set)`.";
    smtp_from "smtp.from": Option<String> = "", "Sender of every mail (default: basphere@PUBLIC_HOST).";
    admin_emails "admin_emails": Vec<String> = "", "Who is told about new signups.";
    audit_retention "audit.retention": Duration = "400d", "Audit entries older than this are deleted as new ones are written (`never` keeps them all).";
    signup_per_ip_per_hour "signup.per_ip_per_hour": u32 = "30", "Signup form submissions accepted from one address per hour.";
    signup_per_email_per_day "signup.per_email_per_day": u32 = "3", "Signups accepted for one email address per day.";
    signup_token_lifetime "signup.token_lifetime": Duration = "1d", "How long a confirmation link works.";
    serve_web "serve.web": Door = "127.0.0.1:8080", "Where `serve` listens for the signup form (`off` for none); `--web` overrides it.";
    serve_ssh "serve.ssh": Door = "off", "Where `serve` runs the embedded SSH server (`off`: tenants come through the host's OpenSSH); `--ssh` overrides it.";
    web_trusted_proxies "web.trusted_proxies": Networks = "", "Reverse proxies (addresses or networks) whose X-Forwarded-For or X-Real-IP names the client; from any other peer those headers are ignored.";
    ssh_max_auth_attempts "ssh.max_auth_attempts": u32 = "6", "Failed authentication attempts before a connection is dropped.";
    ssh_connections_per_minute "ssh.connections_per_minute": u32 = "60", "New connections accepted from one address (IPv6: one /64) per minute.";
    ssh_connection_burst "ssh.connection_burst": u32 = "10", "Of those, how many at once; the allowance comes back at the per-minute rate.";
    ssh_max_sessions "ssh.max_sessions": u32 = "10", "Commands, shells and forwards one user may have running at once.";
    ssh_max_connections "ssh.max_connections": u32 = "1000", "Connections open at once (also kept below the open-file limit).";
    ssh_max_startups "ssh.max_startups": u32 = "64", "Connections not yet authenticated at once (OpenSSH's MaxStartups).";
    ssh_per_source_max_startups "ssh.per_source_max_startups": u32 = "8", "Of those, from one address or IPv6 /64 (PerSourceMaxStartups).";
    ssh_login_grace_time "ssh.login_grace_time": Duration = "30s", "A connection not authenticated within this is closed (LoginGraceTime).";
    ssh_max_channels "ssh.max_channels": u32 = "16", "Session channels one connection may open at once.";
    ssh_max_sessions_total "ssh.max_sessions_total": u32 = "256", "Commands, shells and forwards running at once on the whole server.";
    ssh_write_timeout "ssh.write_timeout": Duration = "30s", "A command whose client opens no window for its output for this long is cancelled.";
    ssh_idle_timeout "ssh.idle_timeout": Duration = "30m", "A connection with no traffic for this long is closed.";
}
