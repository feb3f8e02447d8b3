//! `basphere sshd-config`: the sshd_config lines for OpenSSH mode.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::{Error, Result};
use crate::output::{Output, Report};

/// Print the sshd_config lines for serving tenants through OpenSSH
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  basphere sshd-config > /etc/ssh/sshd_config.d/basphere.conf && sshd -t && systemctl reload ssh\n\nbasphere admin init writes that file (and checks it) in OpenSSH mode; basphere doctor checks that it matches."
)]
pub struct Args {}

/// The `Match` block for the service account, with `command` (the program and its
/// arguments before `%u %t %k`) as the AuthorizedKeysCommand.
pub fn snippet(command: &str, service_user: &str) -> String {
    format!(
        "# basphere: tenants sign in as `{service_user}`, identified by their key.
# Keep this block at the end of sshd_config: a Match block lasts until the next Match.
# Connections that have not authenticated: at most 10 before sshd starts dropping
# them at random, 100 in all, 4 from one address (IPv6: one /64), 30 s to log in.
MaxStartups 10:30:100
PerSourceMaxStartups 4
PerSourceNetBlockSize 32:64
LoginGraceTime 30
Match User {service_user}
    AuthorizedKeysFile none
    AuthorizedKeysCommand {command} %u %t %k
    AuthorizedKeysCommandUser {service_user}
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    PermitTTY yes
    X11Forwarding no
    AllowAgentForwarding no
    AllowTcpForwarding local
    PermitTunnel no
    GatewayPorts no
    # Idle forwards and sessions end, and so do connections left with no channel.
    ChannelTimeout session=30m direct-tcpip=30m
    UnusedConnectionTimeout 5m
"
    )
}

/// What sshd runs for each offered key: the small `basphere-auth-keys` installed beside
/// `exe` (it starts without libvirt), or `exe auth-keys` where there is none.
pub fn keys_command(exe: &str) -> String {
    let small = std::path::Path::new(exe).with_file_name("basphere-auth-keys");
    match small.to_str() {
        Some(path) if small.is_file() && crate::ops::key::plain_path(path) => path.to_owned(),
        _ => format!("{exe} auth-keys"),
    }
}

/// Where `admin init` puts these lines in OpenSSH mode: Debian's sshd_config includes
/// `sshd_config.d/*.conf` first, so they apply before the file's own settings.
pub const DROP_IN: &str = "/etc/ssh/sshd_config.d/basphere.conf";

/// The lines for this installation, with this executable's key lookup.
pub fn text(ctx: &Context) -> Result<String> {
    let exe = super::auth_keys::current_exe()?;
    if !crate::ops::key::plain_path(&exe) {
        return Err(Error::Install(format!(
            "sshd cannot run `{exe}` as given; install basphere as /usr/local/bin/basphere"
        )));
    }
    let user = crate::validate::os_user(&ctx.config.service_user)?;
    Ok(snippet(&keys_command(&exe), &user))
}

/// Administrators on the bastion, and the service account.
pub const ALLOWED: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn needs_database(&self) -> bool {
        false
    }

    fn speaks_json(&self) -> bool {
        false
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        Ok(Report::text(text(ctx)?))
    }
}
