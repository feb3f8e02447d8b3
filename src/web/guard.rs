//! What stands between the form and the database: CSRF tokens, rate limits, headers.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::Networks;
use crate::error::{Error, Result};
use crate::ops::signup::hex;
use crate::secret::Secret;

pub const CSRF_COOKIE: &str = "bsp_csrf";

/// Double-submit CSRF protection: a random nonce in a cookie, and in the form the HMAC of
/// that nonce under a server secret. A page on another site can make the browser send the
/// cookie, but cannot read it, and cannot compute the field without the secret.
pub struct Csrf {
    secret: Secret<[u8; 32]>,
}

impl Csrf {
    /// Reads the secret kept in the data directory, making it on first use.
    pub fn load(data_dir: &Path) -> Result<Csrf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join("web-secret");
        let mut secret = [0u8; 32];
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => secret.copy_from_slice(&bytes),
            Ok(_) => {
                return Err(Error::Corrupt(format!(
                    "`{}` is damaged; delete it and restart (open forms will need a reload)",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                rand::rngs::OsRng.fill_bytes(&mut secret);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| Error::io(format!("cannot create `{}`", path.display()), e))?;
                file.write_all(&secret)
                    .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
            }
            Err(e) => return Err(Error::io(format!("cannot read `{}`", path.display()), e)),
        }
        Ok(Csrf {
            secret: Secret::new(secret),
        })
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose()).expect("any key length");
        mac.update(b"basphere csrf v1:");
        mac
    }

    pub fn new_nonce() -> String {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex(&bytes)
    }

    /// The form field that goes with the cookie `nonce`.
    pub fn field(&self, nonce: &str) -> String {
        let mut mac = self.mac();
        mac.update(nonce.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `field` was made for the cookie `nonce`; compared in constant time.
    pub fn check(&self, nonce: &str, field: &str) -> bool {
        if !valid_nonce(nonce) || field.len() != 64 {
            return false;
        }
        let Some(bytes) = unhex(field) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(nonce.as_bytes());
        mac.verify_slice(&bytes).is_ok()
    }
}

pub fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The address a request came from. It is the TCP peer, unless the peer is one of the
/// `trusted` reverse proxies: then it is the right-most address of `X-Forwarded-For`
/// that is not itself a trusted proxy (each proxy appends the address it saw, so what
/// the client wrote stays to the left), or else `X-Real-IP`. From any other peer those
/// headers are anyone's to write and are ignored.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &Networks) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let hops: Vec<&str> = forwarded
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if !hops.is_empty() {
        // The nearest hop is at the right; stop at the first that no proxy owns.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop_addr(hop) {
                Some(ip) if trusted.contains(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage where a trusted proxy's entry should be: the chain is broken
                // here, and the last proxy that can be believed is the client.
                None => return client,
            }
        }
        return client;
    }
    let real = headers.get_all("x-real-ip").iter().next_back();
    real.and_then(|v| v.to_str().ok())
        .and_then(|v| hop_addr(v.trim()))
        .unwrap_or(peer)
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, and with a port,
/// `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn hop_addr(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

/// Sliding-window counters in memory, one per key (an address or an email).
pub struct Limiter {
    window: Duration,
    limit: u32,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(limit: u32, window: Duration) -> Limiter {
        Limiter {
            window,
            limit,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one hit for `key`; `Err(wait)` if that is over the limit.
    pub fn hit(&self, key: &str) -> std::result::Result<(), Duration> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle keys now and then so the map cannot grow without bound.
        if hits.len() > 10_000 {
            let window = self.window;
            hits.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let queue = hits.entry(key.to_owned()).or_default();
        while queue
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            queue.pop_front();
        }
        if queue.len() >= self.limit as usize {
            let wait = match queue.front() {
                Some(oldest) => self.window.saturating_sub(now.duration_since(*oldest)),
                None => self.window,
            };
            return Err(wait);
        }
        queue.push_back(now);
        Ok(())
    }
}

/// Headers on every answer: no framing, no sniffing, no scripts, no referrer (links carry
/// tokens), no caching (pages carry tokens).
pub fn security_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_field_matches_only_its_nonce_and_secret() {
        let dir = tempfile::tempdir().unwrap();
        let csrf = Csrf::load(dir.path()).unwrap();
        let nonce = Csrf::new_nonce();
        let field = csrf.field(&nonce);
        assert!(csrf.check(&nonce, &field));
        assert!(!csrf.check(&Csrf::new_nonce(), &field));
        assert!(!csrf.check(&nonce, &field[..63]));
        assert!(!csrf.check(&nonce, ""));
        // The secret survives a restart, so open forms still work.
        let again = Csrf::load(dir.path()).unwrap();
        assert!(again.check(&nonce, &field));
        let other = tempfile::tempdir().unwrap();
        assert!(!Csrf::load(other.path()).unwrap().check(&nonce, &field));
    }

    #[test]
    fn limiter_counts_per_key() {
        let l = Limiter::new(2, Duration::from_secs(3600));
        assert!(l.hit("a").is_ok());
        assert!(l.hit("a").is_ok());
        assert!(l.hit("a").is_err());
        assert!(l.hit("b").is_ok());
    }

    fn client(peer: &str, headers: &[(&str, &str)], trusted: &str) -> String {
        let mut h = HeaderMap::new();
        for (name, value) in headers {
            h.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let trusted = <Networks as crate::config::Value>::parse(trusted).unwrap();
        client_addr(peer.parse().unwrap(), &h, &trusted).to_string()
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let xff = "x-forwarded-for";
        // No proxy trusted, or a peer that is not one: the headers are ignored.
        assert_eq!(
            client("198.51.100.1", &[(xff, "192.0.2.9")], ""),
            "198.51.100.1"
        );
        let real = [("x-real-ip", "192.0.2.9")];
        assert_eq!(client("198.51.100.1", &real, "10.0.0.0/8"), "198.51.100.1");
        // Through a trusted proxy: the right-most address no proxy owns.
        let proxies = "10.0.0.0/8, 2001:db8::/32";
        assert_eq!(
            client("10.0.0.2", &[(xff, "192.0.2.9")], proxies),
            "192.0.2.9"
        );
        let chain = [(xff, "203.0.113.7, 192.0.2.9, 10.1.1.1")];
        assert_eq!(client("10.0.0.2", &chain, proxies), "192.0.2.9");
        // Several headers are one list, in order.
        let split = [(xff, "203.0.113.7"), (xff, "192.0.2.9, 2001:db8::4")];
        assert_eq!(client("10.0.0.2", &split, proxies), "192.0.2.9");
        // Ports and brackets as some proxies write them; IPv4 in IPv6 clothing.
        let ported = [(xff, "[2001:db9::1]:4711")];
        assert_eq!(client("10.0.0.2", &ported, proxies), "2001:db9::1");
        let ported = [(xff, "192.0.2.9:4711")];
        assert_eq!(client("::ffff:10.0.0.2", &ported, proxies), "192.0.2.9");
        // Only proxies in the chain: the left-most of them.
        let inner = [(xff, "10.9.9.9, 10.1.1.1")];
        assert_eq!(client("10.0.0.2", &inner, proxies), "10.9.9.9");
        // Garbage in the proxies' part: the last believable proxy.
        let broken = [(xff, "192.0.2.9, junk, 10.1.1.1")];
        assert_eq!(client("10.0.0.2", &broken, proxies), "10.1.1.1");
        // X-Real-IP when there is no X-Forwarded-For; neither: the proxy itself.
        assert_eq!(client("10.0.0.2", &real, proxies), "192.0.2.9");
        assert_eq!(client("10.0.0.2", &[], proxies), "10.0.0.2");
        assert_eq!(
            client("10.0.0.2", &[("x-real-ip", "nope")], proxies),
            "10.0.0.2"
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; bsp_csrf=abc; y=2"),
        );
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "z"), None);
    }
}
