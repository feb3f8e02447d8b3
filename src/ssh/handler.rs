//! The russh adapter: each callback answers at once and hands real work to `session`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::{mpsc, Notify};

use super::forward;
use super::limits::Admitted;
use super::pty::{self, Job, Terminal};
use super::session::{self, Identity, Input};
use super::Shared;
use crate::cancel::Cancel;
use crate::ops::key::Login;

/// Chunks of client input queued for a session before the connection waits for it.
const INPUT_QUEUE: usize = 64;

pub struct Handler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    identity: Option<Identity>,
    channels: HashMap<ChannelId, ChannelState>,
    /// Session channels opened so far; an unknown key gets one.
    opened: usize,
    /// This connection's place in the admission counts.
    admitted: Admitted,
    /// Set once a key is verified, so the login deadline passes.
    authenticated: Arc<AtomicBool>,
    /// Ends the connection at once, socket and all.
    hangup: Arc<Notify>,
    /// Forwards refused on this connection.
    refused: Arc<AtomicU32>,
    /// Watched for revocation once a registered key authenticated.
    _registered: Option<super::revoke::Registered>,
}

/// A session channel: its terminal, if asked for, and the input and cancel handle of
/// what runs on it.
#[derive(Default)]
pub struct ChannelState {
    /// Taken by what runs there.
    out: Option<session::Out>,
    terminal: Option<Terminal>,
    input: Option<mpsc::Sender<Input>>,
    cancel: Option<Cancel>,
}

impl Drop for ChannelState {
    /// A command outlives neither its channel nor its connection.
    fn drop(&mut self) {
        if let Some(cancel) = &self.cancel {
            cancel.cancel();
        }
    }
}

impl Handler {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        admitted: Admitted,
        authenticated: Arc<AtomicBool>,
        hangup: Arc<Notify>,
    ) -> Handler {
        Handler {
            shared,
            peer,
            identity: None,
            channels: HashMap::new(),
            opened: 0,
            admitted,
            authenticated,
            hangup,
            refused: Arc::default(),
            _registered: None,
        }
    }

    /// Starts `line` (or the shell, for `None`) on `channel`, once per channel.
    fn start(&mut self, channel: ChannelId, line: Option<String>, session: &mut Session) {
        let (Some(identity), Some(state)) =
            (self.identity.clone(), self.channels.get_mut(&channel))
        else {
            let _ = session.channel_failure(channel);
            return;
        };
        let Some(out) = state.out.take() else {
            let _ = session.channel_failure(channel);
            return;
        };
        let _ = session.channel_success(channel);
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        state.input = Some(tx);
        let cancel = self.shared.cancel.child();
        state.cancel = Some(cancel.clone());
        let binding = match identity {
            Identity::Known(binding) => binding,
            Identity::Unknown { fingerprint } => {
                // Only the signup screen, sent without a thread; then the connection ends.
                session::greet(
                    self.shared.clone(),
                    session.handle(),
                    out,
                    fingerprint,
                    line,
                    self.hangup.clone(),
                );
                return;
            }
        };
        let user = binding.user.clone();
        let mut job = session::Job {
            binding,
            line,
            out,
            stdin: rx,
            slot: None,
            cancel,
        };
        let slot = match self.shared.sessions.open(&user) {
            Ok(slot) => slot,
            Err(busy) => {
                tracing::warn!(peer = %self.peer, user, ?busy, "ssh session refused: too many sessions");
                tokio::spawn(async move { session::refuse(&job.out, busy.to_string()).await });
                return;
            }
        };
        match state.terminal.clone() {
            Some(terminal) => {
                let pty_job = Job {
                    binding: job.binding,
                    line: job.line,
                    terminal,
                };
                pty::spawn(self.shared.clone(), pty_job, job.out, job.stdin, slot);
            }
            None => {
                job.slot = Some(slot);
                session::spawn(self.shared.clone(), job);
            }
        }
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Any key may go on to prove itself, but only for the service account.
        if user != self.shared.config().service_user {
            tracing::info!(peer = %self.peer, login = %crate::validate::quoted(user), "ssh login name refused");
            return Ok(Auth::reject());
        }
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if user != self.shared.config().service_user {
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
            Ok(Ok(Login::User(binding))) => Identity::Known(binding),
            // Let in to see the signup screen, as the key's holder proved who they are.
            // A client that holds several keys and offers an unknown one first ends up
            // here too; the screen tells it how to pick its registered key.
            Ok(Ok(Login::Unknown)) => Identity::Unknown { fingerprint },
            Ok(Ok(Login::Refused)) => {
                tracing::info!(peer = %self.peer, %fingerprint, "ssh key refused: disabled user");
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
        tracing::info!(peer = %self.peer, identity = ?identity, "ssh authenticated");
        // An unknown key stays a startup: it only sees the signup screen, then goes.
        if let Identity::Known(binding) = &identity {
            self.admitted.authenticated();
            let live = &self.shared.live;
            self._registered = Some(live.register(self.peer, binding.clone(), self.hangup.clone()));
        }
        self.authenticated.store(true, Ordering::SeqCst);
        self.identity = Some(identity);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let known = matches!(self.identity, Some(Identity::Known(_)));
        let full = match known {
            true => self.channels.len() >= self.shared.max_channels,
            false => self.opened >= 1,
        };
        if full {
            tracing::warn!(peer = %self.peer, known, "ssh channel refused: too many on this connection");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.opened += 1;
        // The reading half is dropped: data arrives through `data` below, and an unread
        // channel would fill its buffer and stall the connection.
        let id = channel.id();
        let (_, out) = channel.split();
        let mut state = ChannelState::default();
        state.out = Some(out);
        self.channels.insert(id, state);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let peer = self.peer;
        let Some(Identity::Known(binding)) = self.identity.clone() else {
            let host = crate::validate::quoted(host);
            tracing::warn!(%peer, host, port, "ssh forwarding refused: not a registered key");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            forward::count_refusal(&self.refused, &self.hangup, peer);
            return Ok(());
        };
        let Ok(slot) = self.shared.sessions.open(&binding.user) else {
            tracing::warn!(%peer, user = binding.user, port, "ssh forwarding refused: too many sessions");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            forward::count_refusal(&self.refused, &self.hangup, peer);
            return Ok(());
        };
        // The lookup and the connection run on their own task: this connection's other
        // channels go on meanwhile.
        tokio::spawn(forward::run(
            self.shared.clone(),
            forward::Request {
                peer,
                binding,
                host: host.to_owned(),
                port,
                refused: self.refused.clone(),
                hangup: self.hangup.clone(),
            },
            channel,
            reply,
            slot,
        ));
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
        // Waiting for room is flow control: this connection's input pauses until the
        // command reads it.
        if let Some(tx) = self.channels.get(&channel).and_then(|c| c.input.clone()) {
            let _ = tx.send(Input::Data(data.to_vec())).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.channels.get(&channel).and_then(|c| c.input.clone()) {
            let _ = tx.send(Input::Eof).await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the sender tells what runs there that the client is gone.
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let usable = matches!(self.identity, Some(Identity::Known(_)));
        match self.channels.get_mut(&channel) {
            Some(state) if usable && state.input.is_none() => {
                state.terminal = Some(Terminal {
                    term: terminal_name(term),
                    cols: clamp_size(col_width, 80),
                    rows: clamp_size(row_height, 24),
                });
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel) {
            let (cols, rows) = (clamp_size(col_width, 80), clamp_size(row_height, 24));
            if let Some(terminal) = &mut state.terminal {
                terminal.cols = cols;
                terminal.rows = rows;
            }
            if let Some(tx) = state.input.clone() {
                let _ = tx.send(Input::Resize { cols, rows }).await;
            }
        }
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

/// A terminal dimension from the client; 0 (unknown) or nonsense gets `default`.
fn clamp_size(value: u32, default: u16) -> u16 {
    match u16::try_from(value) {
        Ok(0) | Err(_) => default,
        Ok(v) => v.min(1000),
    }
}

/// The client's `TERM`, if it is a plain terminal name; `xterm` otherwise.
fn terminal_name(term: &str) -> String {
    let plain = !term.is_empty()
        && term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if plain {
        term.to_owned()
    } else {
        "xterm".to_owned()
    }
}
