//! `admin init`: sets a host up from validated answers (see `preseed`), and makes an
//! installation's data directory and database, the one place where a database is ever
//! created.
//!
//! A run first compares what is there with what the answers want, item by item (each
//! setting, the database, the first administrator, the group, the image, the sshd
//! drop-in). What is missing is made; what is there but different is changed only with
//! `--force`. A marker in the data directory lasts from the first change to the last
//! step, so a run killed part way is finished by the next one with the same answers.

pub mod host;
pub mod preseed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, NetworkPool, Overrides, Source, ROWS};
use crate::context::Context;
use crate::db;
use crate::error::{Error, Result};
use crate::ops;
pub use preseed::{Answers, Door, Preseed};

/// An installation's database, new or found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Initialized {
    pub data_dir: PathBuf,
    pub database: PathBuf,
    /// The id every libvirt object of this installation carries.
    pub installation: String,
    /// False when the database was already there: then nothing but migrations changed.
    pub created: bool,
}

/// Creates the data directory tree and an empty database, or finds the existing ones.
pub fn database_only(ctx: &Context) -> Result<Initialized> {
    ctx.paths.create()?;
    let database = ctx.config.db_path();
    let (conn, created) = db::create(&database)?;
    let installation = db::installation::id(&conn)?;
    drop(conn);
    if created {
        ctx.audit("admin.init", &installation, &Ok(()));
    }
    Ok(Initialized {
        data_dir: ctx.paths.root.clone(),
        database,
        installation,
        created,
    })
}

/// What a run is given beside the answers.
pub struct Setup {
    /// The configuration file to write.
    pub config_path: PathBuf,
    /// Where the sshd drop-in goes, and what it holds in OpenSSH mode.
    pub drop_in_path: PathBuf,
    pub drop_in: Option<String>,
    /// Change what is there and differs, not only add what is missing.
    pub force: bool,
}

/// One difference between what is there and what the answers want.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub what: String,
    /// `None`: nothing there yet, so making it needs no `--force`.
    pub old: Option<String>,
    /// `None`: removed.
    pub new: Option<String>,
}

impl Change {
    fn new(what: impl Into<String>, old: Option<String>, new: Option<String>) -> Change {
        Change {
            what: what.into(),
            old,
            new,
        }
    }

    /// Whether it changes something already there (and so needs `--force`).
    pub fn replaces(&self) -> bool {
        self.old.is_some()
    }

    /// `what: old → new`.
    pub fn line(&self) -> String {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        format!("{}: {} → {}", self.what, side(&self.old), side(&self.new))
    }
}

/// What a run found and did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub config: PathBuf,
    pub changes: Vec<Change>,
    /// False when changes were found but not made (they need `--force`).
    pub applied: bool,
    /// What was done, a line each.
    pub done: Vec<String>,
    /// Things to know: routes the pool overlaps, what to do by hand.
    pub warnings: Vec<String>,
}

/// The marker that says a run has started changing things and not finished.
fn marker(ctx: &Context) -> PathBuf {
    ctx.paths.root.join("init.incomplete")
}

/// The settings the configuration file at `path` sets, in their text form.
fn file_settings(path: &Path) -> Result<BTreeMap<&'static str, String>> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let flags = Overrides {
        file: Some(path.to_owned()),
        ..Overrides::default()
    };
    let config = Config::load(&flags, &BTreeMap::new())?;
    Ok(ROWS
        .iter()
        .filter(|row| config.source(row.key) == Source::File)
        .map(|row| (row.key, config.field_text(row.key).0))
        .collect())
}

/// The settings the file will hold: the ones it has that `admin init` does not decide,
/// those given as flags to this run (`--data-dir`, ...), and the answers.
fn wanted_settings(
    ctx: &Context,
    old: &BTreeMap<&'static str, String>,
    answers: &Answers,
) -> BTreeMap<&'static str, String> {
    let mut set: BTreeMap<&'static str, String> = old
        .iter()
        .filter(|(key, _)| !preseed::MANAGED_KEYS.contains(key))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    for row in ROWS {
        if ctx.config.source(row.key) == Source::Flag {
            set.insert(row.key, ctx.config.field_text(row.key).0);
        }
    }
    set.extend(answers.settings());
    set
}

fn setting_changes(
    old: &BTreeMap<&'static str, String>,
    new: &BTreeMap<&'static str, String>,
) -> Vec<Change> {
    let keys: std::collections::BTreeSet<&&str> = old.keys().chain(new.keys()).collect();
    let shown = |key: &str, value: Option<&String>| {
        value.map(|v| match key {
            "smtp.password" => "(set)".to_owned(),
            _ => v.clone(),
        })
    };
    keys.into_iter()
        .filter(|key| old.get(**key) != new.get(**key))
        .map(|key| {
            let mut change =
                Change::new(*key, shown(key, old.get(*key)), shown(key, new.get(*key)));
            if key == &"smtp.password" && change.old.is_some() && change.new.is_some() {
                change.new = Some("(another)".into());
            }
            change
        })
        .collect()
}

/// The first administrator as the database has them, if it differs from the answers.
fn admin_change(ctx: &Context, admin: &preseed::Admin) -> Result<Option<Change>> {
    let db = ctx.db()?;
    let id = admin.id.as_str();
    let wanted = format!(
        "admin {id} <{}>, key {}",
        admin.email, admin.key.fingerprint
    );
    let holder = db::users::key_by_fingerprint(db, &admin.key.fingerprint)?;
    if let Some(holder) = holder.as_ref().filter(|k| k.user_id != id) {
        return Err(Error::conflict(
            format!(
                "key {} is registered to user `{}`, not to `{id}`",
                admin.key.fingerprint, holder.user_id
            ),
            Some("one key belongs to one user; give the administrator their own key"),
        ));
    }
    let Some(user) = db::users::get(db, id)? else {
        let admins: Vec<String> = db::users::list(db)?
            .into_iter()
            .filter(|u| u.role == db::users::Role::Admin)
            .map(|u| u.id)
            .collect();
        let old = (!admins.is_empty()).then(|| format!("admin {}", admins.join(", ")));
        return Ok(Some(Change::new("first administrator", old, Some(wanted))));
    };
    let same = user.email == admin.email && user.role == db::users::Role::Admin && holder.is_some();
    if same {
        return Ok(None);
    }
    let keys: Vec<String> = db::users::keys(db, id)?
        .into_iter()
        .map(|k| k.fingerprint)
        .collect();
    let old = format!(
        "{} {id} <{}>, key {}",
        user.role.as_str(),
        user.email,
        if keys.is_empty() {
            "(none)".into()
        } else {
            keys.join(", ")
        }
    );
    Ok(Some(Change::new(
        "first administrator",
        Some(old),
        Some(wanted),
    )))
}

fn image_change(ctx: &Context, image: &preseed::Image) -> Result<Option<Change>> {
    let db = ctx.db()?;
    let describe = |name: &str, os_user: &str, size: u64| {
        format!(
            "{name} (login {os_user}, {})",
            crate::validate::Size::from_bytes(size)
        )
    };
    let wanted = describe(image.name.as_str(), &image.os_user, image.virtual_size);
    match db::images::get(db, image.name.as_str())? {
        Some(have) if have.os_user == image.os_user && have.virtual_size == image.virtual_size => {
            Ok(None)
        }
        Some(have) => Ok(Some(Change::new(
            "image",
            Some(describe(&have.name, &have.os_user, have.virtual_size)),
            Some(wanted),
        ))),
        None => {
            let others: Vec<String> = db::images::list(db)?.into_iter().map(|i| i.name).collect();
            let old = (!others.is_empty()).then(|| others.join(", "));
            Ok(Some(Change::new("image", old, Some(wanted))))
        }
    }
}

/// In OpenSSH mode, the drop-in if it is not `basphere sshd-config`'s text. In embedded
/// mode one that is there is left alone (it still lets tenants in through sshd): the
/// warnings say so.
fn drop_in_change(setup: &Setup) -> Result<Option<Change>> {
    let Some(wanted) = &setup.drop_in else {
        return Ok(None);
    };
    let have = host::read_if_any(&setup.drop_in_path)?;
    if have.as_ref() == Some(wanted) {
        return Ok(None);
    }
    let what = setup.drop_in_path.display().to_string();
    let old = have.map(|_| "another text".to_owned());
    let new = Some("`basphere sshd-config`".to_owned());
    Ok(Some(Change::new(what, old, new)))
}

/// Everything that differs between the host and the answers.
fn plan(ctx: &Context, answers: &Answers, setup: &Setup) -> Result<Vec<Change>> {
    let old = file_settings(&setup.config_path)?;
    let new = wanted_settings(ctx, &old, answers);
    let mut changes = setting_changes(&old, &new);
    let database = ctx.config.db_path();
    if database.exists() {
        changes.extend(admin_change(ctx, &answers.admin)?);
        if let Some(image) = &answers.image {
            changes.extend(image_change(ctx, image)?);
        }
    } else {
        let path = database.display().to_string();
        changes.push(Change::new("database", None, Some(path)));
        let admin = &answers.admin;
        let wanted = format!(
            "admin {} <{}>, key {}",
            admin.id, admin.email, admin.key.fingerprint
        );
        changes.push(Change::new("first administrator", None, Some(wanted)));
        if let Some(image) = &answers.image {
            changes.push(Change::new("image", None, Some(image.name.to_string())));
        }
    }
    if let Some(name) = &answers.admin.unix_user {
        let group = &ctx.config.admin_group;
        if !host::membership(name, group)? {
            changes.push(Change::new(
                format!("group {group}"),
                None,
                Some(format!("+{name}")),
            ));
        }
    }
    changes.extend(drop_in_change(setup)?);
    Ok(changes)
}

/// Run by root where the service account exists (the package makes it), the data
/// directory and all root made in it become the service account's, which `serve` and
/// the jobs run as.
fn hand_over_to_service(ctx: &Context, outcome: &mut Outcome) -> Result<()> {
    if !nix::unistd::getuid().is_root() {
        return Ok(());
    }
    let service = &ctx.config.service_user;
    let Some(account) = nix::unistd::User::from_name(service).ok().flatten() else {
        return Ok(());
    };
    if account.uid.is_root() {
        return Ok(());
    }
    let handed = ops::adopt::hand_over(ctx, &account)?;
    if handed.changed > 0 {
        outcome.done.push(format!(
            "gave {} to the service account {service}",
            ctx.paths.root.display()
        ));
    }
    for path in handed.left_alone {
        outcome.warnings.push(format!(
            "left {} as it is: another account owns it, or it is a link",
            path.display()
        ));
    }
    Ok(())
}

/// What is wrong with `pool` on this host: each route of the host it overlaps (but
/// those of basphere's own bridges, named with `own_prefix`).
pub fn pool_warnings(pool: &NetworkPool, own_prefix: &str) -> Vec<String> {
    match crate::routes::overlapping(pool, own_prefix) {
        Ok(routes) => routes
            .iter()
            .map(|route| format!("network_pool {pool} overlaps the host's route {route}"))
            .collect(),
        Err(e) => vec![format!(
            "cannot read the host's route table to check network_pool {pool}: {e}"
        )],
    }
}

/// Sets the host up as `answers` say: see the module's description.
pub fn apply(ctx: &Context, answers: &Answers, setup: &Setup) -> Result<Outcome> {
    let changes = plan(ctx, answers, setup)?;
    let mut outcome = Outcome {
        config: setup.config_path.clone(),
        changes,
        applied: false,
        done: Vec::new(),
        warnings: pool_warnings(&answers.network_pool, &ctx.config.name_prefix),
    };
    if setup.drop_in.is_none() && setup.drop_in_path.exists() {
        outcome.warnings.push(format!(
            "{} still lets tenants in through OpenSSH; remove it and reload sshd if only \
             basphere's own server should",
            setup.drop_in_path.display()
        ));
    }
    let resuming = marker(ctx).exists() || host::drop_in_unchecked(&setup.drop_in_path);
    if outcome.changes.iter().any(Change::replaces) && !setup.force {
        return Ok(outcome);
    }
    if outcome.changes.is_empty() && !resuming {
        outcome.applied = true;
        return Ok(outcome);
    }
    ctx.paths.create()?;
    host::write_atomic(&marker(ctx), b"", crate::files::PRIVATE, None)?;
    let outcome_result = run_steps(ctx, answers, setup, resuming, &mut outcome);
    ctx.audit(
        "admin.init",
        &setup.config_path.display().to_string(),
        &outcome_result,
    );
    outcome_result?;
    std::fs::remove_file(marker(ctx))
        .map_err(|e| Error::io("cannot remove the marker of a run in progress", e))?;
    outcome.applied = true;
    Ok(outcome)
}

fn changed(outcome: &Outcome, what: &str) -> bool {
    outcome.changes.iter().any(|c| c.what == what)
}

fn run_steps(
    ctx: &Context,
    answers: &Answers,
    setup: &Setup,
    resuming: bool,
    outcome: &mut Outcome,
) -> Result<()> {
    // First, as what most often fails for reasons of the host's own (`sshd -t`); sshd
    // reads it only once reloaded, at the end.
    let drop_in_changed = changed(outcome, &setup.drop_in_path.display().to_string());
    if let Some(text) = &setup.drop_in {
        if drop_in_changed || host::drop_in_unchecked(&setup.drop_in_path) {
            host::install_drop_in(&setup.drop_in_path, text)?;
            let path = setup.drop_in_path.display();
            outcome
                .done
                .push(format!("wrote {path} (`sshd -t` accepts it)"));
        }
        if !host::sshd_reads(text, &ctx.config.service_user)? {
            outcome.warnings.push(format!(
                "sshd does not read {}: add `Include /etc/ssh/sshd_config.d/*.conf` at the top \
                 of /etc/ssh/sshd_config",
                setup.drop_in_path.display()
            ));
        }
    }
    let old = file_settings(&setup.config_path)?;
    let new = wanted_settings(ctx, &old, answers);
    if old != new || !setup.config_path.exists() {
        if setup.config_path.exists() {
            let copy = host::keep_copy(&setup.config_path, crate::hooks::now())?;
            outcome.done.push(format!(
                "kept the previous configuration as {}",
                copy.display()
            ));
        }
        let (mode, group) = host::config_owner(&ctx.config.service_user);
        let text = crate::config::template(&new);
        host::write_atomic(&setup.config_path, text.as_bytes(), mode, group)?;
        outcome
            .done
            .push(format!("wrote {}", setup.config_path.display()));
    }
    crate::hooks::crash_point("init-config-written");
    let database = database_only(ctx)?;
    if database.created {
        outcome.done.push(format!(
            "created the database {}",
            database.database.display()
        ));
    }
    let admin = &answers.admin;
    if changed(outcome, "first administrator") {
        if db::users::exists(ctx.db()?, admin.id.as_str())? {
            ops::user::make_admin(ctx, &admin.id, &admin.email, &admin.key)?;
            outcome
                .done
                .push(format!("made {} an administrator", admin.id));
        } else {
            let keys = std::slice::from_ref(&admin.key);
            ops::user::add(ctx, &admin.id, &admin.email, keys, true)?;
            outcome
                .done
                .push(format!("added the administrator {}", admin.id));
        }
    }
    crate::hooks::crash_point("init-admin-added");
    if let Some(name) = &admin.unix_user {
        let group = &ctx.config.admin_group;
        if !host::membership(name, group)? {
            host::join_group(name, group)?;
            outcome.done.push(format!(
                "added the Unix account {name} to the group {group}"
            ));
        }
    }
    if let Some(image) = &answers.image {
        if changed(outcome, "image") {
            if db::images::get(ctx.db()?, image.name.as_str())?.is_some() {
                ops::image::remove(ctx, image.name.as_str())?;
            }
            ops::image::add(ctx, &image.name, &image.file, Some(&image.os_user))?;
            outcome
                .done
                .push(format!("registered the image {}", image.name));
        }
    }
    crate::hooks::crash_point("init-image-added");
    hand_over_to_service(ctx, outcome)?;
    if setup.drop_in.is_some() && (drop_in_changed || resuming) {
        outcome.done.push(host::reload_sshd()?);
    }
    outcome
        .done
        .push(host::start_units(host::systemd_running())?);
    Ok(())
}
