//! Account requests: the rules the web form and the admin commands share.
//!
//! A request is created by an anonymous visitor (`create`, `verify`, `status`: they take
//! a database connection, never a `Context`) and decided by an administrator (`approve`,
//! `reject`, `prune`: they take a `Context` and check the role).

use std::collections::BTreeMap;

use minijinja::context;
use rand::RngCore;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::context::Context;
use crate::db;
use crate::db::signups::{NewSignup, Signup, State};
use crate::error::{Error, Result};
use crate::mail::{self, Delivery};
use crate::output::sanitize;
use crate::secret::Secret;
use crate::validate::{self, PublicKey, Span, UserId};

pub const MAX_REASON_CHARS: usize = 1000;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// What the form sent, unchecked.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Form {
    pub user_id: String,
    pub email: String,
    pub public_key: String,
    pub reason: String,
}

/// A message per wrong field, keyed by the field's name in the form; the first for a
/// field stands. It becomes `Error::Fields`.
#[derive(Clone, Debug, Default)]
struct FieldErrors(BTreeMap<&'static str, String>);

impl FieldErrors {
    fn add(&mut self, field: &'static str, e: &Error) {
        let message = e.to_string();
        let mut chars = message.chars();
        let message: String = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        let text = match e.help() {
            Some(help) => format!("{message}: {help}."),
            None => format!("{message}."),
        };
        self.0.entry(field).or_insert(text);
    }

    fn say(&mut self, field: &'static str, text: &str) {
        self.0.entry(field).or_insert_with(|| text.to_owned());
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why free text with a format character (Cf) is refused.
const FORMAT_CHARS: &str = "Remove the invisible formatting characters (such as right-to-left marks or zero-width spaces) from the text.";

struct Checked {
    id: UserId,
    email: String,
    key: PublicKey,
    reason: String,
}

/// The form's fields with the rules that need no database, then those that do.
fn check(conn: &Connection, form: &Form, now: i64) -> Result<Checked> {
    let mut errors = FieldErrors::default();
    let id = match form.user_id.trim().parse::<UserId>() {
        Ok(id) => Some(id),
        Err(e) => {
            errors.add("user_id", &e);
            None
        }
    };
    let email_text = form.email.trim();
    let email = if email_text.chars().count() > MAX_EMAIL_CHARS {
        errors.say("email", "The email address is too long.");
        None
    } else {
        match validate::email(email_text) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.add("email", &e);
                None
            }
        }
    };
    let key = if form.public_key.trim().is_empty() {
        errors.say(
            "public_key",
            "Paste your SSH public key, e.g. the line in ~/.ssh/id_ed25519.pub.",
        );
        None
    } else if form.public_key.len() > MAX_KEY_BYTES {
        errors.say("public_key", "This is too long for an SSH public key.");
        None
    } else {
        match form.public_key.trim().parse::<PublicKey>() {
            Ok(k) => Some(k),
            Err(e) => {
                errors.add("public_key", &e);
                None
            }
        }
    };
    let reason = form.reason.trim();
    if reason.is_empty() {
        errors.say(
            "reason",
            "Say in a few words what you need the account for.",
        );
    } else if reason.chars().count() > MAX_REASON_CHARS {
        errors.say(
            "reason",
            &format!("Keep the reason under {MAX_REASON_CHARS} characters."),
        );
    } else if validate::has_format_chars(reason) {
        errors.say("reason", FORMAT_CHARS);
    }
    if let Some(id) = &id {
        if db::users::exists(conn, id.as_str())? {
            errors.say("user_id", "This user id is taken; choose another.");
        } else if db::signups::open_for_user(conn, id.as_str(), now)?.is_some() {
            errors.say("user_id", "A request for this user id is already pending.");
        }
    }
    if let Some(key) = &key {
        // An anonymous visitor is not told whose key it is.
        if db::users::key_by_fingerprint(conn, &key.fingerprint)?.is_some() {
            errors.say(
                "public_key",
                "This key is already registered. Each person uses their own key; make a new one with `ssh-keygen -t ed25519`.",
            );
        } else if db::signups::holding_key(conn, &key.fingerprint, now)?.is_some() {
            errors.say("public_key", "A request with this key is already pending.");
        }
    }
    match (id, email, key) {
        (Some(id), Some(email), Some(key)) if errors.is_empty() => Ok(Checked {
            id,
            email,
            key,
            reason: reason.to_owned(),
        }),
        _ => Err(Error::Fields(errors.0)),
    }
}

/// "24 hours", "3 days": a lifetime for people.
pub fn human_span(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if secs % 86_400 == 0 && secs > 86_400 {
        plural(secs / 86_400, "day")
    } else if secs % 3600 == 0 {
        plural(secs / 3600, "hour")
    } else {
        plural((secs + 59) / 60, "minute")
    }
}

/// A random token for a link, and the hash the database keeps instead of it.
fn new_token() -> (Secret, String) {
    // 128 random bits: unguessable, and short enough to keep a link on one mail line.
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex(&bytes);
    let hash = token_hash(&token);
    (Secret::new(token), hash)
}

pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tokens are 32 lowercase hex digits; anything else is not looked up.
fn plausible_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn link(config: &Config, path: &str) -> String {
    format!("{}{path}", config.public_url().trim_end_matches('/'))
}

/// A stored request and the link to its status page.
#[derive(Clone, Debug)]
pub struct Created {
    pub signup: Signup,
    pub status_token: Secret,
    pub mail_id: i64,
}

/// Validates the form and stores the request as `pending_email`, with the confirmation
/// mail in the outbox, in one transaction.
pub fn create(
    conn: &Connection,
    config: &Config,
    form: &Form,
    remote_addr: &str,
) -> Result<Created> {
    // Most refused forms are typos or junk: find that out with plain reads, so they never
    // take the write lock; a form that passes is checked again inside the transaction.
    let result =
        check(conn, form, crate::hooks::now()).and_then(|_| store(conn, config, form, remote_addr));
    let target = validate::quoted(form.user_id.trim());
    // Only stored requests and failures are worth an audit line; typos are not.
    if !matches!(result, Err(Error::Fields(_))) {
        let audited = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::invalid(e.report())),
        };
        web_audit(
            conn,
            config,
            "signup.create",
            &target,
            remote_addr,
            &audited,
        );
    }
    result
}

fn store(conn: &Connection, config: &Config, form: &Form, remote_addr: &str) -> Result<Created> {
    db::immediate(conn, |tx| {
        let now = crate::hooks::now();
        let c = check(tx, form, now)?;
        let limit = config.signup_per_email_per_day;
        if db::signups::count_for_email_since(tx, &c.email, now - 86_400)? >= u64::from(limit) {
            return Err(Error::RateLimited {
                message: format!(
                    "There were already {limit} requests for this email address today. Please try again tomorrow."
                ),
                retry_after: None,
            });
        }
        let (token, hash) = new_token();
        let (status_token, status_hash) = new_token();
        let lifetime = config.token_lifetime_secs();
        let id = db::signups::insert(
            tx,
            &NewSignup {
                user_id: c.id.as_str(),
                email: &c.email,
                public_key: &c.key.openssh,
                fingerprint: &c.key.fingerprint,
                algorithm: &c.key.algorithm,
                comment: &c.key.comment,
                reason: &c.reason,
                token_hash: &hash,
                token_expires_at: now + lifetime,
                status_hash: &status_hash,
                remote_addr,
                key_code: &crate::ops::key::new_code(),
            },
            now,
        )?;
        let (subject, body) = mail::render(
            "confirm.txt",
            context! {
                user_id => c.id.as_str(),
                host => &config.public_host(),
                fingerprint => &c.key.fingerprint,
                lifetime => human_span(lifetime),
                verify_url => link(config, &format!("/verify/{}", token.expose())),
                status_url => link(config, &format!("/status/{}", status_token.expose())),
            },
        )?;
        let mail_id = mail::enqueue(tx, &c.email, &subject, &body)?;
        let signup = db::signups::by_status(tx, &status_hash)?.expect("inserted above");
        debug_assert_eq!(signup.id, id);
        Ok(Created {
            signup,
            status_token,
            mail_id,
        })
    })
}

/// Audit entries for what anonymous visitors did, recorded as actor `web`.
fn web_audit(
    conn: &Connection,
    config: &Config,
    action: &str,
    target: &str,
    remote: &str,
    outcome: &Result<()>,
) {
    let (result, detail) = match outcome {
        Ok(()) => ("ok", format!("from {remote}")),
        Err(e) => ("error", format!("from {remote}; {e}")),
    };
    let entry = db::audit::NewEntry {
        actor: "web",
        via: "web",
        action,
        target,
        result,
        detail: &detail,
    };
    if let Err(e) = crate::ops::audit::record(conn, config, &entry) {
        tracing::error!(error = %e, action, "cannot write audit entry");
    }
}

/// What a confirmation link leads to, and what confirming it did.
#[derive(Clone, Debug)]
pub enum Verified {
    /// The link is good and nothing has changed yet: only a confirmation (`verify`) does.
    Open(Box<Signup>),
    /// Confirmed now; the admins' notices are in the outbox.
    Confirmed(Box<Signup>),
    /// The link was already used, or the request was decided.
    AlreadyDone,
    Expired,
    Unknown,
}

/// The request a confirmation link may still confirm, or why it may not.
fn open_link(conn: &Connection, token: &str, now: i64) -> Result<Verified> {
    if !plausible_token(token) {
        return Ok(Verified::Unknown);
    }
    let Some(s) = db::signups::by_token(conn, &token_hash(token))? else {
        return Ok(Verified::Unknown);
    };
    Ok(if s.state != State::PendingEmail {
        Verified::AlreadyDone
    } else if s.token_expires_at <= now {
        Verified::Expired
    } else {
        Verified::Open(Box::new(s))
    })
}

/// What the confirmation link `token` leads to, changing nothing: mail scanners fetch
/// every link in a mail, so opening one must not confirm.
pub fn look_up_link(conn: &Connection, token: &str) -> Result<Verified> {
    open_link(conn, token, crate::hooks::now())
}

/// Marks the request `pending_approval` and queues a notice to every admin address.
pub fn verify(
    conn: &Connection,
    config: &Config,
    token: &str,
    remote_addr: &str,
) -> Result<Verified> {
    // Junk never takes the write lock.
    if !plausible_token(token) {
        return Ok(Verified::Unknown);
    }
    let outcome = db::immediate(conn, |tx| {
        let now = crate::hooks::now();
        let s = match open_link(tx, token, now)? {
            Verified::Open(s) => s,
            other => return Ok(other),
        };
        if !db::signups::confirm(tx, s.id, now)? {
            return Ok(Verified::AlreadyDone);
        }
        let (subject, body) = mail::render(
            "admin_notice.txt",
            context! {
                user_id => &s.user_id,
                email => &s.email,
                fingerprint => &s.fingerprint,
                algorithm => &s.algorithm,
                reason => sanitize(&s.reason),
                host => &config.public_host(),
            },
        )?;
        for admin in &config.admin_emails {
            mail::enqueue(tx, admin, &subject, &body)?;
        }
        let s = db::signups::get(tx, s.id)?.expect("read above");
        Ok(Verified::Confirmed(Box::new(s)))
    });
    if let Ok(Verified::Confirmed(s)) = &outcome {
        web_audit(
            conn,
            config,
            "signup.confirm",
            &s.user_id,
            remote_addr,
            &Ok(()),
        );
    }
    outcome
}

/// The request a status link points to.
pub fn status(conn: &Connection, token: &str) -> Result<Option<Signup>> {
    if !plausible_token(token) {
        return Ok(None);
    }
    db::signups::by_status(conn, &token_hash(token))
}

/// A request as the admin commands show it; text from the form is neutralised.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub signup: Signup,
    pub email_confirmed: bool,
    pub expired: bool,
}

pub fn list(ctx: &Context, all: bool) -> Result<Vec<Listed>> {
    let now = crate::hooks::now();
    Ok(db::signups::list(ctx.db()?, all)?
        .into_iter()
        .map(|signup| Listed {
            email_confirmed: signup.confirmed_at.is_some(),
            expired: signup.state == State::PendingEmail && signup.token_expires_at <= now,
            signup,
        })
        .collect())
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Approved {
    pub user: db::users::User,
    pub fingerprint: String,
    pub mail: Vec<Delivery>,
}

/// Turns a confirmed request into a user, exactly as `admin user add` does, and sends the
/// welcome mail. An unconfirmed request needs `force`.
pub fn approve(ctx: &Context, user_id: &str, force: bool) -> Result<Approved> {
    let outcome = approve_inner(ctx, user_id, force);
    ctx.audit("signup.approve", user_id, &outcome);
    outcome
}

fn open_signup(ctx: &Context, user_id: &str) -> Result<Signup> {
    let s = db::signups::latest_for_user(ctx.db()?, user_id)?
        .ok_or_else(|| Error::not_found("signup", user_id))?;
    match s.state {
        State::Approved => Err(Error::conflict(
            format!(
                "the signup `{user_id}` was already approved by {}",
                s.decided_by.as_deref().unwrap_or("an administrator")
            ),
            Some(&format!(
                "see the user with `basphere admin user show {user_id}`"
            )),
        )),
        State::Rejected => Err(Error::conflict(
            format!(
                "the signup `{user_id}` was already rejected by {}",
                s.decided_by.as_deref().unwrap_or("an administrator")
            ),
            None,
        )),
        _ => Ok(s),
    }
}

fn approve_inner(ctx: &Context, user_id: &str, force: bool) -> Result<Approved> {
    let s = open_signup(ctx, user_id)?;
    if s.state == State::PendingEmail && !force {
        return Err(Error::conflict(
            format!("the email address of signup `{user_id}` is not confirmed yet"),
            Some("wait for the confirmation, or approve anyway with --force"),
        ));
    }
    let key: PublicKey = format!("{} {}", s.public_key, s.comment).trim().parse()?;
    let id: UserId = s.user_id.parse()?;
    // Approval is two transactions: the user (through `admin user add`'s own rules),
    // then the decision and the welcome mail. If a crash fell between them, the user
    // exists holding this signup's key: finish the approval instead of refusing it.
    // A key the signup did not prove yet is added pending, with the signup's code: the
    // account lets it in once a connection made with it runs `key confirm CODE`.
    let proven = s.key_confirmed_at.is_some();
    let existing = db::users::get(ctx.db()?, &s.user_id)?;
    let user = match existing {
        Some(user) if user.email == s.email && crate::ops::user::holds_signup_key(ctx, &s)? => user,
        _ if proven => crate::ops::user::add(ctx, &id, &s.email, &[key], false)?,
        _ => crate::ops::user::add_with_pending_key(ctx, &id, &s, &key)?,
    };
    let key_code = if proven { None } else { s.key_code.clone() };
    let config = &ctx.config;
    let target = format!("{}@{}", config.service_user, config.public_host());
    let jump = match config.public_port {
        22 => target,
        port => format!("{target}:{port}"),
    };
    let ssh = config.ssh_command();
    let (subject, body) = mail::render(
        "welcome.txt",
        context! {
            user_id => &s.user_id,
            host => &config.public_host(),
            fingerprint => &s.fingerprint,
            ssh => ssh,
            jump => jump,
            public_url => &config.public_url(),
            key_code => key_code,
        },
    )?;
    let mail_id = db::immediate(ctx.db()?, |tx| {
        db::signups::decide(
            tx,
            s.id,
            State::Approved,
            &ctx.actor.name,
            None,
            crate::hooks::now(),
        )?;
        mail::enqueue(tx, &s.email, &subject, &body)
    })?;
    let mail = mail::deliver_now(ctx.db()?, config, &[mail_id])?;
    Ok(Approved {
        user,
        fingerprint: s.fingerprint,
        mail,
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Rejected {
    pub user_id: String,
    pub email: String,
    pub mail: Vec<Delivery>,
}

/// Declines a request and mails the reason to the applicant.
pub fn reject(ctx: &Context, user_id: &str, reason: &str) -> Result<Rejected> {
    let outcome = reject_inner(ctx, user_id, reason);
    ctx.audit("signup.reject", user_id, &outcome);
    outcome
}

fn reject_inner(ctx: &Context, user_id: &str, reason: &str) -> Result<Rejected> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(Error::invalid(format!(
            "the reason must be 1 to {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid("the reason contains control characters"));
    }
    if validate::has_format_chars(reason) {
        return Err(Error::invalid(
            "the reason contains invisible formatting characters (bidi marks, zero-width spaces, ...)",
        ));
    }
    let s = open_signup(ctx, user_id)?;
    let config = &ctx.config;
    let (subject, body) = mail::render(
        "rejected.txt",
        context! {
            user_id => &s.user_id,
            host => &config.public_host(),
            reason => reason,
            public_url => &config.public_url(),
        },
    )?;
    let mail_id = db::immediate(ctx.db()?, |tx| {
        if !db::signups::decide(
            tx,
            s.id,
            State::Rejected,
            &ctx.actor.name,
            Some(reason),
            crate::hooks::now(),
        )? {
            return Err(Error::conflict(
                format!("the signup `{user_id}` was decided meanwhile"),
                None,
            ));
        }
        mail::enqueue(tx, &s.email, &subject, &body)
    })?;
    let mail = mail::deliver_now(ctx.db()?, config, &[mail_id])?;
    Ok(Rejected {
        user_id: s.user_id,
        email: s.email,
        mail,
    })
}

/// Deletes unconfirmed requests older than `older_than`; returns their user ids.
pub fn prune(ctx: &Context, older_than: Span) -> Result<Vec<String>> {
    let before = crate::hooks::now() - older_than.0 as i64;
    let outcome = db::signups::prune_unconfirmed(ctx.db()?, before);
    ctx.audit(
        "signup.prune",
        &format!("older than {older_than}"),
        &outcome,
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn setup() -> (Connection, Config) {
        let env = BTreeMap::from([("BASPHERE_CONFIG".to_owned(), "/dev/null".to_owned())]);
        let config = Config::load(&Overrides::default(), &env).unwrap();
        let conn = Connection::open_in_memory().unwrap();
        db::migrate(&conn).unwrap();
        (conn, config)
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    /// A reason with U+202E read backwards in `admin signups`, and one with zero-width
    /// characters looked like another; the form now refuses them, field by field.
    #[test]
    fn bidi_and_zero_width_characters_are_refused_in_the_form() {
        let (conn, config) = setup();
        for (reason, email) in [
            ("build \u{202e}sevihcra", "erin@example.com"),
            ("ci\u{200b} runners", "erin@example.com"),
            ("\u{2066}isolated\u{2069}", "erin@example.com"),
            ("\u{feff}bom", "erin@example.com"),
            ("fine", "erin\u{200b}@example.com"),
            ("fine", "erin@exam\u{202e}ple.com"),
        ] {
            let form = Form {
                user_id: "erin".into(),
                email: email.into(),
                public_key: KEY.into(),
                reason: reason.into(),
            };
            match create(&conn, &config, &form, "192.0.2.1") {
                Err(Error::Fields(errors)) => {
                    let field = if reason == "fine" { "email" } else { "reason" };
                    assert!(
                        errors.contains_key(field),
                        "{reason:?} {email:?}: {errors:?}"
                    );
                }
                other => panic!("{reason:?} {email:?} accepted: {other:?}"),
            }
        }
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM signups", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 0);
        // Letters of any script are text, and stay.
        let form = Form {
            user_id: "erin".into(),
            email: "erin@example.com".into(),
            public_key: KEY.into(),
            reason: "Entwicklung für 東京, naïve".into(),
        };
        assert!(create(&conn, &config, &form, "192.0.2.1").is_ok());
    }
}
