//! The embedded server's limits on connections from one address and on sessions of one
//! user. Authentication attempts and idle connections are limited by russh itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// New connections per source: at most `per_minute` in a sliding minute, and at most
/// `burst` at once, the allowance coming back at `per_minute` / 60 a second (a token
/// bucket), so a scanner gets a handful at once and then one a second.
pub struct ConnectionRate {
    per_minute: usize,
    burst: f64,
    seen: Mutex<HashMap<IpAddr, Recent>>,
}

#[derive(Default)]
struct Recent {
    times: VecDeque<Instant>,
    /// Connections allowed now, and when that was worked out.
    allowance: f64,
    at: Option<Instant>,
}

impl ConnectionRate {
    pub fn new(per_minute: u32, burst: u32) -> ConnectionRate {
        ConnectionRate {
            per_minute: per_minute as usize,
            burst: f64::from(burst.max(1)),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `ip` made at `now`; false when it is one too many.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Forget sources that have been quiet for a minute, so the map stays small.
        if seen.len() > 1024 {
            seen.retain(|_, r| r.times.back().is_some_and(|t| now - *t < WINDOW));
        }
        let recent = seen.entry(source(ip)).or_default();
        while recent.times.front().is_some_and(|t| now - *t >= WINDOW) {
            recent.times.pop_front();
        }
        let refill = match recent.at {
            Some(at) => {
                now.saturating_duration_since(at).as_secs_f64() * self.per_minute as f64 / 60.0
            }
            None => self.burst,
        };
        recent.allowance = (recent.allowance + refill).min(self.burst);
        recent.at = Some(now);
        if recent.times.len() >= self.per_minute || recent.allowance < 1.0 {
            return false;
        }
        recent.allowance -= 1.0;
        recent.times.push_back(now);
        true
    }
}

/// Warnings a flood could repeat without end (refused connections, accept errors): at
/// most `max` a minute are written, with how many were left out since the last one.
pub struct Quiet {
    max: u32,
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl Quiet {
    pub fn new(max: u32) -> Quiet {
        Quiet {
            max,
            state: Mutex::new((None, 0, 0)),
        }
    }

    /// `Some(left out so far)` when a warning may be written at `now`.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (start, written, left_out) = &mut *state;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= WINDOW) {
            *start = Some(now);
            *written = 0;
        }
        if *written >= self.max {
            *left_out += 1;
            return None;
        }
        *written += 1;
        Some(std::mem::take(left_out))
    }
}

/// The source a limit counts: the address, or for IPv6 its /64, which one host or
/// one customer of a provider usually holds whole.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked above")),
        v4 => v4,
    }
}

/// Connections that are open, and those not yet authenticated, overall and per
/// source (OpenSSH's `MaxStartups` and `PerSourceMaxStartups`).
pub struct Admission {
    max_connections: usize,
    max_startups: usize,
    per_source: usize,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    open: usize,
    startups: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    Connections,
    Startups,
    Source,
}

/// An open connection; it counts as a startup until `authenticated`.
pub struct Admitted {
    source: IpAddr,
    startup: bool,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub fn new(max_connections: u32, max_startups: u32, per_source: u32) -> Admission {
        Admission {
            max_connections: max_connections as usize,
            max_startups: max_startups as usize,
            per_source: per_source as usize,
            counts: Arc::default(),
        }
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Full> {
        let source = source(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.open >= self.max_connections {
            return Err(Full::Connections);
        }
        if counts.startups >= self.max_startups {
            return Err(Full::Startups);
        }
        let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.per_source {
            return Err(Full::Source);
        }
        counts.open += 1;
        counts.startups += 1;
        counts.by_source.insert(source, from_source + 1);
        Ok(Admitted {
            source,
            startup: true,
            counts: self.counts.clone(),
        })
    }
}

impl Admitted {
    /// The connection authenticated: it no longer counts against the startup limits.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.startup) {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            counts.end_startup(self.source);
        }
    }
}

impl Counts {
    fn end_startup(&mut self, source: IpAddr) {
        self.startups -= 1;
        if let Some(n) = self.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.open -= 1;
        if self.startup {
            counts.end_startup(self.source);
        }
    }
}

/// Sessions (commands, shells and forwarded connections) running per user.
/// Sessions (commands, shells and forwarded connections) running, per user and in all.
#[derive(Clone)]
pub struct Sessions {
    max: usize,
    max_total: usize,
    running: Arc<Mutex<Running>>,
}

#[derive(Default)]
struct Running {
    total: usize,
    by_user: HashMap<String, usize>,
}

/// One running session; the counts drop when it does.
pub struct Slot {
    user: String,
    running: Arc<Mutex<Running>>,
}

/// Why a session may not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// The user has `max` running.
    User(usize),
    /// The server has `max_total` running.
    Server(usize),
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::User(max) => write!(f, "too many sessions: you have {max} running, the limit"),
            Busy::Server(max) => write!(
                f,
                "the server runs {max} sessions, its limit; try again soon"
            ),
        }
    }
}

impl Sessions {
    pub fn new(max: u32, max_total: u32) -> Sessions {
        Sessions {
            max: max as usize,
            max_total: max_total as usize,
            running: Arc::default(),
        }
    }

    /// Sessions running now, of every user.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// A slot for one more session of `user`, within both limits.
    pub fn open(&self, user: &str) -> Result<Slot, Busy> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.total >= self.max_total {
            return Err(Busy::Server(self.max_total));
        }
        let count = running.by_user.entry(user.to_owned()).or_default();
        if *count >= self.max {
            return Err(Busy::User(self.max));
        }
        *count += 1;
        running.total += 1;
        Ok(Slot {
            user: user.to_owned(),
            running: self.running.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.total -= 1;
        if let Some(count) = running.by_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                running.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_per_minute() {
        let rate = ConnectionRate::new(2, 10);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(rate.admit(a, t0));
        assert!(rate.admit(a, t0 + Duration::from_secs(1)));
        assert!(!rate.admit(a, t0 + Duration::from_secs(2)));
        assert!(rate.admit(b, t0 + Duration::from_secs(2)));
        // A refused connection does not count: after the first has aged out, one more.
        assert!(rate.admit(a, t0 + Duration::from_secs(60)));
        assert!(!rate.admit(a, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn warnings_are_limited_per_minute_and_say_how_many_were_left_out() {
        let quiet = Quiet::new(2);
        let t0 = Instant::now();
        assert_eq!(quiet.allow(t0), Some(0));
        assert_eq!(quiet.allow(t0), Some(0));
        assert_eq!(quiet.allow(t0), None);
        assert_eq!(quiet.allow(t0), None);
        assert_eq!(quiet.allow(t0 + Duration::from_secs(61)), Some(2));
    }

    #[test]
    fn a_burst_then_one_a_second() {
        let rate = ConnectionRate::new(60, 3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rate.admit(a, t0));
        }
        assert!(!rate.admit(a, t0 + Duration::from_millis(500)));
        assert!(rate.admit(a, t0 + Duration::from_millis(1100)));
        assert!(!rate.admit(a, t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn startups_are_capped_overall_and_per_source_until_authenticated() {
        let admission = Admission::new(4, 3, 2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let a2: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let b: IpAddr = "192.0.2.7".parse().unwrap();
        let mut first = admission.admit(a).unwrap();
        let _second = admission.admit(a2).unwrap();
        // The same /64: the third startup from it is refused.
        assert_eq!(admission.admit(a).err(), Some(Full::Source));
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Full::Startups));
        // Authenticated connections leave the startup counts, not the open count.
        first.authenticated();
        let fourth = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Full::Connections));
        drop(fourth);
        assert!(admission.admit(b).is_ok());
        assert_eq!(source("::ffff:192.0.2.7".parse().unwrap()), b);
    }

    #[test]
    fn sessions_per_user_are_given_back() {
        let sessions = Sessions::new(2, 3);
        let one = sessions.open("alice").unwrap();
        let _two = sessions.open("alice").unwrap();
        assert_eq!(sessions.open("alice").err(), Some(Busy::User(2)));
        let _three = sessions.open("bob").unwrap();
        assert_eq!(sessions.open("carol").err(), Some(Busy::Server(3)));
        drop(one);
        assert!(sessions.open("alice").is_ok());
    }
}
