//! The HTML pages, rendered from `templates/web/*.html` with every value HTML-escaped.

use std::sync::OnceLock;

use minijinja::value::Value;
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};

use crate::config::Config;
use crate::db::signups::Signup;
use std::collections::BTreeMap;

use crate::ops::signup::{Form, MAX_REASON_CHARS};
use crate::output::timestamp;

pub const STYLE: &str = include_str!("../../templates/web/style.css");

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Chainable: a missing optional value (an error that is not there) is just false.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, text) in [
            (
                "layout.html",
                include_str!("../../templates/web/layout.html"),
            ),
            ("form.html", include_str!("../../templates/web/form.html")),
            (
                "status.html",
                include_str!("../../templates/web/status.html"),
            ),
            (
                "message.html",
                include_str!("../../templates/web/message.html"),
            ),
            (
                "confirm.html",
                include_str!("../../templates/web/confirm.html"),
            ),
        ] {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("templates/web/{name} parses: {e}"));
        }
        env
    })
}

fn page(config: &Config, title: &str, name: &str, ctx: Value) -> String {
    let render = || -> Result<String, minijinja::Error> {
        let body = env().get_template(name)?.render(ctx)?;
        env().get_template("layout.html")?.render(context! {
            title => title,
            host => &config.public_host(),
            body => Value::from_safe_string(body),
        })
    };
    render().unwrap_or_else(|e| {
        tracing::error!(error = %e, template = name, "cannot render page");
        "<!doctype html><title>error</title><p>Internal error.</p>".to_owned()
    })
}

pub fn form(
    config: &Config,
    form: &Form,
    csrf: &str,
    errors: &BTreeMap<&'static str, String>,
    message: Option<&str>,
) -> String {
    page(
        config,
        "Ask for an account",
        "form.html",
        context! {
            form => context! {
                user_id => &form.user_id,
                email => &form.email,
                public_key => &form.public_key,
                reason => &form.reason,
            },
            errors => errors,
            csrf => csrf,
            message => message,
            max_reason => MAX_REASON_CHARS,
        },
    )
}

pub fn status(config: &Config, s: &Signup, just_confirmed: bool) -> String {
    page(
        config,
        &format!("Account request {}", s.user_id),
        "status.html",
        context! {
            user_id => &s.user_id,
            email => &s.email,
            fingerprint => &s.fingerprint,
            algorithm => &s.algorithm,
            state => s.state.as_str(),
            created => timestamp(s.created_at),
            just_confirmed => just_confirmed,
            lifetime => crate::ops::signup::human_span(config.token_lifetime_secs()),
            ssh_target => format!("{}@{}", config.service_user, config.public_host()),
            ssh_command => config.ssh_command(),
            key_code => &s.key_code,
            key_confirmed => s.key_confirmed_at.is_some(),
        },
    )
}

pub fn message(config: &Config, title: &str, text: &str, back: bool) -> String {
    page(
        config,
        title,
        "message.html",
        context! { title => title, text => text, back => back },
    )
}

/// The page a confirmation link opens: what is being confirmed, and a button that posts
/// to `action` (the link's own path) with the CSRF field.
pub fn confirm(config: &Config, s: &Signup, action: &str, csrf: &str) -> String {
    page(
        config,
        "Confirm your email address",
        "confirm.html",
        context! {
            user_id => &s.user_id,
            email => &s.email,
            fingerprint => &s.fingerprint,
            algorithm => &s.algorithm,
            // Made of `/verify/` and a token checked to be 32 hex digits.
            action => Value::from_safe_string(action.to_owned()),
            csrf => csrf,
        },
    )
}
