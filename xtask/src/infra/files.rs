//! Where the xtask writes, and how: scratch directories under `target/` that are removed on every
//! path, a lock that serialises builds, and a directory swap that replaces a whole set of files
//! at once.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

use crate::infra::process;

/// The workspace root (the boot-sector crate), from the xtask's own manifest directory.
pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    project_root().join("target")
}

/// Environment variable that moves the scratch directories (the test task points the test
/// process at one it removes afterwards).
pub const SCRATCH_ENV: &str = "VM512_SCRATCH";

/// A directory for temporary files under `target/tmp/` (or `$VM512_SCRATCH`), removed when
/// dropped and, for the xtask itself, when a signal ends it.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates `target/tmp/<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Result<Scratch> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var_os(SCRATCH_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("tmp"));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{name}-{}-{n}", std::process::id()));
        Scratch::at(path)
    }

    /// Creates the directory `path` (which must not exist) as a scratch directory.
    pub fn at(path: PathBuf) -> Result<Scratch> {
        process::remove_on_signal(&path);
        let scratch = Scratch { path };
        fs::create_dir_all(&scratch.path)
            .with_context(|| format!("creating {}", scratch.path.display()))?;
        Ok(scratch)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        process::forget_path(&self.path);
        // The shared parent goes too once it is empty.
        if let Some(parent) = self.path.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// An exclusive lock on a directory (flock(2) on the directory itself, so no lock file is left
/// behind); released when dropped or when the process ends, however it ends.
pub struct DirLock {
    _dir: fs::File,
}

/// Locks `dir` (creating it), waiting, with a note, while another xtask holds it.
pub fn lock(dir: &Path) -> Result<DirLock> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("locking {}", dir.display()));
        }
        eprintln!("waiting for another cargo xtask that is writing to {} ...", dir.display());
        // SAFETY: as above, blocking.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("locking {}", dir.display()));
        }
    }
    Ok(DirLock { _dir: file })
}

/// Puts the directory `new` in the place of `dest` in one step (renameat2 RENAME_EXCHANGE, so
/// that a reader sees the old set or the new one, never a mix), then removes the old one.
pub fn replace_dir(new: &Path, dest: &Path) -> Result<()> {
    let context = || format!("moving {} to {}", new.display(), dest.display());
    if !dest.exists() {
        return fs::rename(new, dest).with_context(context);
    }
    let c = |path: &Path| CString::new(path.as_os_str().as_bytes()).expect("no NUL in a path");
    let (from, to) = (c(new), c(dest));
    // SAFETY: two NUL-terminated paths.
    let exchanged = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    } == 0;
    if !exchanged {
        // A file system without RENAME_EXCHANGE: move the old set aside first.
        let aside = new.with_extension("old");
        fs::rename(dest, &aside).with_context(context)?;
        fs::rename(new, dest).with_context(context)?;
        fs::rename(&aside, new).with_context(context)?;
    }
    // `new` now holds the old set.
    fs::remove_dir_all(new).with_context(|| format!("removing {}", new.display()))
}

/// Plain words for the usual reasons a write fails in `dir`: the disk is full, or the directory
/// is not writable. `None` when neither explains it.
pub fn why_writes_fail(dir: &Path) -> Option<String> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(2) fills the struct; access(2) only checks.
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stats) == 0 {
            let free = stats.f_bavail as u64 * stats.f_frsize as u64;
            if free < 4 << 20 {
                return Some(format!(
                    "the disk holding {} is full ({free} bytes free): free some space and run \
                     again",
                    dir.display(),
                ));
            }
        }
        if libc::access(path.as_ptr(), libc::W_OK) != 0 {
            return Some(format!(
                "{} is not writable by this user: fix its permissions or its owner",
                dir.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_lives_under_target_and_is_removed_when_dropped() {
        let scratch = Scratch::new("unit").unwrap();
        let path = scratch.path().to_path_buf();
        fs::write(scratch.join("file"), b"x").unwrap();
        assert!(path.starts_with(target_dir()) || std::env::var_os(SCRATCH_ENV).is_some());
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn replace_dir_swaps_whole_sets() {
        let scratch = Scratch::new("swap").unwrap();
        let (dest, new) = (scratch.join("images"), scratch.join("staging"));
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("a.raw"), b"old").unwrap();
        fs::write(dest.join("b.iso"), b"old").unwrap();
        fs::create_dir(&new).unwrap();
        fs::write(new.join("a.raw"), b"new").unwrap();
        replace_dir(&new, &dest).unwrap();
        assert_eq!(fs::read(dest.join("a.raw")).unwrap(), b"new");
        assert!(!dest.join("b.iso").exists(), "a file of the old set survived");
        assert!(!new.exists());
        // Into a place that does not exist yet.
        fs::create_dir(&new).unwrap();
        replace_dir(&new, &scratch.join("fresh")).unwrap();
        assert!(scratch.join("fresh").is_dir());
    }

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let scratch = Scratch::new("lock").unwrap();
        let first = lock(scratch.path()).unwrap();
        let path = scratch.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = lock(&path).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "no wait");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the second lock was granted");
        waiter.join().unwrap();
    }
}
