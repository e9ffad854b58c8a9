//! The data directory's lock file, `serve.lock`: one server per data directory.
//!
//! Two servers on one `state.db` would apply every revision twice and lose audit entries to
//! each other's write locks, so the server takes an exclusive lock on `serve.lock` before it
//! opens the database and holds it until it exits. The kernel drops the lock with the process,
//! so a server killed with `kill -9` leaves nothing to clean up.
//!
//! The file also marks a data directory whose database was created: once a server has created
//! `state.db`, it writes a line into `serve.lock`. A later start that finds that line but no
//! `state.db` (or an empty one) refuses, rather than quietly starting a new database with no
//! history and no audit log.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data_dir`'s lock file, creating the file when missing. Fails at once
    /// when another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(LOCK_FILE);
        // A lock file that cannot be written is still locked through a read-only handle, so a
        // write-protected data directory is reported by the database's own checks.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied if path.is_file() => File::open(&path),
                _ => Err(e),
            })
            .map_err(|e| StoreError::Lock {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { file, path }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Err(TryLockError::Error(e)) => Err(StoreError::Lock {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Fails with [`StoreError::Locked`] when another process holds the lock of an existing
    /// data directory; creates nothing. Lets a start report a second server before it tries
    /// the listen address the first one holds.
    pub fn probe(data_dir: &Path) -> Result<(), StoreError> {
        let path = data_dir.join(LOCK_FILE);
        let Ok(file) = File::open(&path) else {
            return Ok(());
        };
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Ok(()) | Err(TryLockError::Error(_)) => Ok(()),
        }
    }

    /// Whether a server has created a database in this directory before.
    pub fn database_was_created(&self) -> Result<bool, StoreError> {
        let text = std::fs::read(&self.path).map_err(|e| self.error(&e))?;
        Ok(!text.trim_ascii().is_empty())
    }

    /// Notes that the database now exists, so its disappearance is noticed at a later start.
    pub fn mark_database_created(&self) -> Result<(), StoreError> {
        let line = format!(
            "restic-manager data directory; state.db created {}\n",
            jiff::Timestamp::now()
        );
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(line.as_bytes(), 0))
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.error(&e))
    }

    fn error(&self, e: &std::io::Error) -> StoreError {
        StoreError::Lock {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}
