//! The scheduler: turns the applied assignments into jobs at their instants, and decides which
//! queued jobs may start now.
//!
//! An assignment fires at the instants of its schedule, read in its time zone
//! ([`instants`]), each host a stable amount later ([`jitter_offset`]), so a thousand hosts
//! on `0 2 * * *` spread over the declared jitter instead of starting in one second. Every
//! instant runs at most once: a scheduled job's id is made of its assignment and its instant,
//! and queuing it is written in the same transaction as the schedule state it advances.
//!
//! After downtime, an assignment that missed instants gets one catch-up run (with
//! `missed-run = "run-once"`, the default) or one `missed` record (with `"skip"`), never one
//! run per missed instant. An instant that comes due while the previous run of the same
//! assignment has not finished is recorded as an overrun and not run.
//!
//! Jobs that share a repository are kept apart by [`may_start`]: backups run side by side,
//! forget, prune and check wait until no backup to the repository is in flight, and while one
//! of them waits, new backups to that repository wait behind it so it cannot starve.

pub mod instants;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use sha2::Digest as _;

use crate::config::effective::{in_zone, placements};
use crate::config::model::{Backend, Config, MissedRun, Schedule, Trigger};

use super::model::{AssignmentKey, JobKind, JobState, ScheduleState, scheduled_job_id};
use super::reconcile::policy_jobs;
use super::store::NewJob;

/// How long a maintenance, init, unlock or inventory job may run.
pub const MAINTENANCE_MAX_SECS: i64 = 24 * 3600;

/// The snapshot inventory of each host × policy is refreshed this often, besides after each
/// backup.
pub const SNAPSHOT_REFRESH: SignedDuration = SignedDuration::from_hours(24);

/// A job that starts this much after its due time still counts as on time for
/// `missed-run = "skip"`.
pub const ON_TIME_GRACE: SignedDuration = SignedDuration::from_mins(5);

/// The longest a queued job waits for its agent before it is missed, whatever its schedule.
pub const MAX_WAIT: SignedDuration = SignedDuration::from_hours(24);

/// One assignment as the scheduler runs it.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub key: AssignmentKey,
    pub repository: String,
    /// Jobs on this repository are coordinated with each other: the repository's name, or for
    /// a path on the host's own disk, the name and the host (each host has its own).
    pub scope: Arc<str>,
    /// With the zone filled in.
    pub schedule: Schedule,
    /// This host's stable delay after each instant.
    pub offset: SignedDuration,
    pub missed_run: MissedRun,
    pub max_duration_secs: i64,
    pub paused: bool,
}

impl Scheduled {
    /// The first instant strictly after `after`.
    #[must_use]
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        instants::next_after(&self.schedule, after)
    }
}

/// Every assignment of a configuration, plus each host × policy's snapshot refresh.
#[must_use]
pub fn scheduled(config: &Config) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let policy_names: std::collections::HashMap<&str, Arc<str>> = config
        .policies
        .keys()
        .map(|name| (name.as_str(), Arc::from(name.as_str())))
        .collect();
    for (host, placed) in placements(config) {
        let host_name: Arc<str> = host.name.as_str().into();
        for placement in placed {
            let policy = placement.policy;
            let policy_name = &policy_names[policy.name.as_str()];
            let scope: Arc<str> = match placement.repository.map(|r| r.url.backend) {
                Some(Backend::Local) => format!("{}@{}", policy.repository, host.name).into(),
                _ => policy.repository.as_str().into(),
            };
            let mut jobs: Vec<(JobKind, Schedule)> = policy_jobs(policy)
                .into_iter()
                .map(|(kind, schedule)| (kind, in_zone(schedule, host)))
                .collect();
            jobs.push((
                JobKind::Snapshots,
                Schedule {
                    trigger: Trigger::Every(SNAPSHOT_REFRESH),
                    timezone: None,
                    jitter: SNAPSHOT_REFRESH,
                },
            ));
            for (kind, schedule) in jobs {
                let key = AssignmentKey {
                    host: Arc::clone(&host_name),
                    policy: Arc::clone(policy_name),
                    kind,
                };
                let max_duration_secs = if kind == JobKind::Backup {
                    policy.max_duration.as_secs()
                } else {
                    MAINTENANCE_MAX_SECS
                };
                out.push(Scheduled {
                    offset: jitter_offset(&key, schedule.jitter),
                    key,
                    repository: policy.repository.clone(),
                    scope: Arc::clone(&scope),
                    schedule,
                    missed_run: policy.missed_run,
                    max_duration_secs,
                    paused: host.paused,
                });
            }
        }
    }
    out
}

/// A stable delay in `[0, jitter)` for one assignment, whole seconds, from a hash of its key:
/// the same on every restart and on every server, and spread evenly over the hosts.
#[must_use]
pub fn jitter_offset(key: &AssignmentKey, jitter: SignedDuration) -> SignedDuration {
    let Ok(span) = u64::try_from(jitter.as_secs()) else {
        return SignedDuration::ZERO;
    };
    if span == 0 {
        return SignedDuration::ZERO;
    }
    let digest =
        sha2::Sha256::digest(format!("{}\0{}\0{}", key.host, key.policy, key.kind).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let secs = u64::from_be_bytes(bytes) % span;
    SignedDuration::from_secs(i64::try_from(secs).unwrap_or(0))
}

/// The scheduler's working set: every assignment's next instant, ordered by when it is due.
#[derive(Default)]
pub struct Scheduler {
    /// The commit of the revision these assignments come from.
    pub revision: Option<String>,
    /// Sorted by key.
    assignments: Vec<Scheduled>,
    /// The next instant of each assignment, by index; `None` once a schedule stops firing.
    next: Vec<Option<Timestamp>>,
    /// (due, index); an item whose due no longer matches its assignment's is stale.
    due: BinaryHeap<Reverse<(Timestamp, usize)>>,
}

/// What one pass over the due assignments produced, to be written in one transaction.
#[derive(Debug, Default)]
pub struct Due {
    pub jobs: Vec<NewJob>,
    pub states: Vec<ScheduleState>,
}

/// Asks the store whether an assignment still has a run in progress: its id and state.
pub trait Running {
    fn active(&self, key: &AssignmentKey) -> Option<(String, JobState)>;
}

/// Identifies "the next instant of this schedule after that instant" for sharing the answer:
/// hosts with the same schedule, zone and last run have the same next run.
#[derive(PartialEq, Eq, Hash)]
enum Question {
    Cron {
        expr: usize,
        zone: Option<Arc<str>>,
        after: Timestamp,
    },
    Every {
        secs: i64,
        after: Timestamp,
    },
}

impl Question {
    fn of(schedule: &Schedule, after: Timestamp) -> Self {
        match &schedule.trigger {
            Trigger::Cron(expr) => Question::Cron {
                expr: Arc::as_ptr(expr).addr(),
                zone: schedule.timezone.as_ref().map(|z| Arc::clone(&z.name)),
                after,
            },
            Trigger::Every(every) => Question::Every {
                secs: every.as_secs(),
                after,
            },
        }
    }
}

impl Scheduler {
    /// Builds the working set from the applied assignments and the stored schedule state. An
    /// assignment without state starts at its next instant after `now`; one whose schedule
    /// changed (the store cleared its next instant) starts afresh the same way.
    #[must_use]
    pub fn build(
        mut assignments: Vec<Scheduled>,
        states: &HashMap<AssignmentKey, ScheduleState>,
        now: Timestamp,
    ) -> Self {
        assignments.sort_by(|a, b| a.key.cmp(&b.key));
        let mut memo: HashMap<Question, Option<Timestamp>> = HashMap::new();
        let mut next = Vec::with_capacity(assignments.len());
        let mut due = BinaryHeap::with_capacity(assignments.len());
        for (index, scheduled) in assignments.iter().enumerate() {
            let state = states.get(&scheduled.key);
            let instant = if let Some(next) = state.and_then(|s| s.next_instant) {
                Some(next)
            } else {
                let after = state.and_then(|s| s.last_instant).unwrap_or(now);
                *memo
                    .entry(Question::of(&scheduled.schedule, after))
                    .or_insert_with(|| scheduled.next_after(after))
            };
            if let Some(instant) = instant {
                due.push(Reverse((instant + scheduled.offset, index)));
            }
            next.push(instant);
        }
        Self {
            revision: None,
            assignments,
            next,
            due,
        }
    }

    /// How many assignments are scheduled.
    #[must_use]
    pub fn len(&self) -> usize {
        self.assignments.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.assignments.is_empty()
    }

    /// The next instant of an assignment (before its jitter); none for a paused host, which
    /// runs nothing.
    #[must_use]
    pub fn next_instant(&self, key: &AssignmentKey) -> Option<Timestamp> {
        let index = self.assignments.binary_search_by(|a| a.key.cmp(key)).ok()?;
        if self.assignments[index].paused {
            return None;
        }
        self.next[index]
    }

    /// When the earliest assignment is due.
    #[must_use]
    pub fn next_due(&self) -> Option<Timestamp> {
        self.due.peek().map(|Reverse((due, _))| *due)
    }

    /// Takes every assignment due at `now` and turns each into at most one job.
    pub fn take_due(&mut self, now: Timestamp, running: &dyn Running) -> Due {
        let mut out = Due::default();
        while let Some(Reverse((due, _))) = self.due.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, index))) = self.due.pop() else {
                break;
            };
            let scheduled = &self.assignments[index];
            let Some(first) = self.next[index] else {
                continue;
            };
            if first + scheduled.offset != due {
                continue;
            }
            let (latest, missed) = latest_due(scheduled, first, now);
            let next = scheduled.next_after(latest);

            if !scheduled.paused {
                out.jobs
                    .push(job_for(scheduled, first, latest, missed, now, running));
            }
            out.states.push(ScheduleState {
                key: scheduled.key.clone(),
                last_instant: Some(latest),
                next_instant: next,
            });
            if let Some(next) = next {
                self.due.push(Reverse((next + scheduled.offset, index)));
            }
            self.next[index] = next;
        }
        out
    }
}

/// The last instant of `scheduled` that is due at `now`, starting from `first`, and how many
/// instants that skips. Bounded, so a minutely schedule after a month away stays cheap.
fn latest_due(scheduled: &Scheduled, first: Timestamp, now: Timestamp) -> (Timestamp, u32) {
    const MAX_STEPS: u32 = 10_000;

    if let Trigger::Every(every) = &scheduled.schedule.trigger {
        let Some(latest) = instants::every_at_or_before(*every, now - scheduled.offset) else {
            return (first, 0);
        };
        if latest <= first {
            return (first, 0);
        }
        let skipped = latest.duration_since(first).as_secs() / every.as_secs().max(1);
        return (latest, u32::try_from(skipped).unwrap_or(u32::MAX));
    }
    let mut latest = first;
    let mut skipped = 0;
    while skipped < MAX_STEPS {
        match scheduled.next_after(latest) {
            Some(next) if next + scheduled.offset <= now => {
                latest = next;
                skipped += 1;
            }
            _ => break,
        }
    }
    (latest, skipped)
}

/// The job for a due assignment: a normal run, one catch-up run, a missed record, or an
/// overrun record.
fn job_for(
    scheduled: &Scheduled,
    first: Timestamp,
    latest: Timestamp,
    skipped: u32,
    now: Timestamp,
    running: &dyn Running,
) -> NewJob {
    let run_after = latest + scheduled.offset;
    let deadline = scheduled
        .next_after(latest)
        .map_or(run_after + MAX_WAIT, |next| next + scheduled.offset)
        .min(run_after + MAX_WAIT)
        .max(run_after + SignedDuration::from_mins(1));
    let mut job = NewJob {
        id: scheduled_job_id(&scheduled.key, latest),
        key: scheduled.key.clone(),
        repository: scheduled.repository.clone(),
        state: JobState::Queued,
        reason: None,
        instant: Some(latest),
        catch_up: skipped > 0,
        run_after,
        deadline,
        max_duration_secs: scheduled.max_duration_secs,
    };
    let late = now.duration_since(run_after) > ON_TIME_GRACE;

    if let Some((id, state)) = running.active(&scheduled.key) {
        job.state = JobState::Missed;
        job.reason = Some(format!(
            "overrun: the previous run (job {id}) was still {state} when this run was due"
        ));
    } else if skipped > 0 || late {
        let missed = skipped + 1;
        let since = first.to_string();
        match scheduled.missed_run {
            MissedRun::RunOnce => {
                job.reason = Some(format!(
                    "catch-up: {missed} run(s) due since {since} were missed while the server \
                     or agent was down; running once now"
                ));
                job.catch_up = true;
            }
            MissedRun::Skip => {
                job.state = JobState::Missed;
                job.reason = Some(format!(
                    "{missed} run(s) due since {since} were missed while the server was down; \
                     skipped (missed-run = \"skip\")"
                ));
            }
        }
    }
    job
}

/// Whether a job may start now, given what else is busy on its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Start,
    Defer { reason: String },
}

/// What is happening on each repository scope right now.
#[derive(Debug, Default)]
pub struct Activity {
    /// Backups dispatched or running, per scope.
    backups: HashMap<Arc<str>, usize>,
    /// A forget, prune or check dispatched or running, per scope, with its job id.
    maintenance: HashMap<Arc<str>, (JobKind, String)>,
    /// Scopes where a maintenance job is ready and waiting for backups to drain.
    waiting: HashSet<Arc<str>>,
}

impl Activity {
    /// Counts a job that was sent to an agent (or is about to be).
    pub fn started(&mut self, kind: JobKind, scope: &Arc<str>, id: &str) {
        if kind == JobKind::Backup {
            *self.backups.entry(Arc::clone(scope)).or_default() += 1;
        } else if kind.is_maintenance() {
            self.maintenance
                .insert(Arc::clone(scope), (kind, id.to_owned()));
        }
    }

    /// Notes a maintenance job that is ready but must wait.
    pub fn waiting(&mut self, scope: &Arc<str>) {
        self.waiting.insert(Arc::clone(scope));
    }
}

/// Backups run side by side; forget, prune and check need the repository to themselves; a
/// waiting maintenance job holds back new backups. Init, unlock and inventories always start.
#[must_use]
pub fn may_start(kind: JobKind, scope: &Arc<str>, activity: &Activity) -> Decision {
    let repository = scope.split('@').next().unwrap_or(scope);
    if kind == JobKind::Backup {
        if let Some((other, id)) = activity.maintenance.get(scope) {
            return Decision::Defer {
                reason: format!(
                    "waiting for the {other} of repository `{repository}` (job {id}) to finish"
                ),
            };
        }
        if activity.waiting.contains(scope) {
            return Decision::Defer {
                reason: format!(
                    "a forget, prune or check of repository `{repository}` is waiting for \
                     backups to finish; this backup goes after it"
                ),
            };
        }
    } else if kind.is_maintenance() {
        if let Some((other, id)) = activity.maintenance.get(scope) {
            return Decision::Defer {
                reason: format!(
                    "waiting for the {other} of repository `{repository}` (job {id}) to finish"
                ),
            };
        }
        if let Some(n) = activity.backups.get(scope).filter(|n| **n > 0) {
            return Decision::Defer {
                reason: format!("waiting for {n} backup(s) to repository `{repository}` to finish"),
            };
        }
    }
    Decision::Start
}
