//! The russh adapter: each callback answers at once and hands real work to `session`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use super::session::{self, Identity, Lookup};
use super::Shared;

pub struct Server {
    pub shared: Arc<Shared>,
}

impl russh::server::Server for Server {
    type Handler = Handler;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Handler {
        Handler {
            shared: self.shared.clone(),
            peer,
            identity: None,
            stdin: HashMap::new(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(%error, "ssh connection ended with an error");
    }
}

pub struct Handler {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    identity: Option<Identity>,
    /// Where channel data goes: the stdin of the command running on that channel.
    stdin: HashMap<ChannelId, mpsc::Sender<Vec<u8>>>,
}

impl Handler {
    /// Starts `line` (or the welcome, for `None`) on `channel`, once per channel.
    fn start(&mut self, channel: ChannelId, line: Option<String>, session: &mut Session) {
        let Some(identity) = self.identity.clone() else {
            let _ = session.channel_failure(channel);
            return;
        };
        if self.stdin.contains_key(&channel) {
            let _ = session.channel_failure(channel);
            return;
        }
        let _ = session.channel_success(channel);
        let (tx, rx) = mpsc::channel();
        self.stdin.insert(channel, tx);
        session::spawn(
            self.shared.clone(),
            identity,
            line,
            session.handle(),
            channel,
            rx,
        );
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if user != self.shared.config.service_user.value {
            tracing::info!(peer = ?self.peer, login = user, "ssh login name refused");
            return Ok(Auth::reject());
        }
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        let Ok(openssh) = key.public_key.to_openssh() else {
            return Ok(Auth::reject());
        };
        let blob = openssh.split_whitespace().nth(1).unwrap_or("").to_owned();
        let shared = self.shared.clone();
        let fp = fingerprint.clone();
        let found = tokio::task::spawn_blocking(move || session::lookup(&shared, &fp, &blob)).await;
        let identity = match found {
            Ok(Ok(Lookup::User(user))) => Identity::Known { user, fingerprint },
            Ok(Ok(Lookup::Unknown)) => Identity::Unknown { fingerprint },
            Ok(Ok(Lookup::Refused)) => {
                tracing::info!(peer = ?self.peer, %fingerprint, "ssh key refused: disabled user");
                return Ok(Auth::reject());
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "ssh key lookup failed");
                return Ok(Auth::reject());
            }
            Err(e) => {
                tracing::error!(error = %e, "ssh key lookup panicked");
                return Ok(Auth::reject());
            }
        };
        tracing::info!(peer = ?self.peer, identity = ?identity, "ssh authenticated");
        self.identity = Some(identity);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The channel object is dropped: data arrives through `data` below, and an
        // unread channel would fill its buffer and stall the connection.
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(peer = ?self.peer, host, port, "ssh forwarding refused: not supported yet");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Some(line), session);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, None, session);
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.stdin.get(&channel) {
            let _ = tx.send(data.to_vec());
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the sender is the command's end of input; the entry stays so the
        // channel cannot start a second command.
        if let Some(tx) = self.stdin.get_mut(&channel) {
            *tx = mpsc::channel().0;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.stdin.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No terminal sessions yet: output stays plain.
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }
}
