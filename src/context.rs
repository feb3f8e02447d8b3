//! Who is calling, what they may run, and the handles an operation works with:
//! configuration, database, libvirt and the cancel handle.

use std::cell::OnceCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

use crate::cancel::Cancel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::virt::Hypervisor;
use crate::{db, files};

/// Where a command came from. The dispatcher trusts nothing else about identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A process on the bastion itself: an admin at a terminal, cron, or the service account.
    Local { uid: u32 },
    /// A local process that sudo started for the account `invoker` (`SUDO_UID`): as the
    /// service account, it is how a member of `admin_group` reaches the database (see
    /// `crate::sudo`).
    Sudo { uid: u32, invoker: u32 },
    /// A tenant authenticated by an SSH key (the embedded server or OpenSSH's forced command).
    Ssh(Binding),
}

/// Who an SSH connection authenticated as: the key, and the user it belonged to then.
/// Every command and every forward checks that it still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub user: String,
    pub fingerprint: String,
    /// The user's serial at authentication, which is never reused: a user removed and
    /// made again under the same id inherits no connection. `None` where the forced
    /// command names none.
    pub serial: Option<i64>,
}

impl Binding {
    /// The key's owner, if the key is still this user's, the user the same one and not
    /// disabled: one indexed lookup.
    pub fn check(&self, conn: &Connection) -> Result<db::users::KeyOwner> {
        let owner = db::users::key_owner(conn, &self.fingerprint)?;
        let owner = owner.filter(|o| {
            o.user_id == self.user && self.serial.is_none_or(|serial| serial == o.serial)
        });
        match owner {
            None => Err(Error::denied(format!(
                "key {} is no longer registered to `{}`",
                self.fingerprint, self.user
            ))),
            Some(o) if o.disabled => {
                Err(Error::denied(format!("user `{}` is disabled", self.user)))
            }
            Some(o) => Ok(o),
        }
    }
}

impl Caller {
    /// The caller of the current process.
    pub fn current_process() -> Caller {
        let uid = nix::unistd::getuid().as_raw();
        match sudo_invoker() {
            Some(invoker) if invoker != uid => Caller::Sudo { uid, invoker },
            _ => Caller::Local { uid },
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Caller::Ssh(_))
    }
}

/// The account that ran this process through sudo (`SUDO_UID`), if any.
///
/// Only the environment says so, and the service account could forge it: that gains it
/// nothing, since it owns the database and may change any row an administrator could.
/// The caller is trusted as that account only while it is really a member of
/// `admin_group` (see `context::Context::new`), and never over SSH: a tenant's commands
/// are judged by their key whatever the environment, and a process sshd started (it
/// sets `SSH_CONNECTION`, which sudo's `env_reset` removes) got any `SUDO_*` from the
/// client, through an `AcceptEnv` that lets them in, so it ignores them.
fn sudo_invoker() -> Option<u32> {
    if std::env::var_os("SSH_CONNECTION").is_some() {
        return None;
    }
    std::env::var("SUDO_UID").ok()?.parse().ok()
}

/// What kind of caller someone is: the one thing commands are allowed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// root on the bastion.
    Root,
    /// A member of the `admin_group` Unix group on the bastion.
    LocalAdmin,
    /// The service account: cron and timers, and sshd's `AuthorizedKeysCommand` and
    /// forced command (`AuthorizedKeysCommandUser` is this account).
    Service,
    /// Any other account on the bastion.
    Stranger,
    /// A user, over SSH.
    Tenant,
    /// A user with the admin role, over SSH.
    RemoteAdmin,
}

impl Role {
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Root | Role::LocalAdmin | Role::RemoteAdmin)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The roles a command admits, declared by each command next to its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed(u8);

impl Allowed {
    pub const fn of(roles: &[Role]) -> Allowed {
        let mut bits = 0;
        let mut i = 0;
        while i < roles.len() {
            bits |= roles[i].bit();
            i += 1;
        }
        Allowed(bits)
    }

    pub const fn and(self, other: Allowed) -> Allowed {
        Allowed(self.0 | other.0)
    }

    pub fn permits(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The administrators, wherever they are.
    pub const ADMINS: Allowed = Allowed::of(&[Role::Root, Role::LocalAdmin, Role::RemoteAdmin]);
    /// Whoever may act for a tenant: tenants, and administrators (as themselves or `--as`).
    pub const USERS: Allowed = Allowed::ADMINS.and(Allowed::of(&[Role::Tenant]));
    /// Administrators on the bastion itself.
    pub const LOCAL_ADMINS: Allowed = Allowed::of(&[Role::Root, Role::LocalAdmin]);
    pub const SERVICE: Allowed = Allowed::of(&[Role::Service]);
    /// What sshd runs: root, or the service account.
    pub const SSHD: Allowed = Allowed::of(&[Role::Root, Role::Service]);
}

/// Which local role the account `uid` has. The service account is that, whatever its
/// groups; otherwise membership of `admin_group` makes an administrator.
pub fn local_role(uid: u32, config: &Config) -> Role {
    if uid == 0 {
        return Role::Root;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into()) else {
        return Role::Stranger;
    };
    if user.name == config.service_user {
        return Role::Service;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_name(&config.admin_group) else {
        return Role::Stranger;
    };
    // This process's own groups when it is that account (they may differ from the
    // account's, after `newgrp` say); the account's groups otherwise.
    let member = if nix::unistd::getuid() == user.uid {
        nix::unistd::getegid() == group.gid
            || nix::unistd::getgroups().is_ok_and(|gs| gs.contains(&group.gid))
    } else {
        let name = std::ffi::CString::new(user.name.clone()).unwrap_or_default();
        nix::unistd::getgrouplist(&name, user.gid).is_ok_and(|gs| gs.contains(&group.gid))
    };
    if member {
        Role::LocalAdmin
    } else {
        Role::Stranger
    }
}

/// The role a process sudo ran as `uid` for `invoker` acts with, if not its own: the
/// service account run for a member of `admin_group` is that member. Anything else
/// (root run through sudo, the service account run for a stranger, a `SUDO_UID` the
/// service account set itself for someone who is no member) is simply its own account.
fn sudo_admin(uid: u32, invoker: u32, config: &Config) -> Option<Role> {
    let admin = local_role(uid, config) == Role::Service
        && invoker != 0
        && local_role(invoker, config) == Role::LocalAdmin;
    admin.then_some(Role::LocalAdmin)
}

/// The caller resolved: their role, and what the audit log records of them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Actor {
    /// A Unix login for local callers, the user id over SSH.
    pub name: String,
    pub via: &'static str,
    pub role: Role,
    pub fingerprint: Option<String>,
    /// `--as USER`: the tenant an administrator acts for.
    pub act_as: Option<String>,
}

/// Files under the data directory.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn disks(&self) -> PathBuf {
        self.root.join("disks")
    }
    pub fn seeds(&self) -> PathBuf {
        self.root.join("seeds")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn disk(&self, vm_id: &str) -> PathBuf {
        self.disks().join(format!("{vm_id}.qcow2"))
    }
    /// The snapshots' XML of a VM whose domain was undefined, beside its disk.
    pub fn snapshots(&self, vm_id: &str) -> PathBuf {
        self.disks().join(format!("{vm_id}.snapshots.xml"))
    }
    pub fn seed(&self, vm_id: &str) -> PathBuf {
        self.seeds().join(format!("{vm_id}.iso"))
    }
    pub fn image(&self, name: &str) -> PathBuf {
        self.images().join(format!("{name}.qcow2"))
    }
    pub fn lock(&self, name: &str) -> PathBuf {
        self.locks().join(format!("{name}.lock"))
    }

    /// Creates the data directory tree. qemu runs as another user on most hosts and
    /// must traverse into disks/, seeds/ and images/, but need not list them (0711).
    pub fn create(&self) -> Result<()> {
        for dir in [self.root.clone(), self.disks(), self.seeds(), self.images()] {
            create_dir(&dir, files::TRAVERSABLE_DIR)?;
        }
        create_dir(&self.locks(), files::PRIVATE_DIR)
    }
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    files::dir(dir, mode).map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))
}

/// What one command runs with. The database and libvirt open on first use, so a
/// command that needs neither never touches them.
pub struct Context {
    pub config: Arc<Config>,
    pub actor: Actor,
    pub paths: Paths,
    pub cancel: Cancel,
    db: OnceCell<Connection>,
    installation: OnceCell<String>,
    hypervisor: OnceCell<Hypervisor>,
}

fn unix_login(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid:{uid}"), |u| u.name)
}

impl Context {
    /// Resolves `caller`: a local account by its uid alone; an SSH user, and `--as USER`,
    /// against the user table.
    pub fn new(
        config: Arc<Config>,
        caller: &Caller,
        act_as: Option<&str>,
        cancel: Cancel,
    ) -> Result<Context> {
        let paths = Paths {
            root: config.data_dir.clone(),
        };
        let (name, via, role, fingerprint) = match caller {
            Caller::Local { uid } => (unix_login(*uid), "local", local_role(*uid, &config), None),
            Caller::Sudo { uid, invoker } => match sudo_admin(*uid, *invoker, &config) {
                Some(role) => (unix_login(*invoker), "sudo", role, None),
                None => (unix_login(*uid), "local", local_role(*uid, &config), None),
            },
            Caller::Ssh(binding) => (
                binding.user.clone(),
                "ssh",
                Role::Tenant,
                Some(binding.fingerprint.clone()),
            ),
        };
        let mut ctx = Context {
            config,
            actor: Actor {
                name,
                via,
                role,
                fingerprint,
                act_as: None,
            },
            paths,
            cancel,
            db: OnceCell::new(),
            installation: OnceCell::new(),
            hypervisor: OnceCell::new(),
        };
        if let Caller::Ssh(binding) = caller {
            if binding.check(ctx.db()?)?.role == db::users::Role::Admin {
                ctx.actor.role = Role::RemoteAdmin;
            }
        }
        if let Some(target) = act_as {
            if !ctx.actor.role.is_admin() {
                return Err(Error::denied("`--as` is for administrators"));
            }
            let row = db::users::get(ctx.db()?, target)?
                .ok_or_else(|| Error::not_found("user", target))?;
            ctx.actor.act_as = Some(row.id);
        }
        Ok(ctx)
    }

    /// This context with its database and libvirt connection already open, where given:
    /// `doctor` opens the database read-only and libvirt within a time limit.
    pub fn with_handles(self, db: Option<Connection>, hypervisor: Option<Hypervisor>) -> Context {
        if let Some(db) = db {
            let _ = self.db.set(db);
        }
        if let Some(hv) = hypervisor {
            let _ = self.hypervisor.set(hv);
        }
        self
    }

    /// The database, opened on first use. It must exist: only `admin init` makes one.
    pub fn db(&self) -> Result<&Connection> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = db::open(&self.config.db_path())?;
        Ok(self.db.get_or_init(|| db))
    }

    /// This installation's id, which every libvirt object basphere defines carries.
    pub fn installation(&self) -> Result<&str> {
        if self.installation.get().is_none() {
            let id = db::installation::id(self.db()?)?;
            let _ = self.installation.set(id);
        }
        Ok(self.installation.get().expect("just read"))
    }

    /// The libvirt connection, opened on first use so commands that do not need it never wait for it.
    pub fn hypervisor(&self) -> Result<&Hypervisor> {
        if self.hypervisor.get().is_none() {
            let hv =
                Hypervisor::open(&self.config.libvirt_uri)?.with_prefix(&self.config.name_prefix);
            let _ = self.hypervisor.set(hv);
        }
        Ok(self.hypervisor.get().expect("just opened"))
    }

    /// The prefix of every libvirt object name basphere makes.
    pub fn prefix(&self) -> &str {
        &self.config.name_prefix
    }

    /// The domain type for new VMs. `auto` runs a probe once per data directory and
    /// libvirt URI and remembers the answer in `virt-type.probe`; delete that file
    /// to probe again.
    pub fn domain_type(&self) -> Result<crate::virt::DomainType> {
        use crate::virt::{DomainType, VirtTypeSetting};
        let setting = self.config.virt_type;
        let hv = self.hypervisor()?;
        if setting != VirtTypeSetting::Auto {
            return Ok(hv.domain_type(setting)?);
        }
        let cache = self.paths.root.join("virt-type.probe");
        let uri = &self.config.libvirt_uri;
        if let Ok(text) = fs::read_to_string(&cache) {
            match text.split_once('\n') {
                Some((cached_uri, "kvm\n")) if cached_uri == uri => return Ok(DomainType::Kvm),
                Some((cached_uri, "qemu\n")) if cached_uri == uri => return Ok(DomainType::Qemu),
                _ => {}
            }
        }
        let probed = hv.domain_type(setting)?;
        let _ = files::write(&cache, format!("{uri}\n{}\n", probed.as_str()).as_bytes());
        Ok(probed)
    }

    /// The tenant a user command acts for: `--as USER`, the SSH user, or the user named
    /// like a local administrator's login.
    pub fn tenant(&self) -> Result<String> {
        let user = match (&self.actor.act_as, self.actor.via) {
            (Some(target), _) => target.clone(),
            (None, "ssh") => self.actor.name.clone(),
            (None, _) => match db::users::get(self.db()?, &self.actor.name)? {
                Some(row) if !row.disabled => return Ok(row.id),
                _ if self.actor.role.is_admin() => {
                    return Err(Error::invalid_with_help(
                        format!("`{}` is not a basphere user", self.actor.name),
                        "act for a user with `basphere --as USER ...`, or see every VM with `basphere admin vms`",
                    ))
                }
                _ => {
                    return Err(Error::denied(format!(
                        "`{}` is not a basphere user; tenants connect with ssh",
                        self.actor.name
                    )))
                }
            },
        };
        match db::users::get(self.db()?, &user)? {
            Some(row) if !row.disabled => Ok(row.id),
            Some(_) => Err(Error::denied(format!("user `{user}` is disabled"))),
            None => Err(Error::not_found("user", user)),
        }
    }

    /// The tenant for the audit log, if one is known without asking the database.
    pub fn tenant_hint(&self) -> &str {
        self.actor.act_as.as_deref().unwrap_or(&self.actor.name)
    }

    /// Records a state-changing action and its outcome in the audit log.
    pub fn audit<T>(&self, action: &str, target: &str, outcome: &Result<T>) {
        let (result, detail) = match outcome {
            Ok(_) => ("ok", String::new()),
            Err(e) => ("error", e.report()),
        };
        let detail = match &self.actor.act_as {
            Some(user) if *user != self.actor.name => format!("as {user}; {detail}")
                .trim_end_matches("; ")
                .to_owned(),
            _ => detail,
        };
        let entry = db::audit::NewEntry {
            actor: &self.actor.name,
            via: self.actor.via,
            action,
            target,
            result,
            detail: &detail,
        };
        let written = self
            .db()
            .and_then(|db| crate::ops::audit::record(db, &self.config, &entry));
        if let Err(e) = written {
            tracing::error!(error = %e, action, target, "cannot write audit entry");
        }
    }
}
