//! The web front door: the signup form, confirmation links and status pages (axum).
//!
//! Handlers are thin adapters: they check what only HTTP knows (size, CSRF token,
//! per-address rate, honeypot) and call `ops::signup` on a blocking thread.

pub mod guard;
pub mod pages;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use rusqlite::Connection;
use tokio::sync::Notify;

use crate::config::{Config, Live};
use crate::db;
use crate::error::{Error, Result};
use crate::ops::signup::{self, Form, Verified};
use guard::{Csrf, Limiter, CSRF_COOKIE};

/// The largest form body accepted; a key is at most 16 KiB and a reason 1000 characters.
pub const MAX_BODY: usize = 64 * 1024;

pub struct AppState {
    config: Arc<Live>,
    db: Mutex<Connection>,
    csrf: Csrf,
    per_ip: Limiter,
    /// Tells `serve`'s job worker that mail was queued, so it goes out at once.
    mail_wakeup: Arc<Notify>,
    secure_cookie: bool,
}

impl AppState {
    /// The rate limit and cookie settings are those of `live` now; a reload changes what
    /// the pages and mail see. `mail_wakeup` is notified whenever a page queues mail.
    pub fn new(live: Arc<Live>, mail_wakeup: Arc<Notify>) -> Result<Arc<AppState>> {
        let config = live.get();
        let db = db::open(&config.db_path())?;
        let csrf = Csrf::load(&config.data_dir)?;
        let per_ip = Limiter::new(
            config.signup_per_ip_per_hour.max(1),
            Duration::from_secs(3600),
        );
        Ok(Arc::new(AppState {
            secure_cookie: config.public_url().starts_with("https://"),
            config: live,
            db: Mutex::new(db),
            csrf,
            per_ip,
            mail_wakeup,
        }))
    }

    /// Runs `f` with the database on a blocking thread.
    async fn with_db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection, &Config) -> Result<T> + Send + 'static,
    ) -> Result<T, Failure> {
        let state = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let conn = state.db.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn, &state.config.get())
        })
        .await;
        joined
            .map_err(Error::from)
            .and_then(|r| r)
            .map_err(|e| self.failure(e))
    }

    fn failure(&self, error: Error) -> Failure {
        let status = match &error {
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure {
            config: self.config.get(),
            error,
            status,
        }
    }
}

/// A request that failed, answered as a page: every handler's errors render here.
struct Failure {
    config: Arc<Config>,
    error: Error,
    status: StatusCode,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (title, text, back) = match (self.status, &self.error) {
            (StatusCode::TOO_MANY_REQUESTS, e) => ("Too many requests", e.to_string(), false),
            (StatusCode::PAYLOAD_TOO_LARGE, e) => ("Too large", e.to_string(), true),
            (StatusCode::BAD_REQUEST, e) => ("Bad request", e.to_string(), true),
            (_, e) => {
                tracing::error!(error = %e.report(), "request failed");
                let text = "Something went wrong on our side. Please try again in a few minutes.";
                ("Something went wrong", text.to_owned(), true)
            }
        };
        let page = pages::message(&self.config, title, &text, back);
        let mut res = html(self.status, page);
        if let Error::RateLimited {
            retry_after: Some(wait),
            ..
        } = &self.error
        {
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(form_page))
        .route("/signup", post(submit).get(|| async { Redirect::to("/") }))
        .route("/verify/{token}", get(verify_page).post(verify))
        .route("/status/{token}", get(status))
        .route("/healthz", get(healthz))
        .route("/style.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(
            |mut res: Response| async move {
                guard::security_headers(res.headers_mut());
                res
            },
        ))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// One debug line per request, naming the route, never the path: paths carry tokens.
async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("(no route)".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, route, status, elapsed = ?started.elapsed(), "web request");
    response
}

/// Connections the web server keeps open at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 256;
/// A client gets this long to send a request's headers...
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and this long for the whole request, body included, and its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until `shutdown` completes. Each connection is HTTP/1.1 with a deadline for its headers and one for each request, and
/// at most `MAX_CONNECTIONS` are open: a client that trickles bytes holds nothing long.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = router(state);
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = open.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a web connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(service);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "web connection ended with an error");
            }
            drop(permit);
        });
    }
    // Requests in flight finish, within their own deadline.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}

/// Every request, its body read included, has `REQUEST_TIMEOUT` to be answered.
async fn deadline(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timeout\n").into_response(),
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

fn message(state: &AppState, status: StatusCode, title: &str, text: &str, back: bool) -> Response {
    html(
        status,
        pages::message(&state.config.get(), title, text, back),
    )
}

/// The visitor's address, as rate limits and the audit log count it: behind a trusted
/// reverse proxy, the client the proxy names.
fn client_addr(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> String {
    let trusted = &state.config.get().web_trusted_proxies;
    guard::client_addr(peer.ip(), headers, trusted).to_string()
}

/// The CSRF nonce of this browser, or a new one with the cookie that sets it.
fn nonce(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(n) = guard::cookie(headers, CSRF_COOKIE).filter(|n| guard::valid_nonce(n)) {
        return (n.to_owned(), None);
    }
    let n = Csrf::new_nonce();
    let secure = if state.secure_cookie { "; Secure" } else { "" };
    let cookie = format!("{CSRF_COOKIE}={n}; Path=/; HttpOnly; SameSite=Strict{secure}");
    (n, HeaderValue::from_str(&cookie).ok())
}

fn form_response(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    form: &Form,
    errors: &BTreeMap<&'static str, String>,
    message: Option<&str>,
) -> Response {
    let (nonce, set_cookie) = nonce(state, headers);
    let body = pages::form(
        &state.config.get(),
        form,
        &state.csrf.field(&nonce),
        errors,
        message,
    );
    let mut res = html(status, body);
    if let Some(c) = set_cookie {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

async fn form_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    form_response(
        &state,
        &headers,
        StatusCode::OK,
        &Form::default(),
        &BTreeMap::new(),
        None,
    )
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Posted {
    #[serde(flatten)]
    form: Form,
    csrf: String,
    website: String,
}

async fn submit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let unreadable = || state.failure(Error::invalid("The form could not be read."));
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let text = format!(
                "The form was larger than {} KiB. An SSH public key is one line of a few hundred characters; paste only the `.pub` file.",
                MAX_BODY / 1024
            );
            let mut failure = state.failure(Error::invalid(text));
            failure.status = StatusCode::PAYLOAD_TOO_LARGE;
            return Err(failure);
        }
        Err(_) => return Err(unreadable()),
    };
    let posted = serde_urlencoded::from_bytes::<Posted>(&body).map_err(|_| unreadable())?;
    let csrf_ok = guard::cookie(&headers, CSRF_COOKIE)
        .is_some_and(|nonce| state.csrf.check(nonce, &posted.csrf));
    if !csrf_ok {
        // Before the rate limit: a forged post must not use up a visitor's allowance.
        return Ok(form_response(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            &posted.form,
            &BTreeMap::new(),
            Some("This form expired or your browser did not send its cookie. Check what you typed and send it again."),
        ));
    }
    let ip = client_addr(&state, peer, &headers);
    if let Err(wait) = state.per_ip.hit(&ip) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let message = format!(
            "Too many account requests came from your address in the last hour. Please try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        let retry_after = Some(wait);
        return Err(state.failure(Error::RateLimited {
            message,
            retry_after,
        }));
    }
    if !posted.website.is_empty() {
        // A bot filled the hidden field: answer as if it worked, store nothing.
        tracing::info!(%ip, "honeypot field filled; request dropped");
        return Ok(message(
            &state,
            StatusCode::OK,
            "Check your mail",
            "We sent you a mail with a link to confirm your address.",
            false,
        ));
    }
    let form = posted.form.clone();
    let created = state
        .with_db(move |conn, config| Ok(signup::create(conn, config, &form, &ip)))
        .await?;
    match created {
        Ok(c) => {
            state.mail_wakeup.notify_one();
            Ok(Redirect::to(&format!("/status/{}", c.status_token.expose())).into_response())
        }
        Err(Error::Fields(errors)) => Ok(form_response(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            &posted.form,
            &errors,
            Some("Please correct the fields marked below."),
        )),
        Err(e) => Err(state.failure(e)),
    }
}

/// The page for what a confirmation link leads to: a button while it is open, the
/// status after confirming, or why it no longer works.
fn link_page(state: &AppState, headers: &HeaderMap, token: &str, outcome: Verified) -> Response {
    match outcome {
        Verified::Open(s) => {
            let (nonce, set_cookie) = nonce(state, headers);
            let action = format!("/verify/{token}");
            let csrf = state.csrf.field(&nonce);
            let body = pages::confirm(&state.config.get(), &s, &action, &csrf);
            let mut res = html(StatusCode::OK, body);
            if let Some(c) = set_cookie {
                res.headers_mut().insert(header::SET_COOKIE, c);
            }
            res
        }
        Verified::Confirmed(s) => {
            state.mail_wakeup.notify_one();
            html(StatusCode::OK, pages::status(&state.config.get(), &s, true))
        }
        Verified::AlreadyDone => message(
            state,
            StatusCode::OK,
            "Already confirmed",
            "This link was already used. The status link in the same mail shows where your request stands.",
            false,
        ),
        Verified::Expired => message(
            state,
            StatusCode::GONE,
            "Link expired",
            "This confirmation link has expired. Please ask for the account again.",
            true,
        ),
        Verified::Unknown => message(
            state,
            StatusCode::NOT_FOUND,
            "Unknown link",
            "This confirmation link is not valid. Check that the whole link was copied.",
            true,
        ),
    }
}

/// `GET /verify/TOKEN`, the mailed link: a page with a button that confirms. Opening it
/// changes nothing, since mail scanners open every link.
async fn verify_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let lookup = token.clone();
    let outcome = state
        .with_db(move |conn, _| signup::look_up_link(conn, &lookup))
        .await?;
    Ok(link_page(&state, &headers, &token, outcome))
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Confirmation {
    csrf: String,
}

/// `POST /verify/TOKEN`, the button of that page: confirms, with the form's CSRF check.
async fn verify(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let posted = body
        .ok()
        .and_then(|b| serde_urlencoded::from_bytes::<Confirmation>(&b).ok())
        .unwrap_or_default();
    let csrf_ok = guard::cookie(&headers, CSRF_COOKIE)
        .is_some_and(|nonce| state.csrf.check(nonce, &posted.csrf));
    if !csrf_ok {
        return Ok(message(
            &state,
            StatusCode::FORBIDDEN,
            "Please try again",
            "This page expired or your browser did not send its cookie. Open the link in the mail again and press the button.",
            false,
        ));
    }
    let ip = client_addr(&state, peer, &headers);
    let confirming = token.clone();
    let outcome = state
        .with_db(move |conn, config| signup::verify(conn, config, &confirming, &ip))
        .await?;
    Ok(link_page(&state, &headers, &token, outcome))
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let found = state
        .with_db(move |conn, _| signup::status(conn, &token))
        .await;
    Ok(match found? {
        Some(s) => html(
            StatusCode::OK,
            pages::status(&state.config.get(), &s, false),
        ),
        None => message(
            &state,
            StatusCode::NOT_FOUND,
            "Unknown request",
            "No account request has this address. Check that the whole link was copied.",
            true,
        ),
    })
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let ok = state
        .with_db(|conn, _| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
        .is_ok();
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
    }
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::STYLE,
    )
        .into_response()
}

async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    message(
        &state,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
        true,
    )
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::config::Overrides;
    use crate::testing::{any_bytes, any_text, config, ed25519_key_line, key_line_like, text_near};
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::TestRunner;

    const FIELDS: [&str; 4] = ["user_id", "email", "public_key", "reason"];

    /// A body as browsers and bots send them: fields, separators, escapes, any bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let fragment = select(vec![
            "user_id=",
            "email=",
            "public_key=",
            "reason=",
            "csrf=",
            "website=",
            "&",
            "=",
            "+",
            "%",
            "%2",
            "%41",
            "%C3%A9",
            "%FF",
            "%00",
            ";",
            "user_id[]=",
        ]);
        let piece = prop_oneof![
            2 => fragment.prop_map(|f| f.as_bytes().to_vec()),
            1 => any_bytes(6),
        ];
        prop_oneof![
            any_bytes(200),
            proptest::collection::vec(piece, 0..20).prop_map(|p| p.concat())
        ]
    }

    /// A form as people fill it in: each field right, nearly right, or anything.
    fn form() -> impl Strategy<Value = Form> {
        let user_id = prop_oneof![text_near("abcxyz019- _.A", 34), "[a-z][a-z0-9-]{2,20}"];
        let email = prop_oneof![
            text_near("ab1.@-+ é", 30),
            ("[a-z0-9.+-]{1,10}", "[a-z0-9-]{1,10}").prop_map(|(l, d)| format!("{l}@{d}.example")),
        ];
        let key = prop_oneof![
            key_line_like(),
            ed25519_key_line().prop_map(|k| format!(" {k}\n"))
        ];
        let reason = prop_oneof![any_text(40), any_text(1010), Just(" \t".to_owned())];
        (user_id, email, key, reason).prop_map(|(user_id, email, public_key, reason)| Form {
            user_id,
            email,
            public_key,
            reason,
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any body is read as the signup form or refused as unreadable, never a panic.
        #[test]
        fn any_body_is_read_or_refused(body in body()) {
            let _ = serde_urlencoded::from_bytes::<Posted>(&body);
        }

        /// Fields a browser encodes, whatever text they hold, decode to exactly that text.
        #[test]
        fn encoded_fields_decode_exactly(values in proptest::array::uniform6(any_text(30))) {
            let names = FIELDS.iter().chain(&["csrf", "website"]);
            let pairs: Vec<(&str, &str)> =
                names.zip(&values).map(|(n, v)| (*n, v.as_str())).collect();
            let body = serde_urlencoded::to_string(&pairs).unwrap();
            let posted = serde_urlencoded::from_bytes::<Posted>(body.as_bytes()).unwrap();
            let f = &posted.form;
            let got = [&f.user_id, &f.email, &f.public_key, &f.reason];
            let got = got.into_iter().chain([&posted.csrf, &posted.website]);
            prop_assert_eq!(got.collect::<Vec<_>>(), values.iter().collect::<Vec<_>>());
        }
    }

    /// Whatever the form holds, it is stored or each wrong field gets a message; what is
    /// stored is what was typed, trimmed, and the key in its checked form.
    #[test]
    fn signup_forms_are_stored_as_typed_or_refused_field_by_field() {
        let env = BTreeMap::from([("BASPHERE_CONFIG".to_owned(), "/dev/null".to_owned())]);
        let config = Config::load(&Overrides::default(), &env).unwrap();
        let mut runner = TestRunner::new(crate::testing::config());
        runner
            .run(&form(), |form| {
                let conn = Connection::open_in_memory().unwrap();
                db::migrate(&conn).unwrap();
                let key = form.public_key.trim().parse::<crate::validate::PublicKey>();
                let reason = form.reason.trim();
                let valid = form
                    .user_id
                    .trim()
                    .parse::<crate::validate::UserId>()
                    .is_ok()
                    && crate::validate::email(form.email.trim()).is_ok()
                    && key.is_ok()
                    && !reason.is_empty()
                    && reason.chars().count() <= signup::MAX_REASON_CHARS
                    && !crate::validate::has_format_chars(reason);
                match signup::create(&conn, &config, &form, "192.0.2.1") {
                    Ok(created) => {
                        prop_assert!(valid, "{form:?} stored");
                        let s = created.signup;
                        prop_assert_eq!(s.user_id.as_str(), form.user_id.trim());
                        prop_assert_eq!(s.email.as_str(), form.email.trim());
                        prop_assert_eq!(s.reason.as_str(), reason);
                        prop_assert_eq!(s.public_key, key.unwrap().openssh);
                    }
                    Err(Error::Fields(errors)) => {
                        prop_assert!(!valid, "{form:?} refused");
                        prop_assert!(!errors.is_empty());
                        for (field, message) in errors {
                            prop_assert!(FIELDS.contains(&field) && !message.is_empty());
                        }
                    }
                    Err(e) => prop_assert!(false, "{form:?}: {e}"),
                }
                Ok(())
            })
            .unwrap();
    }
}
