//! A tenant's own SSH keys, and the lookup behind OpenSSH's `AuthorizedKeysCommand`.

use std::net::Ipv4Addr;

use rusqlite::Connection;

use crate::context::{Binding, Context};
use crate::db;
use crate::db::users::{Key, NewKey, PendingKey};
use crate::error::{Error, Result};
use crate::validate::PublicKey;

/// Keys one user may hold.
pub const MAX_KEYS: u64 = 32;

/// A user's keys: those that log in, and those still waiting for proof.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Keys {
    pub keys: Vec<Key>,
    pub pending: Vec<PendingKey>,
}

pub fn list(ctx: &Context) -> Result<Keys> {
    let user = ctx.tenant()?;
    let now = crate::hooks::now();
    Ok(Keys {
        keys: db::users::keys(ctx.db()?, &user)?,
        pending: db::users::pending_keys(ctx.db()?, &user, now)?,
    })
}

/// How long a pending key's code works.
pub const CODE_LIFETIME_SECS: i64 = 3600;

/// Wrong codes a pending key takes before it is dropped.
pub const MAX_CODE_ATTEMPTS: i64 = 5;

/// What `key add` did: the key logs in at once (an administrator at the bastion added
/// it), or only after `key confirm CODE` from a connection made with it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Added {
    Confirmed {
        key: Key,
    },
    Pending {
        key: PendingKey,
        /// Shown once; only its hash is stored.
        code: String,
    },
}

/// Adds a key to the caller's account. Over SSH the key is pending until a connection
/// authenticated with that very key runs `key confirm CODE`, so nobody can add a key
/// they do not hold; an administrator at the bastion vouches for the key instead. A key
/// registered to anyone else, or held by a signup, is refused without saying whose.
pub fn add(ctx: &Context, key: &PublicKey) -> Result<Added> {
    let user = ctx.tenant()?;
    let proven = ctx.actor.via != "ssh";
    let outcome = db::immediate(ctx.db()?, |tx| {
        let now = crate::hooks::now();
        let taken = || {
            Error::conflict(
                format!("key {} is already registered", key.fingerprint),
                Some("one key belongs to one person; make a new one with `ssh-keygen -t ed25519`"),
            )
        };
        if let Some(existing) = db::users::key_by_fingerprint(tx, &key.fingerprint)? {
            if existing.user_id == user {
                return Err(Error::conflict(
                    format!(
                        "key {} is already registered to your account",
                        key.fingerprint
                    ),
                    None,
                ));
            }
            return Err(taken());
        }
        if db::signups::holding_key(tx, &key.fingerprint, now)?.is_some() {
            return Err(taken());
        }
        let pending = db::users::pending_keys(tx, &user, now)?;
        let others = pending
            .iter()
            .filter(|p| p.fingerprint != key.fingerprint)
            .count();
        if db::users::key_count(tx, &user)? + others as u64 >= MAX_KEYS {
            return Err(Error::conflict(
                format!("you already have {MAX_KEYS} keys, the most one user may have"),
                Some("remove one you no longer use with `key remove FINGERPRINT`"),
            ));
        }
        let new = NewKey {
            fingerprint: &key.fingerprint,
            user_id: &user,
            algorithm: &key.algorithm,
            public_key: &key.openssh,
            comment: &key.comment,
        };
        if proven {
            db::users::insert_key(tx, &new, now)?;
            db::users::delete_pending(tx, &key.fingerprint, None)?;
            let key = db::users::key_by_fingerprint(tx, &key.fingerprint)?.expect("inserted above");
            return Ok(Added::Confirmed { key });
        }
        let code = new_code();
        let hash = crate::ops::signup::token_hash(&code);
        db::users::insert_pending_key(tx, &new, &hash, now, now + CODE_LIFETIME_SECS)?;
        let key = db::users::pending_keys(tx, &user, now)?
            .into_iter()
            .find(|p| p.fingerprint == key.fingerprint)
            .expect("inserted above");
        Ok(Added::Pending { key, code })
    });
    let action = if proven { "key.add" } else { "key.add_pending" };
    ctx.audit(action, &format!("{user}/{}", key.fingerprint), &outcome);
    outcome
}

/// The letters of a code: no 0/O, 1/I/L, so it reads back from a screen.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A new code: `XXXX-XXXX`, about 39 bits, good for a few tries within an hour.
pub fn new_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let mut code: String = (0..8)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    code.insert(4, '-');
    code
}

/// A code as typed: any case, with or without the dash; `None` if it cannot be one.
pub fn parse_code(text: &str) -> Option<String> {
    let plain: String = text
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = plain.len() == 8 && plain.bytes().all(|b| CODE_ALPHABET.contains(&b));
    ok.then(|| format!("{}-{}", &plain[..4], &plain[4..]))
}

/// A pending key becomes its user's; whoever else added it never gets it.
fn promote(tx: &Connection, p: &PendingKey, now: i64) -> Result<()> {
    let new = NewKey {
        fingerprint: &p.fingerprint,
        user_id: &p.user_id,
        algorithm: &p.algorithm,
        public_key: &p.public_key,
        comment: &p.comment,
    };
    db::users::insert_key(tx, &new, now)?;
    db::users::delete_pending(tx, &p.fingerprint, None)?;
    Ok(())
}

/// `key confirm CODE` by an administrator at the bastion for the user they act for:
/// they vouch for the key, as `admin user add --key` does. Over SSH a connection's own
/// key is confirmed already, so there it is refused with the way to do it.
pub fn confirm_for(ctx: &Context, code: &str) -> Result<Confirmed> {
    if ctx.actor.via == "ssh" {
        return Err(Error::conflict(
            "this connection's key is already confirmed",
            Some(&format!(
                "confirm a new key over a connection made with it: `{} -i PATH key confirm CODE`",
                ctx.config.ssh_command()
            )),
        ));
    }
    let user = ctx.tenant()?;
    let outcome = db::immediate(ctx.db()?, |tx| {
        let now = crate::hooks::now();
        let hash = parse_code(code).map(|c| crate::ops::signup::token_hash(&c));
        let pending = db::users::pending_keys(tx, &user, now)?;
        let Some(p) = pending.iter().find(|p| Some(&p.code_hash) == hash.as_ref()) else {
            return Err(Error::not_found(
                "pending key with the code",
                code.to_owned(),
            ));
        };
        promote(tx, p, now)?;
        Ok(Confirmed::Key {
            user: user.clone(),
            fingerprint: p.fingerprint.clone(),
        })
    });
    ctx.audit("key.confirm", &user, &outcome);
    outcome
}

/// What `key confirm` proved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "confirmed", rename_all = "snake_case")]
pub enum Confirmed {
    /// The pending key now logs in to `user`.
    Key { user: String, fingerprint: String },
    /// The key of the signup for `user` is proven; approval can make the account.
    Signup { user: String, fingerprint: String },
}

/// `key confirm CODE` on a connection authenticated with the key `fingerprint`: the one
/// way a pending key (or a signup's key) proves its holder asked for it. The code works
/// once, for that key only; wrong codes count, and a key that took too many is dropped.
/// Audited; for both SSH front doors, before any account is known.
pub fn confirm(conn: &Connection, fingerprint: &str, code: &str) -> Result<Confirmed> {
    let outcome = confirm_inner(conn, fingerprint, code);
    let (actor, target) = match &outcome {
        Ok(Confirmed::Key { user, .. }) | Ok(Confirmed::Signup { user, .. }) => {
            (user.as_str(), format!("{user}/{fingerprint}"))
        }
        Err(_) => ("unknown", fingerprint.to_owned()),
    };
    let (result, detail) = match &outcome {
        Ok(Confirmed::Key { .. }) => ("ok", String::new()),
        Ok(Confirmed::Signup { .. }) => ("ok", "a signup's key".to_owned()),
        Err(e) => ("error", e.report()),
    };
    let entry = db::audit::NewEntry {
        actor,
        via: "ssh",
        action: "key.confirm",
        target: &target,
        result,
        detail: &detail,
    };
    if let Err(e) = db::audit::insert(conn, &entry, crate::hooks::now()) {
        tracing::error!(error = %e, "cannot write audit entry");
    }
    outcome
}

fn confirm_inner(conn: &Connection, fingerprint: &str, code: &str) -> Result<Confirmed> {
    let wrong = || {
        Error::denied(
            "that code does not confirm this key: use the code `key add` (or the signup page) showed for it, connected with that key",
        )
    };
    let Some(code) = parse_code(code) else {
        return Err(wrong());
    };
    let hash = crate::ops::signup::token_hash(&code);
    db::immediate(conn, |tx| {
        let now = crate::hooks::now();
        if db::users::key_by_fingerprint(tx, fingerprint)?.is_some() {
            return Err(Error::conflict(
                format!("key {fingerprint} is already registered"),
                Some("it logs in already; `key confirm` is for a key `key add` left pending"),
            ));
        }
        let pending = db::users::pending_by_fingerprint(tx, fingerprint, now)?;
        if let Some(p) = pending.iter().find(|p| p.code_hash == hash) {
            promote(tx, p, now)?;
            return Ok(Ok(Confirmed::Key {
                user: p.user_id.clone(),
                fingerprint: fingerprint.to_owned(),
            }));
        }
        if let Some(s) = db::signups::open_with_key_code(tx, fingerprint, &code, now)? {
            db::signups::confirm_key(tx, s.id, now)?;
            return Ok(Ok(Confirmed::Signup {
                user: s.user_id,
                fingerprint: fingerprint.to_owned(),
            }));
        }
        db::users::pending_wrong_code(tx, fingerprint, MAX_CODE_ATTEMPTS)?;
        Ok(Err(wrong()))
    })
    // A wrong code is counted, committed, then reported.
    .and_then(|confirmed| confirmed)
}

/// `SHA256:` followed by 43 base64 characters, as `ssh-keygen -l` and `key list` print
/// it; the prefix may be left out.
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let text = text.trim();
    let body = text.strip_prefix("SHA256:").unwrap_or(text);
    let ok = body.len() == 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !ok {
        return Err(Error::invalid_with_help(
            format!(
                "`{}` is not a key fingerprint",
                crate::validate::quoted(text)
            ),
            "give the SHA256:... fingerprint that `key list` shows",
        ));
    }
    Ok(format!("SHA256:{body}"))
}

/// Removes one of the caller's keys, never the last one.
pub fn remove(ctx: &Context, fingerprint: &str) -> Result<()> {
    let user = ctx.tenant()?;
    let outcome = db::immediate(ctx.db()?, |tx| {
        let keys = db::users::keys(tx, &user)?;
        if !keys.iter().any(|k| k.fingerprint == fingerprint) {
            return Err(Error::not_found("key", fingerprint));
        }
        if keys.len() <= 1 {
            return Err(Error::conflict(
                format!("{fingerprint} is your last key; removing it would lock you out"),
                Some("add another key first with `key add`"),
            ));
        }
        db::users::delete_key(tx, &user, fingerprint)?;
        Ok(())
    });
    ctx.audit("key.remove", &format!("{user}/{fingerprint}"), &outcome);
    outcome
}

/// Whether a key that proved itself logs in, and as whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    User(Binding),
    /// No user has this key.
    Unknown,
    /// The key's user is disabled, or the stored key is not this very key.
    Refused,
}

/// Does the key with this fingerprint and base64 body (`blob`) log in, and as whom: one
/// indexed lookup, for both SSH front doors. The stored key must be the one offered,
/// not just one with the same digest.
pub fn login(conn: &Connection, fingerprint: &str, blob: &str) -> Result<Login> {
    Ok(match db::users::key_owner(conn, fingerprint)? {
        None => Login::Unknown,
        Some(owner) if owner.disabled => Login::Refused,
        Some(owner) if owner.public_key.split_whitespace().nth(1) != Some(blob) => Login::Refused,
        Some(owner) => Login::User(Binding {
            user: owner.user_id,
            fingerprint: fingerprint.to_owned(),
            serial: Some(owner.serial),
        }),
    })
}

/// What sshd learns about a key it was offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    pub user: String,
    /// The user's serial, which the forced command checks before every command.
    pub serial: i64,
    pub fingerprint: String,
    /// `type base64`, as stored.
    pub public_key: String,
    /// Addresses of the user's VMs: the only places their key may forward to.
    pub vm_ips: Vec<Ipv4Addr>,
}

/// Looks up the key sshd passes as `%t %k`: `None` for a key that is malformed, unknown,
/// or belongs to a disabled user.
pub fn authorize(
    conn: &Connection,
    key_type: &str,
    key_base64: &str,
) -> Result<Option<Authorized>> {
    let Some(fingerprint) = offered_fingerprint(key_type, key_base64) else {
        return Ok(None);
    };
    let Login::User(Binding { user, serial, .. }) = login(conn, &fingerprint, key_base64)? else {
        return Ok(None);
    };
    let serial = serial.expect("a login names the serial");
    let mut vm_ips: Vec<Ipv4Addr> = db::vms::list(conn, Some(&user))?
        .iter()
        .filter_map(|vm| vm.ip.parse().ok())
        .collect();
    vm_ips.sort();
    vm_ips.dedup();
    Ok(Some(Authorized {
        user,
        serial,
        fingerprint,
        public_key: format!("{key_type} {key_base64}"),
        vm_ips,
    }))
}

/// The fingerprint of the key sshd passes as `%t %k`, if it is a well-formed key.
fn offered_fingerprint(key_type: &str, key_base64: &str) -> Option<String> {
    if key_type.is_empty()
        || key_base64.is_empty()
        || key_type.len() + key_base64.len() > 16 * 1024
        || key_type.contains(char::is_whitespace)
        || key_base64.contains(char::is_whitespace)
    {
        return None;
    }
    let key = ssh_key::PublicKey::from_openssh(&format!("{key_type} {key_base64}")).ok()?;
    Some(key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}

/// The fingerprint of a key sshd passes as `%t %k` that logs in to no account but may
/// prove itself: one `key add` left pending, or a signup's. `None` for any other.
pub fn awaiting_proof(
    conn: &Connection,
    key_type: &str,
    key_base64: &str,
) -> Result<Option<String>> {
    let Some(fingerprint) = offered_fingerprint(key_type, key_base64) else {
        return Ok(None);
    };
    let now = crate::hooks::now();
    let stored = |public_key: &str| public_key.split_whitespace().nth(1) == Some(key_base64);
    let pending = db::users::pending_by_fingerprint(conn, &fingerprint, now)?;
    let signup = db::signups::open_for_key(conn, &fingerprint, now)?;
    let waiting = pending.iter().any(|p| stored(&p.public_key))
        || signup.is_some_and(|s| {
            s.key_code.is_some() && s.public_key == format!("{key_type} {key_base64}")
        });
    Ok(waiting.then_some(fingerprint))
}

/// The `authorized_keys` line of a key awaiting proof: `restrict` and the forced
/// command `EXE shell --unconfirmed --key FINGERPRINT`, which runs only `key confirm`.
pub fn unconfirmed_line(fingerprint: &str, public_key: &str, exe: &str) -> Result<String> {
    if !plain_path(exe) {
        return Err(Error::Install(format!(
            "the basphere executable `{}` needs an absolute path of letters, digits and `/._+-` to be used as sshd's forced command",
            crate::validate::quoted(exe)
        )));
    }
    let fingerprint = parse_fingerprint(fingerprint)?;
    let mut words = public_key.split_whitespace();
    let (Some(kind), Some(blob), None) = (words.next(), words.next(), words.next()) else {
        return Err(Error::invalid("the offered public key is malformed"));
    };
    Ok(format!(
        "restrict,command=\"{exe} shell --unconfirmed --key {fingerprint}\" {kind} {blob}\n"
    ))
}

/// Whether `path` can stand in a forced command unquoted: inside sshd's `command="..."`
/// and then in the shell sshd runs it with.
pub fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
}

/// One `authorized_keys` line: `restrict` (no forwarding of any kind, no PTY, no
/// `~/.ssh/rc`), then a PTY again (`ssh -t ... console NAME`), `-L`/`-J` only to port 22
/// of the user's own VMs (none at all without VMs), and the forced command
/// `EXE shell --user ID --key FINGERPRINT --serial N`.
pub fn authorized_keys_line(auth: &Authorized, exe: &str) -> Result<String> {
    if !plain_path(exe) {
        return Err(Error::Install(format!(
            "the basphere executable `{}` needs an absolute path of letters, digits and `/._+-` to be used as sshd's forced command",
            crate::validate::quoted(exe)
        )));
    }
    // Both were checked on the way into the database; a row that fails is never trusted.
    let user: crate::validate::UserId = auth.user.parse()?;
    let fingerprint = parse_fingerprint(&auth.fingerprint)?;
    let mut options = vec!["restrict".to_owned(), "pty".to_owned()];
    if !auth.vm_ips.is_empty() {
        // Without `permitopen`, `port-forwarding` would allow -L to anywhere, so it is
        // only given together with at least one.
        options.push("port-forwarding".to_owned());
        for ip in &auth.vm_ips {
            options.push(format!("permitopen=\"{ip}:22\""));
        }
    }
    options.push(format!(
        "command=\"{exe} shell --user {user} --key {fingerprint} --serial {}\"",
        auth.serial
    ));
    let mut words = auth.public_key.split_whitespace();
    let (Some(kind), Some(blob), None) = (words.next(), words.next(), words.next()) else {
        return Err(Error::invalid("stored public key is malformed"));
    };
    Ok(format!("{} {kind} {blob}", options.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    fn auth(ips: &[&str]) -> Authorized {
        Authorized {
            user: "alice".into(),
            serial: 7,
            fingerprint: FP.into(),
            public_key:
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                    .into(),
            vm_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn line_with_vms_permits_only_their_ssh_ports() {
        let line = authorized_keys_line(
            &auth(&["10.1.0.10", "10.1.0.11"]),
            "/usr/local/bin/basphere",
        )
        .unwrap();
        assert_eq!(
            line,
            format!(
                "restrict,pty,port-forwarding,permitopen=\"10.1.0.10:22\",permitopen=\"10.1.0.11:22\",\
                 command=\"/usr/local/bin/basphere shell --user alice --key {FP} --serial 7\" \
                 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
            )
        );
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn line_without_vms_allows_no_forwarding() {
        let line = authorized_keys_line(&auth(&[]), "/usr/bin/basphere").unwrap();
        assert!(line.starts_with(&format!(
            "restrict,pty,command=\"/usr/bin/basphere shell --user alice --key {FP} --serial 7\" ssh-ed25519 "
        )));
        assert!(!line.contains("port-forwarding"));
        assert!(!line.contains("permitopen"));
    }

    #[test]
    fn odd_executable_paths_and_rows_are_refused() {
        for exe in [
            "basphere",
            "/opt/my dir/basphere",
            "/x\"y",
            "/a;b",
            "/a\nb",
            "/$(id)",
        ] {
            assert!(authorized_keys_line(&auth(&[]), exe).is_err(), "{exe:?}");
        }
        let mut bad = auth(&[]);
        bad.user = "x\" evil".into();
        assert!(authorized_keys_line(&bad, "/usr/bin/basphere").is_err());
        let mut bad = auth(&[]);
        bad.public_key = "ssh-ed25519 AAAA\nssh-rsa BBBB".into();
        assert!(authorized_keys_line(&bad, "/usr/bin/basphere").is_err());
    }

    #[test]
    fn fingerprints() {
        assert_eq!(parse_fingerprint(FP).unwrap(), FP);
        assert_eq!(parse_fingerprint(&FP[7..]).unwrap(), FP);
        for bad in [
            "",
            "SHA256:",
            "MD5:aa:bb",
            "SHA256:abc",
            &format!("{FP}x"),
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2\n",
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::testing::{any_text, config, ed25519_key_line, key_line_like, text_near, text_of};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    const BASE64: &str = "ABCXYZabcxyz0189+/=:";

    /// An `authorized_keys` line as sshd reads it: the options, split at the commas
    /// outside double quotes, and the key after the first space outside them.
    fn read_line(line: &str) -> (Vec<&str>, &str) {
        let (mut options, mut start, mut quoted) = (Vec::new(), 0, false);
        for (i, c) in line.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' | ' ' if !quoted => {
                    options.push(&line[start..i]);
                    start = i + 1;
                    if c == ' ' {
                        break;
                    }
                }
                _ => {}
            }
        }
        (options, &line[start..])
    }

    /// A database where `alice` holds `key`.
    fn alice_with(key: &PublicKey) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        db::migrate(&conn).unwrap();
        let alice = db::users::NewUser {
            id: "alice",
            email: "alice@example.com",
            role: db::users::Role::User,
        };
        db::users::insert(&conn, &alice, 0).unwrap();
        let new = NewKey {
            fingerprint: &key.fingerprint,
            user_id: "alice",
            algorithm: &key.algorithm,
            public_key: &key.openssh,
            comment: &key.comment,
        };
        db::users::insert_key(&conn, &new, 0).unwrap();
        conn
    }

    proptest! {
        #![proptest_config(config())]

        /// A fingerprint is `SHA256:` and 43 base64 digits, and is its own canonical form.
        #[test]
        fn fingerprints_are_canonical(
            s in prop_oneof![
                any_text(60),
                text_near(BASE64, 44).prop_map(|b| format!("SHA256:{b}")),
                "(SHA256:|sha256:| )?[A-Za-z0-9+/=]{42,44}[ \n]?",
            ]
        ) {
            if let Ok(fp) = parse_fingerprint(&s) {
                let body = fp.strip_prefix("SHA256:").unwrap();
                let digit = |b: u8| b.is_ascii_alphanumeric() || b"+/".contains(&b);
                prop_assert!(body.len() == 43 && body.bytes().all(digit));
                prop_assert_eq!(parse_fingerprint(&fp).unwrap(), fp);
            }
        }

        /// A path accepted for sshd's forced command needs no quoting, in the shell or in
        /// the option's double quotes.
        #[test]
        fn plain_paths_need_no_quoting(
            path in prop_oneof![text_near("/ab1._+-\"\\ $;'\n,", 30), "/[a-z0-9._+/-]{0,20}"]
        ) {
            if plain_path(&path) {
                prop_assert_eq!(shell_words::quote(&path), path.as_str());
                prop_assert!(!path.contains(['"', '\\', ',']));
            }
        }

        /// An `authorized_keys` line is one line: the options, then exactly the stored key;
        /// its forced command names exactly the user and fingerprint, and it may forward
        /// only to port 22 of the user's VMs.
        #[test]
        fn authorized_keys_lines_say_only_what_was_stored(
            line in ed25519_key_line(),
            user in prop_oneof![Just("alice".to_owned()), any_text(10)],
            ips in vec(any::<u32>().prop_map(Ipv4Addr::from), 0..4),
            serial in any::<i64>(),
            exe in prop_oneof![
                text_of("ab1._+-/", 16).prop_map(|p| format!("/usr/{p}")),
                text_near("/ab1._+- \"", 20),
            ],
        ) {
            let key: PublicKey = line.parse().unwrap();
            let auth = Authorized {
                user: user.clone(),
                serial,
                fingerprint: key.fingerprint.clone(),
                public_key: key.openssh.clone(),
                vm_ips: ips.clone(),
            };
            let Ok(text) = authorized_keys_line(&auth, &exe) else {
                prop_assert!(!plain_path(&exe) || user.parse::<crate::validate::UserId>().is_err());
                return Ok(());
            };
            prop_assert_eq!(text.lines().count(), 1);
            let (opts, stored) = read_line(&text);
            prop_assert_eq!(stored, key.openssh.as_str());
            let command = opts.iter().find_map(|o| o.strip_prefix("command=\"")?.strip_suffix('"'));
            let serial = serial.to_string();
            let expected =
                [exe.as_str(), "shell", "--user", &user, "--key", &key.fingerprint, "--serial", &serial];
            prop_assert_eq!(shell_words::split(command.unwrap()).unwrap(), expected);
            let opened: Vec<&str> =
                opts.iter().filter_map(|o| o.strip_prefix("permitopen=")).collect();
            let wanted: Vec<String> = ips.iter().map(|ip| format!("\"{ip}:22\"")).collect();
            prop_assert_eq!(opened, wanted);
            prop_assert_eq!(opts.contains(&"port-forwarding"), !ips.is_empty());
        }
    }

    /// Whatever sshd passes as `%t %k`, only alice's very key logs in, and as alice.
    #[test]
    fn only_the_stored_key_authorizes() {
        let mut runner = TestRunner::new(config());
        let pairs = prop_oneof![
            key_line_like().prop_map(|l| {
                let mut words = l.split(' ').map(str::to_owned);
                (
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default(),
                )
            }),
            (any_text(20), any_text(80)),
        ];
        let strategy = (ed25519_key_line(), pairs, any::<bool>());
        runner
            .run(&strategy, |(line, (kind, blob), offer_alice)| {
                let alice: PublicKey = line.parse().unwrap();
                let conn = alice_with(&alice);
                let (kind, blob) = match offer_alice {
                    true => alice.openssh.split_once(' ').unwrap(),
                    false => (kind.as_str(), blob.as_str()),
                };
                let is_alice = (kind, blob) == alice.openssh.split_once(' ').unwrap();
                match authorize(&conn, kind, blob).unwrap() {
                    Some(auth) => {
                        prop_assert!(is_alice, "{kind:?} {blob:?} let in");
                        prop_assert_eq!(auth.user, "alice");
                        prop_assert_eq!(auth.fingerprint, alice.fingerprint);
                    }
                    None => prop_assert!(!is_alice, "alice's own key refused"),
                }
                Ok(())
            })
            .unwrap();
    }
}
