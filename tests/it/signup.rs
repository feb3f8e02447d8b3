//! Registration through the real pieces: `basphere serve` answering a real HTTP client and
//! headless Chromium, a real SMTP server (aiosmtpd), and the admin commands in a terminal.

use std::path::Path;
use std::time::Duration;

use crate::fixtures::bin::{keygen, Bsp};
use crate::fixtures::browser::{require_chromium, Browser};
use crate::fixtures::poll;
use crate::fixtures::smtp::{link, require_aiosmtpd, Smtp};
use crate::fixtures::web::{Http, Server};

const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const CONFLICT: i32 = 6;

/// A new key pair `name`'s public key line.
fn public_key(bsp: &Bsp, name: &str) -> String {
    crate::fixtures::bin::public_key(&bsp.keygen(name))
}

fn fields<'a>(
    id: &'a str,
    email: &'a str,
    key: &'a str,
    reason: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("user_id", id),
        ("email", email),
        ("public_key", key),
        ("reason", reason),
        ("website", ""),
    ]
}

/// A form field, what is sent, and a part of the message expected beside that field.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

fn signup_count(bsp: &Bsp) -> usize {
    bsp.json(&["admin", "signups", "--all"])
        .as_array()
        .unwrap()
        .len()
}

fn spooled(bsp: &Bsp) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(bsp.data_dir().join("spool"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn a_stranger_signs_up_confirms_is_approved_and_logs_in() {
    if !require_aiosmtpd() {
        return;
    }
    let mut bsp = Bsp::new();
    let smtp = Smtp::start(bsp.dir.path());
    smtp.configure(&mut bsp);
    bsp.set_env(
        "BASPHERE_ADMIN_EMAILS",
        "ops@bastion.test, boss@bastion.test",
    );
    let server = Server::start(&mut bsp);
    let key = public_key(&bsp, "carol");

    let mut http = Http::new();
    let reply = http.signup(
        &server,
        &fields("carol", "carol@example.com", &key, "team build machines"),
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    let status_path = reply.header("location").unwrap().to_owned();
    assert!(status_path.starts_with("/status/"), "{status_path}");
    let page = http.get(&server.url(&status_path));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("data-state=\"pending_email\""),
        "{}",
        page.body
    );

    // The confirmation mail reaches the applicant with working links.
    let mails = smtp.wait_for(1);
    let confirm = &mails[0];
    assert_eq!(confirm.rcpt_to, "carol@example.com");
    assert!(confirm.subject.contains("carol"), "{}", confirm.subject);
    assert_eq!(confirm.from, "basphere@bastion.test");
    let verify = link(&confirm.body, "/verify/");
    assert!(verify.starts_with(&server.base), "{verify}");
    let status_link = link(&confirm.body, "/status/");
    assert!(
        status_link.ends_with(&status_path),
        "{status_link} vs {status_path}"
    );

    bsp.run(&["admin", "approve", "carol", "--yes"])
        .code(CONFLICT)
        .stderr_has("not confirmed")
        .stderr_has("--force");

    let page = http.confirm(&verify);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("email address is confirmed"),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-state=\"pending_approval\""));
    // The link works once.
    let again = http.get(&verify);
    assert!(again.body.contains("already used"), "{}", again.body);
    let csrf = page_csrf(&mut http, &server);
    let again = http.post(&verify, &[("csrf", &csrf)]);
    assert!(again.body.contains("already used"), "{}", again.body);

    // Every admin is told, once.
    let mails = smtp.wait_for(3);
    let mut notices: Vec<&str> = mails[1..].iter().map(|m| m.rcpt_to.as_str()).collect();
    notices.sort();
    assert_eq!(notices, ["boss@bastion.test", "ops@bastion.test"]);
    assert!(
        mails[1].body.contains("basphere admin approve carol"),
        "{}",
        mails[1].body
    );
    assert!(mails[1].body.contains("team build machines"));

    let listed = bsp.json(&["admin", "signups"]);
    assert_eq!(listed[0]["user_id"], "carol");
    assert_eq!(listed[0]["email_confirmed"], true);
    assert_eq!(listed[0]["state"], "pending_approval");
    bsp.run(&["admin", "signups"])
        .success()
        .stdout_has("carol@example.com")
        .stdout_has("ssh-ed25519")
        .stdout_has("pending approval");

    bsp.run(&["admin", "approve", "carol", "--yes"])
        .success()
        .stdout_has("approved carol")
        .stdout_has("welcome mail to carol@example.com sent through SMTP relay 127.0.0.1:");
    let mails = smtp.wait_for(4);
    let welcome = &mails[3];
    assert_eq!(welcome.rcpt_to, "carol@example.com");
    assert!(
        welcome.body.contains("ssh basphere@bastion.test whoami"),
        "{}",
        welcome.body
    );
    assert!(welcome
        .body
        .contains("ssh -J basphere@bastion.test debian@web1"));

    // The user exists with the default quota; the key from the form waits for proof,
    // with the code the status page and the welcome mail show.
    let user = bsp.json(&["admin", "user", "show", "carol"]);
    let fingerprint = listed[0]["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(user["keys"].as_array().unwrap().len(), 0, "{user}");
    assert_eq!(user["email"], "carol@example.com");
    assert_eq!(user["quota"]["limits"]["cpus"], 32, "{user}");
    let code = crate::fixtures::confirm_code(&welcome.body);
    let page = http.get(&server.url(&status_path));
    assert_eq!(crate::fixtures::confirm_code(&page.body), code);
    bsp.set_env("SSH_ORIGINAL_COMMAND", "whoami");
    bsp.run(&["shell", "--user", "carol", "--key", &fingerprint])
        .code(4)
        .stderr_has("no longer registered");
    // What auth-keys gives the key: a line that runs `key confirm` and nothing else.
    bsp.run(&["shell", "--unconfirmed", "--key", &fingerprint])
        .code(1)
        .stderr_has("not registered");
    bsp.set_env("SSH_ORIGINAL_COMMAND", "key confirm ZZZZ-ZZZZ");
    bsp.run(&["shell", "--unconfirmed", "--key", &fingerprint])
        .code(4);
    bsp.set_env("SSH_ORIGINAL_COMMAND", &format!("key confirm {code}"));
    bsp.run(&["shell", "--unconfirmed", "--key", &fingerprint])
        .success()
        .stdout_has("logs in to `carol`");

    // The key works at the SSH front door (OpenSSH's forced command).
    bsp.set_env("SSH_ORIGINAL_COMMAND", "whoami");
    bsp.run(&["shell", "--user", "carol", "--key", &fingerprint])
        .success()
        .stdout_has("carol")
        .stdout_has("via:   ssh");
    bsp.set_env("SSH_ORIGINAL_COMMAND", "");

    bsp.run(&["admin", "approve", "carol", "--yes"])
        .code(CONFLICT)
        .stderr_has("already approved by root");
    let page = http.get(&server.url(&status_path));
    assert!(
        page.body.contains("data-state=\"approved\""),
        "{}",
        page.body
    );

    let audit = bsp.json(&["admin", "audit", "--user", "carol"]);
    let actions: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["result"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "web signup.create ok",
        "web signup.confirm ok",
        "root signup.approve error",
        "root user.add ok",
        "root signup.approve ok",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} not in {actions:?}"
        );
    }
    assert_eq!(smtp.messages().len(), 4, "no other mail");
    assert!(server.stop().success());
}

/// A valid CSRF token for `http`'s cookie, from the signup form.
fn page_csrf(http: &mut Http, server: &Server) -> String {
    http.get(&server.url("/")).csrf_field()
}

/// Mail scanners fetch every link in a mail, and `GET /verify/TOKEN` confirmed the
/// address on that fetch alone. Now the link shows a page whose button posts (with the
/// form's CSRF protection), and only the post confirms.
#[test]
fn fetching_the_mailed_link_confirms_nothing_until_its_button_is_pressed() {
    let mut bsp = Bsp::new();
    let server = Server::start(&mut bsp);
    let key = public_key(&bsp, "omar");
    let mut http = Http::new();
    let reply = http.signup(&server, &fields("omar", "omar@example.com", &key, "r"));
    assert_eq!(reply.status, 303, "{}", reply.body);
    let mail = poll::eventually(Duration::from_secs(30), || {
        spooled(&bsp)
            .into_iter()
            .next()
            .ok_or("no mail in the spool")
    });
    let verify = link(&mail, "/verify/");
    let state = || bsp.json(&["admin", "signups"])[0]["state"].clone();

    // A scanner: no cookie, follows the link, twice, and a HEAD for good measure.
    let mut scanner = Http::new();
    for _ in 0..2 {
        let page = scanner.get(&verify);
        assert_eq!(page.status, 200);
        let path = verify.trim_start_matches(&server.base);
        assert!(
            page.body.contains(&format!("action=\"{path}\""))
                && page.body.contains("method=\"post\""),
            "{}",
            page.body
        );
        assert!(page.body.contains("id=\"confirm\""), "{}", page.body);
        assert!(!page.body.contains("id=\"confirmed\""), "{}", page.body);
    }
    let head = ureq::head(&verify).call().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        state(),
        "pending_email",
        "fetching the link changed nothing"
    );

    // A post without the page's token, or with another browser's, is refused.
    assert_eq!(scanner.post(&verify, &[("csrf", "")]).status, 403);
    let mut other = Http::new();
    let foreign = other.get(&verify).csrf_field();
    assert_eq!(scanner.post(&verify, &[("csrf", &foreign)]).status, 403);
    assert_eq!(Http::new().post(&verify, &[]).status, 403);
    assert_eq!(state(), "pending_email");

    // The person presses the button.
    let confirmed = http.confirm(&verify);
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert!(
        confirmed.body.contains("email address is confirmed"),
        "{}",
        confirmed.body
    );
    assert_eq!(state(), "pending_approval");

    // Links that lead nowhere say so on both methods, and change nothing.
    let zeros = server.url(&format!("/verify/{}", "0".repeat(32)));
    assert_eq!(http.get(&zeros).status, 404);
    let csrf = page_csrf(&mut http, &server);
    assert_eq!(http.post(&zeros, &[("csrf", &csrf)]).status, 404);
}

#[test]
fn an_smtp_outage_delays_mail_but_loses_none() {
    if !require_aiosmtpd() {
        return;
    }
    let mut bsp = Bsp::new();
    let mut smtp = Smtp::start(bsp.dir.path());
    smtp.configure(&mut bsp);
    smtp.stop();
    let server = Server::start(&mut bsp);
    let key = public_key(&bsp, "dave");

    let reply = Http::new().signup(
        &server,
        &fields("dave", "dave@example.com", &key, "testing"),
    );
    assert_eq!(
        reply.status, 303,
        "the signup is stored although mail fails: {}",
        reply.body
    );
    assert_eq!(signup_count(&bsp), 1);

    // The worker in `serve` tried, failed, and kept the error.
    let queued = poll::eventually(Duration::from_secs(20), || {
        let outbox = bsp.json(&["admin", "mail"]);
        if outbox[0]["attempts"].as_i64() >= Some(1) {
            Ok(outbox)
        } else {
            Err(format!("a failed attempt in the outbox: {outbox}"))
        }
    });
    assert_eq!(queued[0]["recipient"], "dave@example.com");
    assert!(queued[0]["sent_at"].is_null());
    let error = queued[0]["last_error"].as_str().unwrap();
    assert!(!error.is_empty());
    bsp.run(&["admin", "mail"])
        .success()
        .stdout_has("dave@example.com");
    drop(server);

    // Still down: flush fails, says why, and keeps the mail.
    bsp.run(&["mail", "flush", "--now"])
        .code(1)
        .stdout_has("failed #1 to dave@example.com");
    assert!(bsp.json(&["admin", "mail"])[0]["attempts"].as_i64() >= Some(2));

    smtp.restart();
    // Not due yet (backoff): a plain flush leaves it for later.
    bsp.run(&["mail", "flush"]).success();
    assert!(smtp.messages().is_empty());
    bsp.run(&["mail", "flush", "--now"])
        .success()
        .stdout_has("sent #1 to dave@example.com");
    let mails = smtp.wait_for(1);
    assert_eq!(mails[0].rcpt_to, "dave@example.com");
    assert!(mails[0].body.contains("/verify/"));
    assert_eq!(bsp.json(&["admin", "mail"]).as_array().unwrap().len(), 0);
    assert_eq!(
        bsp.json(&["admin", "mail", "--all"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_form_refuses_bad_requests_and_changes_nothing() {
    let bsp = Bsp::new();
    bsp.add_user("alice");
    let alice_key = std::fs::read_to_string(bsp.dir.path().join("key-alice.pub")).unwrap();
    // `127.0.0.1:0` picks a free port and the first line says which.
    let server = Server::start_any(&bsp);
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    let key = public_key(&bsp, "erin");
    let mut http = Http::new();

    let health = http.get(&server.url("/healthz"));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let form = http.get(&server.url("/"));
    assert_eq!(form.status, 200);
    for (header, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(form.header(header), Some(value), "{header}");
    }
    let csp = form.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!form.body.contains("<script"), "no JavaScript");
    let cookie = form.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csrf = form.csrf_field();
    let good = fields("erin", "erin@example.com", &key, "demo");

    // CSRF: no token, a wrong one, a token without its cookie.
    let mut no_token = good.clone();
    no_token.push(("csrf", ""));
    assert_eq!(http.post(&server.url("/signup"), &no_token).status, 403);
    let mut wrong = good.clone();
    let bad_csrf = "0".repeat(64);
    wrong.push(("csrf", &bad_csrf));
    let reply = http.post(&server.url("/signup"), &wrong);
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("form expired"), "{}", reply.body);
    assert!(
        reply.body.contains("value=\"erin@example.com\""),
        "what was typed is kept"
    );
    let mut right = good.clone();
    right.push(("csrf", &csrf));
    let mut stranger = Http::new();
    assert_eq!(stranger.post(&server.url("/signup"), &right).status, 403);
    stranger.cookie = Some("bsp_csrf=0123456789abcdef0123456789abcdef".into());
    assert_eq!(stranger.post(&server.url("/signup"), &right).status, 403);

    // Oversize bodies.
    let huge = format!("csrf={csrf}&reason={}", "a".repeat(70 * 1024));
    let reply = http.post_raw(&server.url("/signup"), huge.as_bytes());
    assert_eq!(reply.status, 413);
    assert!(reply.body.contains("larger than 64 KiB"), "{}", reply.body);
    assert_eq!(signup_count(&bsp), 0);

    // Every bad field, each with its own message, the form kept as typed.
    let rsa2048 = keygen(bsp.dir.path(), "weak", "rsa", Some("2048"));
    let rsa2048 = std::fs::read_to_string(rsa2048.with_extension("pub")).unwrap();
    let private = std::fs::read_to_string(bsp.dir.path().join("key-erin")).unwrap();
    let long_reason = "x".repeat(1001);
    let long_email = format!("{}@example.com", "e".repeat(250));
    let script = "<script>alert(1)</script>";
    let cases: Vec<Case> = vec![
        (
            "user_id",
            fields("Erin", "erin@example.com", &key, "r"),
            "Invalid user id",
        ),
        (
            "user_id",
            fields("ab", "erin@example.com", &key, "r"),
            "too short",
        ),
        (
            "user_id",
            fields("root", "erin@example.com", &key, "r"),
            "reserved",
        ),
        (
            "user_id",
            fields(script, "erin@example.com", &key, "r"),
            "&lt;script&gt;",
        ),
        (
            "user_id",
            fields("alice", "erin@example.com", &key, "r"),
            "taken",
        ),
        (
            "email",
            fields("erin", "erin", &key, "r"),
            "Invalid email address",
        ),
        (
            "email",
            fields("erin", "a b@example.com", &key, "r"),
            "Invalid email address",
        ),
        ("email", fields("erin", &long_email, &key, "r"), "too long"),
        (
            "public_key",
            fields("erin", "erin@example.com", "", "r"),
            "Paste your SSH public key",
        ),
        (
            "public_key",
            fields("erin", "erin@example.com", "ssh-ed25519 AAAA", "r"),
            "Not a valid SSH public key",
        ),
        (
            "public_key",
            fields("erin", "erin@example.com", &rsa2048, "r"),
            "2048 bits is too weak",
        ),
        (
            "public_key",
            fields("erin", "erin@example.com", &private, "r"),
            "private key",
        ),
        (
            "public_key",
            fields("erin", "erin@example.com", &alice_key, "r"),
            "already registered",
        ),
        (
            "reason",
            fields("erin", "erin@example.com", &key, ""),
            "Say in a few words",
        ),
        (
            "reason",
            fields("erin", "erin@example.com", &key, &long_reason),
            "under 1000 characters",
        ),
    ];
    for (field, mut sent, expected) in cases {
        sent.push(("csrf", &csrf));
        let reply = http.post(&server.url("/signup"), &sent);
        assert_eq!(reply.status, 400, "{field} {expected}: {}", reply.body);
        let marker = format!("id=\"error-{field}\"");
        let start = reply
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no error for {field}: {}", reply.body));
        let message = &reply.body[start..start + reply.body[start..].find("</p>").unwrap()];
        assert!(
            message.contains(expected),
            "{field}: expected {expected:?} in {message}"
        );
        assert!(
            !reply.body.contains(script),
            "unescaped markup in:\n{}",
            reply.body
        );
    }
    assert!(!alice_key.is_empty());
    assert_eq!(signup_count(&bsp), 0, "nothing stored");

    // Markup and terminal escapes in the reason: escaped in HTML, neutralised in the terminal.
    let reason = "<script>alert(1)</script> \u{1b}[31mred\u{1b}[0m \u{7}bell";
    let mut sent = fields("erin", "bad", &key, reason);
    sent.push(("csrf", &csrf));
    let reply = http.post(&server.url("/signup"), &sent);
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .body
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("<script>"));
    let mut sent = fields("erin", "erin@example.com", &key, reason);
    sent.push(("csrf", &csrf));
    assert_eq!(http.post(&server.url("/signup"), &sent).status, 303);
    let table = bsp.run(&["admin", "signups"]).success();
    assert!(
        !table.stdout.contains('\u{1b}') && !table.stdout.contains('\u{7}'),
        "{:?}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("<script>alert(1)</script> ?[31mred?[0m ?bell"),
        "{}",
        table.stdout
    );
    let json = bsp.json(&["admin", "signups"]);
    assert_eq!(json[0]["reason"], reason, "stored as typed");

    // A duplicate of the id that is pending.
    let other_key = public_key(&bsp, "frank");
    let mut sent = fields("erin", "x@example.com", &other_key, "r");
    sent.push(("csrf", &csrf));
    let reply = http.post(&server.url("/signup"), &sent);
    assert_eq!(reply.status, 400);
    let start = reply.body.find("id=\"error-user_id\"").unwrap();
    assert!(reply.body[start..].contains("already pending"));

    // The honeypot: a bot is thanked, nothing is stored.
    let mut sent = fields("frank", "frank@example.com", &other_key, "r");
    sent.retain(|(k, _)| *k != "website");
    sent.push(("website", "http://spam.example"));
    sent.push(("csrf", &csrf));
    let reply = http.post(&server.url("/signup"), &sent);
    assert_eq!(reply.status, 200);
    assert_eq!(signup_count(&bsp), 1);

    // A request whose email is not confirmed holds no key: someone else may ask with it.
    let mut sent = fields("frank", "frank@example.com", &key, "r");
    sent.push(("csrf", &csrf));
    assert_eq!(http.post(&server.url("/signup"), &sent).status, 303);
    assert_eq!(signup_count(&bsp), 2);

    // Links that do not exist.
    let zeros = "0".repeat(32);
    assert_eq!(
        http.get(&server.url(&format!("/verify/{zeros}"))).status,
        404
    );
    assert_eq!(http.get(&server.url("/verify/short")).status, 404);
    assert_eq!(
        http.get(&server.url(&format!("/status/{zeros}"))).status,
        404
    );
    assert_eq!(http.get(&server.url("/nothing")).status, 404);
    assert_eq!(http.get(&server.url("/style.css")).status, 200);
}

#[test]
fn rate_limits_answer_429_with_a_human_message() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_SIGNUP_PER_IP_PER_HOUR", "4");
    bsp.set_env("BASPHERE_SIGNUP_PER_EMAIL_PER_DAY", "1");
    let server = Server::start(&mut bsp);
    let mut http = Http::new();
    let k1 = public_key(&bsp, "g1");
    let k2 = public_key(&bsp, "g2");

    let first = http.signup(&server, &fields("gina", "gina@example.com", &k1, "r"));
    assert_eq!(first.status, 303);
    let second = http.signup(&server, &fields("gina2", "GINA@example.com", &k2, "r"));
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(
        second
            .body
            .contains("already 1 requests for this email address today"),
        "{}",
        second.body
    );
    let third = http.signup(&server, &fields("bad id", "x", "", ""));
    assert_eq!(third.status, 400);
    let fourth = http.signup(&server, &fields("bad id", "x", "", ""));
    assert_eq!(fourth.status, 400);
    let fifth = http.signup(&server, &fields("hank", "hank@example.com", &k2, "r"));
    assert_eq!(fifth.status, 429);
    assert!(
        fifth
            .body
            .contains("Too many account requests came from your address"),
        "{}",
        fifth.body
    );
    assert!(fifth.header("retry-after").is_some());
    assert_eq!(signup_count(&bsp), 1);
    // The form itself still loads.
    assert_eq!(http.get(&server.url("/")).status, 200);
}

/// Posts the form with fields that are wrong but a valid CSRF token: it counts against
/// the per-address limit and stores nothing. Returns the status.
fn bad_signup(http: &mut Http, server: &Server) -> u16 {
    http.signup(server, &fields("bad id", "x", "", "")).status
}

/// Behind a reverse proxy every request came from the proxy's address, so the per-IP
/// limit was one bucket for every visitor. With the proxy listed in
/// `web.trusted_proxies`, each client is counted by the address the proxy names.
#[test]
fn behind_a_trusted_proxy_each_client_has_its_own_rate_limit() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_SIGNUP_PER_IP_PER_HOUR", "2");
    // The test's connections come from 127.0.0.1: that is the proxy.
    bsp.set_env(
        "BASPHERE_WEB_TRUSTED_PROXIES",
        "127.0.0.0/8, 2001:db8:1::/48",
    );
    let server = Server::start(&mut bsp);
    let via_proxy = |header: &str, value: &str| Http::new().with_header(header, value);

    let mut first = via_proxy("X-Forwarded-For", "198.51.100.7");
    assert_eq!(bad_signup(&mut first, &server), 400);
    assert_eq!(bad_signup(&mut first, &server), 400);
    assert_eq!(bad_signup(&mut first, &server), 429, "its own limit");
    // Another client behind the same proxy is not held up by the first.
    let mut second = via_proxy("X-Forwarded-For", "198.51.100.8");
    assert_eq!(bad_signup(&mut second, &server), 400);
    // X-Real-IP is read too, when X-Forwarded-For is absent.
    let mut third = via_proxy("X-Real-IP", "198.51.100.9");
    assert_eq!(bad_signup(&mut third, &server), 400);
    assert_eq!(bad_signup(&mut third, &server), 400);
    assert_eq!(bad_signup(&mut third, &server), 429);
    // A client cannot escape its limit by sending its own X-Forwarded-For: the proxy
    // appends the address it saw, and the right-most address no proxy owns counts.
    let mut forger = via_proxy(
        "X-Forwarded-For",
        "203.0.113.50, 198.51.100.7, 2001:db8:1::5",
    );
    assert_eq!(bad_signup(&mut forger, &server), 429, "still 198.51.100.7");

    // The stored request names the client, not the proxy.
    let key = public_key(&bsp, "nina");
    let mut nina = via_proxy("X-Forwarded-For", "192.0.2.44");
    let reply = nina.signup(&server, &fields("nina", "nina@example.com", &key, "r"));
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(
        bsp.json(&["admin", "signups"])[0]["remote_addr"],
        "192.0.2.44"
    );
}

/// Without `web.trusted_proxies` the headers are anyone's to write, so they are ignored:
/// changing them does not buy a client a fresh limit.
#[test]
fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_SIGNUP_PER_IP_PER_HOUR", "2");
    bsp.set_env("BASPHERE_WEB_TRUSTED_PROXIES", "192.0.2.1");
    let server = Server::start(&mut bsp);
    for (i, status) in [400, 400, 429, 429].into_iter().enumerate() {
        let mut http = Http::new()
            .with_header("X-Forwarded-For", &format!("198.51.100.{i}"))
            .with_header("X-Real-IP", &format!("198.51.100.{}", i + 100));
        assert_eq!(bad_signup(&mut http, &server), status, "request {i}");
    }
}

/// A forged post (no valid CSRF token) used up the visitor's hourly allowance: a page
/// on another site could lock a whole office out of the form. Only posts whose token
/// checks out count now.
#[test]
fn posts_with_a_bad_csrf_token_do_not_count_against_the_rate_limit() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_SIGNUP_PER_IP_PER_HOUR", "2");
    let server = Server::start(&mut bsp);
    let mut http = Http::new();
    let mut sent = fields("bad id", "x", "", "");
    let forged = "0".repeat(64);
    sent.push(("csrf", &forged));
    for _ in 0..5 {
        assert_eq!(http.post(&server.url("/signup"), &sent).status, 403);
    }
    assert_eq!(bad_signup(&mut http, &server), 400);
    assert_eq!(bad_signup(&mut http, &server), 400);
    assert_eq!(bad_signup(&mut http, &server), 429);
}

#[test]
fn admins_reject_force_and_prune_with_mail_in_the_spool() {
    let mut bsp = Bsp::new();
    let server = Server::start(&mut bsp);
    let mut http = Http::new();
    for id in ["ivan", "judy", "kate", "lena"] {
        let key = public_key(&bsp, id);
        let reply = http.signup(
            &server,
            &fields(id, &format!("{id}@example.com"), &key, "r"),
        );
        assert_eq!(reply.status, 303);
    }
    drop(server);
    // `--now`: mail the stopped worker had claimed is otherwise retried only after its lease.
    bsp.run(&["mail", "flush", "--now"]).success();
    // Without an SMTP host mail is written to the spool, and the command says so.
    let spool = spooled(&bsp);
    assert_eq!(spool.len(), 4);
    assert!(spool[0].contains("To: ivan@example.com"), "{}", spool[0]);
    assert!(spool[0].contains("/verify/"));

    bsp.run(&["admin", "reject", "ivan", "--reason", ""])
        .code(USAGE);
    bsp.run(&[
        "admin",
        "reject",
        "ivan",
        "--reason",
        "please use your work address",
    ])
    .success()
    .stdout_has("rejected ivan")
    .stdout_has("rejection mail to ivan@example.com written to")
    .stdout_has("no SMTP host is configured");
    let spool = spooled(&bsp);
    assert!(
        spool[4].contains("please use your work address"),
        "{}",
        spool[4]
    );
    bsp.run(&["admin", "reject", "ivan", "--reason", "again"])
        .code(CONFLICT)
        .stderr_has("already rejected");
    bsp.run(&["admin", "approve", "ivan", "--yes"])
        .code(CONFLICT)
        .stderr_has("already rejected");
    bsp.run(&["admin", "approve", "nosuch", "--yes"])
        .code(NOT_FOUND)
        .stderr_has("signup `nosuch` not found");
    bsp.run(&["admin", "approve", "judy"])
        .code(USAGE)
        .stderr_has("--yes");

    bsp.run(&["admin", "approve", "judy", "--yes", "--force"])
        .success()
        .stdout_has("approved judy")
        .stdout_has("welcome mail to judy@example.com written to");
    assert!(spooled(&bsp)[5].contains("Your basphere account judy is ready"));

    // An approval cut short after the user was created (as if killed between its two
    // transactions) is finished by approving again, not refused.
    let db = rusqlite::Connection::open(bsp.data_dir().join("basphere.db")).unwrap();
    let lena_key: String = db
        .query_row(
            "SELECT public_key FROM signups WHERE user_id = 'lena'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    bsp.run(&[
        "admin",
        "user",
        "add",
        "lena",
        "--email",
        "lena@example.com",
        "--key",
        &lena_key,
    ])
    .success();
    bsp.run(&["admin", "approve", "lena", "--yes", "--force"])
        .success()
        .stdout_has("approved lena");
    assert!(spooled(&bsp)[6].contains("Your basphere account lena is ready"));
    bsp.run(&["admin", "approve", "lena", "--yes", "--force"])
        .code(CONFLICT)
        .stderr_has("already approved");

    // Prune: only unconfirmed requests older than the limit.
    bsp.run(&["admin", "signups", "prune", "--older-than", "30d"])
        .success()
        .stdout_has("no unconfirmed request is older than 30d");
    let db = rusqlite::Connection::open(bsp.data_dir().join("basphere.db")).unwrap();
    db.execute(
        "UPDATE signups SET created_at = created_at - 40 * 86400",
        [],
    )
    .unwrap();
    drop(db);
    bsp.run(&["admin", "signups", "prune", "--older-than", "soon"])
        .code(USAGE);
    bsp.run(&["admin", "signups", "prune", "--older-than", "30d"])
        .success()
        .stdout_has("removed 1 unconfirmed request(s): kate");
    let all = bsp.json(&["admin", "signups", "--all"]);
    let states: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["user_id"].as_str().unwrap(),
                s["state"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(states, ["ivan rejected", "judy approved", "lena approved"]);
    let audit = bsp.run(&["admin", "audit"]).success();
    for action in ["signup.reject", "signup.approve", "signup.prune"] {
        assert!(audit.stdout.contains(action), "{action}: {}", audit.stdout);
    }
}

#[test]
fn config_shows_mail_settings_but_never_the_password() {
    let mut bsp = Bsp::new();
    bsp.set_env("BASPHERE_SMTP_HOST", "mail.example.com");
    bsp.set_env("BASPHERE_SMTP_PASSWORD", "hunter2-secret");
    let run = bsp.run(&["config"]).success();
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    assert!(run.stdout.contains("smtp.password"));
    assert!(run.stdout.contains("(set)"));
    assert!(run.stdout.contains("public_url"));
    assert!(run.stdout.contains("http://bastion.test:8080"));
    let config = bsp.dir.path().join("config.toml");
    std::fs::write(&config, "[smtp]\nhost = \"x\"\npasword = \"typo\"\n").unwrap();
    bsp.run(&["config"]).code(1).stderr_has("pasword");
    std::fs::write(
        &config,
        "[signup]\nper_ip_per_hour = 5\ntoken_lifetime = \"2h\"\n",
    )
    .unwrap();
    bsp.run(&["config"]).success().stdout_has("2h");
}

#[test]
fn chromium_fills_the_form_and_follows_the_mailed_link() {
    if !require_aiosmtpd() {
        return;
    }
    if !require_chromium() {
        return;
    }
    let mut bsp = Bsp::new();
    let smtp = Smtp::start(bsp.dir.path());
    smtp.configure(&mut bsp);
    let server = Server::start(&mut bsp);
    let key = public_key(&bsp, "liam");
    let browser = Browser::start();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");

    browser.goto(&server.url("/"));
    assert!(browser.has("form[action='/signup']"));
    browser.screenshot(&artifacts.join("signup-form.png"));

    // A wrong id: the message beside the field, and what was typed is kept.
    browser.type_into("#user_id", "Liam!");
    browser.type_into("#email", "liam@example.com");
    browser.type_into("#public_key", &key);
    browser.type_into("#reason", "<b>ci</b> runners");
    browser.click("#submit");
    browser.wait_for("#error-user_id");
    assert!(browser.text("#error-user_id").contains("Invalid user id"));
    assert!(!browser.has("#error-email"));
    assert_eq!(browser.value("#email"), "liam@example.com");
    assert_eq!(browser.value("#reason"), "<b>ci</b> runners");
    browser.screenshot(&artifacts.join("signup-form-errors.png"));

    browser.clear("#user_id");
    browser.type_into("#user_id", "liam");
    browser.click("#submit");
    browser.wait_for_url("/status/");
    assert!(browser
        .text("#state")
        .contains("Waiting for you to confirm"));

    let mails = smtp.wait_for(1);
    browser.goto(&link(&mails[0].body, "/verify/"));
    // Opening the link shows a button; only pressing it confirms.
    browser.wait_for("#confirm");
    browser.screenshot(&artifacts.join("signup-confirm.png"));
    browser.click("#confirm");
    browser.wait_for("#confirmed");
    assert!(browser.text("#confirmed").contains("confirmed"));
    browser.goto(&link(&mails[0].body, "/status/"));
    assert!(browser
        .text("#state")
        .contains("Waiting for an administrator"));
    browser.screenshot(&artifacts.join("signup-status.png"));
    assert!(artifacts.join("signup-form.png").metadata().unwrap().len() > 1000);
    eprintln!("screenshots in {}", artifacts.display());
}

/// Secrets never reach a log or a listing: a whole signup, at debug log level, with an
/// SMTP password set; then the logs of the server and of every command, and `basphere
/// config`, are searched for the password, both link tokens and the web form's key.
#[test]
fn secrets_stay_out_of_debug_logs_and_config() {
    let mut bsp = Bsp::new();
    let password = "pw-5f3e2d1c0b9a";
    bsp.set_env("BASPHERE_SMTP_PASSWORD", password);
    bsp.set_env("BASPHERE_SMTP_USERNAME", "relay-user");
    bsp.set_env("BASPHERE_LOG", "debug");
    let server_log = bsp.dir.path().join("serve.log");
    let server = Server::start_logging_to(&mut bsp, &server_log);
    let key = public_key(&bsp, "olga");
    let mut http = Http::new();
    let reply = http.signup(
        &server,
        &fields("olga", "olga@example.com", &key, "secret hygiene"),
    );
    assert_eq!(reply.status, 303, "{}", reply.body);
    let status_path = reply.header("location").unwrap().to_owned();
    let status_token = status_path.trim_start_matches("/status/").to_owned();
    let mail = poll::eventually(Duration::from_secs(30), || {
        spooled(&bsp)
            .into_iter()
            .next()
            .ok_or("no confirmation mail in the spool")
    });
    let verify = link(&mail, "/verify/");
    let verify_token = verify.rsplit('/').next().unwrap().to_owned();
    assert_eq!(http.confirm(&verify).status, 200);
    assert_eq!(http.get(&server.url(&status_path)).status, 200);
    let mut logs = String::new();
    for argv in [
        &["admin", "approve", "olga", "--yes"][..],
        &["admin", "signups", "--all"],
        &["mail", "flush"],
        &["admin", "audit"],
    ] {
        let run = bsp.run(argv);
        logs.push_str(&run.stdout);
        logs.push_str(&run.stderr);
    }
    let config = bsp.run(&["config"]).success();
    let config_json = bsp.run(&["config", "--json"]).success();
    drop(server);
    let served = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        served.contains("DEBUG"),
        "no debug log from serve:\n{served}"
    );
    logs.push_str(&served);

    let web_key = std::fs::read(bsp.data_dir().join("web-secret")).unwrap();
    let web_hex: String = web_key.iter().map(|b| format!("{b:02x}")).collect();
    let web_debug = format!("{web_key:?}");
    for (what, secret) in [
        ("SMTP password", password),
        ("confirmation token", verify_token.as_str()),
        ("status token", status_token.as_str()),
        ("web key (hex)", web_hex.as_str()),
        ("web key (bytes)", web_debug.trim_matches(['[', ']'])),
    ] {
        assert!(secret.len() >= 12, "{what}: `{secret}`");
        assert!(!logs.contains(secret), "the {what} is in the logs:\n{logs}");
        assert!(
            !config.stdout.contains(secret),
            "the {what} is in `basphere config`"
        );
        assert!(
            !config_json.stdout.contains(secret),
            "the {what} is in `config --json`"
        );
    }
}
