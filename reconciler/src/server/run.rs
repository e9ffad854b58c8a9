//! The running server: the state every task shares, and the handling of what agents report.
//! Following the config repository is [`super::follow`]'s; queuing and dispatching jobs is
//! [`super::dispatch`]'s.
//!
//! The store is `SQLite` behind a mutex; every call to it runs on the blocking pool so a slow
//! disk never stalls a WebSocket. The applied configuration is shared read-only and replaced
//! whole when a new revision is applied.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use protocol::{AgentMessage, Hello, JobResult, Outcome, Progress, ServerMessage};
use tokio::sync::Notify;
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::config::model::Config;
use crate::secrets::Identity;

use super::hub::Hub;
use super::model::{JobKind, JobState, RevisionInfo};
use super::scheduler::Scheduler;
use super::settings::Settings;
use super::store::{Store, StoreError};
use super::webhook::WebhookSecret;

/// How many log lines of a running job the server keeps for its record.
const LOG_LINES_KEPT: usize = 200;

/// A revision in force: its commit and the configuration it holds.
pub struct Applied {
    pub revision: RevisionInfo,
    pub config: Config,
}

/// What every task of the server shares.
pub struct Server {
    pub settings: Settings,
    pub store: Arc<Mutex<Store>>,
    pub identity: Identity,
    /// The server's age recipient, which agents' signatures are bound to.
    pub server_id: String,
    pub hub: Hub,
    applied: RwLock<Option<Arc<Applied>>>,
    /// Wakes the scheduler loop early (a result arrived, an agent connected).
    pub wake: Notify,
    /// Asks the follower for an immediate fetch (a verified webhook).
    pub fetch_now: Notify,
    /// Asks for the schedule to be rebuilt (a revision was applied).
    pub rebuild: Notify,
    pub webhook_secret: Option<WebhookSecret>,
    /// Refused webhook requests counted for the next summary ([`super::refusals`]).
    pub refusals: Mutex<super::refusals::Refusals>,
    /// The last progress report of each running job, for the status view.
    pub progress: Mutex<HashMap<String, Progress>>,
    /// The newest log lines of each job sent to an agent, by job id, with the host it was sent
    /// to; stored with the job's result. Progress and log lines are taken only for jobs in
    /// here, so an agent cannot make the server hold anything for jobs it was never sent.
    logs: Mutex<HashMap<String, (String, VecDeque<String>)>>,
    /// The last error the follower met, cleared by the next good fetch.
    pub source_error: Mutex<Option<String>>,
    /// Since when, and with what error, the scheduler's regular pass over the state database
    /// fails; cleared by the next pass that works. `/healthz` reports it.
    pub store_failing: Mutex<Option<(jiff::Timestamp, String)>>,
    /// Every assignment's next instant; rebuilt from the store when a revision is applied.
    pub scheduler: Mutex<Scheduler>,
    /// The newest commit this process found invalid, so it is not validated again each poll.
    last_invalid: Mutex<Option<String>>,
}

impl Server {
    #[must_use]
    pub fn new(
        settings: Settings,
        store: Store,
        identity: Identity,
        webhook_secret: Option<WebhookSecret>,
    ) -> Self {
        let server_id = identity.to_public().to_string();
        Self {
            settings,
            store: Arc::new(Mutex::new(store)),
            identity,
            server_id,
            hub: Hub::default(),
            applied: RwLock::new(None),
            wake: Notify::new(),
            fetch_now: Notify::new(),
            rebuild: Notify::new(),
            webhook_secret,
            refusals: Mutex::default(),
            progress: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            source_error: Mutex::new(None),
            store_failing: Mutex::new(None),
            scheduler: Mutex::new(Scheduler::default()),
            last_invalid: Mutex::new(None),
        }
    }

    /// Notes that job `id` was sent to `host`'s agent: its progress and log lines are taken
    /// from then on, until its result.
    pub(super) fn job_sent(&self, id: &str, host: &str) {
        self.logs
            .lock()
            .expect("logs lock")
            .entry(id.to_owned())
            .or_insert_with(|| (host.to_owned(), VecDeque::new()));
    }

    fn was_sent(&self, id: &str, host: &str) -> bool {
        self.logs
            .lock()
            .expect("logs lock")
            .get(id)
            .is_some_and(|(owner, _)| owner == host)
    }

    pub(super) fn note_invalid(&self, commit: &str) {
        *self.last_invalid.lock().expect("invalid lock") = Some(commit.to_owned());
    }

    pub(super) fn is_known_invalid(&self, commit: &str) -> bool {
        self.last_invalid.lock().expect("invalid lock").as_deref() == Some(commit)
    }

    pub(super) fn set_source_error(&self, error: Option<String>) {
        *self.source_error.lock().expect("source lock") = error;
    }

    /// The revision in force, if any.
    #[must_use]
    pub fn applied(&self) -> Option<Arc<Applied>> {
        self.applied.read().expect("applied lock").clone()
    }

    pub(super) fn set_applied(&self, applied: Applied) {
        *self.applied.write().expect("applied lock") = Some(Arc::new(applied));
    }

    /// Runs `f` on the store, on the blocking pool.
    pub async fn with_store<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().expect("store lock");
            f(&mut store)
        })
        .await
        .expect("store task does not panic")
    }

    /// Audits from a context that cannot wait (the handshake's error paths). A failure to
    /// write is logged: the audit log is the record of last resort, not a gate.
    pub fn audit_blocking(&self, actor: &str, action: &str, subject: &str, detail: &str) {
        let mut store = self.store.lock().expect("store lock");
        if let Err(e) = store.audit(
            actor,
            action,
            subject,
            None,
            &serde_json::json!({ "detail": detail }),
        ) {
            error!(error = %e, action, subject, "could not write the audit log");
        }
    }

    /// Queues a run of one of the applied assignments now, outside its schedule. Nothing
    /// reachable from outside the process calls this: the fleet changes only through the
    /// config repository. The demo uses it to show a first backup without waiting for 01:30.
    pub async fn run_now(&self, host: &str, policy: &str, kind: JobKind) -> anyhow::Result<String> {
        let applied = self
            .applied()
            .ok_or_else(|| anyhow::anyhow!("no revision is applied yet"))?;
        let Some(found) = applied.config.policies.get(policy) else {
            anyhow::bail!("policy `{policy}` is not in the applied configuration");
        };
        if !applied.config.hosts.contains_key(host) {
            anyhow::bail!("host `{host}` is not in the applied configuration");
        }
        let repository = found.repository.clone();
        let max_duration = if kind == JobKind::Backup {
            found.max_duration.as_secs()
        } else {
            super::scheduler::MAINTENANCE_MAX_SECS
        };
        let key = super::model::AssignmentKey::new(host, policy, kind);
        let id = self
            .with_store(move |store| {
                super::dispatch::queue_unscheduled(store, key, &repository, max_duration)
            })
            .await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// The committed key of a host: `None` when the host is not in the applied configuration,
    /// `Some(None)` when it has no key.
    #[must_use]
    pub fn committed_key(&self, host: &str) -> Option<Option<[u8; 32]>> {
        let applied = self.applied()?;
        let host = applied.config.hosts.get(host)?;
        Some(host.agent_key.as_ref().map(|key| key.0))
    }

    pub fn record_pending_key(&self, host: &str, key: &str, addr: &str) {
        let mut store = self.store.lock().expect("store lock");
        if let Err(e) = store.record_pending_key(host, key, addr, jiff::Timestamp::now()) {
            error!(error = %e, host, "could not record the pending key");
        }
    }

    /// An agent authenticated: record the session and settle its jobs.
    pub async fn agent_connected(&self, hello: &Hello, addr: &str) {
        let host = hello.host.clone();
        let addr = addr.to_owned();
        let agent_version = hello.agent_version.clone();
        let restic_version = hello.restic_version.clone();
        let running = hello.running.clone();
        let settled = self
            .with_store(move |store| {
                let now = jiff::Timestamp::now();
                store.agent_connected(
                    &host,
                    &addr,
                    &agent_version,
                    restic_version.as_deref(),
                    now,
                )?;
                store.reconcile_agent_running(&host, &running, now)
            })
            .await;
        match settled {
            Ok(settled) => {
                for id in &settled.unknown {
                    // The agent runs something the store does not expect: stop it.
                    warn!(job_id = %id, "agent runs a job the server does not know; cancelling");
                    self.hub
                        .send(&hello.host, ServerMessage::Cancel { job_id: id.clone() });
                }
                for id in &settled.requeued {
                    info!(job_id = %id, "job sent again: the agent did not report it running");
                }
                // Jobs still running from before a restart go on reporting.
                for id in hello
                    .running
                    .iter()
                    .filter(|id| !settled.unknown.contains(id))
                {
                    self.job_sent(id, &hello.host);
                }
            }
            Err(e) => error!(error = %e, "could not record the agent session"),
        }
        self.wake.notify_one();
    }

    pub async fn agent_disconnected(&self, host: &str) {
        let host = host.to_owned();
        if let Err(e) = self
            .with_store(move |store| store.agent_disconnected(&host, jiff::Timestamp::now()))
            .await
        {
            error!(error = %e, "could not record the end of the agent session");
        }
    }

    /// Handles one message of an authenticated agent.
    pub async fn agent_message(&self, host: &str, message: AgentMessage) {
        match message {
            AgentMessage::Hello(_) | AgentMessage::Authenticate { .. } => {
                warn!("agent repeated its handshake; ignored");
            }
            AgentMessage::Accepted { job_id } => {
                let id = job_id.clone();
                let owner = host.to_owned();
                let moved = self
                    .with_store(move |store| {
                        let Some(job) = store.job(&id)? else {
                            return Ok(false);
                        };
                        if job.host != owner {
                            return Ok(false);
                        }
                        store.transition(
                            &id,
                            &[JobState::Queued, JobState::Deferred, JobState::Dispatched],
                            JobState::Running,
                            None,
                            jiff::Timestamp::now(),
                        )
                    })
                    .await;
                match moved {
                    Ok(true) => info!(job_id = %job_id, "job running"),
                    Ok(false) => {}
                    Err(e) => error!(job_id = %job_id, error = %e, "could not mark job running"),
                }
            }
            AgentMessage::Refused { job_id, reason } => {
                warn!(job_id = %job_id, %reason, "agent refused a job");
            }
            AgentMessage::Progress(progress) => {
                if self.was_sent(&progress.job_id, host) {
                    self.progress
                        .lock()
                        .expect("progress lock")
                        .insert(progress.job_id.clone(), progress);
                }
            }
            AgentMessage::Log { job_id, line, .. } => {
                // Kept in memory and stored with the result: a line each is no reason for an
                // fsync each.
                let mut logs = self.logs.lock().expect("logs lock");
                if let Some((owner, lines)) = logs.get_mut(&job_id)
                    && owner == host
                {
                    if lines.len() == LOG_LINES_KEPT {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
            AgentMessage::Result(result) => self.job_result(host, *result).await,
        }
    }

    /// Stores a result (once, however often it arrives) and acknowledges it.
    async fn job_result(&self, host: &str, result: JobResult) {
        let job_id = result.job_id.clone();
        self.progress.lock().expect("progress lock").remove(&job_id);
        let log_tail = self
            .logs
            .lock()
            .expect("logs lock")
            .remove(&job_id)
            .map(|(_, lines)| Vec::from(lines).join("\n"));
        let applied = self.applied();
        let owner = host.to_owned();
        let stored = self
            .with_store(move |store| -> Result<bool, StoreError> {
                let Some(job) = store.job(&result.job_id)? else {
                    warn!(job_id = %result.job_id, "result for a job the server does not know");
                    return Ok(true);
                };
                if job.host != owner {
                    warn!(job_id = %result.job_id, owner = %job.host, "result from another host's agent; ignored");
                    return Ok(false);
                }
                let partial_ok = applied
                    .as_ref()
                    .and_then(|a| a.config.policies.get(&job.policy))
                    .is_some_and(|p| p.partial_is_success);
                let state = state_for(result.outcome, partial_ok);
                let first = store.finish_job(&result.job_id, &result, state, log_tail.as_deref())?;
                if first {
                    if let Some(snapshots) = &result.snapshots {
                        store.put_snapshots(&job.host, &job.policy, &job.repository, snapshots)?;
                    }
                    log_finished(&job, &result, state);
                    if job.kind == JobKind::Backup
                        && matches!(result.outcome, Outcome::Succeeded | Outcome::Partial)
                    {
                        // The new snapshot shows in the inventory at once, not at the next
                        // daily refresh.
                        super::dispatch::queue_followup(store, &job, JobKind::Snapshots)?;
                    }
                    if result.outcome == Outcome::BlockedByLock {
                        // restic's unlock removes only stale locks (a dead process's, or very
                        // old ones), never a live one: safe to try before the next run.
                        super::dispatch::queue_followup(store, &job, JobKind::Unlock)?;
                    }
                }
                Ok(true)
            })
            .await;
        match stored {
            Ok(true) => {
                self.hub.send(host, ServerMessage::Ack { job_id });
            }
            Ok(false) => {}
            Err(e) => {
                // Not acknowledged: the agent keeps the result and sends it again.
                error!(job_id = %job_id, error = %e, "could not store a job result");
            }
        }
        self.wake.notify_one();
    }
}

/// Logs a finished job at the level its outcome deserves.
fn log_finished(job: &super::store::JobRecord, result: &JobResult, state: JobState) {
    let span = info_span!("job", job_id = %job.id, host = %job.host, policy = %job.policy);
    let _enter = span.enter();
    if state == JobState::Succeeded {
        info!(kind = %job.kind, outcome = %result.outcome, message = %result.message, "job finished");
    } else {
        error!(
            kind = %job.kind,
            outcome = %result.outcome,
            message = %result.message,
            "job did not succeed"
        );
    }
}

/// The job state a result puts a job in.
#[must_use]
pub fn state_for(outcome: Outcome, partial_is_success: bool) -> JobState {
    match outcome {
        Outcome::Succeeded => JobState::Succeeded,
        Outcome::Partial if partial_is_success => JobState::Succeeded,
        Outcome::Partial => JobState::Partial,
        Outcome::TimedOut => JobState::TimedOut,
        Outcome::Cancelled => JobState::Cancelled,
        Outcome::Failed
        | Outcome::RepositoryMissing
        | Outcome::BlockedByLock
        | Outcome::WrongPassword
        | Outcome::Refused => JobState::Failed,
    }
}

/// Runs `fut` inside a span named after the server's listen address.
pub async fn in_span<F: std::future::Future>(server: &Server, fut: F) -> F::Output {
    fut.instrument(info_span!("serve", listen = %server.settings.listen))
        .await
}
