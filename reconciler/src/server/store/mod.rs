//! The server's state in `SQLite`: revisions, hosts and agent sessions, applied assignments,
//! schedule state, jobs, snapshot inventories and the audit log.
//!
//! One file, `state.db` in the data directory, opened in WAL mode with `synchronous = FULL`:
//! a committed transaction survives a power cut, and `kill -9` at any moment leaves either
//! the state before a transaction or the state after it. Each change that must not be half
//! done (a revision's actions and their audit entries; a job queued with its schedule
//! bookkeeping) is one transaction.
//!
//! The schema is versioned with `PRAGMA user_version` and migrated at open by the numbered
//! steps in [`migrations`]; a file written by a newer server is refused rather than guessed
//! at. The store is synchronous: the server runs it on the blocking pool.

mod audit;
mod jobs;
mod lock;
mod migrations;
pub mod queries;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::model::{
    Action, AppliedAssignment, AssignmentKey, FleetState, HostRecord, JobKind, RevisionInfo,
};
use super::reconcile::{ChangedKeys, describe_change};

pub use audit::{AuditEntry, ChainPoint, Step, Verified, verify_audit};
pub use jobs::{JobRecord, NewJob, SessionRecord, Settled};
pub use lock::{DataDirLock, LOCK_FILE};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "state.db";

/// Why the store cannot do what was asked. Every message names the database file when it is
/// about the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data directory {} is not a directory; point --data-dir at a directory",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "cannot open the state database {}: {reason}; check that the data directory is \
         writable by the server's user",
        path.display()
    )]
    Open { path: PathBuf, reason: String },
    #[error(
        "there is no state database at {}; pass --data-dir the server's data directory",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "the state database {} is {kind}, not a file; move it aside (the server creates \
         {DB_FILE} itself) or point --data-dir at the right directory",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "the state database {} is damaged or not a restic-manager database: {reason}; move it \
         aside and restore the last backup of the data directory (nothing was written to it)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the state database {} has schema version {found}, newer than the {supported} this \
         restic-manager knows; run the newer restic-manager, or restore a backup made before \
         the upgrade",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "another restic-manager server is running on this data directory (it holds the lock \
         {}); stop it first, or give this one its own --data-dir",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "cannot lock the data directory with {}: {reason}; check that the data directory is \
         writable by the server's user",
        path.display()
    )]
    Lock { path: PathBuf, reason: String },
    #[error(
        "the state database {} is {what}, but a server created it in this data directory \
         before (see {}); restore state.db from the last backup of the data directory. To \
         start over with no jobs, schedules or audit history, delete {} as well",
        path.display(),
        lock.display(),
        lock.display()
    )]
    Vanished {
        path: PathBuf,
        lock: PathBuf,
        what: &'static str,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds a value it cannot read back: {0}")]
    Decode(String),
}

/// The open state database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The applied state, loaded once and kept in step with every applied revision, so a
    /// reconcile of 10,000 hosts does not read 50,000 rows first.
    applied: Option<FleetState>,
    /// Held for as long as the store is open, by the server only.
    _lock: Option<lock::DataDirLock>,
    /// The status view's check of the audit chain ([`Store::check_audit_step`]).
    audit_check: AuditProgress,
}

/// How far this process has verified the audit chain for the status view.
#[derive(Debug, Default)]
struct AuditProgress {
    /// The end of the chain at the last complete check, and when the first complete walk
    /// from the first entry ended.
    verified: Option<(ChainPoint, jiff::Timestamp)>,
    /// Where a check in progress stands.
    cursor: Option<ChainPoint>,
}

/// The status view's check of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    pub verified: Verified,
    /// When this process finished walking the whole chain from its first entry; later checks
    /// only read what was added since (and that the last entry checked is unchanged). `None`
    /// when no walk got to the end.
    pub walked_at: Option<jiff::Timestamp>,
}

impl Store {
    /// Opens (creating when missing) `state.db` in `data_dir` and migrates it to the current
    /// schema. Nothing is written to a file that fails its checks.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        prepare_dir(data_dir)?;
        let lock = lock::DataDirLock::acquire(data_dir)?;
        let path = data_dir.join(DB_FILE);
        check_is_file(&path)?;
        let new = !path.exists();
        let empty = !new && path.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
        let created_before = lock.database_was_created()?;
        if (new || empty) && created_before {
            return Err(StoreError::Vanished {
                lock: data_dir.join(LOCK_FILE),
                path,
                what: if new { "missing" } else { "empty" },
            });
        }
        let conn = Connection::open(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if new {
            // Job records and the audit log are the operator's business only, whatever the
            // umask.
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let store = Self::from_connection(conn, path, migrations::LATEST)?;
        if !created_before {
            lock.mark_database_created()?;
        }
        Ok(Self {
            _lock: Some(lock),
            ..store
        })
    }

    /// Opens the database for reading only, without migrating: for `audit verify` beside a
    /// running server.
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        check_is_file(&path)?;
        if !path.is_file() {
            return Err(StoreError::Missing { path });
        }
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        check_integrity(&conn, &path)?;
        Ok(Self {
            conn,
            path,
            applied: None,
            _lock: None,
            audit_check: AuditProgress::default(),
        })
    }

    /// Checks the file and migrates it up to schema version `target`.
    fn from_connection(conn: Connection, path: PathBuf, target: i64) -> Result<Self, StoreError> {
        check_integrity(&conn, &path)?;
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        // WAL lets `audit verify` and the tests read beside the server; FULL makes every
        // commit durable before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        // SQLite quietly opens a write-protected file read-only; the server must find out at
        // start, not at its first write. Taking the write lock also needs the directory to
        // be writable (for the WAL).
        let writable = !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
            && conn.execute_batch("BEGIN IMMEDIATE; COMMIT;").is_ok();
        if !writable {
            return Err(StoreError::Open {
                path: path.clone(),
                reason: "the file or its directory is read-only".to_owned(),
            });
        }
        let mut store = Self {
            conn,
            path,
            applied: None,
            _lock: None,
            audit_check: AuditProgress::default(),
        };
        migrations::migrate(&mut store.conn, &store.path, target)?;
        Ok(store)
    }

    /// Where the database lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }

    /// Records a revision that failed validation, with its errors. The applied state is not
    /// touched: the last good revision stays in force.
    pub fn record_revision(
        &mut self,
        revision: &RevisionInfo,
        outcome: Result<(), &str>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let (status, errors) = match outcome {
            Ok(()) => ("applied", None),
            Err(errors) => ("invalid", Some(errors)),
        };
        insert_revision(&tx, revision, status, errors)?;
        let detail = serde_json::json!({
            "author": revision.author,
            "summary": revision.summary,
            "errors": errors,
        });
        audit::append(
            &tx,
            "git",
            if errors.is_some() {
                "revision-invalid"
            } else {
                "revision-applied"
            },
            &short(&revision.commit),
            Some(&revision.commit),
            &detail,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Applies a valid revision in one transaction: diffs `desired` against the applied
    /// state, changes the hosts, assignments and repositories tables, audits each action with
    /// the commit, and makes the revision the last applied one. `rewritten_from` names the
    /// previous tip when history was rewritten, which is audited too; `changed` names the
    /// keys behind each changed assignment. Returns the actions.
    pub fn apply_revision(
        &mut self,
        revision: &RevisionInfo,
        desired: FleetState,
        rewritten_from: Option<&str>,
        changed: &ChangedKeys,
    ) -> Result<Vec<Action>, StoreError> {
        let actions = super::reconcile::diff(self.applied_state()?, &desired);
        let last_applied = match rewritten_from {
            Some(_) => self.last_applied_revision()?.map(|r| r.commit),
            None => None,
        };
        let now = jiff::Timestamp::now().as_second();
        let tx = self.conn.transaction()?;
        let commit = Some(revision.commit.as_str());
        if let Some(previous) = rewritten_from {
            audit::append(
                &tx,
                "git",
                "history-rewritten",
                &short(&revision.commit),
                commit,
                &serde_json::json!({
                    "previous": previous,
                    "last-applied": last_applied,
                    "detail": rewrite_detail(previous, last_applied.as_deref(), &revision.commit),
                }),
            )?;
        }
        for action in &actions {
            apply_action(&tx, action, &desired, now)?;
            audit::append(
                &tx,
                "git",
                action.name(),
                &action.subject(),
                commit,
                &action_detail(action, changed),
            )?;
        }
        for (name, location) in &desired.repositories {
            exec(
                &tx,
                "UPDATE repositories SET location = ?2 WHERE name = ?1 \
                 AND location IS NOT ?2",
                params![name, location],
            )?;
        }
        insert_revision(&tx, revision, "applied", None)?;
        audit::append(
            &tx,
            "git",
            "revision-applied",
            &short(&revision.commit),
            commit,
            &serde_json::json!({
                "author": revision.author,
                "summary": revision.summary,
                "actions": actions.len(),
            }),
        )?;
        tx.commit()?;

        self.applied = Some(desired);
        Ok(actions)
    }

    /// The applied state: hosts, assignments (sorted by key) and repositories.
    pub fn applied_state(&mut self) -> Result<&FleetState, StoreError> {
        if self.applied.is_none() {
            self.applied = Some(load_applied(&self.conn)?);
        }
        Ok(self.applied.get_or_insert_with(FleetState::default))
    }

    /// The revision in force.
    pub fn last_applied_revision(&self) -> Result<Option<RevisionInfo>, StoreError> {
        self.revision_where("WHERE status = 'applied'")
    }

    /// The newest revision the server looked at, valid or not.
    pub fn last_attempted_revision(&self) -> Result<Option<RevisionInfo>, StoreError> {
        self.revision_where("")
    }

    fn revision_where(&self, filter: &str) -> Result<Option<RevisionInfo>, StoreError> {
        let sql = format!(
            "SELECT commit_id, author, summary, committed_at FROM revisions {filter} \
             ORDER BY attempt DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, [], |row| {
                Ok(RevisionInfo {
                    commit: row.get(0)?,
                    author: row.get(1)?,
                    summary: row.get(2)?,
                    committed_at: row
                        .get::<_, Option<i64>>(3)?
                        .and_then(|s| jiff::Timestamp::from_second(s).ok()),
                })
            })
            .optional()?)
    }

    /// The errors of an invalid revision, newest attempt first; `None` when the newest
    /// attempt was applied.
    pub fn last_revision_errors(&self) -> Result<Option<(RevisionInfo, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT commit_id, author, summary, committed_at, errors, status FROM revisions \
                 ORDER BY attempt DESC LIMIT 1",
                [],
                |row| {
                    let status: String = row.get(5)?;
                    let info = RevisionInfo {
                        commit: row.get(0)?,
                        author: row.get(1)?,
                        summary: row.get(2)?,
                        committed_at: row
                            .get::<_, Option<i64>>(3)?
                            .and_then(|s| jiff::Timestamp::from_second(s).ok()),
                    };
                    let errors: Option<String> = row.get(4)?;
                    Ok((status == "invalid").then(|| (info, errors.unwrap_or_default())))
                },
            )
            .optional()?
            .flatten())
    }

    /// Appends one entry to the audit log, in its own transaction.
    pub fn audit(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        commit: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        audit::append(&tx, actor, action, subject, commit, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The newest audit entries, newest first.
    pub fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        audit::latest(&self.conn, limit)
    }

    /// Checks the audit log's hash chain from the first entry to the last.
    pub fn verify_audit(&self) -> Result<Verified, StoreError> {
        verify_audit(&self.conn)
    }

    /// Checks at most `limit` entries of the chain after `from` (see [`audit::verify_from`]):
    /// callers walk a long chain in steps, letting go of the store between them.
    pub fn verify_audit_step(
        &self,
        from: Option<&ChainPoint>,
        limit: usize,
    ) -> Result<Step, StoreError> {
        audit::verify_from(&self.conn, from, limit.max(1))
    }

    /// One step of the status view's check of the chain: at most `limit` entries, going on
    /// from where the last step or the last complete check ended. `None` until the check
    /// reaches the end of the chain or a broken entry. The first check walks the whole chain;
    /// later ones only the entries added since, so showing the page stays cheap.
    pub fn check_audit_step(&mut self, limit: usize) -> Result<Option<AuditCheck>, StoreError> {
        let progress = &mut self.audit_check;
        let from = progress
            .cursor
            .clone()
            .or_else(|| progress.verified.as_ref().map(|(point, _)| point.clone()));
        let step = audit::verify_from(&self.conn, from.as_ref(), limit.max(1))?;
        let walked_at = progress.verified.as_ref().map(|(_, at)| *at);
        match step {
            Step::More(point) => {
                progress.cursor = Some(point);
                Ok(None)
            }
            Step::Done(verified) => {
                progress.cursor = None;
                let walked_at = match &verified {
                    Verified::Intact { entries, last_hash } => {
                        let at = walked_at.unwrap_or_else(jiff::Timestamp::now);
                        let end = ChainPoint {
                            seq: i64::try_from(*entries).unwrap_or(i64::MAX),
                            hash: last_hash.clone(),
                        };
                        progress.verified = Some((end, at));
                        Some(at)
                    }
                    Verified::Broken { .. } => walked_at,
                };
                Ok(Some(AuditCheck {
                    verified,
                    walked_at,
                }))
            }
        }
    }
}

/// Creates the data directory (0700) or checks the one given.
fn prepare_dir(data_dir: &Path) -> Result<(), StoreError> {
    if data_dir.exists() && !data_dir.is_dir() {
        return Err(StoreError::NotADirectory {
            path: data_dir.to_owned(),
        });
    }
    if !data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Refuses a `state.db` that exists but is a directory or another kind of non-file, which
/// `SQLite` would only report as "unable to open". A missing one is fine here.
fn check_is_file(path: &Path) -> Result<(), StoreError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(StoreError::NotAFile {
        path: path.to_owned(),
        kind,
    })
}

/// A file that is not a database, or a damaged one, is refused before anything writes to it.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let result: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(code, _)
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
                ) =>
            {
                corrupt(e.to_string())
            }
            other => StoreError::Open {
                path: path.to_owned(),
                reason: other.to_string(),
            },
        })?;
    if result != "ok" {
        return Err(corrupt(result));
    }
    Ok(())
}

fn short(commit: &str) -> String {
    commit.get(..12).unwrap_or(commit).to_owned()
}

fn insert_revision(
    conn: &Connection,
    revision: &RevisionInfo,
    status: &str,
    errors: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO revisions (commit_id, author, summary, committed_at, seen_at, status, errors) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            revision.commit,
            revision.author,
            revision.summary,
            revision.committed_at.map(jiff::Timestamp::as_second),
            jiff::Timestamp::now().as_second(),
            status,
            errors,
        ],
    )?;
    Ok(())
}

fn apply_action(
    conn: &Connection,
    action: &Action,
    desired: &FleetState,
    now: i64,
) -> Result<(), StoreError> {
    match action {
        Action::HostAdded { host } | Action::AgentKeyChanged { host } => {
            let key = desired.hosts.get(host).and_then(|h| h.agent_key.as_deref());
            exec(
                conn,
                "INSERT INTO hosts (name, paused, agent_key, added_at) VALUES (?1, 0, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET agent_key = excluded.agent_key",
                params![host, key, now],
            )?;
            // An agent waiting with the key now committed is no longer pending.
            exec(
                conn,
                "DELETE FROM pending_keys WHERE host = ?1 AND key = ?2",
                params![host, key],
            )?;
        }
        Action::HostRemoved { host } => {
            exec(conn, "DELETE FROM hosts WHERE name = ?1", params![host])?;
            // Runs not yet started are called off. A run already sent may finish on the host,
            // but its agent is no longer enrolled and cannot report it, so it is closed here
            // with what is known rather than left running until it is given up as lost. Marked
            // lost, a result that still arrives (the host is added back) is taken.
            exec(
                conn,
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2, updated_at = ?2, \
                 reason = 'the host was removed from the configuration' \
                 WHERE host = ?1 AND state IN ('queued', 'deferred')",
                params![host, now],
            )?;
            exec(
                conn,
                "UPDATE jobs SET state = 'cancelled', lost = 1, finished_at = ?2, \
                 updated_at = ?2, \
                 reason = 'the host was removed from the configuration while this job was \
                 sent to it; the host may still finish it, but its result and any snapshot it \
                 made are not recorded here' \
                 WHERE host = ?1 AND state IN ('dispatched', 'running')",
                params![host, now],
            )?;
        }
        Action::HostPaused { host } | Action::HostResumed { host } => {
            let paused = matches!(action, Action::HostPaused { .. });
            exec(
                conn,
                "UPDATE hosts SET paused = ?2 WHERE name = ?1",
                params![host, paused],
            )?;
            if paused {
                // A paused host runs nothing, including what was waiting for it; what runs
                // already finishes and reports.
                exec(
                    conn,
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?2, updated_at = ?2, \
                     reason = 'the host was paused in the configuration' \
                     WHERE host = ?1 AND state IN ('queued', 'deferred')",
                    params![host, now],
                )?;
            }
        }
        Action::AssignmentAdded(a) | Action::AssignmentChanged { new: a, .. } => {
            exec(
                conn,
                "INSERT INTO assignments (host, policy, kind, repository, schedule, content_digest) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (host, policy, kind) DO UPDATE SET repository = excluded.repository, \
                 schedule = excluded.schedule, content_digest = excluded.content_digest",
                params![
                    a.key.host,
                    a.key.policy,
                    a.key.kind.as_str(),
                    a.repository,
                    a.schedule,
                    &*a.content_digest
                ],
            )?;
            if matches!(action, Action::AssignmentChanged { old, new } if old.schedule != new.schedule)
            {
                // A new schedule starts afresh from now: its instants between the last run and
                // now were never due, so they are not caught up.
                exec(
                    conn,
                    "UPDATE schedule_state SET next_instant = NULL, last_instant = NULL \
                     WHERE host = ?1 AND policy = ?2 AND kind = ?3",
                    params![a.key.host, a.key.policy, a.key.kind.as_str()],
                )?;
            }
        }
        Action::AssignmentRemoved(a) => {
            exec(
                conn,
                "DELETE FROM assignments WHERE host = ?1 AND policy = ?2 AND kind = ?3",
                params![a.key.host, a.key.policy, a.key.kind.as_str()],
            )?;
            exec(
                conn,
                "DELETE FROM schedule_state WHERE host = ?1 AND policy = ?2 AND kind = ?3",
                params![a.key.host, a.key.policy, a.key.kind.as_str()],
            )?;
            exec(
                conn,
                "UPDATE jobs SET state = 'cancelled', finished_at = ?4, updated_at = ?4, \
                 reason = 'the assignment was removed from the configuration' \
                 WHERE host = ?1 AND policy = ?2 AND kind = ?3 AND state IN ('queued', 'deferred')",
                params![a.key.host, a.key.policy, a.key.kind.as_str(), now],
            )?;
        }
        Action::RepositoryAdded { repository } => {
            exec(
                conn,
                "INSERT INTO repositories (name, added_at) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO NOTHING",
                params![repository, now],
            )?;
        }
        Action::RepositoryMoved { repository, .. } => {
            // Every host initialises it again at its new place before its next job there.
            exec(
                conn,
                "DELETE FROM repository_init WHERE repository = ?1",
                params![repository],
            )?;
            exec(
                conn,
                "UPDATE repositories SET located_at = ?2 WHERE name = ?1",
                params![repository, now],
            )?;
        }
        Action::RepositoryRemoved { repository } => {
            exec(
                conn,
                "DELETE FROM repositories WHERE name = ?1",
                params![repository],
            )?;
        }
    }
    Ok(())
}

/// Runs one statement, prepared once per connection: a revision of 10,000 hosts runs the same
/// few statements tens of thousands of times.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// What a `history-rewritten` entry says: the tip fetched before, which the branch no longer
/// contains, and the last applied commit when that is another one (the tip fetched before
/// was not applied, e.g. because it was invalid).
fn rewrite_detail(previous: &str, last_applied: Option<&str>, new: &str) -> String {
    let applied = match last_applied {
        Some(applied) if applied == previous => {
            return format!(
                "the branch no longer contains {previous}, the tip fetched before, which was \
                 the applied commit; following the new tip {new}"
            );
        }
        Some(applied) => format!("the last applied commit was {applied}"),
        None => "no commit had been applied".to_owned(),
    };
    format!(
        "the branch no longer contains {previous}, the tip fetched before, which was not \
         applied; {applied}; following the new tip {new}"
    )
}

/// The audit detail of one action.
fn action_detail(action: &Action, changed: &ChangedKeys) -> serde_json::Value {
    match action {
        Action::AssignmentAdded(a) | Action::AssignmentRemoved(a) => serde_json::json!({
            "repository": &*a.repository,
            "schedule": &*a.schedule,
        }),
        Action::AssignmentChanged { old, new } => {
            let keys = (old.content_digest != new.content_digest)
                .then(|| changed.get(&new.key.policy, new.key.kind))
                .flatten();
            serde_json::json!({
                "repository": &*new.repository,
                "schedule": &*new.schedule,
                "previous-schedule": &*old.schedule,
                "change": describe_change(old, new, keys),
                "changed-keys": keys,
            })
        }
        Action::RepositoryMoved { from, to, .. } => serde_json::json!({
            "from": from,
            "to": to,
            "detail": format!(
                "moves from `{from}` to `{to}`; each host runs init there before its next job"
            ),
        }),
        _ => serde_json::json!({}),
    }
}

fn load_applied(conn: &Connection) -> Result<FleetState, StoreError> {
    let mut hosts = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT name, paused, agent_key FROM hosts")?;
    let rows = stmt.query_map([], |row| {
        Ok(HostRecord {
            name: row.get(0)?,
            paused: row.get(1)?,
            agent_key: row.get(2)?,
        })
    })?;
    for row in rows {
        let host = row?;
        hosts.insert(host.name.clone(), host);
    }

    let mut stmt = conn.prepare(
        "SELECT host, policy, kind, repository, schedule, content_digest FROM assignments",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
        ))
    })?;
    // Names repeat across rows: each is held once, as in a freshly computed desired state.
    let mut names: std::collections::HashMap<String, Arc<str>> = std::collections::HashMap::new();
    let mut intern = |text: String| -> Arc<str> {
        Arc::clone(
            names
                .entry(text)
                .or_insert_with_key(|t| Arc::from(t.as_str())),
        )
    };
    let mut assignments = Vec::new();
    for row in rows {
        let (host, policy, kind, repository, schedule, digest) = row?;
        let kind = JobKind::parse(&kind).ok_or_else(|| {
            StoreError::Decode(format!("unknown job kind `{kind}` in assignments"))
        })?;
        assignments.push(AppliedAssignment {
            key: AssignmentKey {
                host: intern(host),
                policy: intern(policy),
                kind,
            },
            repository: intern(repository),
            schedule: intern(schedule),
            content_digest: intern(digest),
        });
    }
    assignments.sort_by(|a, b| a.key.cmp(&b.key));

    let mut stmt = conn.prepare("SELECT name, location FROM repositories")?;
    let repositories = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(FleetState {
        hosts,
        assignments,
        repositories,
    })
}
