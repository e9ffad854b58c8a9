//! The agent's state directory: finished jobs' results waiting for the server, the record of
//! job ids already run, and a private work directory for the runner.
//!
//! ```text
//! <state-dir>/            0700
//!   agent.lock            held (flock) by the one agent using the directory; holds its pid
//!   results/<job-id>.json one finished job's result, until the server acknowledges it
//!   jobs.json             the record of job ids (see [`crate::ledger`])
//!   work/                 0700, the runner's temporary files and restic's cache
//! ```
//!
//! Opening the directory first takes an exclusive lock on `agent.lock`, held as long as the
//! [`State`] lives (the kernel drops it with the process, however it ends): two agents on one
//! directory would run the same job ids twice and mark each other's jobs as failed.
//!
//! Every file is written atomically (a temporary file in the same directory, fsync, rename,
//! fsync of the directory), so after a crash or power loss a file is either the old version or
//! the new one, never half of each. Opening the directory also repairs what a crash can leave
//! behind: a job recorded as running whose result never came gets a "the agent stopped" result,
//! the record and the results directory are brought back in line, and the per-job directories
//! under `work/` (each holding a repository password) that a killed agent left are removed.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use protocol::{JobId, JobResult, Outcome};
use tracing::{error, info, warn};

use crate::ledger::{Ledger, Lookup};

/// The longest job id the agent accepts. It becomes a file name, which most file systems
/// allow up to 255 bytes; the server's ids (`<host>.<policy>.<kind>.<unix time>`) stay under
/// 150.
pub const MAX_JOB_ID_LEN: usize = 200;

/// The lock file inside the state directory.
pub const LOCK_FILE: &str = "agent.lock";

/// The prefix of the runner's per-job directories under `work/`.
pub const JOB_DIR_PREFIX: &str = "job-";

/// Why the state directory cannot be used. Each message names the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the job record {path} is unreadable ({reason}). The agent does not start without it, \
         since a job could then run twice. If the file is lost for good, move it aside \
         (`mv {path} {path}.broken`) and start the agent again: it starts an empty record"
    )]
    CorruptLedger { path: PathBuf, reason: String },
    #[error("cannot encode the result of job {job_id}: {reason}")]
    Encode { job_id: JobId, reason: String },
    #[error(
        "another restic-manager-agent{holder} is running with the state directory {dir} (it \
         holds {lock}); stop it first (`systemctl stop restic-manager-agent`), or give this \
         agent a state directory of its own with --state-dir",
        dir = dir.display(),
        lock = dir.join(LOCK_FILE).display(),
        holder = pid.map_or_else(String::new, |pid| format!(" (pid {pid})"))
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error(
        "cannot lock {path}: {source}; the agent does not run without the lock, since a second \
         agent on the same state directory would run jobs twice"
    )]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that a job id can be used as a file name: 1 to 200 of `[A-Za-z0-9._-]`, not
/// starting with `.`.
pub fn check_job_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the job id is empty".to_owned());
    }
    if id.len() > MAX_JOB_ID_LEN {
        return Err(format!(
            "the job id is {} bytes long; at most {MAX_JOB_ID_LEN} are accepted",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err("the job id starts with `.`".to_owned());
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the job id contains {bad:?}; only letters, digits, `.`, `_` and `-` are accepted"
        ));
    }
    Ok(())
}

/// The open state directory.
#[derive(Debug)]
pub struct State {
    root: PathBuf,
    results: PathBuf,
    work: PathBuf,
    ledger: Ledger,
    /// Holds the directory's lock for as long as the state is open.
    _lock: File,
}

impl State {
    /// Opens (creating when missing) the state directory, takes its lock, and repairs what a
    /// crash left. Fails with [`StateError::Locked`] at once when another agent holds it.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        create_private_dir(root)?;
        let lock = take_lock(root)?;
        let results = root.join("results");
        let work = work_dir(root);
        create_private_dir(&results)?;
        create_private_dir(&work)?;
        remove_leftover_job_dirs(&work);
        let ledger = Ledger::load(&root.join("jobs.json"))?;
        let mut state = State {
            root: root.to_owned(),
            results,
            work,
            ledger,
            _lock: lock,
        };
        state.recover()?;
        Ok(state)
    }

    /// The state directory itself.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runner's private work directory (0700).
    #[must_use]
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// What the record knows of a job id.
    #[must_use]
    pub fn lookup(&self, id: &str) -> Lookup<'_> {
        self.ledger.lookup(id)
    }

    /// Records that a job starts; durable before it returns, so a job never runs twice.
    pub fn record_started(&mut self, id: &str) -> Result<(), StateError> {
        self.ledger.record_started(id, jiff::Timestamp::now())
    }

    /// Stores a finished job's result and records its outcome. The result is on disk when
    /// this returns, so it can be sent.
    pub fn store_result(&mut self, result: &JobResult) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(result).map_err(|e| StateError::Encode {
            job_id: result.job_id.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.result_path(&result.job_id), &text)?;
        self.ledger
            .record_finished(&result.job_id, result.outcome, result.finished_at)
    }

    /// Forgets a result the server has acknowledged. An unknown id is not an error.
    pub fn acknowledge(&mut self, id: &str) -> Result<bool, StateError> {
        let path = self.result_path(id);
        let removed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => return Err(StateError::Remove { path, source }),
        };
        if removed {
            sync_dir(&self.results)?;
        }
        let recorded = self.ledger.record_acked(id, jiff::Timestamp::now())?;
        Ok(removed || recorded)
    }

    /// A stored result, if there is one.
    pub fn read_result(&self, id: &str) -> Result<Option<JobResult>, StateError> {
        let path = self.result_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => parse_result(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Every stored result, oldest first: what to send after connecting.
    pub fn pending_results(&self) -> Result<Vec<JobResult>, StateError> {
        let mut results = Vec::new();
        for id in self.result_ids()? {
            if let Some(result) = self.read_result(&id)? {
                results.push(result);
            }
        }
        results.sort_by_key(|r| r.finished_at);
        Ok(results)
    }

    fn result_path(&self, id: &str) -> PathBuf {
        self.results.join(format!("{id}.json"))
    }

    /// The ids of the files in `results/`, removing leftovers of interrupted writes.
    fn result_ids(&self) -> Result<Vec<JobId>, StateError> {
        let read_error = |source| StateError::Read {
            path: self.results.clone(),
            source,
        };
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.results).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if check_job_id(id).is_ok() {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Brings the record and the results back in line after a crash or a power loss.
    fn recover(&mut self) -> Result<(), StateError> {
        // Results on disk are the truth about how a job ended.
        for id in self.result_ids()? {
            let result = match self.read_result(&id) {
                Ok(Some(result)) if result.job_id == id => result,
                Ok(None) => continue,
                Ok(Some(_)) | Err(_) => self.replace_unreadable_result(&id)?,
            };
            match self.ledger.lookup(&id) {
                Lookup::Acknowledged(_) => {
                    // The server acknowledged it, but the agent stopped before deleting it.
                    self.acknowledge(&id)?;
                }
                Lookup::Finished(_) => {}
                _ => {
                    self.ledger
                        .record_finished(&id, result.outcome, result.finished_at)?;
                }
            }
        }

        for id in self.ledger.running_ids() {
            if self.result_path(&id).exists() {
                continue;
            }
            let started_at = self.ledger.started_at(&id);
            warn!(
                job_id = %id,
                "the agent stopped while this job ran; reporting it as failed, not running it again"
            );
            let message = format!(
                "the agent stopped (restart, crash or power loss) while this job ran, started \
                 at {started_at}; it did not finish here and is not run again under the same \
                 job id"
            );
            let now = jiff::Timestamp::now();
            self.store_result(&synthetic_result(
                &id,
                Outcome::Failed,
                message,
                started_at,
                now,
            ))?;
        }

        for id in self.ledger.finished_ids() {
            if !self.result_path(&id).exists() {
                // The result was removed on acknowledgement before the record said so.
                self.ledger.record_acked(&id, jiff::Timestamp::now())?;
            }
        }
        Ok(())
    }

    /// Keeps an unreadable result aside and stores one that says so in its place.
    fn replace_unreadable_result(&mut self, id: &str) -> Result<JobResult, StateError> {
        let path = self.result_path(id);
        let aside = self.results.join(format!("{id}.json.unreadable"));
        let reason = match self.read_result(id) {
            Err(e) => e.to_string(),
            Ok(_) => "its job id does not match its file name".to_owned(),
        };
        error!(job_id = %id, path = %path.display(), %reason, "a stored result is unreadable");
        std::fs::rename(&path, &aside).map_err(|source| StateError::Write {
            path: aside.clone(),
            source,
        })?;
        let now = jiff::Timestamp::now();
        let started_at = self.ledger.started_at(id);
        let result = synthetic_result(
            id,
            Outcome::Failed,
            format!(
                "the job ran, but the agent's stored result of it could not be read ({reason}); \
                 its outcome is unknown. The unreadable file is kept at {}",
                aside.display()
            ),
            started_at,
            now,
        );
        self.store_result(&result)?;
        Ok(result)
    }
}

/// Takes the exclusive lock on `<root>/agent.lock` and writes this process's pid into it.
fn take_lock(root: &Path) -> Result<File, StateError> {
    let path = root.join(LOCK_FILE);
    let lock_error = |source| StateError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: root.to_owned(),
                pid: read_pid(&mut file),
            });
        }
        Err(TryLockError::Error(source)) => return Err(lock_error(source)),
    }
    // The pid is only for the message a second agent shows; the lock itself is what counts.
    let write_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    if let Err(e) = write_pid(&mut file) {
        warn!(path = %path.display(), error = %e, "cannot write the agent's pid into its lock file");
    }
    Ok(file)
}

/// The pid the lock's holder wrote into it, if it is readable.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Removes the per-job directories a killed agent left under `work/`. Each holds a copy of a
/// repository password; none belongs to a running job, since this agent holds the lock and
/// has not started any.
fn remove_leftover_job_dirs(work: &Path) {
    let entries = match std::fs::read_dir(work) {
        Ok(entries) => entries,
        Err(e) => {
            error!(dir = %work.display(), error = %e, "cannot list the agent's work directory to remove leftover job directories");
            return;
        }
    };
    let mut removed = 0usize;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(JOB_DIR_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        // A symlink is removed itself, never followed.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let outcome = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match outcome {
            Ok(()) => removed += 1,
            Err(e) => error!(
                path = %path.display(),
                error = %e,
                "cannot remove a job directory left by an earlier run, which may hold a \
                 repository password; remove it by hand"
            ),
        }
    }
    if removed > 0 {
        info!(
            removed,
            dir = %work.display(),
            "removed job directories left by an earlier run that stopped without cleaning up \
             (they held repository passwords)"
        );
    }
}

/// The runner's work directory inside the state directory `root` (created by [`State::open`]).
#[must_use]
pub fn work_dir(root: &Path) -> PathBuf {
    root.join("work")
}

/// A result the agent makes itself, for a job it refused or could not finish.
#[must_use]
pub fn synthetic_result(
    id: &str,
    outcome: Outcome,
    message: String,
    started_at: jiff::Timestamp,
    finished_at: jiff::Timestamp,
) -> JobResult {
    JobResult {
        job_id: id.to_owned(),
        outcome,
        message,
        exit_code: None,
        started_at,
        finished_at,
        summary: None,
        unreadable: Vec::new(),
        initialized: false,
        stderr_tail: String::new(),
        snapshots: None,
    }
}

fn parse_result(path: &Path, bytes: &[u8]) -> Result<JobResult, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Creates a directory with mode 0700 when missing; warns when an existing one is open to
/// others.
pub fn create_private_dir(path: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StateError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                "the agent's directory is open to other users; run `chmod 700` on it"
            );
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` so that the file is either the old one or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let write_error = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(dir)
        .map_err(write_error)?;
    temp.write_all(bytes).map_err(write_error)?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    sync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Write {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, outcome: Outcome) -> JobResult {
        let now = jiff::Timestamp::now();
        synthetic_result(id, outcome, "done".to_owned(), now, now)
    }

    #[test]
    fn job_ids_that_cannot_be_file_names_are_refused() {
        assert!(check_job_id("web-1.system.backup.1800000000").is_ok());
        assert!(check_job_id(&format!("{0}.{0}.snapshots.1800000000", "a".repeat(63))).is_ok());
        assert!(check_job_id("j-42_backup.1").is_ok());
        for (id, expected) in [
            ("", "empty"),
            ("../etc/passwd", "starts with `.`"),
            ("a/b", "contains '/'"),
            ("a b", "contains ' '"),
            ("é", "contains 'é'"),
            ("2026-12-04T03:00:00Z", "contains ':'"),
            (&"x".repeat(201), "201 bytes long"),
        ] {
            let err = check_job_id(id).unwrap_err();
            assert!(err.contains(expected), "{id:?}: {err}");
        }
    }

    #[test]
    fn a_stored_result_stays_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        state.record_started("j-1").unwrap();
        state
            .store_result(&result("j-1", Outcome::Succeeded))
            .unwrap();
        assert!(dir.path().join("results/j-1.json").exists());
        assert_eq!(state.pending_results().unwrap().len(), 1);
        assert!(matches!(state.lookup("j-1"), Lookup::Finished(_)));

        assert!(state.acknowledge("j-1").unwrap());
        assert!(!dir.path().join("results/j-1.json").exists());
        assert!(state.pending_results().unwrap().is_empty());
        assert!(matches!(state.lookup("j-1"), Lookup::Acknowledged(_)));
        assert!(!state.acknowledge("never-seen").unwrap());
    }

    #[test]
    fn directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let state = State::open(&root).unwrap();
        for path in [
            root.clone(),
            root.join("results"),
            state.work_dir().to_owned(),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
    }

    #[test]
    fn a_job_interrupted_by_a_stop_is_reported_as_failed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = State::open(dir.path()).unwrap();
            state.record_started("j-2").unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        let pending = state.pending_results().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].outcome, Outcome::Failed);
        assert!(
            pending[0].message.contains("the agent stopped"),
            "{}",
            pending[0].message
        );
        assert!(matches!(state.lookup("j-2"), Lookup::Finished(_)));
    }

    #[test]
    fn an_unreadable_result_is_kept_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = State::open(dir.path()).unwrap();
            state.record_started("j-3").unwrap();
            state
                .store_result(&result("j-3", Outcome::Succeeded))
                .unwrap();
        }
        std::fs::write(dir.path().join("results/j-3.json"), b"{ not json").unwrap();
        std::fs::write(dir.path().join("results/.tmpXYZ"), b"half").unwrap();
        let state = State::open(dir.path()).unwrap();
        let pending = state.pending_results().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].outcome, Outcome::Failed);
        assert!(
            pending[0].message.contains("could not be read"),
            "{}",
            pending[0].message
        );
        assert!(dir.path().join("results/j-3.json.unreadable").exists());
        assert!(!dir.path().join("results/.tmpXYZ").exists());
    }

    #[test]
    fn a_result_whose_record_was_not_updated_is_recorded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = State::open(dir.path()).unwrap();
            state.record_started("j-4").unwrap();
        }
        // The result was written, then the agent stopped before updating the record.
        let text = serde_json::to_vec(&result("j-4", Outcome::Partial)).unwrap();
        std::fs::write(dir.path().join("results/j-4.json"), text).unwrap();
        let state = State::open(dir.path()).unwrap();
        let Lookup::Finished(entry) = state.lookup("j-4") else {
            panic!("j-4 should be finished");
        };
        assert_eq!(entry.outcome, Some(Outcome::Partial));
    }

    #[test]
    fn a_second_open_of_a_locked_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = State::open(dir.path()).unwrap();
        let err = State::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StateError::Locked { pid: Some(pid), .. } if pid == std::process::id()),
            "{err:?}"
        );
        let text = err.to_string();
        let root = dir.path().display();
        assert!(
            text.starts_with(&format!(
                "another restic-manager-agent (pid {}) is running with the state directory \
                 {root} (it holds {root}/agent.lock); stop it first",
                std::process::id()
            )),
            "{text}"
        );

        // The lock goes with the state that holds it.
        drop(first);
        State::open(dir.path()).unwrap();
    }

    #[test]
    fn job_directories_left_by_a_killed_agent_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let leftover = work.join("job-x1Y2z3");
        std::fs::create_dir_all(leftover.join("tmp")).unwrap();
        std::fs::write(leftover.join("password"), "secret").unwrap();
        std::fs::create_dir_all(work.join("cache/abc")).unwrap();
        std::fs::write(work.join("cache/abc/data"), "cached").unwrap();

        let state = State::open(dir.path()).unwrap();
        assert!(
            !leftover.exists(),
            "the leftover job directory is still there"
        );
        assert!(
            work.join("cache/abc/data").exists(),
            "restic's cache must stay"
        );
        assert_eq!(state.work_dir(), work);
    }
}
