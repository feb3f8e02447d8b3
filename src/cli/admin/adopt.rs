//! `basphere admin adopt`: move an installation from the old layout (data owned by root,
//! QEMU run as root) to the service account and QEMU's own account.

use crate::context::{Allowed, Context, Role};
use crate::error::Result;
use crate::ops::adopt::{self, Adopted};
use crate::output::{Human, Output, Report};

/// Hand a root-owned installation to the service account, and stop running QEMU as root
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Makes the service account (and the administrators' group) if the host has \
none and adds it to the libvirt and kvm groups; hands every file and directory of the data \
directory that root owns to it, with the modes basphere uses (files 0600, the directories \
QEMU passes through 0711, the others 0700); removes the lines `user = \"root\"` and \
`group = \"root\"` that the old scripts/run added to /etc/libvirt/qemu.conf, keeping a \
dated copy of the file. Each step does only what is still missing: run it again after an \
interruption, or once every VM has been stopped and started again."
)]
pub struct Args {}

/// root alone changes owners and libvirt's configuration.
pub const ALLOWED: Allowed = Allowed::of(&[Role::Root]);

pub fn exec(_args: &Args, ctx: &Context, _out: &mut Output) -> Result<Report> {
    let done = adopt::adopt(ctx)?;
    let mut report = Report::new(&done, Human::Fields(fields(&done, ctx)));
    let conf = &done.qemu_conf;
    if !conf.lines_removed.is_empty() {
        report =
            report.note(format!(
            "note: restart libvirtd (`systemctl restart libvirtd`) so that QEMU runs as libvirt's \
             own account (Debian's `libvirt-qemu`) from the next VM start; a copy of the old file \
             is at {}",
            conf.backup.as_ref().map_or(String::new(), |b| b.display().to_string())
        ));
    }
    Ok(report.note(
        "note: VMs that are running now keep running as root until each is stopped and started \
         again (`basphere --as USER vm stop NAME`, then `vm start NAME`); libvirt gives their disks \
         back to root when they stop, so run `basphere admin adopt` once more after that",
    ))
}

fn fields(done: &Adopted, ctx: &Context) -> Vec<(&'static str, String)> {
    let made = |made: bool, name: &str| match made {
        true => format!("{name} (created)"),
        false => name.to_owned(),
    };
    let joined = match done.groups_joined.is_empty() {
        true => "(already in every group the host has)".to_owned(),
        false => format!("joined {}", done.groups_joined.join(", ")),
    };
    let conf = &done.qemu_conf;
    let qemu = match (conf.missing, conf.lines_removed.is_empty()) {
        (true, _) => format!("{}: none on this host", conf.path.display()),
        (false, true) => format!("{}: no root lines", conf.path.display()),
        (false, false) => format!(
            "{}: removed {}",
            conf.path.display(),
            conf.lines_removed.join(", ")
        ),
    };
    vec![
        (
            "service account",
            made(done.account_created, &done.service_user),
        ),
        ("groups", joined),
        (
            "admin group",
            made(done.admin_group_created, &ctx.config.admin_group),
        ),
        ("data directory", ctx.paths.root.display().to_string()),
        (
            "changed",
            format!("{} files and directories", done.entries_changed),
        ),
        (
            "left alone",
            format!(
                "{} (another account's, or links)",
                done.entries_left_alone.len()
            ),
        ),
        ("qemu.conf", qemu),
    ]
}
