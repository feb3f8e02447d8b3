//! `basphere completions SHELL`: shell completion scripts.

use crate::error::Result;
use crate::output::Output;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell)
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  basphere completions bash > /etc/bash_completion.d/basphere")]
pub struct Args {
    pub shell: clap_complete::Shell,
}

pub fn exec(args: &Args, out: &mut Output) -> Result<i32> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut super::command(), "basphere", &mut buf);
    out.line(String::from_utf8_lossy(&buf).trim_end())?;
    Ok(0)
}
