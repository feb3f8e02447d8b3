//! `basphere serve`: the long-running front doors, in one process.
//!
//! The rest of basphere is synchronous; the tokio runtime lives only inside this command.
//! The web signup form (`--web ADDR`) and the embedded SSH server (`--ssh ADDR`) share it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::Output;

const DEFAULT_WEB: &str = "127.0.0.1:8080";
const DEFAULT_SSH: &str = "0.0.0.0:2222";

/// Run the web signup form (and the mail worker) and the SSH server until stopped
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With no front door named, the web form listens on 127.0.0.1:8080. Put a TLS \
reverse proxy in front of it and set `public_url` to the address people use.\n\nWith `--ssh`, \
tenants log in as the service account (`basphere@HOST`) with their registered key. The host key \
is made on first start in DATA_DIR/ssh_host_ed25519_key and reused. Limits on authentication \
attempts, connections per address, sessions per user and idle time are in the `[ssh]` section \
of the configuration (see `basphere config`).\n\nEach front door prints \
the address it listens on (`web: listening on URL`, `ssh: listening on ADDR`). SIGINT or SIGTERM \
stops the server gracefully."
)]
pub struct Args {
    /// Serve the signup form on ADDR, e.g. 0.0.0.0:8080 (port 0 picks a free port)
    #[arg(long, value_name = "ADDR")]
    pub web: Option<SocketAddr>,

    /// Serve SSH on ADDR: 0.0.0.0:2222 when no ADDR is given (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = false, default_missing_value = DEFAULT_SSH)]
    pub ssh: Option<SocketAddr>,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    if ctx.actor.via != "local" || !(ctx.actor.admin || ctx.actor.service) {
        return Err(Error::denied(
            "`serve` runs on the bastion as root or the service account",
        ));
    }
    // Today's behaviour stands when no front door is named: the web form alone.
    let web = match (args.web, args.ssh) {
        (None, None) => Some(DEFAULT_WEB.parse().expect("valid default address")),
        (web, _) => web,
    };
    let web_state = match web {
        Some(_) => Some((
            crate::web::AppState::new(ctx.config.clone())?,
            crate::mail::Mailer::new(&ctx.config)?.destination(),
        )),
        None => None,
    };
    let ssh = match args.ssh {
        Some(addr) => Some((addr, crate::ssh::host_key(&ctx.paths.root)?)),
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
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut servers = tokio::task::JoinSet::new();
        if let (Some(web), Some((state, destination))) = (web, web_state) {
            let listener = bind(web).await?;
            let local = local_addr(&listener)?;
            out.line(format!("web: listening on http://{local}"))?;
            out.note(format!(
                "web: links in mail point to {}; mail goes to the {destination}",
                ctx.config.public_url.value
            ))?;
            servers.spawn(crate::web::serve(listener, state, stopped()));
        }
        if let Some((addr, key)) = ssh {
            let listener = bind(addr).await?;
            let local = local_addr(&listener)?;
            let shared = Arc::new(crate::ssh::Shared::new(
                ctx.config.clone(),
                session_env(ctx, local.port()),
            )?);
            let fingerprint = crate::ssh::fingerprint(&key);
            out.line(format!("ssh: listening on {local}"))?;
            out.line(format!("ssh: host key {fingerprint}"))?;
            servers.spawn(crate::ssh::serve(listener, key, shared, stopped()));
        }
        // One front door failing stops the process: a half-up server is hard to notice.
        while let Some(result) = servers.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(Error::io("a server task failed", std::io::Error::other(e))),
            }
        }
        Ok(())
    })?;
    out.note("stopped")?;
    Ok(0)
}

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

/// The environment SSH commands load their configuration from: this process's, with
/// the settings `serve` was started with, so `--data-dir` and friends carry over. Unless
/// `public_port` is set, the `ssh -J` lines tenants are shown name this server's port.
fn session_env(ctx: &Context, ssh_port: u16) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(file) = &ctx.config.file {
        env.insert("BASPHERE_CONFIG".into(), file.display().to_string());
    }
    env.insert(
        "BASPHERE_DATA_DIR".into(),
        ctx.config.data_dir.value.display().to_string(),
    );
    env.insert(
        "BASPHERE_LIBVIRT_URI".into(),
        ctx.config.libvirt_uri.value.clone(),
    );
    if ctx.config.public_port.source == crate::config::Source::Default {
        env.insert("BASPHERE_PUBLIC_PORT".into(), ssh_port.to_string());
    }
    env
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
