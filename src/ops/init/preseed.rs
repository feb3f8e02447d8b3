//! The answers `admin init` works from: a preseed file (TOML) or the questions asked on a
//! terminal fill the same [`Preseed`], and [`Preseed::check`] turns it into [`Answers`],
//! every value validated, before anything is changed.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{NetworkPool, Secret, SmtpSecurity, Value};
use crate::error::{Error, Result};
use crate::validate::{self, ImageName, PublicKey, UserId};

/// The most a preseed file may hold.
const MAX_PRESEED: u64 = 64 * 1024;

/// The port the embedded server listens on when a preseed names none.
pub const DEFAULT_SSH_PORT: u16 = 2222;

/// A preseed as written: every key optional where a default exists, unknown keys refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preseed {
    pub public_host: String,
    pub ssh: SshAnswer,
    pub network_pool: Option<String>,
    #[serde(default)]
    pub admin_emails: Vec<String>,
    pub smtp: Option<SmtpAnswer>,
    pub admin: AdminAnswer,
    pub image: Option<ImageAnswer>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAnswer {
    /// `embedded` or `openssh`.
    pub door: String,
    /// The embedded server's port.
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpAnswer {
    pub host: String,
    pub port: Option<u16>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAnswer {
    pub id: String,
    pub email: String,
    pub key: String,
    /// An existing Unix account to add to the administrators' group.
    pub unix_user: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageAnswer {
    pub name: String,
    pub file: PathBuf,
    pub os_user: Option<String>,
}

/// Which SSH front door tenants come through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// `basphere serve` runs its own SSH server on this port.
    Embedded { port: u16 },
    /// The host's OpenSSH, with basphere's `AuthorizedKeysCommand` drop-in.
    Openssh,
}

#[derive(Clone, Debug)]
pub struct Smtp {
    pub host: String,
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Admin {
    pub id: UserId,
    pub email: String,
    pub key: PublicKey,
    pub unix_user: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Image {
    pub name: ImageName,
    pub file: PathBuf,
    pub os_user: String,
    pub virtual_size: u64,
}

/// Every answer, validated.
#[derive(Clone, Debug)]
pub struct Answers {
    pub public_host: String,
    pub door: Door,
    pub network_pool: NetworkPool,
    pub admin_emails: Vec<String>,
    pub smtp: Option<Smtp>,
    pub admin: Admin,
    pub image: Option<Image>,
}

/// The configuration keys `admin init` decides; the file's other settings are kept.
pub const MANAGED_KEYS: &[&str] = &[
    "public_host",
    "serve.ssh",
    "network_pool",
    "admin_emails",
    "smtp.host",
    "smtp.port",
    "smtp.security",
    "smtp.username",
    "smtp.password",
    "smtp.from",
];

impl Preseed {
    /// Reads the preseed file at `path`: a regular file of at most 64 KiB of TOML.
    pub fn read(path: &Path) -> Result<Preseed> {
        let what = format!("preseed `{}`", path.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
        if !meta.is_file() || meta.len() > MAX_PRESEED {
            return Err(Error::invalid(format!(
                "{what} must be a regular file of at most {} KiB",
                MAX_PRESEED / 1024
            )));
        }
        let mut text = String::new();
        file.take(MAX_PRESEED)
            .read_to_string(&mut text)
            .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
        Preseed::parse(&text).map_err(|e| match e {
            Error::Invalid { message, help } => Error::Invalid {
                message: format!("{what}: {message}"),
                help,
            },
            e => e,
        })
    }

    pub fn parse(text: &str) -> Result<Preseed> {
        toml::from_str(text).map_err(|e| {
            Error::invalid_with_help(
                e.message().to_owned(),
                "see `basphere admin init --help` for the preseed's keys",
            )
        })
    }

    /// Every answer checked; an image file is read (`qemu-img info`) but not copied.
    pub fn check(&self) -> Result<Answers> {
        let public_host = validate::host_name(&self.public_host)?;
        let door = door(&self.ssh)?;
        let network_pool = pool(self.network_pool.as_deref().unwrap_or("10.100.0.0/16"))?;
        let admin_emails = self
            .admin_emails
            .iter()
            .map(|a| validate::email(a))
            .collect::<Result<_>>()?;
        let smtp = self.smtp.as_ref().map(smtp).transpose()?;
        let admin = admin(&self.admin)?;
        let image = self.image.as_ref().map(image).transpose()?;
        Ok(Answers {
            public_host,
            door,
            network_pool,
            admin_emails,
            smtp,
            admin,
            image,
        })
    }
}

fn door(ssh: &SshAnswer) -> Result<Door> {
    match (ssh.door.as_str(), ssh.port) {
        ("embedded", port) => Ok(Door::Embedded {
            port: port_number(port.unwrap_or(DEFAULT_SSH_PORT))?,
        }),
        ("openssh", None) => Ok(Door::Openssh),
        ("openssh", Some(_)) => Err(Error::invalid(
            "ssh.port is for the embedded server; OpenSSH keeps its own port",
        )),
        (other, _) => Err(Error::invalid_with_help(
            format!(
                "ssh.door `{}`: expected `embedded` or `openssh`",
                validate::quoted(other)
            ),
            "`embedded`: basphere's own SSH server on ssh.port; `openssh`: the host's sshd",
        )),
    }
}

fn port_number(port: u16) -> Result<u16> {
    match port {
        0 => Err(Error::invalid("port 0 is no port to tell people")),
        port => Ok(port),
    }
}

/// A network pool, as the configuration reads it.
pub fn pool(text: &str) -> Result<NetworkPool> {
    NetworkPool::parse(text.trim())
        .map_err(|e| Error::invalid(format!("network_pool {}", validate::quoted(&e))))
}

fn smtp(answer: &SmtpAnswer) -> Result<Smtp> {
    let host = validate::host_name(&answer.host)?;
    let security = match answer.security.as_deref() {
        None => SmtpSecurity::Starttls,
        Some(word) => SmtpSecurity::parse(word)
            .map_err(|e| Error::invalid(format!("smtp.security {}", validate::quoted(&e))))?,
    };
    let text = |what: &str, value: &Option<String>| -> Result<Option<String>> {
        match value.as_deref() {
            None | Some("") => Ok(None),
            Some(v) if v.chars().any(|c| c.is_control() || validate::steers(c)) => Err(
                Error::invalid(format!("smtp.{what} holds control or format characters")),
            ),
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    Ok(Smtp {
        host,
        port: answer.port.map(port_number).transpose()?,
        security,
        username: text("username", &answer.username)?,
        password: text("password", &answer.password)?.map(Secret::new),
        from: match answer.from.as_deref() {
            None | Some("") => None,
            Some(from) => Some(validate::email(from)?),
        },
    })
}

fn admin(answer: &AdminAnswer) -> Result<Admin> {
    let id: UserId = answer.id.parse()?;
    let email = validate::email(&answer.email)?;
    let key: PublicKey = answer.key.parse()?;
    let unix_user = match answer.unix_user.as_deref() {
        None | Some("") => None,
        Some(name) => Some(validate::os_user(name)?),
    };
    Ok(Admin {
        id,
        email,
        key,
        unix_user,
    })
}

fn image(answer: &ImageAnswer) -> Result<Image> {
    let name: ImageName = answer.name.parse()?;
    let os_user = crate::ops::image::os_user_for(&name, answer.os_user.as_deref())?;
    if !answer.file.is_absolute() {
        return Err(Error::invalid(format!(
            "image.file `{}` must be an absolute path",
            answer.file.display()
        )));
    }
    // A file that is not there is a wrong answer like any other.
    let info = crate::ops::image::check_file(&answer.file).map_err(|e| match e {
        Error::Io { .. } => Error::invalid(format!("image.file: {e}")),
        e => e,
    })?;
    Ok(Image {
        name,
        file: answer.file.clone(),
        os_user,
        virtual_size: info.virtual_size,
    })
}

impl Answers {
    /// The configuration keys these answers set, in their text form; a managed key
    /// missing here is unset.
    pub fn settings(&self) -> std::collections::BTreeMap<&'static str, String> {
        let mut set = std::collections::BTreeMap::new();
        set.insert("public_host", self.public_host.clone());
        let ssh = match self.door {
            Door::Embedded { port } => format!("0.0.0.0:{port}"),
            Door::Openssh => "off".to_owned(),
        };
        set.insert("serve.ssh", ssh);
        set.insert("network_pool", self.network_pool.show());
        if !self.admin_emails.is_empty() {
            set.insert("admin_emails", self.admin_emails.join(","));
        }
        if let Some(smtp) = &self.smtp {
            set.insert("smtp.host", smtp.host.clone());
            set.insert("smtp.security", smtp.security.show());
            let optional = [
                ("smtp.port", smtp.port.map(|p| p.to_string())),
                ("smtp.username", smtp.username.clone()),
                (
                    "smtp.password",
                    smtp.password.as_ref().map(|p| p.expose().clone()),
                ),
                ("smtp.from", smtp.from.clone()),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    set.insert(key, value);
                }
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJoIsPWUswUU8JfT71ZudNtu3CXj/h/AXHDHgYwZ7mNk alice@laptop";

    fn preseed(extra: &str) -> Result<Answers> {
        let text = format!(
            "public_host = \"bastion.example.org\"\n{extra}\n[ssh]\ndoor = \"openssh\"\n\
             [admin]\nid = \"alice\"\nemail = \"alice@example.org\"\nkey = \"{KEY}\"\n"
        );
        Preseed::parse(&text)?.check()
    }

    #[test]
    fn a_small_preseed_takes_the_defaults() {
        let answers = preseed("").unwrap();
        assert_eq!(answers.door, Door::Openssh);
        let set = answers.settings();
        assert_eq!(set["serve.ssh"], "off");
        assert_eq!(set["network_pool"], "10.100.0.0/16");
        assert!(!set.contains_key("smtp.host"));
        for key in set.keys() {
            assert!(MANAGED_KEYS.contains(key), "{key}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        for (extra, what) in [
            ("colour = \"blue\"", "unknown field `colour`"),
            ("network_pool = \"10.100.0.0/33\"", "network_pool"),
            ("admin_emails = [\"not-an-address\"]", "invalid email"),
        ] {
            let e = preseed(extra).unwrap_err().to_string();
            assert!(e.contains(what), "{extra}: {e}");
        }
        let e = Preseed::parse("public_host = \"-bad-\"\n[ssh]\ndoor = \"openssh\"\n[admin]\nid = \"alice\"\nemail = \"a@example.org\"\nkey = \"x\"\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("invalid host name"), "{e}");
    }
}
