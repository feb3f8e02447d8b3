//! Users and their keys, as an administrator manages them.

use crate::context::Context;
use crate::db;
use crate::db::users::{Key, NewKey, NewUser, Role, User};
use crate::db::vms::Vm;
use crate::error::{Error, Result};
use crate::ops::{lock, quota};
use crate::validate::{PublicKey, UserId};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub user: User,
    pub keys: u64,
    pub vms: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub user: User,
    pub keys: Vec<Key>,
    pub quota: quota::Standing,
    pub vms: Vec<Vm>,
}

/// Refuses a key that is already registered, naming its owner to the administrator;
/// otherwise drops whatever pending claims others had on it: it becomes this account's.
fn claim_key(conn: &rusqlite::Connection, key: &PublicKey) -> Result<()> {
    if let Some(existing) = db::users::key_by_fingerprint(conn, &key.fingerprint)? {
        return Err(Error::conflict(
            format!(
                "key {} is already registered to user `{}`",
                key.fingerprint, existing.user_id
            ),
            Some("one key belongs to one user; each person uses their own key"),
        ));
    }
    db::users::delete_pending(conn, &key.fingerprint, None)?;
    Ok(())
}

/// Inserts the user row, refusing an id that exists.
fn insert_user(
    tx: &rusqlite::Connection,
    id: &UserId,
    email: &str,
    admin: bool,
    now: i64,
) -> Result<()> {
    if db::users::exists(tx, id.as_str())? {
        return Err(Error::AlreadyExists {
            kind: "user",
            name: id.to_string(),
        });
    }
    let role = if admin { Role::Admin } else { Role::User };
    let user = NewUser {
        id: id.as_str(),
        email,
        role,
    };
    db::users::insert(tx, &user, now)
}

/// How long the code of an approved signup's key works.
pub const SIGNUP_CODE_LIFETIME_SECS: i64 = 7 * 86_400;

/// The user of an approved signup whose key has not proven itself yet: the key is added
/// pending, with the signup's code, and lets nobody in until `key confirm CODE`.
pub fn add_with_pending_key(
    ctx: &Context,
    id: &UserId,
    signup: &crate::db::signups::Signup,
    key: &PublicKey,
) -> Result<User> {
    let outcome = db::immediate(ctx.db()?, |tx| {
        let now = crate::hooks::now();
        insert_user(tx, id, &signup.email, false, now)?;
        claim_key(tx, key)?;
        let code = signup.key_code.as_deref().unwrap_or_default();
        let new = NewKey {
            fingerprint: &key.fingerprint,
            user_id: id.as_str(),
            algorithm: &key.algorithm,
            public_key: &key.openssh,
            comment: &key.comment,
        };
        let hash = crate::ops::signup::token_hash(code);
        db::users::insert_pending_key(tx, &new, &hash, now, now + SIGNUP_CODE_LIFETIME_SECS)?;
        Ok(db::users::get(tx, id.as_str())?.expect("inserted above"))
    });
    ctx.audit("user.add", id.as_str(), &outcome);
    outcome
}

/// Whether the user of a signup holds its key, confirmed or pending: an approval that
/// stopped between making the user and recording the decision.
pub fn holds_signup_key(ctx: &Context, signup: &crate::db::signups::Signup) -> Result<bool> {
    let db = ctx.db()?;
    let now = crate::hooks::now();
    let confirmed = db::users::key_by_fingerprint(db, &signup.fingerprint)?
        .is_some_and(|k| k.user_id == signup.user_id);
    let pending = db::users::pending_keys(db, &signup.user_id, now)?
        .iter()
        .any(|p| p.fingerprint == signup.fingerprint);
    Ok(confirmed || pending)
}

pub fn add(
    ctx: &Context,
    id: &UserId,
    email: &str,
    keys: &[PublicKey],
    admin: bool,
) -> Result<User> {
    let outcome = db::immediate(ctx.db()?, |tx| {
        let now = crate::hooks::now();
        insert_user(tx, id, email, admin, now)?;
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            if !seen.insert(key.fingerprint.clone()) {
                continue;
            }
            claim_key(tx, key)?;
            let new = NewKey {
                fingerprint: &key.fingerprint,
                user_id: id.as_str(),
                algorithm: &key.algorithm,
                public_key: &key.openssh,
                comment: &key.comment,
            };
            db::users::insert_key(tx, &new, now)?;
        }
        Ok(db::users::get(tx, id.as_str())?.expect("inserted above"))
    });
    ctx.audit("user.add", id.as_str(), &outcome);
    outcome
}

/// Makes the existing user `id` an administrator with `email` who holds `key` (what
/// `admin init --force` does when its first administrator is already there, otherwise).
pub fn make_admin(ctx: &Context, id: &UserId, email: &str, key: &PublicKey) -> Result<User> {
    let outcome = db::immediate(ctx.db()?, |tx| {
        if !db::users::set_email_and_role(tx, id.as_str(), email, Role::Admin)? {
            return Err(Error::not_found("user", id.as_str()));
        }
        let held = db::users::key_by_fingerprint(tx, &key.fingerprint)?;
        if held.is_none_or(|k| k.user_id != id.as_str()) {
            claim_key(tx, key)?;
            let new = NewKey {
                fingerprint: &key.fingerprint,
                user_id: id.as_str(),
                algorithm: &key.algorithm,
                public_key: &key.openssh,
                comment: &key.comment,
            };
            db::users::insert_key(tx, &new, crate::hooks::now())?;
        }
        Ok(db::users::get(tx, id.as_str())?.expect("updated above"))
    });
    ctx.audit("user.admin", id.as_str(), &outcome);
    outcome
}

pub fn list(ctx: &Context) -> Result<Vec<Summary>> {
    let keys = db::users::key_counts(ctx.db()?)?;
    let mut vms = std::collections::HashMap::<String, u64>::new();
    for vm in db::vms::list(ctx.db()?, None)? {
        *vms.entry(vm.owner).or_default() += 1;
    }
    Ok(db::users::list(ctx.db()?)?
        .into_iter()
        .map(|user| Summary {
            keys: keys.get(&user.id).copied().unwrap_or(0),
            vms: vms.get(&user.id).copied().unwrap_or(0),
            user,
        })
        .collect())
}

fn get(ctx: &Context, id: &str) -> Result<User> {
    db::users::get(ctx.db()?, id)?.ok_or_else(|| Error::not_found("user", id))
}

pub fn show(ctx: &Context, id: &str) -> Result<Detail> {
    let user = get(ctx, id)?;
    Ok(Detail {
        keys: db::users::keys(ctx.db()?, id)?,
        quota: quota::show(ctx, id)?,
        vms: db::vms::list(ctx.db()?, Some(id))?,
        user,
    })
}

/// The caller's own record, for `whoami`.
pub fn me(ctx: &Context) -> Result<Option<(User, Vec<Key>)>> {
    let Ok(id) = ctx.tenant() else {
        return Ok(None);
    };
    let user = get(ctx, &id)?;
    let keys = db::users::keys(ctx.db()?, &id)?;
    Ok(Some((user, keys)))
}

pub fn set_disabled(ctx: &Context, id: &str, disabled: bool) -> Result<()> {
    let outcome = if db::users::set_disabled(ctx.db()?, id, disabled)? {
        Ok(())
    } else {
        Err(Error::not_found("user", id))
    };
    ctx.audit(
        if disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        id,
        &outcome,
    );
    outcome
}

/// The lock of user `id`: held shared by each `create-vm` for them for its whole run,
/// and exclusively by `admin user remove`, so a user is never removed while a VM is
/// being made for them (which would leave it without an owner, on a deleted network).
pub(crate) fn lock(ctx: &Context, id: &str, exclusive: bool) -> Result<lock::Lock> {
    ctx.paths.create()?;
    let path = ctx.paths.lock(&format!("user-{id}"));
    if exclusive {
        lock::exclusive(&path)
    } else {
        lock::shared(&path)
    }
}

/// Removes a user who owns no VMs, with their keys, quota and network.
pub fn remove(ctx: &Context, id: &str) -> Result<()> {
    let outcome = remove_inner(ctx, id);
    ctx.audit("user.remove", id, &outcome);
    outcome
}

fn remove_inner(ctx: &Context, id: &str) -> Result<()> {
    get(ctx, id)?;
    // Waits for the user's creates in progress; then they have rows, and count below.
    let _lock = lock(ctx, id, true)?;
    get(ctx, id)?;
    let vms = db::vms::count_for_owner(ctx.db()?, id)?;
    if vms > 0 {
        return Err(Error::conflict(
            format!("user `{id}` still owns {vms} VM(s)"),
            Some(&format!(
                "delete them first: `basphere --as {id} vm list`, then `vm delete NAME`"
            )),
        ));
    }
    // The libvirt network goes first: if that fails the user is still there to retry with,
    // and if we are killed in between, `admin reconcile` removes a network without a user.
    // A user who never had a VM has no network, and libvirt need not be reachable.
    if let Some(net) = db::networks::for_user(ctx.db()?, id)? {
        ctx.hypervisor()?
            .remove_network(&net.name, ctx.installation()?)?;
    }
    db::users::delete(ctx.db()?, id)?;
    Ok(())
}
