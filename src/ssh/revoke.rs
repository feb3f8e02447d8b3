//! Revocation that bites: a connection whose key was removed, or whose user was disabled
//! or removed, is closed within seconds, whichever process made the change. Every
//! command and forward checks its binding too; this ends what is already open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use crate::context::Binding;

/// How often the server looks for changes to keys and users.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long a revoked connection's running commands get to finish (`key remove` of the
/// connection's own key prints its answer) before the connection is closed.
const GRACE: Duration = Duration::from_secs(2);

/// One authenticated connection, as the sweep sees it.
struct Connection {
    peer: SocketAddr,
    binding: Binding,
    hangup: Arc<Notify>,
}

/// The server's authenticated connections.
#[derive(Default)]
pub struct Live {
    next: AtomicU64,
    connections: Mutex<HashMap<u64, Connection>>,
    /// A connection registered since the last sweep, which it checks whatever changed.
    joined: AtomicBool,
}

/// A connection's place in `Live`, given up when dropped.
pub struct Registered {
    live: Arc<Live>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.live.lock().remove(&self.id);
    }
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches a connection that authenticated as `binding`; `hangup` ends it.
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        binding: Binding,
        hangup: Arc<Notify>,
    ) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Connection {
            peer,
            binding,
            hangup,
        };
        self.lock().insert(id, connection);
        self.joined.store(true, Ordering::SeqCst);
        Registered {
            live: self.clone(),
            id,
        }
    }
}

/// Every `SWEEP_EVERY`, if the database changed (or a connection joined): the
/// connections whose binding no longer holds are closed after `GRACE`.
pub async fn sweep(shared: Arc<Shared>) {
    let mut seen = None;
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let checked = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || revoked(&shared, &mut seen).map(|r| (r, seen)))
                .await
        };
        let revoked = match checked {
            Ok(Ok((revoked, now_seen))) => {
                seen = now_seen;
                revoked
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "ssh: cannot check connections against their keys");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "ssh: the key check panicked");
                continue;
            }
        };
        for (connection, reason) in revoked {
            tracing::info!(
                peer = %connection.peer,
                user = connection.binding.user,
                fingerprint = connection.binding.fingerprint,
                %reason,
                "ssh connection closed: its key or user was revoked"
            );
            tokio::spawn(async move {
                tokio::time::sleep(GRACE).await;
                connection.hangup.notify_one();
            });
        }
    }
}

/// The connections to close, taken out of `Live`, each with why; none if nothing
/// changed since `seen` (SQLite's `data_version`, which moves with every commit of
/// another connection, in this process or any other).
fn revoked(
    shared: &Shared,
    seen: &mut Option<i64>,
) -> crate::error::Result<Vec<(Connection, crate::error::Error)>> {
    let db = shared.db.lock().unwrap_or_else(|e| e.into_inner());
    let version: i64 = db.pragma_query_value(None, "data_version", |r| r.get(0))?;
    let joined = shared.live.joined.swap(false, Ordering::SeqCst);
    if *seen == Some(version) && !joined {
        return Ok(Vec::new());
    }
    *seen = Some(version);
    let mut connections = shared.live.lock();
    let mut failed = Vec::new();
    for (id, connection) in connections.iter() {
        match connection.binding.check(&db) {
            Ok(_) => {}
            Err(crate::error::Error::PermissionDenied { reason }) => failed.push((*id, reason)),
            Err(e) => return Err(e),
        }
    }
    Ok(failed
        .into_iter()
        .filter_map(|(id, reason)| {
            let connection = connections.remove(&id)?;
            Some((connection, crate::error::Error::denied(reason)))
        })
        .collect())
}
