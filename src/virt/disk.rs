//! VM disks: qcow2 overlays on a read-only base image, through `qemu-img`
//! (qemu-utils). Each call is one process with an argument list, no shell.
//! The base image is only ever opened for reading.

use std::path::Path;
use std::process::{Command, Output};

use super::{Result, VirtError};

const QEMU_IMG: &str = "qemu-img";

/// What `qemu-img info` says about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    /// Size the guest sees, in bytes.
    pub virtual_size: u64,
    /// The backing file as recorded in the image, if any.
    pub backing_file: Option<String>,
}

#[derive(serde::Deserialize)]
struct QemuImgInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
}

/// Runs a tool to completion; a missing tool or a non-zero exit becomes
/// [`VirtError::Tool`] with its stderr.
pub(crate) fn run_tool(tool: &str, cmd: &mut Command) -> Result<Output> {
    let output = cmd.output().map_err(|e| VirtError::Tool {
        tool: tool.to_string(),
        message: if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{tool}` is not installed or not in PATH")
        } else {
            format!("cannot run `{tool}`: {e}")
        },
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        return Err(VirtError::Tool {
            tool: tool.to_string(),
            message: if stderr.is_empty() {
                format!("exited with {}", output.status)
            } else {
                stderr.to_string()
            },
        });
    }
    Ok(output)
}

/// `qemu-img info -U --output=json PATH`. `-U` (force share) lets this read
/// images a running VM holds locked.
pub fn image_info(path: &Path) -> Result<ImageInfo> {
    let output = run_tool(
        QEMU_IMG,
        Command::new(QEMU_IMG)
            .args(["info", "-U", "--output=json", "--"])
            .arg(path),
    )?;
    let info: QemuImgInfo =
        serde_json::from_slice(&output.stdout).map_err(|e| VirtError::Tool {
            tool: QEMU_IMG.to_string(),
            message: format!("unexpected `info` output for `{}`: {e}", path.display()),
        })?;
    Ok(ImageInfo {
        format: info.format,
        virtual_size: info.virtual_size,
        backing_file: info.backing_filename,
    })
}

/// Creates `overlay` as a private (0600) qcow2 image of `size_bytes` backed by
/// the qcow2 `base`, recorded by its absolute, symlink-free path. Refuses to
/// replace an existing file (qemu-img would silently overwrite it).
pub fn create_overlay(base: &Path, overlay: &Path, size_bytes: u64) -> Result<()> {
    let base = base
        .canonicalize()
        .map_err(VirtError::io(format!("base image `{}`", base.display())))?;
    // Made here, so it is private from the start; qemu-img writes into it and
    // keeps its mode.
    crate::files::create_new(overlay)
        .map_err(VirtError::io(format!("disk `{}`", overlay.display())))?;
    let created = run_tool(
        QEMU_IMG,
        Command::new(QEMU_IMG)
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg("--")
            .arg(overlay)
            .arg(size_bytes.to_string()),
    );
    if let Err(e) = created {
        let _ = std::fs::remove_file(overlay);
        return Err(e);
    }
    tracing::info!(base = %base.display(), overlay = %overlay.display(), size_bytes, "created overlay");
    Ok(())
}
