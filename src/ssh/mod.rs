//! The embedded SSH server (`basphere serve --ssh ADDR`): russh on the serve runtime.
//!
//! `handler` adapts russh callbacks; `session` holds what a connection may do and runs
//! command lines on blocking threads through the [`Runner`] that `serve` passes in, so
//! this module knows nothing of the commands themselves.

mod forward;
mod handler;
mod limits;
mod pty;
mod revoke;
mod session;

use std::fs;
use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::{private::Ed25519Keypair, LineEnding};
use russh::keys::{HashAlg, PrivateKey};
use russh::{Disconnect, MethodKind, MethodSet};

use crate::cancel::Cancel;
use crate::config::{Config, Live};
use crate::context::{Binding, Caller};
use crate::error::{Error, Result};
use crate::output::Io;

/// What the server needs from the rest of basphere to run what a session asks for.
pub trait Runner: Send + Sync + 'static {
    /// Runs `line` (the welcome for `None`) for `tenant` on plain streams; the exit status.
    fn run(
        &self,
        config: &Arc<Config>,
        tenant: &Caller,
        line: Option<&str>,
        io: &mut Io,
        cancel: &Cancel,
    ) -> i32;

    /// The process that runs `line` (the prompt for `None`) on a terminal for the
    /// tenant `binding` names.
    fn terminal_command(
        &self,
        config: &Config,
        binding: &Binding,
        line: Option<&str>,
    ) -> std::process::Command;
}

/// What every connection shares: the configuration in force, the runner, and one
/// database connection for the quick lookups made during authentication.
pub struct Shared {
    config: Arc<Live>,
    runner: Box<dyn Runner>,
    db: Mutex<rusqlite::Connection>,
    sessions: limits::Sessions,
    rate: limits::ConnectionRate,
    admission: limits::Admission,
    /// Keeps floods of refused connections out of the log.
    quiet: limits::Quiet,
    /// Session channels one connection may have open.
    max_channels: usize,
    /// How long a command may wait for its client to take output.
    write_timeout: Duration,
    /// Cancels every command of the server; each command has a child of it.
    cancel: Cancel,
    /// Authenticated connections, for closing those whose key or user is revoked.
    live: Arc<revoke::Live>,
}

impl Shared {
    /// The connection and session limits are those of `config` now; a reload changes
    /// what commands see, not these.
    pub fn new(config: Arc<Live>, runner: Box<dyn Runner>, cancel: Cancel) -> Result<Shared> {
        let now = config.get();
        let db = crate::db::open(&now.db_path())?;
        Ok(Shared {
            db: Mutex::new(db),
            sessions: limits::Sessions::new(now.ssh_max_sessions, now.ssh_max_sessions_total),
            write_timeout: Duration::from_secs(
                now.ssh_write_timeout.secs().unwrap_or(365 * 86_400),
            ),
            rate: limits::ConnectionRate::new(
                now.ssh_connections_per_minute,
                now.ssh_connection_burst,
            ),
            admission: limits::Admission::new(
                connection_limit(now.ssh_max_connections),
                now.ssh_max_startups,
                now.ssh_per_source_max_startups,
            ),
            max_channels: now.ssh_max_channels as usize,
            quiet: limits::Quiet::new(20),
            config,
            runner,
            cancel,
            live: Arc::default(),
        })
    }

    /// The configuration in force: what a command starting now runs with.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }
}

/// `max`, or fewer if the open-file limit would not hold that many: each connection
/// takes a descriptor, a forward or a terminal one more, and the database and the web
/// server need some. The soft limit is raised to the hard one first, as a server should.
fn connection_limit(max: u32) -> u32 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max;
    };
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(_) => soft,
    };
    let room = connections_within(soft);
    if room < max {
        tracing::warn!(
            max,
            room,
            "ssh.max_connections lowered to fit the open-file limit"
        );
    }
    max.min(room).max(1)
}

/// How many connections an open-file limit of `files` holds: two descriptors each, and
/// 128 for the database, the web server and libvirt.
pub fn connections_within(files: u64) -> u32 {
    u32::try_from(files.saturating_sub(128) / 2).unwrap_or(u32::MAX)
}

/// Where the host key lives.
pub fn host_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ssh_host_ed25519_key")
}

/// The server's ed25519 host key: read from the data directory, or made there (0600)
/// on first start so clients see the same key after every restart.
pub fn host_key(data_dir: &Path) -> Result<PrivateKey> {
    let path = host_key_path(data_dir);
    let bad = |source| Error::Key {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => return PrivateKey::from_openssh(text).map_err(bad),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot read the host key `{}`", path.display()),
                e,
            ))
        }
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key.to_openssh(LineEnding::LF).map_err(bad)?;
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => Ok(key),
        // Another server made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => host_key(data_dir),
        Err(e) => Err(Error::io(
            format!("cannot write the host key `{}`", path.display()),
            e,
        )),
    }
}

/// `SHA256:...`, as OpenSSH shows it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// What the server offers, strongest first, as an auditor expects of a new server
/// (ssh-audit, Mozilla's modern OpenSSH guidance): elliptic-curve and hybrid
/// post-quantum key exchange only, ed25519 host keys, AEAD or CTR ciphers and
/// encrypt-then-MAC MACs only. OpenSSH 8.x and 9.x clients all speak these.
fn algorithms() -> russh::Preferred {
    use russh::{cipher, kex, mac};
    russh::Preferred {
        kex: std::borrow::Cow::Borrowed(&[
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: std::borrow::Cow::Borrowed(&[russh::keys::Algorithm::Ed25519]),
        cipher: std::borrow::Cow::Borrowed(&[
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::AES_256_CTR,
            cipher::AES_192_CTR,
            cipher::AES_128_CTR,
        ]),
        mac: std::borrow::Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
        ..russh::Preferred::DEFAULT
    }
}

/// Serves SSH on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    key: PrivateKey,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let limits = shared.config();
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // OpenSSH opens with a "none" probe; answering it at once costs nothing.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // The login name is fixed, so a slow "no" hides nothing; clients that offer
        // several keys should not wait long for each.
        auth_rejection_time: Duration::from_millis(50),
        max_auth_attempts: limits.ssh_max_auth_attempts as usize,
        inactivity_timeout: limits.ssh_idle_timeout.secs().map(Duration::from_secs),
        nodelay: true,
        preferred: algorithms(),
        ..Default::default()
    });
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let sweep = tokio::spawn(revoke::sweep(shared.clone()));
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, then go on.
                    if let Some(left_out) = shared.quiet.allow(std::time::Instant::now()) {
                        tracing::warn!(error = %e, left_out, "cannot accept an ssh connection");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !shared.rate.admit(peer.ip(), std::time::Instant::now()) {
            if let Some(left_out) = shared.quiet.allow(std::time::Instant::now()) {
                tracing::warn!(%peer, left_out, "ssh connection refused: too many connections from this address");
            }
            drop(socket);
            continue;
        }
        let admitted = match shared.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(full) => {
                if let Some(left_out) = shared.quiet.allow(std::time::Instant::now()) {
                    tracing::warn!(%peer, ?full, left_out, "ssh connection refused: too many connections");
                }
                drop(socket);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        // russh runs the session on a task of its own; shutting this descriptor's socket
        // down is how the server ends a connection whatever state it is in.
        let Ok(kill) = std::os::fd::AsFd::as_fd(&socket).try_clone_to_owned() else {
            continue;
        };
        let socket = QuickAck::new(socket);
        let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hangup = Arc::new(tokio::sync::Notify::new());
        let handler = handler::Handler::new(
            shared.clone(),
            peer,
            admitted,
            authenticated.clone(),
            hangup.clone(),
        );
        let config = config.clone();
        let mut stop = stop_tx.subscribe();
        let grace = Duration::from_secs(limits.ssh_login_grace_time.secs().unwrap_or(30));
        let deadline_at = tokio::time::Instant::now() + grace;
        tokio::spawn(async move {
            let setup = tokio::time::timeout_at(
                deadline_at,
                russh::server::run_stream(config, socket, handler),
            );
            let session = match setup.await {
                Ok(Ok(session)) => session,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "ssh connection setup failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "ssh connection closed: no key exchange in time");
                    return;
                }
            };
            let handle = session.handle();
            // Authentication has a deadline, like OpenSSH's LoginGraceTime. Dropping the
            // session closes the socket at once, whatever state the peer left it in.
            let grace_over = async {
                tokio::time::sleep_until(deadline_at).await;
                if authenticated.load(std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
            };
            let cut = || {
                let _ =
                    nix::sys::socket::shutdown(kill.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            };
            tokio::select! {
                result = session => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "ssh connection ended with an error");
                    }
                }
                () = grace_over => {
                    tracing::info!(%peer, "ssh connection closed: not authenticated in time");
                    cut();
                }
                () = hangup.notified() => {
                    tracing::debug!(%peer, "ssh connection closed by the server");
                    cut();
                }
                _ = stop.recv() => {
                    let _ = handle
                        .disconnect(Disconnect::ByApplication, "the server is stopping".into(), String::new())
                        .await;
                }
            }
        });
    }
    let _ = stop_tx.send(());
    sweep.abort();
    // Commands were cancelled with the server: each rolls back or finishes past its point
    // of no return. Wait for them, within the time a service manager gives a stop.
    let deadline = std::time::Instant::now() + STOP_WAIT;
    while shared.sessions.running() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = shared.sessions.running();
    if left > 0 {
        tracing::warn!(
            left,
            "ssh: stopping with sessions still running; `admin reconcile` repairs what they leave"
        );
    }
    Ok(())
}

/// How long a stopping server waits for its commands to end.
const STOP_WAIT: Duration = Duration::from_secs(8);

/// Reads during which the connection acknowledges at once: the version exchange, key
/// exchange and authentication take fewer.
const QUICK_ACK_READS: u32 = 32;

/// A TCP connection that acknowledges what it reads at once while the session is being
/// set up. The OpenSSH client sends its key exchange in two segments and waits for the
/// first to be acknowledged; with the kernel's delayed ACKs that wait is ~40 ms on most
/// connections, longer than the rest of the round trip.
struct QuickAck {
    stream: tokio::net::TcpStream,
    reads: u32,
}

impl QuickAck {
    fn new(stream: tokio::net::TcpStream) -> QuickAck {
        QuickAck { stream, reads: 0 }
    }

    fn ack_now(&self) {
        use std::os::fd::AsRawFd;
        let on: nix::libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value of the right size. The kernel
        // clears the flag again by itself, hence setting it after every read.
        unsafe {
            nix::libc::setsockopt(
                self.stream.as_raw_fd(),
                nix::libc::IPPROTO_TCP,
                nix::libc::TCP_QUICKACK,
                (&on as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            );
        }
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() && self.reads < QUICK_ACK_READS {
            self.reads += 1;
            self.ack_now();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
