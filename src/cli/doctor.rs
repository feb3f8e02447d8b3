//! `basphere doctor`: checks the installation and says how to fix what is wrong.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::doctor::{Findings, Status};
use crate::output::{Human, Output, Report};

/// Check this installation and say how to fix what is wrong
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Check this installation and say how to fix what is wrong: the configuration, \
libvirt, KVM, QEMU's access to the data directory, the tools basphere runs, free space, the \
database, the modes of secrets, the OpenSSH drop-in, the SMTP relay, the mail outbox, what \
`admin reconcile` would repair, the network pool against the host's routes, `public_host` and \
the open-file limit. It changes nothing: the database is opened to read only and never migrated, \
and libvirt, the SMTP relay and DNS each get a few seconds to answer.",
    after_help = "Each line: ok, warn, fail or skip (not run: something it needs failed), the \
check, what it found; under a warning or failure, the fix.\n\nExit status: 0 all ok, 1 warnings, \
2 failures.\n\nExample, as the service account:\n  sudo -u basphere basphere doctor"
)]
pub struct Args {}

/// Administrators on the bastion, and the service account.
pub const ALLOWED: Allowed = Allowed::LOCAL_ADMINS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn needs_database(&self) -> bool {
        false
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        let findings = crate::ops::doctor::run(ctx);
        let code = findings.exit_code();
        Ok(Report::new(&findings, human(&findings)).exit(code))
    }
}

/// One line per check, its fix indented under it.
fn human(findings: &Findings) -> Human {
    let width = findings
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    for check in &findings.checks {
        lines.push(format!(
            "{:<4}  {:<width$}  {}",
            check.status.as_str(),
            check.name,
            check.detail
        ));
        if let (Status::Warn | Status::Fail, Some(fix)) = (check.status, &check.fix) {
            lines.push(format!("{:<4}  {:<width$}  fix: {fix}", "", ""));
        }
    }
    Human::Lines(lines)
}
