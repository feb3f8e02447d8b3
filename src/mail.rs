//! Mail: every message goes into the outbox table first; `flush` delivers what is due,
//! over SMTP (lettre) or, without an SMTP host, as `.eml` files in the spool directory.
//!
//! A failed attempt is kept with its error and retried later with a growing delay, so an
//! SMTP outage delays mail but never loses it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Body;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport as _};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use rusqlite::Connection;

use crate::config::{Config, SmtpSecurity};
use crate::db;
use crate::db::mail::{Mail, NewMail};
use crate::error::{Error, Result};

/// How long a sender holds a message before another may try it (a crash mid-send).
const LEASE_SECS: i64 = 300;
const FIRST_RETRY_SECS: i64 = 60;
const MAX_RETRY_SECS: i64 = 3600;
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Plain text: nothing to escape, and the values were validated on the way in.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        for (name, text) in [
            ("confirm.txt", include_str!("../templates/mail/confirm.txt")),
            (
                "admin_notice.txt",
                include_str!("../templates/mail/admin_notice.txt"),
            ),
            ("welcome.txt", include_str!("../templates/mail/welcome.txt")),
            (
                "rejected.txt",
                include_str!("../templates/mail/rejected.txt"),
            ),
        ] {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("templates/mail/{name} parses: {e}"));
        }
        env
    })
}

/// Renders `templates/mail/NAME`; its first line is `Subject: ...`.
pub fn render(name: &str, ctx: minijinja::Value) -> Result<(String, String)> {
    let text = templates()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(Error::Template)?;
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let subject = first
        .strip_prefix("Subject: ")
        .unwrap_or(first)
        .trim()
        .to_owned();
    Ok((subject, body.trim_start_matches('\n').to_owned()))
}

/// Puts a message into the outbox. Call inside the transaction that made it necessary.
pub fn enqueue(conn: &Connection, to: &str, subject: &str, body: &str) -> Result<i64> {
    db::mail::insert(
        conn,
        &NewMail {
            recipient: to,
            subject,
            body,
        },
        crate::hooks::now(),
    )
}

enum Transport {
    Smtp { relay: String, smtp: SmtpTransport },
    Spool(PathBuf),
}

/// Delivers outbox messages as the configuration says.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

/// Where mail goes, for people to read.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "to")]
pub enum Destination {
    Smtp(String),
    Spool(PathBuf),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Smtp(relay) => write!(f, "SMTP relay {relay}"),
            Destination::Spool(dir) => write!(
                f,
                "spool directory {} (no SMTP host is configured)",
                dir.display()
            ),
        }
    }
}

impl Mailer {
    pub fn new(config: &Config) -> Result<Mailer> {
        let from: Mailbox = config
            .mail_from()
            .parse()
            .map_err(|e| Error::Config(format!("smtp.from: {e}")))?;
        let transport = match &config.smtp_host {
            None => Transport::Spool(config.data_dir.join("spool")),
            Some(host) => {
                let tls = |host: &str| {
                    TlsParameters::new(host.to_owned())
                        .map_err(|e| Error::Config(format!("smtp: cannot set up TLS: {e}")))
                };
                let tls = match config.smtp_security {
                    SmtpSecurity::Starttls => Tls::Required(tls(host)?),
                    SmtpSecurity::Tls => Tls::Wrapper(tls(host)?),
                    SmtpSecurity::None => Tls::None,
                };
                let mut builder = SmtpTransport::builder_dangerous(host)
                    .port(config.smtp_port())
                    .tls(tls)
                    .timeout(Some(SMTP_TIMEOUT))
                    .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
                        config.public_host(),
                    ));
                if let (Some(user), Some(password)) = (&config.smtp_username, &config.smtp_password)
                {
                    let password = password.expose().to_owned();
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Transport::Smtp {
                    relay: format!("{host}:{}", config.smtp_port()),
                    smtp: builder.build(),
                }
            }
        };
        Ok(Mailer { transport, from })
    }

    /// Whether the relay answers: connects, greets it (EHLO, STARTTLS and login as
    /// configured) and quits, within the SMTP timeout. The spool always answers.
    pub fn test_connection(&self) -> std::result::Result<(), String> {
        match &self.transport {
            Transport::Smtp { smtp, .. } => match smtp.test_connection() {
                Ok(true) => Ok(()),
                Ok(false) => Err("the relay did not accept the connection".to_owned()),
                Err(e) => Err(error_chain(&e)),
            },
            Transport::Spool(_) => Ok(()),
        }
    }

    pub fn destination(&self) -> Destination {
        match &self.transport {
            Transport::Smtp { relay, .. } => Destination::Smtp(relay.clone()),
            Transport::Spool(dir) => Destination::Spool(dir.clone()),
        }
    }

    fn message(&self, mail: &Mail) -> std::result::Result<Message, String> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| format!("bad recipient: {e}"))?;
        // lettre picks 7bit/8bit, or quoted-printable when a line is longer than 76.
        let body = Body::new(mail.body.clone());
        let domain = self.from.email.domain().to_owned();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!(
                "<outbox-{}-{}@{domain}>",
                mail.id,
                uuid::Uuid::new_v4()
            )))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the message: {e}"))
    }

    /// Sends one message; the error is the text kept in the outbox.
    fn send(&self, mail: &Mail) -> std::result::Result<(), String> {
        let message = self.message(mail)?;
        match &self.transport {
            Transport::Smtp { smtp, .. } => {
                smtp.send(&message).map(|_| ()).map_err(|e| error_chain(&e))
            }
            Transport::Spool(dir) => {
                // The mail holds live links (confirmation, status): for the service account only.
                crate::files::dir(dir, crate::files::PRIVATE_DIR)
                    .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
                let path = dir.join(format!("{:08}.eml", mail.id));
                let tmp = dir.join(format!(".{:08}.eml.tmp", mail.id));
                crate::files::write(&tmp, &message.formatted())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What one flush did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Flushed {
    pub sent: Vec<Sent>,
    pub failed: Vec<Failed>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Sent {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Failed {
    pub id: i64,
    pub recipient: String,
    pub error: String,
    pub next_attempt_at: i64,
}

/// The delay before attempt number `attempts + 1`: one minute, doubling, at most an hour.
pub fn backoff(attempts: i64) -> i64 {
    FIRST_RETRY_SECS
        .saturating_mul(1 << attempts.clamp(0, 16))
        .min(MAX_RETRY_SECS)
}

/// Delivers the outbox messages that are due (all unsent ones with `now`; only the ids in
/// `only` if given). Sending happens outside any transaction.
pub fn flush(
    conn: &Connection,
    mailer: &Mailer,
    all: bool,
    only: Option<&[i64]>,
) -> Result<Flushed> {
    let now = crate::hooks::now();
    let due = if all || only.is_some() { i64::MAX } else { now };
    let mails = db::immediate(conn, |tx| db::mail::claim(tx, due, now + LEASE_SECS, only))?;
    let mut report = Flushed::default();
    for mail in mails {
        match mailer.send(&mail) {
            Ok(()) => {
                db::mail::mark_sent(conn, mail.id, crate::hooks::now())?;
                tracing::info!(id = mail.id, to = %mail.recipient, "mail sent");
                report.sent.push(Sent {
                    id: mail.id,
                    recipient: mail.recipient,
                    subject: mail.subject,
                });
            }
            Err(error) => {
                let next = crate::hooks::now() + backoff(mail.attempts);
                db::mail::mark_failed(conn, mail.id, &error, next)?;
                tracing::warn!(id = mail.id, to = %mail.recipient, %error, "mail not sent");
                report.failed.push(Failed {
                    id: mail.id,
                    recipient: mail.recipient,
                    error,
                    next_attempt_at: next,
                });
            }
        }
    }
    Ok(report)
}

/// What happened to one message right after it was queued, for the command to say.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Delivery {
    Sent { to: String, via: Destination },
    Queued { to: String, error: String },
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Sent {
                to,
                via: Destination::Spool(dir),
            } => write!(
                f,
                "mail to {to} written to {} (no SMTP host is configured)",
                dir.display()
            ),
            Delivery::Sent { to, via } => write!(f, "mail to {to} sent through {via}"),
            Delivery::Queued { to, error } => write!(
                f,
                "mail to {to} is queued and will be retried (`basphere mail flush`): {error}"
            ),
        }
    }
}

/// Tries to deliver the given outbox messages now; they stay queued if that fails.
pub fn deliver_now(conn: &Connection, config: &Config, ids: &[i64]) -> Result<Vec<Delivery>> {
    let mailer = Mailer::new(config)?;
    let report = flush(conn, &mailer, true, Some(ids))?;
    let via = mailer.destination();
    let mut out: Vec<Delivery> = report
        .sent
        .into_iter()
        .map(|s| Delivery::Sent {
            to: s.recipient,
            via: via.clone(),
        })
        .collect();
    out.extend(report.failed.into_iter().map(|f| Delivery::Queued {
        to: f.recipient,
        error: f.error,
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_at_an_hour() {
        assert_eq!(backoff(0), 60);
        assert_eq!(backoff(1), 120);
        assert_eq!(backoff(5), 1920);
        assert_eq!(backoff(6), 3600);
        assert_eq!(backoff(1000), 3600);
    }

    #[test]
    fn mail_templates_render_with_a_subject() {
        let (subject, body) = render(
            "welcome.txt",
            minijinja::context! {
                user_id => "alice",
                host => "bastion.example",
                ssh => "ssh basphere@bastion.example",
                jump => "basphere@bastion.example",
                public_url => "http://bastion.example:8080",
                fingerprint => "SHA256:x",
                key_code => "ABCD-EFGH",
            },
        )
        .unwrap();
        assert!(subject.contains("alice"), "{subject}");
        assert!(body.contains("ssh basphere@bastion.example"), "{body}");
        assert!(body.contains("key confirm ABCD-EFGH"), "{body}");
    }
}
