//! Files and directories basphere makes, their modes set explicitly rather than left to
//! the umask: files are private (0600); the directories QEMU must pass through to reach
//! disks, seeds and images are 0711 (it may enter them, not list them); others are 0700.
//!
//! QEMU still reads a private disk: libvirt hands each disk to QEMU's account while its
//! VM runs (`dynamic_ownership`, on by default) and gives it back afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Files: the owner alone reads and writes them.
pub const PRIVATE: u32 = 0o600;
/// Directories QEMU, running as another account, must pass through.
pub const TRAVERSABLE_DIR: u32 = 0o711;
/// Directories only basphere uses.
pub const PRIVATE_DIR: u32 = 0o700;

/// The permission bits in `meta`.
fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Makes `dir` if needed and gives it `mode`, whatever the umask and whether it was there
/// before. Parents it has to make get `mode` too (QEMU must pass through them as well);
/// those that exist are left alone.
pub fn dir(dir: &Path, mode: u32) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            self::dir(parent, mode)?;
        }
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        // Made meanwhile by another process.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    set_mode(dir, mode)
}

/// Makes `dir`, which must not exist yet, with `mode`.
pub fn new_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(dir)?;
    set_mode(dir, mode)
}

/// Gives `path` `mode`; one that has it already is left alone, so an account that may use
/// a directory it does not own is not refused.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    if mode_of(&fs::metadata(path)?) != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn private(file: File) -> io::Result<File> {
    if mode_of(&file.metadata()?) != PRIVATE {
        file.set_permissions(fs::Permissions::from_mode(PRIVATE))?;
    }
    Ok(file)
}

/// Creates `path`, which must not exist (nor be a symlink), as an empty private file.
pub fn create_new(path: &Path) -> io::Result<File> {
    private(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE)
            .open(path)?,
    )
}

/// Writes `contents` to `path` as a private file, replacing what it held.
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = private(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE)
            .open(path)?,
    )?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        mode_of(&fs::metadata(path).unwrap())
    }

    #[test]
    fn directories_get_their_mode_even_when_they_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        dir(&fresh, TRAVERSABLE_DIR).unwrap();
        assert_eq!(mode(&fresh), 0o711);
        assert_eq!(mode(&tmp.path().join("a")), 0o711);
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(dir(&file, PRIVATE_DIR).is_err(), "a file is no directory");
        // tempdir made it 0700.
        dir(tmp.path(), TRAVERSABLE_DIR).unwrap();
        assert_eq!(mode(tmp.path()), 0o711);
        dir(&fresh, PRIVATE_DIR).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert!(new_dir(&fresh, PRIVATE_DIR).is_err(), "made twice");
        new_dir(&tmp.path().join("c"), TRAVERSABLE_DIR).unwrap();
        assert_eq!(mode(&tmp.path().join("c")), 0o711);
    }

    #[test]
    fn files_are_private_even_when_they_were_not() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");

        let fresh = tmp.path().join("g");
        create_new(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);
        let e = create_new(&fresh).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        std::os::unix::fs::symlink(&path, tmp.path().join("link")).unwrap();
        let e = create_new(&tmp.path().join("link")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
