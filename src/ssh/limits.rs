//! The embedded server's limits on connections from one address and on sessions of one
//! user. Authentication attempts and idle connections are limited by russh itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// New connections per address in a sliding minute.
pub struct ConnectionRate {
    per_minute: usize,
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl ConnectionRate {
    pub fn new(per_minute: u32) -> ConnectionRate {
        ConnectionRate {
            per_minute: per_minute as usize,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `ip` made at `now`; false when it is one too many.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Forget addresses that have been quiet for a minute, so the map stays small.
        if seen.len() > 1024 {
            seen.retain(|_, times| times.back().is_some_and(|t| now - *t < WINDOW));
        }
        let times = seen.entry(ip).or_default();
        while times.front().is_some_and(|t| now - *t >= WINDOW) {
            times.pop_front();
        }
        if times.len() >= self.per_minute {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// Sessions (commands, shells and forwarded connections) running per user.
#[derive(Clone)]
pub struct Sessions {
    max: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// One running session; the count drops when it does.
pub struct Slot {
    user: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl Sessions {
    pub fn new(max: u32) -> Sessions {
        Sessions {
            max: max as usize,
            running: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more session of `user`, unless they have `max` running.
    pub fn open(&self, user: &str) -> Option<Slot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(user.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            user: user.to_owned(),
            running: self.running.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_per_minute() {
        let rate = ConnectionRate::new(2);
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
    fn sessions_per_user_are_given_back() {
        let sessions = Sessions::new(2);
        let one = sessions.open("alice").unwrap();
        let _two = sessions.open("alice").unwrap();
        assert!(sessions.open("alice").is_none());
        assert!(sessions.open("bob").is_some());
        drop(one);
        assert!(sessions.open("alice").is_some());
    }
}
