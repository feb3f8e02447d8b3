//! Cancelling a running command: the client went away, or the server is stopping.
//!
//! Every wait checks the handle at least every 100 ms, so a cancelled command returns
//! within a second. Long operations check it only up to their point of no return and
//! then run to completion, or roll back through their undo ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a wait looks at the handle.
pub const TICK: Duration = Duration::from_millis(100);

/// A handle that one side cancels and a running command watches. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    parent: Option<Cancel>,
}

impl Cancel {
    /// A handle nobody has cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// A handle of its own that is also cancelled when this one is: one per command
    /// under one for the whole server.
    pub fn child(&self) -> Cancel {
        Cancel(Arc::new(Inner {
            cancelled: AtomicBool::new(false),
            parent: Some(self.clone()),
        }))
    }

    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
            || self.0.parent.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// `Err(Cancelled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Sleeps for `duration`, or less when cancelled meanwhile (then `Err(Cancelled)`).
    pub fn sleep(&self, duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        loop {
            self.check()?;
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(TICK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_follows_its_parent_and_a_sleep_ends_early() {
        let server = Cancel::new();
        let (one, two) = (server.child(), server.child());
        one.cancel();
        assert!(one.is_cancelled() && !two.is_cancelled() && !server.is_cancelled());
        let waiter = two.clone();
        let started = Instant::now();
        let sleeper = std::thread::spawn(move || waiter.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(150));
        server.cancel();
        assert!(matches!(sleeper.join().unwrap(), Err(Error::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(Cancel::new().sleep(Duration::from_millis(10)).is_ok());
    }
}
