//! Advisory file locks. The kernel drops them when a process dies, which is what lets
//! `admin reconcile` tell a create in progress from one that was killed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

pub struct Lock {
    _flock: Flock<File>,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::files::PRIVATE)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open lock `{}`", path.display()), e))
}

/// Waits for the lock.
pub fn exclusive(path: &Path) -> Result<Lock> {
    let file = open(path)?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(|flock| Lock { _flock: flock })
        .map_err(|(_, errno)| Error::io(format!("cannot lock `{}`", path.display()), errno.into()))
}

/// Waits for the lock in shared mode: others may hold it shared too, but nobody
/// exclusively.
pub fn shared(path: &Path) -> Result<Lock> {
    let file = open(path)?;
    Flock::lock(file, FlockArg::LockShared)
        .map(|flock| Lock { _flock: flock })
        .map_err(|(_, errno)| Error::io(format!("cannot lock `{}`", path.display()), errno.into()))
}

/// Takes the lock only if nobody holds it.
pub fn try_exclusive(path: &Path) -> Result<Option<Lock>> {
    let file = open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(flock) => Ok(Some(Lock { _flock: flock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(Error::io(
            format!("cannot lock `{}`", path.display()),
            errno.into(),
        )),
    }
}
