//! Forwarding through the bastion (direct-tcpip): where to, by `ops::forward`'s rule,
//! then bytes both ways between the SSH channel and the VM's port 22.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};

use super::limits::Slot;
use super::Shared;
use crate::context::Binding;
use crate::validate::quoted;

/// How long forwarding waits for a VM's SSH port to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Refused forwards one connection may ask for before it is closed.
pub const MAX_REFUSED: u32 = 10;

/// Who asked to be forwarded where.
pub struct Request {
    pub peer: SocketAddr,
    pub binding: Binding,
    pub host: String,
    pub port: u32,
    /// The connection's count of refused forwards, and how to end it.
    pub refused: Arc<std::sync::atomic::AtomicU32>,
    pub hangup: Arc<tokio::sync::Notify>,
}

/// Counts one refused forward; the tenth ends the connection.
pub fn count_refusal(
    refused: &std::sync::atomic::AtomicU32,
    hangup: &tokio::sync::Notify,
    peer: SocketAddr,
) {
    let n = refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if n == MAX_REFUSED {
        tracing::warn!(%peer, refused = n, "ssh connection closed: too many refused forwards");
        hangup.notify_one();
    }
}

/// Looks the target up, connects, answers the channel open, and relays until either
/// side closes. Every refusal is logged with its reason.
pub async fn run(
    shared: Arc<Shared>,
    request: Request,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    slot: Slot,
) {
    let Request {
        peer,
        binding,
        host,
        port,
        refused,
        hangup,
    } = request;
    let user = binding.user.clone();
    let target = {
        let (shared, host) = (shared.clone(), host.clone());
        tokio::task::spawn_blocking(move || target(&shared, &binding, &host, port)).await
    };
    let target = match target {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => {
            tracing::warn!(%peer, user, host = quoted(&host).as_str(), port, reason = %e, "ssh forwarding refused");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            count_refusal(&refused, &hangup, peer);
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "forwarding lookup panicked");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    let stream =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await;
    let mut stream = match stream {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(%peer, user, %target, error = %e, "ssh forwarding: cannot connect");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, user, %target, "ssh forwarding: connection timed out");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    tracing::info!(%peer, user, host = quoted(&host).as_str(), %target, "ssh forwarding");
    reply.accept().await;
    let mut channel = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut channel, &mut stream).await;
    drop(slot);
}

/// Where the tenant `binding` names may forward `host:port` to, looked up on the shared
/// connection.
fn target(
    shared: &Shared,
    binding: &Binding,
    host: &str,
    port: u32,
) -> crate::error::Result<std::net::SocketAddrV4> {
    let db = shared.db.lock().unwrap_or_else(|e| e.into_inner());
    crate::ops::forward::target(&db, binding, host, port)
}
