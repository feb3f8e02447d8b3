//! `basphere serve`: the long-running front doors, in one process.
//!
//! The rest of basphere is synchronous; the tokio runtime lives only inside this command.
//! The web signup form (`--web ADDR`) and the embedded SSH server (`--ssh ADDR`) share it.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use crate::cancel::Cancel;
use crate::cli::Run;
use crate::config::{Config, Live, Source};
use crate::context::{Allowed, Binding, Caller, Context};
use crate::error::{Error, Result};
use crate::output::{Io, Output, Report};

const DEFAULT_WEB: &str = "127.0.0.1:8080";
const DEFAULT_SSH: &str = "0.0.0.0:2222";

/// Run the web signup form (and the mail worker) and the SSH server until stopped
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With no front door named, the web form listens on 127.0.0.1:8080. Put a TLS \
reverse proxy in front of it, set `public_url` to the address people use, and list the proxy \
in `web.trusted_proxies` so that rate limits count each visitor by the address the proxy names \
(`X-Forwarded-For`, `X-Real-IP`) rather than all of them as the proxy.\n\nWith `--ssh`, \
tenants log in as the service account (`basphere@HOST`) with their registered key. The host key \
is made on first start in DATA_DIR/ssh_host_ed25519_key and reused. Limits on authentication \
attempts, connections per address, sessions per user and idle time are in the `[ssh]` section \
of the configuration (see `basphere config`).\n\nEach front door prints \
the address it listens on (`web: listening on URL`, `ssh: listening on ADDR`). SIGHUP reads the \
configuration again (with the flags given here) for the commands that start afterwards; SIGINT \
or SIGTERM stops the server gracefully."
)]
pub struct Args {
    /// Serve the signup form on ADDR, e.g. 0.0.0.0:8080 (port 0 picks a free port)
    #[arg(long, value_name = "ADDR")]
    pub web: Option<SocketAddr>,

    /// Serve SSH on ADDR: 0.0.0.0:2222 when no ADDR is given (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = false, default_missing_value = DEFAULT_SSH)]
    pub ssh: Option<SocketAddr>,
}

/// Administrators on the bastion, and the service account.
pub const ALLOWED: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn speaks_json(&self) -> bool {
        false
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        // The front doors open their own connections to the database this makes sure of.
        ctx.db()?;
        // Today's behaviour stands when no front door is named: the web form alone.
        let web = match (self.web, self.ssh) {
            (None, None) => Some(DEFAULT_WEB.parse().expect("valid default address")),
            (web, _) => web,
        };
        let ssh_key = match self.ssh {
            Some(_) => Some(crate::ssh::host_key(&ctx.paths.root)?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("basphere-serve")
            // Database work runs on blocking threads behind one connection; more threads
            // than this only add memory. SSH commands run there too, one thread each.
            .max_blocking_threads(64)
            .build()
            .map_err(|e| Error::io("cannot start the async runtime", e))?;
        runtime.block_on(serve(self, web, ssh_key, ctx, out))?;
        Ok(Report::streamed(0).note("stopped"))
    }
}

async fn serve(
    args: &Args,
    web: Option<SocketAddr>,
    ssh_key: Option<russh::keys::PrivateKey>,
    ctx: &Context,
    out: &mut Output<'_, '_>,
) -> Result<()> {
    // Bind first: the port the SSH server got is the default `public_port`.
    let web = match web {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let ssh = match args.ssh {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let ssh_port = ssh.as_ref().map(local_addr).transpose()?.map(|a| a.port());
    let live = Arc::new(Live::new(with_port((*ctx.config).clone(), ssh_port)?));
    let cancel = ctx.cancel.child();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown_signal().await;
            // Commands that wait stop waiting; creates and deletes finish or roll back.
            cancel.cancel();
            let _ = stop_tx.send(true);
        }
    });
    tokio::spawn(reload_on_sighup(live.clone(), ssh_port));
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    if let Some(listener) = web {
        let state = crate::web::AppState::new(live.clone())?;
        let destination = crate::mail::Mailer::new(&live.get())?.destination();
        out.line(format!(
            "web: listening on http://{}",
            local_addr(&listener)?
        ))?;
        out.note(format!(
            "web: links in mail point to {}; mail goes to the {destination}",
            live.get().public_url()
        ))?;
        servers.spawn(crate::web::serve(listener, state, stopped()));
    }
    if let (Some(listener), Some(key)) = (ssh, ssh_key) {
        let shared = crate::ssh::Shared::new(live.clone(), Box::new(Sessions), cancel)?;
        out.line(format!("ssh: listening on {}", local_addr(&listener)?))?;
        out.line(format!("ssh: host key {}", crate::ssh::fingerprint(&key)))?;
        servers.spawn(crate::ssh::serve(
            listener,
            key,
            Arc::new(shared),
            stopped(),
        ));
    }
    // One front door failing stops the process: a half-up server is hard to notice.
    while let Some(result) = servers.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Unless `public_port` is set, the `ssh` lines tenants are shown name this server's port.
fn with_port(mut config: Config, ssh_port: Option<u16>) -> Result<Config> {
    if let Some(port) = ssh_port.filter(|_| config.source("public_port") == Source::Default) {
        config.set("public_port", &port.to_string(), Source::Default)?;
    }
    Ok(config)
}

/// Settings the running server took at start; a reload that changes them applies them
/// only at the next start (`data_dir` not at all: the server's database stays open).
const AT_START: &[&str] = &[
    "ssh.max_auth_attempts",
    "ssh.connections_per_minute",
    "ssh.max_sessions",
    "ssh.idle_timeout",
    "ssh.max_connections",
    "ssh.max_startups",
    "ssh.per_source_max_startups",
    "ssh.login_grace_time",
    "ssh.max_channels",
    "ssh.connection_burst",
    "ssh.max_sessions_total",
    "signup.per_ip_per_hour",
];

/// Reads the configuration again on every SIGHUP, with the flags `serve` was started
/// with; commands started afterwards see it. A reload that fails keeps the old one.
async fn reload_on_sighup(live: Arc<Live>, ssh_port: Option<u16>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch for SIGHUP: the configuration is read at start only");
        return;
    };
    while hangups.recv().await.is_some() {
        let old = live.get();
        let reloaded = old.reload().and_then(|new| with_port(new, ssh_port));
        match reloaded {
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded; the old one stays in force")
            }
            Ok(new) if new.data_dir != old.data_dir => tracing::error!(
                "configuration not reloaded: data_dir changed; restart `basphere serve` to move it"
            ),
            Ok(new) => {
                let changed: Vec<&str> = AT_START
                    .iter()
                    .copied()
                    .filter(|key| new.field_text(key) != old.field_text(key))
                    .collect();
                if !changed.is_empty() {
                    tracing::warn!(keys = ?changed, "these settings take effect at the next start");
                }
                live.replace(new);
                tracing::info!("configuration reloaded");
            }
        }
    }
}

/// Runs what SSH sessions ask for: in this process on plain streams, or `basphere
/// shell` on a terminal.
struct Sessions;

impl crate::ssh::Runner for Sessions {
    fn run(
        &self,
        config: &Arc<Config>,
        tenant: &Caller,
        line: Option<&str>,
        io: &mut Io,
        cancel: &Cancel,
    ) -> i32 {
        crate::session::run(config, tenant, line, io, cancel)
    }

    fn terminal_command(&self, config: &Config, binding: &Binding, line: Option<&str>) -> Command {
        // /proc/self/exe is this very binary, even if a newer one has been installed since.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.args([
            "shell",
            "--user",
            &binding.user,
            "--key",
            &binding.fingerprint,
        ]);
        if let Some(serial) = binding.serial {
            cmd.args(["--serial", &serial.to_string()]);
        }
        // Exactly this configuration, the test hooks, and what programs need to run;
        // not the server's log level, which is not for the tenant's terminal.
        cmd.env_clear()
            .envs(config.to_env())
            .envs(crate::hooks::env())
            .envs(std::env::vars().filter(|(k, _)| PASSED_ON.contains(&k.as_str())));
        if let Some(line) = line {
            cmd.env("SSH_ORIGINAL_COMMAND", line);
        }
        cmd
    }
}

/// What a terminal session's process inherits from the server's environment.
const PASSED_ON: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
