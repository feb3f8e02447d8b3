//! Who is calling, and the handles an operation works with: config, database, libvirt.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::config::Config;
use crate::db;
use crate::error::{Error, Result};
use crate::virt::Hypervisor;

/// Where a command came from. The dispatcher trusts nothing else about identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A process on the bastion itself: an admin at a terminal, cron, or the service account.
    Local { uid: u32 },
    /// A tenant authenticated by an SSH key (the embedded server or OpenSSH's forced command).
    Ssh {
        user: String,
        fingerprint: Option<String>,
    },
}

impl Caller {
    /// The caller of the current process.
    pub fn current_process() -> Caller {
        Caller::Local {
            uid: nix::unistd::getuid().as_raw(),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Caller::Ssh { .. })
    }
}

/// The caller resolved against the user table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Actor {
    /// Recorded in the audit log: a Unix login for local callers, the user id over SSH.
    pub name: String,
    pub via: &'static str,
    pub admin: bool,
    /// Allowed to run the service-account commands (`shell`).
    pub service: bool,
    /// The tenant that user commands act for.
    pub user: Option<String>,
    pub fingerprint: Option<String>,
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
    /// must traverse into disks/ and images/, but need not list them (0711).
    pub fn create(&self) -> Result<()> {
        for dir in [self.root.clone(), self.disks(), self.seeds(), self.images()] {
            create_dir(&dir, 0o711)?;
        }
        create_dir(&self.locks(), 0o700)
    }
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io(format!("cannot create `{}`", dir.display()), e)),
    }
}

pub struct Context {
    pub config: Config,
    pub actor: Actor,
    pub db: Connection,
    pub paths: Paths,
    hypervisor: std::cell::OnceCell<Hypervisor>,
}

fn unix_login(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid:{uid}"), |u| u.name)
}

/// Whether the current process belongs to the Unix group `group`.
fn in_group(group: &str) -> bool {
    let Ok(Some(g)) = nix::unistd::Group::from_name(group) else {
        return false;
    };
    nix::unistd::getegid() == g.gid || nix::unistd::getgroups().is_ok_and(|gs| gs.contains(&g.gid))
}

impl Context {
    /// Opens the database and resolves the caller. `act_as` is `--as USER`, for admins.
    pub fn open(config: Config, caller: &Caller, act_as: Option<&str>) -> Result<Context> {
        // Refuse local strangers before touching anything on disk.
        if let Caller::Local { uid } = caller {
            let admin = *uid == 0 || in_group(&config.admin_group.value);
            if !admin && unix_login(*uid) != config.service_user.value {
                return Err(Error::denied(format!(
                    "local use of basphere is for root and members of the `{}` group; tenants connect with `ssh basphere@{}`",
                    config.admin_group.value, config.public_host.value
                )));
            }
        }
        let paths = Paths {
            root: config.data_dir.value.clone(),
        };
        if !paths.root.join("basphere.db").exists() {
            paths.create()?;
        }
        // The database holds every tenant's keys: readable by its owner only.
        let db_path = config.db_path();
        let fresh = !db_path.exists();
        let db = db::open(&db_path)?;
        if fresh {
            let _ = fs::set_permissions(&db_path, fs::Permissions::from_mode(0o600));
        }
        let mut actor = match caller {
            Caller::Local { uid } => {
                let name = unix_login(*uid);
                let admin = *uid == 0 || in_group(&config.admin_group.value);
                let service = admin || name == config.service_user.value;
                // An admin who is also a tenant under the same name acts as that tenant.
                let user = db::users::get(&db, &name)?
                    .filter(|u| !u.disabled)
                    .map(|u| u.id);
                Actor {
                    name,
                    via: "local",
                    admin,
                    service,
                    user,
                    fingerprint: None,
                }
            }
            Caller::Ssh { user, fingerprint } => {
                let row = db::users::get(&db, user)?
                    .ok_or_else(|| Error::denied(format!("unknown user `{user}`")))?;
                if row.disabled {
                    return Err(Error::denied(format!("user `{user}` is disabled")));
                }
                Actor {
                    name: row.id.clone(),
                    via: "ssh",
                    admin: row.role == db::users::Role::Admin,
                    service: false,
                    user: Some(row.id),
                    fingerprint: fingerprint.clone(),
                }
            }
        };
        if let Some(target) = act_as {
            if !actor.admin {
                return Err(Error::denied("`--as` is for administrators"));
            }
            let row =
                db::users::get(&db, target)?.ok_or_else(|| Error::not_found("user", target))?;
            actor.user = Some(row.id);
        }
        Ok(Context {
            config,
            actor,
            db,
            paths,
            hypervisor: std::cell::OnceCell::new(),
        })
    }

    /// The libvirt connection, opened on first use so commands that do not need it never wait for it.
    pub fn hypervisor(&self) -> Result<&Hypervisor> {
        if self.hypervisor.get().is_none() {
            let hv = Hypervisor::open(&self.config.libvirt_uri.value)?
                .with_prefix(&self.config.name_prefix.value);
            let _ = self.hypervisor.set(hv);
        }
        Ok(self.hypervisor.get().expect("just opened"))
    }

    /// The prefix of every libvirt object name basphere makes.
    pub fn prefix(&self) -> &str {
        &self.config.name_prefix.value
    }

    /// The domain type for new VMs. `auto` runs a probe once per data directory and
    /// libvirt URI and remembers the answer in `virt-type.probe`; delete that file
    /// to probe again.
    pub fn domain_type(&self) -> Result<crate::virt::DomainType> {
        use crate::virt::{DomainType, VirtTypeSetting};
        let setting = self.config.virt_type.value;
        let hv = self.hypervisor()?;
        if setting != VirtTypeSetting::Auto {
            return Ok(hv.domain_type(setting)?);
        }
        let cache = self.paths.root.join("virt-type.probe");
        let uri = &self.config.libvirt_uri.value;
        if let Ok(text) = fs::read_to_string(&cache) {
            match text.split_once('\n') {
                Some((cached_uri, "kvm\n")) if cached_uri == uri => return Ok(DomainType::Kvm),
                Some((cached_uri, "qemu\n")) if cached_uri == uri => return Ok(DomainType::Qemu),
                _ => {}
            }
        }
        let probed = hv.domain_type(setting)?;
        let _ = fs::write(&cache, format!("{uri}\n{}\n", probed.as_str()));
        Ok(probed)
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.actor.admin {
            Ok(())
        } else {
            Err(Error::denied("this command is for administrators"))
        }
    }

    /// The tenant a user command acts for.
    pub fn tenant(&self) -> Result<String> {
        match &self.actor.user {
            Some(user) => {
                match db::users::get(&self.db, user)? {
                    Some(row) if !row.disabled => Ok(row.id),
                    Some(_) => Err(Error::denied(format!("user `{user}` is disabled"))),
                    None => Err(Error::not_found("user", user.clone())),
                }
            }
            None if self.actor.admin => Err(Error::invalid_with_help(
                format!("`{}` is not a basphere user", self.actor.name),
                "act for a user with `basphere --as USER ...`, or see every VM with `basphere admin vms`",
            )),
            None => Err(Error::denied(format!(
                "`{}` is not a basphere user; tenants connect with ssh",
                self.actor.name
            ))),
        }
    }

    /// Records a state-changing action and its outcome in the audit log.
    pub fn audit<T>(&self, action: &str, target: &str, outcome: &Result<T>) {
        let (result, detail) = match outcome {
            Ok(_) => ("ok", String::new()),
            Err(e) => ("error", e.report()),
        };
        let mut detail = detail;
        if let Some(user) = &self.actor.user {
            if *user != self.actor.name {
                detail = format!("as {user}; {detail}")
                    .trim_end_matches("; ")
                    .to_owned();
            }
        }
        let entry = db::audit::NewEntry {
            actor: &self.actor.name,
            via: self.actor.via,
            action,
            target,
            result,
            detail: &detail,
        };
        if let Err(e) = db::audit::insert(&self.db, &entry, db::now()) {
            tracing::error!(error = %e, action, target, "cannot write audit entry");
        }
    }
}
