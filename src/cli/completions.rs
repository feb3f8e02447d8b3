//! `basphere completions SHELL`: shell completion scripts.

use crate::cli::Run;
use crate::context::{Allowed, Context, Role};
use crate::error::Result;
use crate::output::{Output, Report};

/// Print a shell completion script (bash, zsh, fish, elvish, powershell)
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  basphere completions bash > /etc/bash_completion.d/basphere")]
pub struct Args {
    pub shell: clap_complete::Shell,
}

/// Anyone on the bastion: the script says nothing about this installation.
pub const ALLOWED: Allowed =
    Allowed::of(&[Role::Root, Role::LocalAdmin, Role::Service, Role::Stranger]);

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

    fn exec(&self, _ctx: &Context, _out: &mut Output) -> Result<Report> {
        let mut buf = Vec::new();
        clap_complete::generate(self.shell, &mut super::command(), "basphere", &mut buf);
        Ok(Report::text(String::from_utf8_lossy(&buf).into_owned()))
    }
}
