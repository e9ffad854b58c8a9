//! The scheduler loop: once a second (or when woken), queue the assignments that came due,
//! expire jobs past their deadline, and send ready jobs to connected agents.
//!
//! Order matters for crash safety. A job is queued in the same transaction as the schedule
//! state it advances, so a crash queues it again with the same id or not at all. A job is
//! marked dispatched before it is sent, so a crash between the two leaves a dispatched job its
//! agent does not report running, which goes back to the queue when the agent reconnects; the
//! agent knows job ids, so a job it already ran is never run again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use protocol::{JobResult, Outcome, ServerMessage};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};

use crate::config::model::{Backend, Config};

use super::jobspec;
use super::model::{AssignmentKey, JobKind, JobState};
use super::run::{Applied, Server};
use super::scheduler::{self, Activity, Decision, Running};
use super::store::{JobRecord, NewJob, Store, StoreError};

/// How long after a failed init the next one is tried.
const INIT_RETRY: SignedDuration = SignedDuration::from_mins(10);

/// Queues due jobs, expires late ones and dispatches ready ones, until `shutdown` fires.
pub async fn schedule(server: Arc<Server>, shutdown: CancellationToken) {
    loop {
        let task_server = Arc::clone(&server);
        let result = tokio::task::spawn_blocking(move || tick(&task_server)).await;
        if let Err(e) = result {
            error!(error = %e, "scheduler tick failed");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = server.wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Answers the scheduler's "is a run of this assignment still going?" from the store.
struct StoreRunning<'a>(&'a Store);

impl Running for StoreRunning<'_> {
    fn active(&self, key: &AssignmentKey) -> Option<(String, JobState)> {
        match self.0.active_job(key) {
            Ok(active) => active,
            Err(e) => {
                error!(error = %e, assignment = %key, "could not look up running jobs");
                None
            }
        }
    }
}

/// One scheduler step. Runs on the blocking pool.
pub fn tick(server: &Server) {
    let now = Timestamp::now();
    let Some(applied) = server.applied() else {
        return;
    };
    let span = info_span!("tick");
    let _enter = span.enter();

    queue_due(server, now);
    let mut store = server.store.lock().expect("store lock");
    let expired = store.expire_jobs(now);
    let path = store.path().to_owned();
    drop(store);
    match expired {
        Ok(late) => {
            for job in late {
                warn!(job_id = %job.id, host = %job.host, policy = %job.policy, kind = %job.kind, "job missed its deadline");
            }
            *server.store_failing.lock().expect("health lock") = None;
        }
        Err(e) => {
            error!(error = %e, path = %path.display(), "could not expire late jobs");
            server
                .store_failing
                .lock()
                .expect("health lock")
                .get_or_insert_with(|| (now, e.to_string()));
        }
    }
    dispatch(server, &applied, now);
}

/// Turns due assignments into jobs, written with their schedule state in one transaction.
fn queue_due(server: &Server, now: Timestamp) {
    let Some(applied) = server.applied() else {
        return;
    };
    let mut scheduler = server.scheduler.lock().expect("scheduler lock");
    // A schedule built for an older revision waits for its rebuild rather than queue runs
    // the new revision may have removed or moved.
    if scheduler.revision.as_deref() != Some(applied.revision.commit.as_str())
        || scheduler.next_due().is_none_or(|due| due > now)
    {
        return;
    }
    let mut store = server.store.lock().expect("store lock");
    let due = scheduler.take_due(now, &StoreRunning(&store));
    if due.jobs.is_empty() && due.states.is_empty() {
        return;
    }
    match store.queue_jobs(&due.jobs, &due.states, now) {
        Ok(new) => {
            for job in due.jobs.iter().filter(|j| new.contains(&j.id)) {
                let span = info_span!("job", job_id = %job.id, host = %job.key.host, policy = %job.key.policy);
                let _enter = span.enter();
                match (&job.state, &job.reason) {
                    (JobState::Queued, None) => info!(kind = %job.key.kind, "job queued"),
                    (JobState::Queued, Some(reason)) => {
                        info!(kind = %job.key.kind, %reason, "job queued");
                    }
                    (_, reason) => {
                        warn!(kind = %job.key.kind, state = %job.state, reason = reason.as_deref().unwrap_or(""), "run not started");
                    }
                }
            }
        }
        Err(e) => {
            // The store did not advance, so the in-memory schedule must not either: rebuild
            // it from the store and try these instants again on the next tick.
            error!(error = %e, "could not queue due jobs; retrying");
            drop(store);
            drop(scheduler);
            super::follow::rebuild_schedule(server);
        }
    }
}

/// Where jobs on a repository are coordinated: shared by every host, except for a path on
/// the host's own disk, which is each host's own repository.
#[must_use]
pub fn scope_of(config: &Config, repository: &str, host: &str) -> Arc<str> {
    match config.repositories.get(repository).map(|r| r.url.backend) {
        Some(Backend::Local) => format!("{repository}@{host}").into(),
        _ => repository.into(),
    }
}

/// Sends ready jobs to connected agents, keeping jobs that share a repository apart and
/// holding every job back until its host has initialised its repository.
fn dispatch(server: &Server, applied: &Applied, now: Timestamp) {
    let connected: HashSet<String> = server.hub.connected().into_iter().collect();
    if connected.is_empty() {
        return;
    }
    let mut store = server.store.lock().expect("store lock");
    let lists = store
        .jobs_in_states(&[JobState::Queued, JobState::Deferred])
        .and_then(|waiting| {
            Ok((
                waiting,
                store.jobs_in_states(&[JobState::Dispatched, JobState::Running])?,
                store.initialized()?,
            ))
        });
    let (waiting, in_flight, mut initialized) = match lists {
        Ok(lists) => lists,
        Err(e) => {
            error!(error = %e, "could not list jobs to dispatch");
            return;
        }
    };

    let config = &applied.config;
    let mut activity = Activity::default();
    for job in &in_flight {
        activity.started(
            job.kind,
            &scope_of(config, &job.repository, &job.host),
            &job.id,
        );
    }
    let ready: Vec<&JobRecord> = waiting
        .iter()
        .filter(|job| {
            job.run_after <= now
                && connected.contains(&job.host)
                && config.hosts.get(&job.host).is_some_and(|h| !h.paused)
        })
        .collect();
    for job in &ready {
        if job.kind.is_maintenance() {
            activity.waiting(&scope_of(config, &job.repository, &job.host));
        }
    }

    let mut init_gates: HashMap<(String, String), InitGate> = HashMap::new();
    for job in ready {
        let span = info_span!("job", job_id = %job.id, host = %job.host, policy = %job.policy);
        let _enter = span.enter();
        let pair = (job.host.clone(), job.repository.clone());

        if job.kind != JobKind::Init && !initialized.contains(&pair) {
            let gate = match init_gates.get(&pair) {
                Some(gate) => gate.clone(),
                None => match ensure_init(&mut store, job, now) {
                    Ok(gate) => gate,
                    Err(e) => {
                        error!(error = %e, "could not queue the repository's init");
                        continue;
                    }
                },
            };
            match &gate {
                InitGate::Ready => {}
                InitGate::Waiting { id } => {
                    let reason = format!(
                        "waiting for repository `{}` to be initialised on {} (job {id})",
                        job.repository, job.host
                    );
                    defer(&mut store, job, &reason, now);
                }
                InitGate::Failed { id, message, retry } => {
                    let reason = format!(
                        "repository `{}` could not be initialised on {}: init job {id} failed: \
                         {message}; the next init is tried after {retry}",
                        job.repository, job.host
                    );
                    warn!(%reason, "job failed before it was sent");
                    let result = failed_result(&job.id, &reason, now);
                    if let Err(e) = store.finish_job(&job.id, &result, JobState::Failed, None) {
                        error!(error = %e, "could not record the job as failed");
                    }
                }
            }
            if matches!(gate, InitGate::Ready) {
                // Initialised meanwhile (a result just arrived): go ahead.
                initialized.insert(pair);
            } else {
                init_gates.insert(pair, gate);
                continue;
            }
        }

        let scope = scope_of(config, &job.repository, &job.host);
        if let Decision::Defer { reason } = scheduler::may_start(job.kind, &scope, &activity) {
            defer(&mut store, job, &reason, now);
            continue;
        }
        let key = AssignmentKey::new(&job.host, &job.policy, job.kind);
        let spec = match jobspec::build(config, &server.identity, &job.id, &key) {
            Ok(spec) => spec,
            Err(e) => {
                error!(error = %e, "job cannot be built; failed");
                let result = failed_result(&job.id, &e.to_string(), now);
                let _ = store.finish_job(&job.id, &result, JobState::Failed, None);
                continue;
            }
        };
        // Only an agent that proved the key committed now gets the job (and its credentials);
        // otherwise it waits for the agent to reconnect with that key.
        let Some(key) = config
            .hosts
            .get(&job.host)
            .and_then(|host| host.agent_key)
            .map(|key| key.0)
        else {
            continue;
        };
        match store.transition(
            &job.id,
            &[JobState::Queued, JobState::Deferred],
            JobState::Dispatched,
            None,
            now,
        ) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                error!(error = %e, "could not mark job dispatched");
                continue;
            }
        }
        // Persisted first: see the module's note on crash safety.
        if server
            .hub
            .send_to_key(&job.host, &key, ServerMessage::Job(Box::new(spec)))
        {
            info!(kind = %job.kind, "job dispatched");
            server.job_sent(&job.id, &job.host);
            activity.started(job.kind, &scope, &job.id);
        }
    }
}

/// Moves a queued job to deferred (once) with the reason it waits.
fn defer(store: &mut Store, job: &JobRecord, reason: &str, now: Timestamp) {
    if job.state == JobState::Queued || job.reason.as_deref() != Some(reason) {
        match store.transition(
            &job.id,
            &[JobState::Queued, JobState::Deferred],
            JobState::Deferred,
            Some(reason),
            now,
        ) {
            Ok(_) => info!(%reason, "job deferred"),
            Err(e) => error!(error = %e, "could not defer job"),
        }
    }
}

/// Where a job stands with its repository's init on its host.
#[derive(Debug, Clone)]
enum InitGate {
    /// Initialised: the job may go.
    Ready,
    /// An init is queued or running: the job waits for it.
    Waiting { id: String },
    /// The last init failed a short while ago: the job fails with that init's reason rather
    /// than wait, so a host whose repository cannot be made shows failures, not silence.
    Failed {
        id: String,
        message: String,
        retry: Timestamp,
    },
}

/// Makes sure an init of the job's repository on its host is queued or running, or says why
/// the job cannot wait for one.
fn ensure_init(store: &mut Store, job: &JobRecord, now: Timestamp) -> Result<InitGate, StoreError> {
    if store.is_initialized(&job.host, &job.repository)? {
        return Ok(InitGate::Ready);
    }
    // An init from before the repository moved says nothing about its new location.
    let moved_at = store.repository_moved_at(&job.repository)?;
    let last = store
        .last_init(&job.host, &job.repository)?
        .filter(|last| moved_at.is_none_or(|moved| last.created_at >= moved));
    if let Some(last) = last {
        if !last.state.is_terminal() {
            return Ok(InitGate::Waiting { id: last.id });
        }
        let retry = last.finished_at.map(|at| at + INIT_RETRY);
        if let Some(retry) = retry.filter(|retry| now < *retry) {
            if matches!(last.state, JobState::Failed | JobState::TimedOut) {
                let message = last
                    .message
                    .or(last.reason)
                    .unwrap_or_else(|| last.state.as_str().to_owned());
                return Ok(InitGate::Failed {
                    id: last.id,
                    message,
                    retry,
                });
            }
            return Ok(InitGate::Waiting { id: last.id });
        }
    }
    let id = queue_followup(store, job, JobKind::Init)?;
    info!(init = %id, repository = %job.repository, "repository not initialised on this host yet; init queued");
    Ok(InitGate::Waiting { id })
}

/// Queues a job the server makes itself (an init, or an unlock after a lock got in the way)
/// for the same host, policy and repository as `job`. Returns its id.
pub fn queue_followup(
    store: &mut Store,
    job: &JobRecord,
    kind: JobKind,
) -> Result<String, StoreError> {
    let key = AssignmentKey::new(&job.host, &job.policy, kind);
    queue_unscheduled(store, key, &job.repository, scheduler::MAINTENANCE_MAX_SECS)
}

/// Queues a run of `key` outside its schedule, to start as soon as its agent can take it,
/// unless a run of it is already queued or running. Returns the id of the run.
pub fn queue_unscheduled(
    store: &mut Store,
    key: AssignmentKey,
    repository: &str,
    max_duration_secs: i64,
) -> Result<String, StoreError> {
    let now = Timestamp::now();
    if let Some((id, _)) = store.active_job(&key)? {
        return Ok(id);
    }
    let id = format!(
        "{}.{}.{}.{}",
        key.host,
        key.policy,
        key.kind,
        now.as_millisecond()
    );
    let new = NewJob {
        id: id.clone(),
        key,
        repository: repository.to_owned(),
        state: JobState::Queued,
        reason: None,
        instant: None,
        catch_up: false,
        run_after: now,
        deadline: now + scheduler::MAX_WAIT,
        max_duration_secs,
    };
    store.queue_jobs(&[new], &[], now)?;
    Ok(id)
}

/// A result for a job that never reached an agent.
fn failed_result(job_id: &str, message: &str, at: Timestamp) -> JobResult {
    JobResult {
        job_id: job_id.to_owned(),
        outcome: Outcome::Failed,
        message: message.to_owned(),
        exit_code: None,
        started_at: at,
        finished_at: at,
        summary: None,
        unreadable: Vec::new(),
        initialized: false,
        stderr_tail: String::new(),
        snapshots: None,
    }
}
