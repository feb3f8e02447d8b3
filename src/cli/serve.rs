//! `basphere serve`: the long-running front doors, in one process.
//!
//! The rest of basphere is synchronous; the tokio runtime lives only inside this command.
//! Today that is the web signup form; the SSH server will sit beside it (`--ssh ADDR`).

use std::net::SocketAddr;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::Output;

const DEFAULT_WEB: &str = "127.0.0.1:8080";

/// Run the web signup form (and the mail worker) until stopped
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With no front door named, the web form listens on 127.0.0.1:8080. Put a TLS \
reverse proxy in front of it and set `public_url` to the address people use.\n\nThe first line \
printed is the address the form listens on. SIGINT or SIGTERM stops the server gracefully."
)]
pub struct Args {
    /// Serve the signup form on ADDR, e.g. 0.0.0.0:8080 (port 0 picks a free port)
    #[arg(long, value_name = "ADDR")]
    pub web: Option<SocketAddr>,
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    if ctx.actor.via != "local" || !(ctx.actor.admin || ctx.actor.service) {
        return Err(Error::denied(
            "`serve` runs on the bastion as root or the service account",
        ));
    }
    let web = args
        .web
        .unwrap_or_else(|| DEFAULT_WEB.parse().expect("valid default address"));
    let state = crate::web::AppState::new(ctx.config.clone())?;
    let destination = crate::mail::Mailer::new(&ctx.config)?.destination();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("basphere-serve")
        // Database work runs on blocking threads behind one connection; more threads
        // than this only add memory.
        .max_blocking_threads(8)
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(web)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {web}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        out.line(format!("web: listening on http://{local}"))?;
        out.note(format!(
            "web: links in mail point to {}; mail goes to the {destination}",
            ctx.config.public_url.value
        ))?;
        crate::web::serve(listener, state, shutdown_signal()).await
    })?;
    out.note("stopped")?;
    Ok(0)
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
