//! Real servers and clients for the signup tests: `basphere serve`, an SMTP server
//! (aiosmtpd writing a Maildir), an HTTP client, and Chromium through WebDriver.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Bsp;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it returns something, for up to `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first Python that has aiosmtpd: `python3` on PATH, or Debian's own
/// (`python3-aiosmtpd`) when PATH holds another Python first (pyenv, a venv).
pub fn python_with_aiosmtpd() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Why a test that needs aiosmtpd cannot run here, if it cannot.
pub fn aiosmtpd_missing() -> Option<String> {
    python_with_aiosmtpd().is_none().then(|| {
        "aiosmtpd is not installed (Debian package python3-aiosmtpd, or pip install aiosmtpd)"
            .to_owned()
    })
}

#[macro_export]
macro_rules! require_aiosmtpd {
    () => {
        if let Some(why) = support::aiosmtpd_missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A real SMTP server on 127.0.0.1 that stores every message it accepts in a Maildir.
pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope recipients (aiosmtpd's `X-RcptTo`).
    pub rcpt_to: String,
    pub to: String,
    pub from: String,
    pub subject: String,
    pub body: String,
    pub raw: String,
}

impl Smtp {
    pub fn start(dir: &Path) -> Smtp {
        let mut smtp = Smtp {
            port: free_port(),
            maildir: dir.join("maildir"),
            child: None,
        };
        smtp.restart();
        smtp
    }

    /// Starts the server again on the same port, after `stop`.
    pub fn restart(&mut self) {
        let python = python_with_aiosmtpd().expect("checked by require_aiosmtpd!");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd");
        self.child = Some(child);
        wait_for_port(self.port, "aiosmtpd");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn messages(&self) -> Vec<Received> {
        let mut all = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort_by_key(|p| arrival(p));
            for path in paths {
                let raw = std::fs::read_to_string(&path).unwrap();
                all.push(parse(&raw));
            }
        }
        all
    }

    /// Waits for `n` messages in all, in the order they arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(20, &format!("{n} mail(s) at the SMTP server"), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }

    /// Configures `bsp` to send through this server, without TLS.
    pub fn configure(&self, bsp: &mut Bsp) {
        bsp.set_env("BASPHERE_SMTP_HOST", "127.0.0.1");
        bsp.set_env("BASPHERE_SMTP_PORT", &self.port.to_string());
        bsp.set_env("BASPHERE_SMTP_SECURITY", "none");
        bsp.set_env("BASPHERE_SMTP_FROM", "basphere@bastion.test");
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Arrival order from a Maildir name, `SECS.MUSECSPPIDQN.HOST`: numbers compared as
/// numbers, since the microseconds are not zero-padded (names compared as text put
/// `M99999` after `M100000` in the same second).
fn arrival(path: &Path) -> (u64, u64, u64, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let number = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    let secs = number(&name);
    let usecs = name.split_once(".M").map_or(0, |(_, rest)| number(rest));
    let counter = name.split_once('Q').map_or(0, |(_, rest)| number(rest));
    (secs, usecs, counter, name)
}

fn parse(raw: &str) -> Received {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
        quoted_printable(body)
    } else {
        body.to_owned()
    };
    Received {
        rcpt_to: header("X-RcptTo"),
        to: header("To"),
        from: header("From"),
        subject: header("Subject"),
        body,
        raw: raw.clone(),
    }
}

/// Decodes a quoted-printable body (RFC 2045): soft line breaks and `=XX` escapes.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first `http…` link in `text` whose path starts with `path`, e.g. "/verify/".
pub fn link(text: &str, path: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(path))
        .unwrap_or_else(|| panic!("no {path} link in:\n{text}"))
        .to_owned()
}

/// `basphere serve --web 127.0.0.1:0`, stopped when dropped.
pub struct Server {
    pub base: String,
    child: Child,
}

impl Server {
    /// Starts on a free port, with `public_url` pointing at it so mailed links work.
    pub fn start(bsp: &mut Bsp) -> Server {
        let port = free_port();
        bsp.set_env("BASPHERE_PUBLIC_URL", &format!("http://127.0.0.1:{port}"));
        Server::spawn(bsp, &format!("127.0.0.1:{port}"))
    }

    /// Starts like `start`, its log (stderr) written to `log`.
    pub fn start_logging_to(bsp: &mut Bsp, log: &Path) -> Server {
        let port = free_port();
        bsp.set_env("BASPHERE_PUBLIC_URL", &format!("http://127.0.0.1:{port}"));
        let file = std::fs::File::create(log).unwrap();
        Server::spawn_with(bsp, &format!("127.0.0.1:{port}"), file.into())
    }

    fn spawn(bsp: &Bsp, addr: &str) -> Server {
        Server::spawn_with(bsp, addr, Stdio::inherit())
    }

    fn spawn_with(bsp: &Bsp, addr: &str, stderr: Stdio) -> Server {
        let mut child = bsp
            .command(&["serve", "--web", addr])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let base = first
            .trim()
            .strip_prefix("web: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {first:?}"))
            .to_owned();
        Server { base, child }
    }

    /// Starts on `127.0.0.1:0` and reads the address the kernel picked from stdout.
    pub fn start_any(bsp: &Bsp) -> Server {
        Server::spawn(bsp, "127.0.0.1:0")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer, whatever its status.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of the hidden CSRF field of the form in this page.
    pub fn csrf_field(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a csrf field") + marker.len();
        self.body[start..start + 64].to_owned()
    }

    /// The `name=value` part of the CSRF cookie this answer sets.
    pub fn csrf_cookie(&self) -> Option<String> {
        self.header("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_owned)
    }
}

/// A small HTTP client that follows no redirects and keeps no cookies of its own.
pub struct Http {
    agent: ureq::Agent,
    pub cookie: Option<String>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(30))
                .build(),
            cookie: None,
        }
    }

    fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("HTTP request failed: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .flat_map(|n| {
                resp.all(&n)
                    .into_iter()
                    .map(|v| (n.clone(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let body = resp.into_string().unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn get(&mut self, url: &str) -> Reply {
        let mut req = self.agent.get(url);
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let reply = Self::reply(req.call());
        if let Some(c) = reply.csrf_cookie() {
            self.cookie = Some(c);
        }
        reply
    }

    pub fn post(&mut self, url: &str, fields: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(url);
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        Self::reply(req.send_form(fields))
    }

    pub fn post_raw(&mut self, url: &str, body: &[u8]) -> Reply {
        let mut req = self
            .agent
            .post(url)
            .set("Content-Type", "application/x-www-form-urlencoded");
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        Self::reply(req.send_bytes(body))
    }

    /// Loads the form (taking its cookie) and posts `fields` with a valid CSRF token.
    pub fn signup(&mut self, server: &Server, fields: &[(&str, &str)]) -> Reply {
        let form = self.get(&server.url("/"));
        assert_eq!(form.status, 200);
        let csrf = form.csrf_field();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(&server.url("/signup"), &all)
    }
}

/// Why Chromium tests cannot run here, if they cannot.
pub fn chromium_missing() -> Option<String> {
    for bin in ["chromium", "chromedriver"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "`{bin}` is not installed (Debian packages chromium and chromium-driver)"
            ));
        }
    }
    None
}

/// Headless Chromium driven through chromedriver's WebDriver HTTP interface.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        wait_for_port(port, "chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1024,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = serde_json::json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
            }}
        });
        let resp: serde_json::Value = agent
            .post(&format!("{base}/session"))
            .send_json(caps)
            .expect("a WebDriver session")
            .into_json()
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        Browser {
            driver,
            base,
            session,
            agent,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.agent.request(method, &url);
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        let v: serde_json::Value = resp.into_json().unwrap();
        if let Some(err) = v["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {err}: {}",
                v["value"]["message"]
            );
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    /// Waits until the page address contains `part` (a click may return before navigating).
    pub fn wait_for_url(&self, part: &str) -> String {
        eventually(20, &format!("a page at {part}"), || {
            let url = self.url();
            url.contains(part).then_some(url)
        })
    }

    /// Waits until an element matching `css` is on the page.
    pub fn wait_for(&self, css: &str) {
        eventually(20, &format!("an element {css}"), || {
            self.has(css).then_some(())
        });
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(serde_json::json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|id| id.as_str())
            .expect("an element id")
            .to_owned()
    }

    pub fn has(&self, css: &str) -> bool {
        let v = self.call(
            "POST",
            "/elements",
            Some(serde_json::json!({ "using": "css selector", "value": css })),
        );
        !v.as_array().unwrap().is_empty()
    }

    pub fn clear(&self, css: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/clear"),
            Some(serde_json::json!({})),
        );
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(serde_json::json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/click"),
            Some(serde_json::json!({})),
        );
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn value(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let data = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(&format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
