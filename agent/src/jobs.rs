//! The job manager: which jobs run, what the server is told about them, and the results that
//! wait on disk until the server has them.
//!
//! It outlives connections. A job keeps running while the connection is down; its progress
//! and log lines are dropped then, its result never is: every result is written to the state
//! directory before it is sent, and sent again after each reconnect until the server
//! acknowledges it. A job id runs at most once: an id seen again is answered from the record
//! (accepted again while running, the stored result while unacknowledged, the recorded outcome
//! after that), and a job for another host is refused without running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::{AgentMessage, JobId, JobResult, JobSpec, LogStream, MAX_FRAME_BYTES, Outcome};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::executor::{Executor, JobEvent};
use crate::ledger::Lookup;
use crate::state::{State, check_job_id, synthetic_result};

/// Where the current connection takes messages; `None` while disconnected.
pub type Outbox = mpsc::UnboundedSender<AgentMessage>;

/// Keeps this far under the frame limit when fitting a result, for the message's envelope.
const FRAME_MARGIN: usize = 64 * 1024;

/// Runs jobs and keeps their results. Cheap to clone; all clones share one manager.
pub struct JobManager<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for JobManager<E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<E> {
    host: String,
    executor: Arc<E>,
    inner: Mutex<Inner>,
    /// The parent of every job's token: cancelled at shutdown.
    shutdown: CancellationToken,
    /// Signalled when a job ends.
    ended: Notify,
}

struct Inner {
    state: State,
    running: HashMap<JobId, CancellationToken>,
    /// Results that could not be written to disk (a full disk): kept here and sent anyway.
    ///
    /// NOTE: lost if the agent stops before the server acknowledges them (see
    /// `docs/src/limitations.md`).
    unstored: HashMap<JobId, JobResult>,
    outbox: Option<(u64, Outbox)>,
    next_connection: u64,
}

impl Inner {
    /// Queues a message on the current connection, if there is one.
    fn send(&mut self, message: AgentMessage) {
        if let Some((_, tx)) = &self.outbox
            && tx.send(message).is_err()
        {
            self.outbox = None;
        }
    }
}

impl<E: Executor> JobManager<E> {
    pub fn new(host: String, state: State, executor: Arc<E>) -> Self {
        Self {
            shared: Arc::new(Shared {
                host,
                executor,
                inner: Mutex::new(Inner {
                    state,
                    running: HashMap::new(),
                    unstored: HashMap::new(),
                    outbox: None,
                    next_connection: 0,
                }),
                shutdown: CancellationToken::new(),
                ended: Notify::new(),
            }),
        }
    }

    #[must_use]
    pub fn executor(&self) -> &E {
        &self.shared.executor
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves the data as consistent as the files it
        // mirrors, which are the truth after a restart anyway; carry on with it.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Jobs running now, for the Hello message.
    #[must_use]
    pub fn running_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.lock().running.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A welcomed connection: every stored result goes out first, then live messages. Returns
    /// the connection's number for [`JobManager::detach`] and how many results were queued.
    pub fn attach(&self, outbox: Outbox) -> (u64, usize) {
        let mut inner = self.lock();
        let number = inner.next_connection;
        inner.next_connection += 1;
        inner.outbox = Some((number, outbox));

        // Under the same lock as job completion, so a result finishing now is sent once.
        let mut results = match inner.state.pending_results() {
            Ok(results) => results,
            Err(e) => {
                error!(error = %e, "cannot read the stored results; they are sent later");
                Vec::new()
            }
        };
        results.extend(inner.unstored.values().cloned());
        let count = results.len();
        for result in results {
            inner.send(AgentMessage::Result(Box::new(result)));
        }
        (number, count)
    }

    /// The connection ended; messages are dropped (results stay on disk) until the next one.
    pub fn detach(&self, number: u64) {
        let mut inner = self.lock();
        if inner.outbox.as_ref().is_some_and(|(n, _)| *n == number) {
            inner.outbox = None;
        }
    }

    /// The server sends a job.
    pub fn handle_job(&self, job: JobSpec) {
        let id = job.id.clone();
        if let Err(reason) = check_job_id(&id) {
            warn!(job_id = ?id, %reason, "refusing a job with an unusable id");
            self.refuse_unrecorded(&id, format!("job id refused: {reason}"));
            return;
        }

        let mut inner = self.lock();
        if answer_known(&mut inner, &id) {
            return;
        }

        if job.host != self.shared.host {
            let reason = format!(
                "job {id} is for host `{}`, but this agent is host `{}`; it was not run",
                job.host, self.shared.host
            );
            warn!(job_id = %id, job_host = %job.host, "refusing a job for another host");
            inner.send(AgentMessage::Refused {
                job_id: id.clone(),
                reason: reason.clone(),
            });
            let now = jiff::Timestamp::now();
            finish_locked(
                &mut inner,
                synthetic_result(&id, Outcome::Refused, reason, now, now),
            );
            return;
        }

        if let Err(e) = inner.state.record_started(&id) {
            error!(job_id = %id, error = %e, "cannot record the job; refusing it");
            drop(inner);
            self.refuse_unrecorded(
                &id,
                format!(
                    "the agent cannot record the job in its state directory ({e}), so it does \
                     not run it: it could not tell later that the job already ran"
                ),
            );
            return;
        }
        let cancel = self.shared.shutdown.child_token();
        inner.running.insert(id.clone(), cancel.clone());
        inner.send(AgentMessage::Accepted { job_id: id.clone() });
        drop(inner);

        let span = info_span!("job", job_id = %id, policy = %job.policy, kind = %job.kind);
        let manager = self.clone();
        tokio::spawn(async move { manager.run(job, cancel).await }.instrument(span));
    }

    /// Refuses a job that cannot be recorded (its id is unusable, or the disk failed).
    ///
    /// NOTE: the refusal is sent but not stored, so it is not sent again after a reconnect (see
    /// `docs/src/limitations.md`).
    fn refuse_unrecorded(&self, id: &str, reason: String) {
        let now = jiff::Timestamp::now();
        let mut inner = self.lock();
        inner.send(AgentMessage::Refused {
            job_id: id.to_owned(),
            reason: reason.clone(),
        });
        let result = synthetic_result(id, Outcome::Refused, reason, now, now);
        inner.send(AgentMessage::Result(Box::new(result)));
    }

    /// Runs one accepted job to its end, inside its span.
    async fn run(&self, job: JobSpec, cancel: CancellationToken) {
        let id = job.id.clone();
        let started_at = jiff::Timestamp::now();
        info!("job started");

        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<JobEvent>();
        let forwarder = {
            let manager = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                while let Some(event) = events_rx.recv().await {
                    manager.forward_event(&id, event);
                }
            })
        };

        // On its own task, so a panic in the executor ends in a result, not a job that never
        // ends.
        let executor = Arc::clone(&self.shared.executor);
        let task = tokio::spawn(
            async move { executor.run(job, events_tx, cancel).await }.in_current_span(),
        );
        let mut result = match task.await {
            Ok(result) => result,
            Err(e) => synthetic_result(
                &id,
                Outcome::Failed,
                format!("the agent's job runner stopped unexpectedly: {e}"),
                started_at,
                jiff::Timestamp::now(),
            ),
        };
        if result.job_id != id {
            warn!(reported = %result.job_id, "the runner reported another job id; correcting it");
            result.job_id.clone_from(&id);
        }
        // The last log lines go out before the result.
        let _ = forwarder.await;

        log_ending(&result);
        let mut inner = self.lock();
        inner.running.remove(&id);
        finish_locked(&mut inner, result);
        drop(inner);
        self.shared.ended.notify_waiters();
    }

    /// Passes a progress report or a log line on, when connected.
    fn forward_event(&self, id: &str, event: JobEvent) {
        let message = match event {
            JobEvent::Progress(mut progress) => {
                id.clone_into(&mut progress.job_id);
                AgentMessage::Progress(progress)
            }
            JobEvent::Log { stream, line } => AgentMessage::Log {
                job_id: id.to_owned(),
                stream,
                line: cut_to(line, protocol::MAX_LOG_LINE_BYTES),
            },
        };
        self.lock().send(message);
    }

    /// The server asks to stop a job.
    pub fn handle_cancel(&self, id: &str) {
        if let Some(token) = self.lock().running.get(id) {
            info!(job_id = %id, "the server cancelled the job");
            token.cancel();
        } else {
            debug!(job_id = %id, "cancel for a job that is not running");
        }
    }

    /// The server stored a result; it can go.
    pub fn handle_ack(&self, id: &str) {
        if let Err(reason) = check_job_id(id) {
            warn!(job_id = ?id, %reason, "acknowledgement with an unusable job id");
            return;
        }
        let mut inner = self.lock();
        inner.unstored.remove(id);
        match inner.state.acknowledge(id) {
            Ok(true) => debug!(job_id = %id, "result acknowledged"),
            Ok(false) => debug!(job_id = %id, "acknowledgement for no stored result"),
            Err(e) => error!(job_id = %id, error = %e, "cannot remove an acknowledged result"),
        }
    }

    /// Cancels every running job and waits up to `grace` for them to end and store their
    /// results. Returns the ids still running after that.
    pub async fn shutdown(&self, grace: Duration) -> Vec<JobId> {
        self.shared.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.shared.ended.notified();
            let running = self.running_ids();
            if running.is_empty() {
                return running;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.running_ids();
            }
        }
    }
}

/// One line per finished job, at the level its outcome calls for: error where an operator
/// must act (the job did not do its work), warn for a snapshot with gaps or a lock the server
/// clears itself, info for a success or a cancel someone asked for.
fn log_ending(result: &JobResult) {
    let (outcome, message) = (result.outcome, &result.message);
    match outcome {
        Outcome::Succeeded | Outcome::Cancelled => info!(%outcome, %message, "job ended"),
        Outcome::Partial | Outcome::BlockedByLock => warn!(%outcome, %message, "job ended"),
        Outcome::Failed
        | Outcome::RepositoryMissing
        | Outcome::WrongPassword
        | Outcome::TimedOut
        | Outcome::Refused => error!(%outcome, %message, "job ended"),
    }
}

/// Answers a job id the record already knows; false when it is new.
fn answer_known(inner: &mut Inner, id: &str) -> bool {
    match inner.state.lookup(id) {
        Lookup::Unknown => false,
        Lookup::Running(_) => {
            debug!(job_id = %id, "job sent again while it runs");
            inner.send(AgentMessage::Accepted {
                job_id: id.to_owned(),
            });
            true
        }
        Lookup::Finished(_) => {
            debug!(job_id = %id, "job sent again after it ended; sending its result again");
            let stored = match inner.state.read_result(id) {
                Ok(result) => result,
                Err(e) => {
                    error!(job_id = %id, error = %e, "cannot read a stored result");
                    None
                }
            };
            if let Some(result) = stored.or_else(|| inner.unstored.get(id).cloned()) {
                inner.send(AgentMessage::Result(Box::new(result)));
            }
            true
        }
        Lookup::Acknowledged(entry) => {
            let Some(outcome) = entry.outcome else {
                let reason = already_ran_reason(id);
                inner.send(AgentMessage::Refused {
                    job_id: id.to_owned(),
                    reason: reason.clone(),
                });
                let now = jiff::Timestamp::now();
                let result = synthetic_result(id, Outcome::Refused, reason, now, now);
                inner.send(AgentMessage::Result(Box::new(result)));
                return true;
            };
            let line = format!(
                "job {id} already ran on this agent: started {}, ended {} with outcome \
                 {outcome}; its result was acknowledged {}. It is not run again.",
                entry.started_at,
                entry.finished_at.map_or("?".to_owned(), |t| t.to_string()),
                entry
                    .acknowledged_at
                    .map_or("?".to_owned(), |t| t.to_string()),
            );
            info!(job_id = %id, %outcome, "job sent again after its result was acknowledged");
            inner.send(AgentMessage::Accepted {
                job_id: id.to_owned(),
            });
            inner.send(AgentMessage::Log {
                job_id: id.to_owned(),
                stream: LogStream::Agent,
                line,
            });
            true
        }
        Lookup::Expired => {
            let reason = already_ran_reason(id);
            warn!(job_id = %id, "job sent again long after it ran; refusing it");
            inner.send(AgentMessage::Refused {
                job_id: id.to_owned(),
                reason: reason.clone(),
            });
            let now = jiff::Timestamp::now();
            let result = synthetic_result(id, Outcome::Refused, reason, now, now);
            inner.send(AgentMessage::Result(Box::new(result)));
            true
        }
    }
}

/// Stores a result (before anything is sent) and sends it when connected.
fn finish_locked(inner: &mut Inner, result: JobResult) {
    let result = fit_to_frame(result);
    if let Err(e) = inner.state.store_result(&result) {
        error!(
            job_id = %result.job_id,
            error = %e,
            "cannot store the job's result; it is kept in memory and sent, but lost if the agent \
             stops before the server has it"
        );
        inner.unstored.insert(result.job_id.clone(), result.clone());
    }
    inner.send(AgentMessage::Result(Box::new(result)));
}

fn already_ran_reason(id: &str) -> String {
    format!(
        "job {id} already ran on this agent, long enough ago that its outcome is no longer \
         kept; a job id never runs twice, so send the job under a new id"
    )
}

/// Shrinks a result whose frame would be too large for the protocol: the stderr tail, the
/// list of unreadable files and the snapshot inventory are cut, and the message says so.
#[must_use]
pub fn fit_to_frame(mut result: JobResult) -> JobResult {
    let limit = MAX_FRAME_BYTES - FRAME_MARGIN;
    let size = |r: &JobResult| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
    if size(&result) <= limit {
        return result;
    }
    let mut notes = Vec::new();
    if result.stderr_tail.len() > 64 * 1024 {
        result.stderr_tail = tail_of(&result.stderr_tail, 64 * 1024);
        notes.push("stderr tail cut to its last 64 KiB".to_owned());
    }
    if result.unreadable.len() > 1000 {
        notes.push(format!(
            "{} unreadable files, the first 1000 listed",
            result.unreadable.len()
        ));
        result.unreadable.truncate(1000);
    }
    if size(&result) > limit && result.snapshots.take().is_some() {
        notes.push("snapshot list left out: too large to send".to_owned());
    }
    if size(&result) > limit {
        result.message = cut_to(std::mem::take(&mut result.message), 64 * 1024);
        result.unreadable.clear();
        result.stderr_tail.clear();
        notes.push("details left out: too large to send".to_owned());
    }
    result.message = format!("{} ({})", result.message, notes.join("; "));
    result
}

/// The first `max` bytes of `text`, on a character boundary.
fn cut_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The last `max` bytes of `text`, on a character boundary.
fn tail_of(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> JobResult {
        let now = jiff::Timestamp::now();
        synthetic_result("j", Outcome::Partial, "partial".to_owned(), now, now)
    }

    #[test]
    fn a_small_result_is_left_alone() {
        let small = result();
        assert_eq!(fit_to_frame(small.clone()), small);
    }

    #[test]
    fn an_oversized_result_is_cut_to_fit_a_frame_and_says_so() {
        let mut big = result();
        big.stderr_tail = "é".repeat(MAX_FRAME_BYTES);
        big.unreadable = (0..200_000).map(|n| format!("/data/file-{n}")).collect();
        let fitted = fit_to_frame(big);
        let frame = protocol::encode(&AgentMessage::Result(Box::new(fitted.clone()))).unwrap();
        assert!(frame.len() <= MAX_FRAME_BYTES);
        assert_eq!(fitted.unreadable.len(), 1000);
        assert!(fitted.stderr_tail.len() <= 64 * 1024);
        assert!(
            fitted.message.starts_with("partial ("),
            "{}",
            fitted.message
        );
        assert!(
            fitted.message.contains("200000 unreadable files"),
            "{}",
            fitted.message
        );
    }

    #[test]
    fn cutting_text_keeps_whole_characters() {
        assert_eq!(cut_to("ééé".to_owned(), 3), "é");
        assert_eq!(tail_of("ééé", 3), "é");
        assert_eq!(cut_to("abc".to_owned(), 10), "abc");
    }
}
