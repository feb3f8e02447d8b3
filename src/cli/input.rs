//! Public keys as people hand them to a command: from stdin or a file, never more than
//! a key file can hold, and never from a device or a pipe that has no end.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::output::Output;

/// The most a key file or stdin may hold: hundreds of keys, and far from a memory limit.
pub const MAX_KEY_INPUT: u64 = 64 * 1024;

/// Reads at most `MAX_KEY_INPUT` bytes of text; more is refused, not cut.
fn read_limited(reader: &mut dyn Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_KEY_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
    if bytes.len() as u64 > MAX_KEY_INPUT {
        return Err(Error::invalid(format!(
            "{what} holds more than {} KiB, too much for SSH public keys",
            MAX_KEY_INPUT / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|_| Error::invalid(format!("{what} is not UTF-8 text")))
}

/// Key text on the command's stdin.
pub fn keys_from_stdin(out: &mut Output) -> Result<String> {
    read_limited(out.stdin(), "stdin")
}

/// Key text in the regular file `path`. A device (`/dev/zero`), a FIFO or a directory
/// is refused: opening does not wait for a writer, and nothing is read from them.
pub fn keys_from_file(path: &Path) -> Result<String> {
    let what = format!("`{}`", path.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {what}"), e))?;
    if !meta.is_file() {
        return Err(Error::invalid_with_help(
            format!("{what} is not a regular file"),
            "give a file of public keys, e.g. alice.pub, or `-` to read them from stdin",
        ));
    }
    read_limited(&mut file, &what)
}
