//! The floor for `scripts/bench-ssh`: a bare russh server that lets any public key in
//! and answers an exec request with its command line, exit status 0.
//!
//!   cargo run --release --example ssh-echo -- 127.0.0.1:2222
//!
//! Prints `ssh-echo: listening on ADDR` once it accepts connections. Its russh settings
//! are the ones `basphere serve --ssh` uses (ed25519 host key, no delay on the "none"
//! probe, TCP_NODELAY), so the difference between the two is basphere's own work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::PrivateKey;
use russh::server::{Auth, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

#[tokio::main]
async fn main() {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: ssh-echo ADDR (e.g. 127.0.0.1:0)");
            std::process::exit(2);
        }
    };
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let config = russh::server::Config {
        keys: vec![PrivateKey::from(Ed25519Keypair::from_seed(&seed))],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time_initial: Some(Duration::ZERO),
        auth_rejection_time: Duration::from_millis(500),
        nodelay: true,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| {
            eprintln!("ssh-echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
    let local = listener
        .local_addr()
        .expect("a bound socket has an address");
    println!("ssh-echo: listening on {local}");
    if let Err(e) = Echo.run_on_socket(Arc::new(config), &listener).await {
        eprintln!("ssh-echo: {e}");
        std::process::exit(1);
    }
}

#[derive(Clone)]
struct Echo;

impl russh::server::Server for Echo {
    type Handler = Echo;

    fn new_client(&mut self, _peer: Option<SocketAddr>) -> Echo {
        Echo
    }
}

impl russh::server::Handler for Echo {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let mut line = data.to_vec();
        line.push(b'\n');
        session.channel_success(channel)?;
        session.data(channel, line)?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}
