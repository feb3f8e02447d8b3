//! `basphere serve`: the long-running front doors, in one process.
//!
//! The rest of basphere is synchronous; the tokio runtime lives only inside this command.
//! The web signup form and the embedded SSH server share it, and so does the job worker,
//! which runs the mail job through the job runner whichever doors are open.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::cancel::Cancel;
use crate::cli::Run;
use crate::config::{Config, Door, Live, Source};
use crate::context::{Allowed, Binding, Caller, Context};
use crate::error::{Error, Result};
use crate::ops::jobs::{self, Selection};
use crate::output::{Io, Output, Report};

const DEFAULT_SSH: &str = "0.0.0.0:2222";

/// After SIGTERM or SIGINT, `serve` has exited within this long, whatever is still
/// running: SSH commands get `ssh::STOP_WAIT` to finish or roll back, web requests their
/// own deadline of as long, a mail job in flight is left to the next run (its messages
/// are leased, never lost). `TimeoutStopSec` in `basphere.service` is this and 5 s.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the job worker looks for due jobs (today: mail, due every minute).
const JOBS_TICK: Duration = Duration::from_secs(5);

/// Run the front doors (web signup form, SSH server) and the mail worker until stopped
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The front doors come from the settings `serve.web` (default 127.0.0.1:8080) \
and `serve.ssh` (default off); given either flag, the flags alone name them. Both off is an \
error. The mail worker runs whichever doors are open: it is the job runner's `mail` job (see \
`basphere admin run-jobs`), so a timer running the same job never sends twice.\n\nPut a TLS \
reverse proxy in front of it, set `public_url` to the address people use, and list the proxy \
in `web.trusted_proxies` so that rate limits count each visitor by the address the proxy names \
(`X-Forwarded-For`, `X-Real-IP`) rather than all of them as the proxy.\n\nWith `--ssh`, \
tenants log in as the service account (`basphere@HOST`) with their registered key. The host key \
is made on first start in DATA_DIR/ssh_host_ed25519_key and reused. Limits on authentication \
attempts, connections per address, sessions per user and idle time are in the `[ssh]` section \
of the configuration (see `basphere config`).\n\nEach front door prints \
the address it listens on (`web: listening on URL`, `ssh: listening on ADDR`). Under systemd \
(`Type=notify`) it reports ready once every door listens. SIGHUP reads the configuration \
again (with the flags given here) for the commands that start afterwards; SIGINT or SIGTERM \
stops the server gracefully, within 30 s."
)]
pub struct Args {
    /// Serve the signup form on ADDR, e.g. 0.0.0.0:8080 (port 0 picks a free port)
    /// [setting: serve.web]
    #[arg(long, value_name = "ADDR")]
    pub web: Option<SocketAddr>,

    /// Serve SSH on ADDR: 0.0.0.0:2222 when no ADDR is given (port 0 picks a free port)
    /// [setting: serve.ssh]
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
        let (web, ssh) = doors(self, &ctx.config)?;
        let ssh_key = match ssh {
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
        let served = runtime.block_on(serve(web, ssh, ssh_key, ctx, out));
        // Threads still busy (a command past the bound) do not hold the exit up.
        runtime.shutdown_timeout(Duration::from_secs(1));
        served?;
        Ok(Report::streamed(0).note("stopped"))
    }
}

/// The doors to open: those the flags name, if any does; else the settings.
fn doors(args: &Args, config: &Config) -> Result<(Option<SocketAddr>, Option<SocketAddr>)> {
    if args.web.is_some() || args.ssh.is_some() {
        return Ok((args.web, args.ssh));
    }
    match (config.serve_web, config.serve_ssh) {
        (Door::Off, Door::Off) => Err(Error::invalid_with_help(
            "nothing to serve: `serve.web` and `serve.ssh` are both `off`",
            "set one of them to an address in the configuration file, or give `--web ADDR` or `--ssh [ADDR]`",
        )),
        (web, ssh) => Ok((web.addr(), ssh.addr())),
    }
}

async fn serve(
    web: Option<SocketAddr>,
    ssh: Option<SocketAddr>,
    ssh_key: Option<russh::keys::PrivateKey>,
    ctx: &Context,
    out: &mut Output<'_, '_>,
) -> Result<()> {
    // Bind first: the port the SSH server got is the default `public_port`.
    let web = match web {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let ssh = match ssh {
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
            notify(sd_notify::NotifyState::Stopping);
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
    let mail_wakeup = Arc::new(Notify::new());
    if let Some(listener) = web {
        let state = crate::web::AppState::new(live.clone(), mail_wakeup.clone())?;
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
        let shared = crate::ssh::Shared::new(live.clone(), Box::new(Sessions), cancel.clone())?;
        out.line(format!("ssh: listening on {}", local_addr(&listener)?))?;
        out.line(format!("ssh: host key {}", crate::ssh::fingerprint(&key)))?;
        servers.spawn(crate::ssh::serve(
            listener,
            key,
            Arc::new(shared),
            stopped(),
        ));
    }
    let worker = tokio::spawn(job_worker(live.clone(), mail_wakeup, cancel.clone()));
    // Every door is bound (the kernel queues connections from here on): ready.
    notify(sd_notify::NotifyState::Ready);
    let result = tokio::select! {
        result = until_stopped(&mut servers) => result,
        () = async {
            stopped().await;
            tokio::time::sleep(STOP_TIMEOUT).await;
        } => {
            tracing::warn!(bound = ?STOP_TIMEOUT, "stopping with work still running");
            Ok(())
        }
    };
    worker.abort();
    result
}

/// Waits for every front door to end. One failing stops the process: a half-up server
/// is hard to notice.
async fn until_stopped(servers: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    while let Some(result) = servers.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Tells systemd (`Type=notify`) how the server stands; nothing without `NOTIFY_SOCKET`.
fn notify(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Runs the jobs `serve` runs (the mail job) through the job runner: those due, every
/// `JOBS_TICK`, and at once when a page queued mail. The job's lock keeps it from ever
/// running here and in `admin run-jobs` at the same time.
async fn job_worker(live: Arc<Live>, wakeup: Arc<Notify>, cancel: crate::cancel::Cancel) {
    let mut woken = false;
    loop {
        let (config, cancel) = (live.get(), cancel.clone());
        let ran = tokio::task::spawn_blocking(move || {
            let ctx = Context::new(config, &Caller::current_process(), None, cancel)?;
            if woken {
                let in_serve: Vec<_> = jobs::JOBS.iter().filter(|j| j.in_serve).collect();
                jobs::run(&ctx, &Selection::Only(&in_serve))
            } else {
                jobs::run(&ctx, &Selection::DueInServe)
            }
        })
        .await;
        match ran {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "job worker: cannot run the jobs"),
            Err(e) => tracing::error!(error = %e, "job worker failed"),
        }
        woken = tokio::select! {
            () = wakeup.notified() => true,
            () = tokio::time::sleep(JOBS_TICK) => false,
        };
    }
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
    "serve.web",
    "serve.ssh",
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

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = include_str!("../../templates/systemd/basphere.service");

    fn setting(key: &str) -> &'static str {
        UNIT.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("basphere.service has no {key}="))
    }

    #[test]
    fn the_unit_gives_serve_its_stop_bound_and_enough_open_files() {
        let stop = format!("{}s", STOP_TIMEOUT.as_secs() + 5);
        assert_eq!(setting("TimeoutStopSec"), stop);
        // What `ssh::connection_limit` needs for the default ssh.max_connections, and
        // the web server's connections besides.
        let files: u64 = setting("LimitNOFILE").parse().unwrap();
        let row = crate::config::ROWS
            .iter()
            .find(|r| r.key == "ssh.max_connections");
        let default: u64 = row.unwrap().default.parse().unwrap();
        assert!(files >= 128 + 2 * default + 256, "{files}");
    }
}
