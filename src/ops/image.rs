//! The base image catalogue. Images are copied into the data directory and made
//! read-only there: VM disks are overlays on them, so they must never change.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::context::Context;
use crate::db;
use crate::db::images::{Image, NewImage};
use crate::error::{Error, Result};
use crate::validate::{self, ImageName};
use crate::virt::{self, disk};

/// Guesses the login user of well-known cloud images from the image name.
fn default_os_user(name: &str) -> Option<&'static str> {
    let known = [
        ("debian", "debian"),
        ("ubuntu", "ubuntu"),
        ("fedora", "fedora"),
        ("centos", "cloud-user"),
        ("rocky", "rocky"),
        ("alma", "almalinux"),
        ("alpine", "alpine"),
        ("arch", "arch"),
    ];
    known
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, user)| *user)
}

pub fn add(ctx: &Context, name: &ImageName, file: &Path, os_user: Option<&str>) -> Result<Image> {
    let outcome = add_inner(ctx, name, file, os_user);
    ctx.audit("image.add", &format!("image:{name}"), &outcome);
    outcome
}

/// The login user of image `name`: `given`, checked, or the one well-known images have.
pub fn os_user_for(name: &ImageName, given: Option<&str>) -> Result<String> {
    Ok(match given {
        Some(u) => validate::os_user(u)?,
        None => default_os_user(name.as_str())
            .ok_or_else(|| {
                Error::invalid_with_help(
                    format!("cannot guess the login user of image `{name}`"),
                    "pass --os-user NAME (the user cloud-init creates, e.g. debian or ubuntu)",
                )
            })?
            .to_owned(),
    })
}

/// What the image file at `file` holds, if it can be a base image: a regular file, qcow2
/// or raw, with no backing file.
pub fn check_file(file: &Path) -> Result<disk::ImageInfo> {
    let meta = fs::metadata(file)
        .map_err(|e| Error::io(format!("cannot read image file `{}`", file.display()), e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "`{}` is not a regular file",
            file.display()
        )));
    }
    let info = disk::image_info(file)?;
    if info.backing_file.is_some() {
        return Err(Error::invalid_with_help(
            format!("`{}` has a backing file", file.display()),
            "flatten it first: `qemu-img convert -O qcow2 IN OUT`",
        ));
    }
    if info.format != "qcow2" && info.format != "raw" {
        return Err(Error::invalid(format!(
            "image format `{}` is not supported: use qcow2 or raw",
            info.format
        )));
    }
    Ok(info)
}

fn add_inner(ctx: &Context, name: &ImageName, file: &Path, os_user: Option<&str>) -> Result<Image> {
    let os_user = os_user_for(name, os_user)?;
    if db::images::get(ctx.db()?, name.as_str())?.is_some() {
        return Err(Error::AlreadyExists {
            kind: "image",
            name: name.to_string(),
        });
    }
    crate::hooks::pause_point("image-checked");
    let info = check_file(file)?;
    ctx.paths.create()?;
    // Held while the copy is written, so `admin reconcile` can tell a `.partial` that
    // is being written from one a killed add left behind, and so that of two adds (or
    // an add and a remove) of one name only one touches its files at a time.
    let _lock = crate::ops::lock::exclusive(&ctx.paths.lock(&format!("image-{name}")))?;
    // Again under the lock: another add may have registered the name since the check
    // above, and its file must be left alone.
    if db::images::get(ctx.db()?, name.as_str())?.is_some() {
        return Err(Error::AlreadyExists {
            kind: "image",
            name: name.to_string(),
        });
    }
    // No row names this file: whatever is there was left by an add or a remove that
    // was killed, and is replaced.
    let dest = ctx.paths.image(name.as_str());
    let partial = dest.with_extension("partial");
    let copied = Command::new("qemu-img")
        .args(["convert", "-q", "-U", "-f", &info.format, "-O", "qcow2"])
        .arg(file)
        .arg(&partial)
        .output()
        .map_err(|e| Error::io("cannot run `qemu-img`", e))?;
    if !copied.status.success() {
        let _ = fs::remove_file(&partial);
        return Err(virt::VirtError::Tool {
            tool: "qemu-img convert".into(),
            message: String::from_utf8_lossy(&copied.stderr).trim().to_owned(),
        }
        .into());
    }
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o444))
        .map_err(|e| Error::io("cannot make the image read-only", e))?;
    fs::rename(&partial, &dest).map_err(|e| Error::io("cannot move the image into place", e))?;
    crate::hooks::pause_point("image-copied");
    let path = dest.display().to_string();
    let new = NewImage {
        name: name.as_str(),
        path: &path,
        format: "qcow2",
        virtual_size: info.virtual_size,
        os_user: &os_user,
    };
    if let Err(e) = db::images::insert(ctx.db()?, &new, crate::hooks::now()) {
        // This call put the file there, under the lock, and no row names it.
        let _ = fs::remove_file(&dest);
        return Err(e);
    }
    Ok(db::images::get(ctx.db()?, name.as_str())?.expect("inserted above"))
}

pub fn list(ctx: &Context) -> Result<Vec<Image>> {
    db::images::list(ctx.db()?)
}

pub fn remove(ctx: &Context, name: &str) -> Result<()> {
    let outcome = (|| {
        if db::images::get(ctx.db()?, name)?.is_none() {
            return Err(Error::not_found("image", name));
        }
        ctx.paths.create()?;
        // An add of the same name waits until the row and the file are both gone.
        let _lock = crate::ops::lock::exclusive(&ctx.paths.lock(&format!("image-{name}")))?;
        let image =
            db::images::get(ctx.db()?, name)?.ok_or_else(|| Error::not_found("image", name))?;
        let users = db::images::users_of(ctx.db()?, name)?;
        if users > 0 {
            return Err(Error::conflict(
                format!("image `{name}` is used by {users} VM(s)"),
                Some("VM disks are overlays on their image; delete those VMs first (`basphere admin vms`)"),
            ));
        }
        db::images::delete(ctx.db()?, name)?;
        match fs::remove_file(&image.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot remove `{}`", image.path), e)),
        }
    })();
    ctx.audit("image.remove", &format!("image:{name}"), &outcome);
    outcome
}
