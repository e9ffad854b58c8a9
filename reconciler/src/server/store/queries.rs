//! Read-only questions the status view, the JSON API and `/metrics` ask of the store.
//!
//! Each answer is bounded by the size of the fleet, not by the history: the newest job of an
//! assignment is found through the `(host, policy, kind, created_at)` index, jobs that have not
//! ended through the index on their state, and the job list is always given a limit. Nothing
//! here counts every job ever stored; counting finished jobs is done incrementally, by row id
//! ([`Store::jobs_after`] and [`Store::jobs_by_rowid`]).

use rusqlite::{OptionalExtension as _, Row, params, params_from_iter};

use super::{SessionRecord, Store, StoreError};
use crate::server::model::{JobKind, JobState, RevisionInfo};

/// A revision as the view shows it: the commit, when the server saw it, and the errors that
/// made it invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRevision {
    pub info: RevisionInfo,
    /// When the server applied it, or found it invalid.
    pub seen_at: jiff::Timestamp,
    /// `Some` for an invalid revision: the validation errors, as `validate` prints them.
    pub errors: Option<String>,
}

/// The revision in force and, when the newest revision the server looked at is invalid, that
/// one too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revisions {
    pub applied: Option<SeenRevision>,
    /// The newest attempt, when it was invalid: it was not applied.
    pub invalid: Option<SeenRevision>,
}

/// A job without its long fields (summary, tails): what lists show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobBrief {
    pub id: String,
    pub host: String,
    pub policy: String,
    pub kind: JobKind,
    pub repository: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub catch_up: bool,
    pub instant: Option<jiff::Timestamp>,
    pub created_at: jiff::Timestamp,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
}

/// Where one backup assignment stands: its newest job, its newest job that ended, and its
/// newest successful one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    pub host: String,
    pub policy: String,
    pub repository: String,
    /// The newest backup job in any state (it may be queued or running).
    pub newest: Option<JobBrief>,
    /// The newest backup job that ended, whichever way.
    pub last_ended: Option<JobBrief>,
    /// The newest backup job that succeeded: its id and when it finished.
    pub last_success: Option<(String, jiff::Timestamp)>,
}

/// Which jobs a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub host: Option<String>,
    pub state: Option<JobState>,
    pub limit: usize,
}

/// The size of one snapshot inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventorySize {
    pub host: String,
    pub policy: String,
    pub repository: String,
    pub count: u64,
    /// restic's time of the newest snapshot, as restic wrote it.
    pub latest: Option<String>,
    pub refreshed_at: jiff::Timestamp,
}

/// An agent waiting for its key to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    pub host: String,
    pub key: String,
    pub remote: String,
    pub first_seen: jiff::Timestamp,
    pub last_seen: jiff::Timestamp,
    pub attempts: u64,
}

/// A job's row id with what counting finished jobs needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnding {
    pub rowid: i64,
    pub kind: JobKind,
    pub state: JobState,
    /// The agent's outcome, when a result arrived.
    pub outcome: Option<String>,
}

const BRIEF_COLUMNS: &str = "id, host, policy, kind, repository, state, reason, outcome, \
     exit_code, message, catch_up, instant, created_at, started_at, finished_at";

/// The states a job never leaves, as an SQL list.
fn terminal_list() -> String {
    JobState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn opt_ts(secs: Option<i64>) -> Option<jiff::Timestamp> {
    secs.map(ts)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn decode_kind(text: &str, id: &str) -> Result<JobKind, StoreError> {
    JobKind::parse(text)
        .ok_or_else(|| StoreError::Decode(format!("job {id} has the unknown kind `{text}`")))
}

fn decode_state(text: &str, id: &str) -> Result<JobState, StoreError> {
    JobState::parse(text)
        .ok_or_else(|| StoreError::Decode(format!("job {id} has the unknown state `{text}`")))
}

type BriefColumns = (
    String,
    String,
    String,
    String,
    String,
    String,
    (Option<String>, Option<String>, Option<i32>, Option<String>),
    (bool, Option<i64>, i64, Option<i64>, Option<i64>),
);

/// The raw columns of [`BRIEF_COLUMNS`], starting at column `at`; `None` when the first is
/// NULL (a LEFT JOIN that found nothing). Decoding follows in [`brief_from`], outside
/// rusqlite's row callback, so a bad value becomes a [`StoreError`].
fn brief_columns(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<BriefColumns>> {
    let Some(id) = row.get::<_, Option<String>>(at)? else {
        return Ok(None);
    };
    Ok(Some((
        id,
        row.get(at + 1)?,
        row.get(at + 2)?,
        row.get(at + 3)?,
        row.get(at + 4)?,
        row.get(at + 5)?,
        (
            row.get(at + 6)?,
            row.get(at + 7)?,
            row.get(at + 8)?,
            row.get(at + 9)?,
        ),
        (
            row.get(at + 10)?,
            row.get(at + 11)?,
            row.get(at + 12)?,
            row.get(at + 13)?,
            row.get(at + 14)?,
        ),
    )))
}

fn brief_from(columns: BriefColumns) -> Result<JobBrief, StoreError> {
    let (
        id,
        host,
        policy,
        kind,
        repository,
        state,
        (reason, outcome, exit_code, message),
        (catch_up, instant, created_at, started_at, finished_at),
    ) = columns;
    Ok(JobBrief {
        kind: decode_kind(&kind, &id)?,
        state: decode_state(&state, &id)?,
        id,
        host,
        policy,
        repository,
        reason,
        outcome,
        exit_code,
        message,
        catch_up,
        instant: opt_ts(instant),
        created_at: ts(created_at),
        started_at: opt_ts(started_at),
        finished_at: opt_ts(finished_at),
    })
}

/// The columns of a [`JobBrief`] of the jobs row aliased `alias`.
fn aliased(alias: &str) -> String {
    BRIEF_COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// The revision in force, with when it was applied, and the newest attempt when it was
    /// invalid.
    pub fn revisions_seen(&self) -> Result<Revisions, StoreError> {
        let read = |filter: &str| -> Result<Option<(SeenRevision, String)>, StoreError> {
            let sql = format!(
                "SELECT commit_id, author, summary, committed_at, seen_at, status, errors \
                 FROM revisions {filter} ORDER BY attempt DESC LIMIT 1"
            );
            Ok(self
                .conn
                .query_row(&sql, [], |row| {
                    let seen = SeenRevision {
                        info: RevisionInfo {
                            commit: row.get(0)?,
                            author: row.get(1)?,
                            summary: row.get(2)?,
                            committed_at: opt_ts(row.get(3)?),
                        },
                        seen_at: ts(row.get(4)?),
                        errors: row.get(6)?,
                    };
                    Ok((seen, row.get::<_, String>(5)?))
                })
                .optional()?)
        };
        let applied = read("WHERE status = 'applied'")?.map(|(seen, _)| seen);
        let invalid = read("")?
            .filter(|(_, status)| status == "invalid")
            .map(|(mut seen, _)| {
                seen.errors.get_or_insert_with(String::new);
                seen
            });
        Ok(Revisions { applied, invalid })
    }

    /// How many jobs wait or run, per state (queued, deferred, dispatched, running); states
    /// without jobs are left out.
    pub fn active_job_counts(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, count(*) FROM jobs \
             WHERE state IN ('queued', 'deferred', 'dispatched', 'running') GROUP BY state",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (state, n) = row?;
            counts.push((decode_state(&state, "(count)")?, count(n)));
        }
        Ok(counts)
    }

    /// Where every applied backup assignment stands, sorted by host and policy; of one host
    /// when `host` is given.
    pub fn backup_facts(&self, host: Option<&str>) -> Result<Vec<BackupFacts>, StoreError> {
        // Each subquery walks the assignment's index entries from the newest; ordering by
        // `created_at, rowid` keeps that walk inside the index.
        let newest = |extra: &str| {
            format!(
                "(SELECT rowid FROM jobs WHERE host = a.host AND policy = a.policy \
                 AND kind = 'backup' {extra} ORDER BY created_at DESC, rowid DESC LIMIT 1)"
            )
        };
        let sql = format!(
            "SELECT a.host, a.policy, a.repository, n.id, n.state, {ended}, s.id, s.finished_at \
             FROM assignments a \
             LEFT JOIN jobs n ON n.rowid = {newest} \
             LEFT JOIN jobs e ON e.rowid = {last_ended} \
             LEFT JOIN jobs s ON s.rowid = {last_success} \
             WHERE a.kind = 'backup' AND (?1 IS NULL OR a.host = ?1) ORDER BY a.host, a.policy",
            ended = aliased("e"),
            newest = newest(""),
            last_ended = newest(&format!("AND state IN ({})", terminal_list())),
            last_success = newest("AND state = 'succeeded'"),
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![host], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<String>>(4)?,
                brief_columns(row, 5)?,
                row.get::<_, Option<String>>(20)?,
                row.get::<_, Option<i64>>(21)?,
            ))
        })?;
        let mut facts = Vec::new();
        for row in rows {
            let (host, policy, repository, newest_id, newest_state, ended, success, success_at) =
                row?;
            let last_ended = ended.map(brief_from).transpose()?;
            // The newest job is often the last ended one; otherwise it is read whole by id.
            let newest = match (newest_id, newest_state) {
                (Some(id), Some(_)) if last_ended.as_ref().is_some_and(|e| e.id == id) => {
                    last_ended.clone()
                }
                (Some(id), Some(_)) => self.job_brief(&id)?,
                _ => None,
            };
            facts.push(BackupFacts {
                host,
                policy,
                repository,
                newest,
                last_ended,
                last_success: success.map(|id| (id, ts(success_at.unwrap_or(0)))),
            });
        }
        Ok(facts)
    }

    /// One job without its long fields.
    pub fn job_brief(&self, id: &str) -> Result<Option<JobBrief>, StoreError> {
        let sql = format!("SELECT {BRIEF_COLUMNS} FROM jobs WHERE id = ?1");
        let columns = self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], |row| brief_columns(row, 0))
            .optional()?
            .flatten();
        columns.map(brief_from).transpose()
    }

    /// The newest jobs matching `filter`, newest first, at most `filter.limit`.
    pub fn jobs_matching(&self, filter: &JobFilter) -> Result<Vec<JobBrief>, StoreError> {
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {BRIEF_COLUMNS} FROM jobs WHERE (?1 IS NULL OR host = ?1) \
             AND (?2 IS NULL OR state = ?2) ORDER BY created_at DESC, id DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![filter.host, filter.state.map(JobState::as_str), limit],
            |row| brief_columns(row, 0),
        )?;
        let mut jobs = Vec::new();
        for row in rows {
            if let Some(columns) = row? {
                jobs.push(brief_from(columns)?);
            }
        }
        Ok(jobs)
    }

    /// The newest agent session of every host in the applied state, found per host so the
    /// cost does not grow with the number of reconnections.
    pub fn latest_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.host, s.remote, s.agent_version, s.restic_version, s.connected_at, \
             s.disconnected_at FROM hosts h JOIN agent_sessions s ON s.id = \
             (SELECT id FROM agent_sessions WHERE host = h.name \
              ORDER BY connected_at DESC, id DESC LIMIT 1) ORDER BY s.host",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(SessionRecord {
                host: row.get(0)?,
                remote: row.get(1)?,
                agent_version: row.get(2)?,
                restic_version: row.get(3)?,
                connected_at: ts(row.get(4)?),
                disconnected_at: opt_ts(row.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The size of every snapshot inventory; of one host when `host` is given.
    pub fn inventory_sizes(&self, host: Option<&str>) -> Result<Vec<InventorySize>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT host, policy, repository, count, latest, refreshed_at FROM snapshot_inventory \
             WHERE ?1 IS NULL OR host = ?1 ORDER BY host, policy, repository",
        )?;
        let rows = stmt.query_map(params![host], |row| {
            Ok(InventorySize {
                host: row.get(0)?,
                policy: row.get(1)?,
                repository: row.get(2)?,
                count: count(row.get(3)?),
                latest: row.get(4)?,
                refreshed_at: ts(row.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Agents waiting for their key to be committed, by host.
    pub fn pending_key_records(&self) -> Result<Vec<PendingKey>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT host, key, remote, first_seen, last_seen, attempts FROM pending_keys \
             ORDER BY host, key",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(PendingKey {
                host: row.get(0)?,
                key: row.get(1)?,
                remote: row.get(2)?,
                first_seen: ts(row.get(3)?),
                last_seen: ts(row.get(4)?),
                attempts: count(row.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest job row id, 0 without jobs: where counting finished jobs starts.
    pub fn max_job_rowid(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(rowid), 0) FROM jobs", [], |row| {
                row.get(0)
            })?)
    }

    /// Jobs stored after row `rowid`, oldest first, at most `limit`.
    pub fn jobs_after(&self, rowid: i64, limit: usize) -> Result<Vec<JobEnding>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, id, kind, state, outcome FROM jobs WHERE rowid > ?1 \
             ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![rowid, limit], read_ending)?;
        rows.map(|row| decode_ending(row?)).collect()
    }

    /// The jobs with these row ids, in any order; ids that do not exist are left out.
    pub fn jobs_by_rowid(&self, rowids: &[i64]) -> Result<Vec<JobEnding>, StoreError> {
        let mut out = Vec::with_capacity(rowids.len());
        // SQLite limits the number of parameters of one statement.
        for chunk in rowids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut stmt = self.conn.prepare(&format!(
                "SELECT rowid, id, kind, state, outcome FROM jobs WHERE rowid IN ({marks})"
            ))?;
            let rows = stmt.query_map(params_from_iter(chunk.iter()), read_ending)?;
            for row in rows {
                out.push(decode_ending(row?)?);
            }
        }
        Ok(out)
    }

    /// The row ids of the jobs that have not ended.
    pub fn active_job_rowids(&self) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid FROM jobs WHERE state IN ('queued', 'deferred', 'dispatched', 'running')",
        )?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

type EndingColumns = (i64, String, String, String, Option<String>);

fn read_ending(row: &Row<'_>) -> rusqlite::Result<EndingColumns> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode_ending(
    (rowid, id, kind, state, outcome): EndingColumns,
) -> Result<JobEnding, StoreError> {
    Ok(JobEnding {
        rowid,
        kind: decode_kind(&kind, &id)?,
        state: decode_state(&state, &id)?,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use protocol::{JobResult, Outcome};

    use super::*;
    use crate::config::testing;
    use crate::server::model::AssignmentKey;
    use crate::server::reconcile::{ChangedKeys, desired};
    use crate::server::store::NewJob;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn backup(id: &str, host: &str, created: i64) -> NewJob {
        NewJob {
            id: id.into(),
            key: AssignmentKey::new(host, "system", JobKind::Backup),
            repository: "local".into(),
            state: JobState::Queued,
            reason: None,
            instant: Some(at(created)),
            catch_up: false,
            run_after: at(created),
            deadline: at(created + 3600),
            max_duration_secs: 60,
        }
    }

    fn finish(store: &mut Store, id: &str, outcome: Outcome, state: JobState, secs: i64) {
        let result = JobResult {
            job_id: id.into(),
            outcome,
            message: format!("{id} ended {outcome}"),
            exit_code: Some(3),
            started_at: at(secs),
            finished_at: at(secs + 5),
            summary: None,
            unreadable: Vec::new(),
            initialized: false,
            stderr_tail: String::new(),
            snapshots: None,
        };
        assert!(store.finish_job(id, &result, state, None).unwrap());
    }

    /// A store holding the example fleet (web-1, web-2, db-1) as applied.
    fn fleet(dir: &tempfile::TempDir) -> Store {
        let mut store = Store::open(dir.path()).unwrap();
        let (config, _) = testing::example_config_with_identity();
        let revision = RevisionInfo {
            commit: "a".repeat(40),
            author: "Ops".into(),
            summary: "fleet".into(),
            committed_at: Some(at(0)),
        };
        store
            .apply_revision(&revision, desired(&config), None, &ChangedKeys::default())
            .unwrap();
        store
    }

    #[test]
    fn backup_facts_name_the_newest_the_last_ended_and_the_last_good_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = fleet(&dir);
        let jobs = [
            backup("web-1.system.backup.1", "web-1", 1),
            backup("web-1.system.backup.2", "web-1", 2),
            backup("web-1.system.backup.3", "web-1", 3),
        ];
        store.queue_jobs(&jobs, &[], at(1)).unwrap();
        // created_at is the queueing time: give the jobs distinct ones, oldest first.
        for (n, job) in jobs.iter().enumerate() {
            let n = i64::try_from(n).unwrap();
            store
                .conn
                .execute(
                    "UPDATE jobs SET created_at = ?2 WHERE id = ?1",
                    params![job.id, at(n).as_second()],
                )
                .unwrap();
        }
        finish(
            &mut store,
            &jobs[0].id,
            Outcome::Succeeded,
            JobState::Succeeded,
            10,
        );
        finish(
            &mut store,
            &jobs[1].id,
            Outcome::Failed,
            JobState::Failed,
            20,
        );

        let facts = store.backup_facts(None).unwrap();
        let web1 = facts
            .iter()
            .find(|f| f.host == "web-1" && f.policy == "system")
            .unwrap();
        assert_eq!(web1.newest.as_ref().unwrap().id, jobs[2].id);
        assert_eq!(web1.newest.as_ref().unwrap().state, JobState::Queued);
        let ended = web1.last_ended.as_ref().unwrap();
        assert_eq!(
            (ended.id.as_str(), ended.state),
            (jobs[1].id.as_str(), JobState::Failed)
        );
        assert_eq!(
            ended.message.as_deref(),
            Some("web-1.system.backup.2 ended failed")
        );
        assert_eq!(ended.exit_code, Some(3));
        assert_eq!(web1.last_success, Some((jobs[0].id.clone(), at(15))));

        // A host without jobs has facts with nothing in them; one host can be asked alone.
        let db1 = store.backup_facts(Some("db-1")).unwrap();
        assert!(!db1.is_empty());
        assert!(db1.iter().all(|f| f.host == "db-1"
            && f.newest.is_none()
            && f.last_ended.is_none()
            && f.last_success.is_none()));
    }

    #[test]
    fn job_lists_filter_by_host_and_state_and_keep_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = fleet(&dir);
        let jobs: Vec<NewJob> = (0..5)
            .map(|n| backup(&format!("web-2.system.backup.{n}"), "web-2", n))
            .chain([backup("web-1.system.backup.9", "web-1", 9)])
            .collect();
        store.queue_jobs(&jobs, &[], at(0)).unwrap();
        finish(
            &mut store,
            "web-2.system.backup.0",
            Outcome::Partial,
            JobState::Partial,
            1,
        );

        let filter = |host: Option<&str>, state, limit| JobFilter {
            host: host.map(str::to_owned),
            state,
            limit,
        };
        assert_eq!(
            store.jobs_matching(&filter(None, None, 100)).unwrap().len(),
            6
        );
        assert_eq!(
            store
                .jobs_matching(&filter(Some("web-2"), None, 3))
                .unwrap()
                .len(),
            3
        );
        let partial = store
            .jobs_matching(&filter(Some("web-2"), Some(JobState::Partial), 100))
            .unwrap();
        assert_eq!(partial.len(), 1);
        assert_eq!(partial[0].outcome.as_deref(), Some("partial"));
        assert!(
            store
                .jobs_matching(&filter(Some("db-1"), None, 100))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.active_job_counts().unwrap(),
            vec![(JobState::Queued, 5)]
        );
    }

    #[test]
    fn revisions_seen_show_an_invalid_newest_attempt_beside_the_one_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = fleet(&dir);
        let seen = store.revisions_seen().unwrap();
        assert_eq!(seen.applied.unwrap().info.commit, "a".repeat(40));
        assert_eq!(seen.invalid, None);

        let bad = RevisionInfo {
            commit: "b".repeat(40),
            author: "Dev".into(),
            summary: "typo".into(),
            committed_at: None,
        };
        store
            .record_revision(&bad, Err("hosts/web-1.toml:1:1: error: unknown key"))
            .unwrap();
        let seen = store.revisions_seen().unwrap();
        assert_eq!(seen.applied.unwrap().info.commit, "a".repeat(40));
        let invalid = seen.invalid.unwrap();
        assert_eq!(invalid.info.commit, "b".repeat(40));
        assert_eq!(
            invalid.errors.as_deref(),
            Some("hosts/web-1.toml:1:1: error: unknown key")
        );
    }

    #[test]
    fn job_endings_are_read_after_a_row_and_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = fleet(&dir);
        assert_eq!(store.max_job_rowid().unwrap(), 0);
        store
            .queue_jobs(&[backup("web-1.system.backup.1", "web-1", 1)], &[], at(1))
            .unwrap();
        let start = store.max_job_rowid().unwrap();
        let mut missed = backup("web-1.system.backup.2", "web-1", 2);
        missed.state = JobState::Missed;
        store.queue_jobs(&[missed], &[], at(2)).unwrap();

        let after = store.jobs_after(start, 10).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].state, JobState::Missed);
        assert_eq!(after[0].outcome, None);

        let active = store.active_job_rowids().unwrap();
        assert_eq!(active, vec![start]);
        finish(
            &mut store,
            "web-1.system.backup.1",
            Outcome::Succeeded,
            JobState::Succeeded,
            3,
        );
        let ended = store.jobs_by_rowid(&active).unwrap();
        assert_eq!(ended[0].state, JobState::Succeeded);
        assert_eq!(ended[0].outcome.as_deref(), Some("succeeded"));
    }
}
