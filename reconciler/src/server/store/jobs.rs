//! Jobs and what surrounds them in the store: the job records and their state changes, the
//! schedule bookkeeping written in the same transaction as the jobs it queues, agent sessions,
//! agents waiting for enrolment, repository initialisation and snapshot inventories.
//!
//! A job's state only moves forward through [`Store::transition`], which names the states it
//! may move from, so two tasks racing on one job cannot both win. A result is stored once:
//! [`Store::finish_job`] reports whether this was the first time.

use std::collections::{HashMap, HashSet};

use protocol::{JobResult, Snapshot};
use rusqlite::{OptionalExtension as _, Row, params, params_from_iter};

use super::{Store, StoreError};
use crate::server::model::{AssignmentKey, JobKind, JobState, ScheduleState};

/// How long past its last possible end a dispatched or running job may go without a result
/// before it counts as lost.
const RESULT_GRACE_SECS: i64 = 3600;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    pub host: String,
    pub policy: String,
    pub kind: JobKind,
    pub repository: String,
    pub state: JobState,
    /// Why it is deferred, missed, failed before running, or was cancelled.
    pub reason: Option<String>,
    /// The nominal schedule instant this run is for; `None` for jobs the server made itself.
    pub instant: Option<jiff::Timestamp>,
    /// A catch-up run for instants missed while the server or agent was down.
    pub catch_up: bool,
    /// Not dispatched before this (the instant plus the host's jitter).
    pub run_after: jiff::Timestamp,
    /// Missed when not started by then.
    pub deadline: jiff::Timestamp,
    pub max_duration_secs: i64,
    pub created_at: jiff::Timestamp,
    pub dispatched_at: Option<jiff::Timestamp>,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// restic's backup summary, as JSON.
    pub summary: Option<String>,
    pub stderr_tail: Option<String>,
    pub log_tail: Option<String>,
}

/// A job to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: String,
    pub key: AssignmentKey,
    pub repository: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub instant: Option<jiff::Timestamp>,
    pub catch_up: bool,
    pub run_after: jiff::Timestamp,
    pub deadline: jiff::Timestamp,
    pub max_duration_secs: i64,
}

/// How the jobs the store expected on an agent compare with what the agent says it runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Running on the agent, unknown to the store or already over: to be cancelled.
    pub unknown: Vec<String>,
    /// Sent to the agent but not running there: queued again. The agent knows job ids, so a
    /// job it already finished is answered with its stored result, never run twice.
    pub requeued: Vec<String>,
}

const JOB_COLUMNS: &str = "id, host, policy, kind, repository, state, reason, instant, catch_up, \
     run_after, deadline, max_duration_secs, created_at, dispatched_at, started_at, finished_at, \
     outcome, exit_code, message, summary, stderr_tail, log_tail";

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn opt_ts(secs: Option<i64>) -> Option<jiff::Timestamp> {
    secs.map(ts)
}

fn read_job(row: &Row<'_>) -> rusqlite::Result<Result<JobRecord, String>> {
    let kind: String = row.get(3)?;
    let state: String = row.get(5)?;
    let (Some(kind), Some(state)) = (JobKind::parse(&kind), JobState::parse(&state)) else {
        return Ok(Err(format!(
            "job {} has kind `{kind}` and state `{state}`",
            row.get::<_, String>(0)?
        )));
    };
    Ok(Ok(JobRecord {
        id: row.get(0)?,
        host: row.get(1)?,
        policy: row.get(2)?,
        kind,
        repository: row.get(4)?,
        state,
        reason: row.get(6)?,
        instant: opt_ts(row.get(7)?),
        catch_up: row.get(8)?,
        run_after: ts(row.get(9)?),
        deadline: ts(row.get(10)?),
        max_duration_secs: row.get(11)?,
        created_at: ts(row.get(12)?),
        dispatched_at: opt_ts(row.get(13)?),
        started_at: opt_ts(row.get(14)?),
        finished_at: opt_ts(row.get(15)?),
        outcome: row.get(16)?,
        exit_code: row.get(17)?,
        message: row.get(18)?,
        summary: row.get(19)?,
        stderr_tail: row.get(20)?,
        log_tail: row.get(21)?,
    }))
}

fn state_list(states: &[JobState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    fn jobs_where(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs {filter}"))?;
        let rows = stmt.query_map(params_from_iter(args.iter()), read_job)?;
        let mut jobs = Vec::new();
        for row in rows {
            jobs.push(row?.map_err(StoreError::Decode)?);
        }
        Ok(jobs)
    }

    /// One job by id.
    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.jobs_where("WHERE id = ?1", &[&id])?.into_iter().next())
    }

    /// Jobs in any of `states`, oldest first.
    pub fn jobs_in_states(&self, states: &[JobState]) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs_where(
            &format!(
                "WHERE state IN ({}) ORDER BY run_after, id",
                state_list(states)
            ),
            &[],
        )
    }

    /// The newest jobs, newest first; of one host when `host` is given.
    pub fn recent_jobs(
        &self,
        host: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match host {
            Some(host) => self.jobs_where(
                "WHERE host = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
                &[&host, &limit],
            ),
            None => self.jobs_where("ORDER BY created_at DESC, id DESC LIMIT ?1", &[&limit]),
        }
    }

    /// The newest job of one assignment.
    pub fn last_job(&self, key: &AssignmentKey) -> Result<Option<JobRecord>, StoreError> {
        Ok(self
            .jobs_where(
                "WHERE host = ?1 AND policy = ?2 AND kind = ?3 ORDER BY created_at DESC, id DESC \
                 LIMIT 1",
                &[&key.host, &key.policy, &key.kind.as_str()],
            )?
            .into_iter()
            .next())
    }

    /// The run of an assignment that has not ended yet, with its state.
    pub fn active_job(
        &self,
        key: &AssignmentKey,
    ) -> Result<Option<(String, JobState)>, StoreError> {
        let job = self
            .jobs_where(
                &format!(
                    "WHERE host = ?1 AND policy = ?2 AND kind = ?3 AND state NOT IN ({}) LIMIT 1",
                    state_list(&terminal_states())
                ),
                &[&key.host, &key.policy, &key.kind.as_str()],
            )?
            .into_iter()
            .next();
        Ok(job.map(|j| (j.id, j.state)))
    }

    /// The newest init of `repository` on `host`, whichever policy asked for it.
    /// When the repository was last moved to a new location, if ever.
    pub fn repository_moved_at(
        &self,
        repository: &str,
    ) -> Result<Option<jiff::Timestamp>, StoreError> {
        let at: Option<i64> = self
            .conn
            .query_row(
                "SELECT located_at FROM repositories WHERE name = ?1",
                [repository],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        at.map(|s| jiff::Timestamp::from_second(s).map_err(|e| StoreError::Decode(e.to_string())))
            .transpose()
    }

    pub fn last_init(&self, host: &str, repository: &str) -> Result<Option<JobRecord>, StoreError> {
        Ok(self
            .jobs_where(
                "WHERE host = ?1 AND repository = ?2 AND kind = 'init' \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                &[&host, &repository],
            )?
            .into_iter()
            .next())
    }

    /// Queues jobs and records the schedule state they advance, in one transaction. A job id
    /// that exists already is left as it is, so queuing the same run twice is harmless.
    /// Returns the ids that were new.
    pub fn queue_jobs(
        &mut self,
        jobs: &[NewJob],
        schedule: &[ScheduleState],
        now: jiff::Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut inserted = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO jobs (id, host, policy, kind, repository, state, reason, instant, \
                 catch_up, run_after, deadline, max_duration_secs, created_at, updated_at, \
                 finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14) \
                 ON CONFLICT (id) DO NOTHING",
            )?;
            for job in jobs {
                let finished = job.state.is_terminal().then_some(now.as_second());
                let n = insert.execute(params![
                    job.id,
                    job.key.host,
                    job.key.policy,
                    job.key.kind.as_str(),
                    job.repository,
                    job.state.as_str(),
                    job.reason,
                    job.instant.map(jiff::Timestamp::as_second),
                    job.catch_up,
                    job.run_after.as_second(),
                    job.deadline.as_second(),
                    job.max_duration_secs,
                    now.as_second(),
                    finished,
                ])?;
                if n > 0 {
                    inserted.push(job.id.clone());
                }
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO schedule_state (host, policy, kind, last_instant, next_instant) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (host, policy, kind) DO UPDATE SET \
                 last_instant = excluded.last_instant, next_instant = excluded.next_instant",
            )?;
            for state in schedule {
                upsert.execute(params![
                    state.key.host,
                    state.key.policy,
                    state.key.kind.as_str(),
                    state.last_instant.map(jiff::Timestamp::as_second),
                    state.next_instant.map(jiff::Timestamp::as_second),
                ])?;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Every assignment's schedule bookkeeping.
    pub fn schedule_states(&self) -> Result<HashMap<AssignmentKey, ScheduleState>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT host, policy, kind, last_instant, next_instant FROM schedule_state")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?,
            ))
        })?;
        let mut states = HashMap::new();
        for row in rows {
            let (host, policy, kind, last, next) = row?;
            let Some(kind) = JobKind::parse(&kind) else {
                return Err(StoreError::Decode(format!(
                    "unknown job kind `{kind}` in schedule_state"
                )));
            };
            let key = AssignmentKey::new(&host, &policy, kind);
            states.insert(
                key.clone(),
                ScheduleState {
                    key,
                    last_instant: opt_ts(last),
                    next_instant: opt_ts(next),
                },
            );
        }
        Ok(states)
    }

    /// Moves a job from one of `from` to `to`; false when it was in another state (someone
    /// else moved it first) or does not exist.
    pub fn transition(
        &mut self,
        id: &str,
        from: &[JobState],
        to: JobState,
        reason: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let stamp = match to {
            JobState::Dispatched => ", dispatched_at = ?3",
            JobState::Running => ", started_at = coalesce(started_at, ?3)",
            JobState::Queued => ", dispatched_at = NULL",
            s if s.is_terminal() => ", finished_at = ?3",
            _ => "",
        };
        // What a job waited for is history once it is sent; other reasons (a catch-up) stay.
        let reason_sql = if to == JobState::Dispatched {
            "CASE WHEN state = 'deferred' THEN ?4 ELSE coalesce(?4, reason) END"
        } else {
            "coalesce(?4, reason)"
        };
        let sql = format!(
            "UPDATE jobs SET state = ?2, updated_at = ?3, reason = {reason_sql}{stamp} \
             WHERE id = ?1 AND state IN ({})",
            state_list(from)
        );
        let n = self
            .conn
            .execute(&sql, params![id, to.as_str(), now.as_second(), reason])?;
        Ok(n > 0)
    }

    /// Stores a job's result. True the first time; a repeated delivery changes nothing. A
    /// result for a job given up as lost is still taken: it is better news than "lost".
    pub fn finish_job(
        &mut self,
        id: &str,
        result: &JobResult,
        state: JobState,
        log_tail: Option<&str>,
    ) -> Result<bool, StoreError> {
        let summary = result
            .summary
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok());
        let unreadable = (!result.unreadable.is_empty())
            .then(|| serde_json::to_string(&result.unreadable).ok())
            .flatten();
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            &format!(
                "UPDATE jobs SET state = ?2, outcome = ?3, exit_code = ?4, message = ?5, \
                 summary = ?6, unreadable = ?7, stderr_tail = ?8, \
                 started_at = coalesce(started_at, ?9), finished_at = ?10, updated_at = ?10, \
                 log_tail = coalesce(?11, log_tail), lost = 0, \
                 reason = CASE WHEN state = 'deferred' OR lost = 1 THEN NULL ELSE reason END \
                 WHERE id = ?1 AND (state NOT IN ({}) OR lost = 1)",
                state_list(&terminal_states())
            ),
            params![
                id,
                state.as_str(),
                result.outcome.as_str(),
                result.exit_code,
                result.message,
                summary,
                unreadable,
                result.stderr_tail,
                result.started_at.as_second(),
                result.finished_at.as_second(),
                log_tail,
            ],
        )?;
        if n > 0 && state == JobState::Succeeded {
            // A succeeded init (or a backup that created the repository) lets backups to the
            // repository go ahead on this host.
            tx.execute(
                "INSERT INTO repository_init (host, repository, initialized_at, job_id) \
                 SELECT host, repository, ?2, id FROM jobs WHERE id = ?1 \
                 AND (kind = 'init' OR ?3) ON CONFLICT (host, repository) DO NOTHING",
                params![id, result.finished_at.as_second(), result.initialized],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Whether `host` has initialised (or found) `repository`.
    pub fn is_initialized(&self, host: &str, repository: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM repository_init WHERE host = ?1 AND repository = ?2",
                params![host, repository],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Every (host, repository) pair that has been initialised.
    pub fn initialized(&self) -> Result<HashSet<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT host, repository FROM repository_init")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks queued and deferred jobs past their deadline as missed, and dispatched or running
    /// jobs long past their last possible end as failed (lost). Returns the jobs it changed.
    pub fn expire_jobs(&mut self, now: jiff::Timestamp) -> Result<Vec<JobRecord>, StoreError> {
        let late = self.jobs_where(
            &format!(
                "WHERE (state IN ({}) AND deadline < ?1) OR (state IN ({}) AND \
                 coalesce(started_at, dispatched_at, run_after) + max_duration_secs + ?2 < ?1)",
                state_list(&[JobState::Queued, JobState::Deferred]),
                state_list(&[JobState::Dispatched, JobState::Running])
            ),
            &[&now.as_second(), &RESULT_GRACE_SECS],
        )?;
        let tx = self.conn.transaction()?;
        for job in &late {
            if job.state.is_in_flight() {
                tx.execute(
                    "UPDATE jobs SET state = 'failed', lost = 1, finished_at = ?2, updated_at = ?2, \
                     outcome = 'failed', message = ?3 WHERE id = ?1",
                    params![
                        job.id,
                        now.as_second(),
                        format!(
                            "no result from the agent of {} within the job's maximum duration \
                             plus {} minutes; the agent may have lost it (see its log)",
                            job.host,
                            RESULT_GRACE_SECS / 60
                        )
                    ],
                )?;
            } else {
                let reason = match &job.reason {
                    Some(waiting) if job.state == JobState::Deferred => {
                        format!("deadline passed while deferred: {waiting}")
                    }
                    _ => format!(
                        "deadline passed before the agent of {} could run it (agent offline?)",
                        job.host
                    ),
                };
                tx.execute(
                    "UPDATE jobs SET state = 'missed', reason = ?3, finished_at = ?2, \
                     updated_at = ?2 WHERE id = ?1",
                    params![job.id, now.as_second(), reason],
                )?;
            }
        }
        tx.commit()?;
        Ok(late)
    }

    /// Records that an agent authenticated.
    pub fn agent_connected(
        &mut self,
        host: &str,
        remote: &str,
        agent_version: &str,
        restic_version: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE agent_sessions SET disconnected_at = ?2 WHERE host = ?1 AND \
             disconnected_at IS NULL",
            params![host, now.as_second()],
        )?;
        tx.execute(
            "INSERT INTO agent_sessions (host, remote, agent_version, restic_version, connected_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![host, remote, agent_version, restic_version, now.as_second()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that an agent's connection ended.
    pub fn agent_disconnected(
        &mut self,
        host: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE agent_sessions SET disconnected_at = ?2 WHERE host = ?1 AND \
             disconnected_at IS NULL",
            params![host, now.as_second()],
        )?;
        Ok(())
    }

    /// Compares what an agent says it runs with what the store sent it.
    pub fn reconcile_agent_running(
        &mut self,
        host: &str,
        running: &[String],
        now: jiff::Timestamp,
    ) -> Result<Settled, StoreError> {
        let mut settled = Settled::default();
        for id in running {
            let known = self
                .job(id)?
                .is_some_and(|job| job.host == host && !job.state.is_terminal());
            if !known {
                settled.unknown.push(id.clone());
            }
        }
        let sent = self.jobs_where(
            &format!(
                "WHERE host = ?1 AND state IN ({})",
                state_list(&[JobState::Dispatched, JobState::Running])
            ),
            &[&host],
        )?;
        for job in sent {
            if running.contains(&job.id) {
                continue;
            }
            if self.transition(
                &job.id,
                &[JobState::Dispatched, JobState::Running],
                JobState::Queued,
                Some("sent again after the agent reconnected"),
                now,
            )? {
                settled.requeued.push(job.id);
            }
        }
        Ok(settled)
    }

    /// Records an agent whose key is not the committed one, for the status view.
    pub fn record_pending_key(
        &mut self,
        host: &str,
        key: &str,
        remote: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO pending_keys (host, key, remote, first_seen, last_seen) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (host, key) DO UPDATE SET \
             remote = excluded.remote, last_seen = excluded.last_seen, attempts = attempts + 1",
            params![host, key, remote, now.as_second()],
        )?;
        Ok(())
    }

    /// Agents waiting for their key to be committed: (host, key, remote, last seen).
    pub fn pending_keys(
        &self,
    ) -> Result<Vec<(String, String, String, jiff::Timestamp)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT host, key, remote, last_seen FROM pending_keys ORDER BY host, key")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, ts(row.get(3)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the snapshot inventory of one host × policy in a repository.
    pub fn put_snapshots(
        &mut self,
        host: &str,
        policy: &str,
        repository: &str,
        snapshots: &[Snapshot],
    ) -> Result<(), StoreError> {
        let latest = snapshots.iter().map(|s| s.time.as_str()).max();
        let text = serde_json::to_string(snapshots)
            .map_err(|e| StoreError::Decode(format!("snapshot list: {e}")))?;
        self.conn.execute(
            "INSERT INTO snapshot_inventory (host, policy, repository, snapshots, count, latest, \
             refreshed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (host, policy, repository) DO UPDATE SET snapshots = excluded.snapshots, \
             count = excluded.count, latest = excluded.latest, refreshed_at = excluded.refreshed_at",
            params![
                host,
                policy,
                repository,
                text,
                i64::try_from(snapshots.len()).unwrap_or(i64::MAX),
                latest,
                jiff::Timestamp::now().as_second()
            ],
        )?;
        Ok(())
    }

    /// The snapshot inventory of one host × policy in a repository.
    pub fn snapshots(
        &self,
        host: &str,
        policy: &str,
        repository: &str,
    ) -> Result<Option<Vec<Snapshot>>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT snapshots FROM snapshot_inventory WHERE host = ?1 AND policy = ?2 AND \
                 repository = ?3",
                params![host, policy, repository],
                |row| row.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Decode(format!("snapshot list: {e}")))
        })
        .transpose()
    }
}

/// The newest session of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub host: String,
    pub remote: String,
    pub agent_version: String,
    pub restic_version: Option<String>,
    pub connected_at: jiff::Timestamp,
    pub disconnected_at: Option<jiff::Timestamp>,
}

fn terminal_states() -> Vec<JobState> {
    JobState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect()
}
