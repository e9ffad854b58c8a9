//! The seam between the job manager and whatever runs a job: in the agent, the restic runner.
//!
//! The job manager decides whether a job runs at all (its host, its id, whether it ran
//! before) and what happens to its result; an [`Executor`] only runs it. Keeping that seam a
//! trait lets the connection's tests drive reconnection, idempotence and exactly-once delivery
//! with an executor of their own, without restic.

use std::future::Future;

use protocol::{JobResult, JobSpec, LogStream, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Something to tell the server while a job runs.
///
/// NOTE: a copy of `runner::JobEvent` exactly as the runner contract defines it, kept here
/// while the runner is built in another branch. When the runner is merged this enum is
/// replaced by `pub use crate::runner::JobEvent;`.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// At most one per second per job (the runner throttles).
    Progress(protocol::Progress),
    /// A line restic or a hook wrote, cut to `protocol::MAX_LOG_LINE_BYTES`.
    Log { stream: LogStream, line: String },
}

/// Runs jobs the job manager has cleared to run.
pub trait Executor: Send + Sync + 'static {
    /// `restic version` as restic printed it, for the Hello message; `None` when restic
    /// cannot be run. Asked again on every connection, so an upgraded restic shows up.
    fn restic_version(&self) -> impl Future<Output = Option<String>> + Send;

    /// Runs one job to its end. Never fails: every failure is an outcome with a message.
    /// `events` carries progress and log lines; `cancel` is cancelled when the server sends
    /// Cancel or the agent shuts down.
    fn run(
        &self,
        job: JobSpec,
        events: mpsc::UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> impl Future<Output = JobResult> + Send;
}

/// The executor of a build without the restic runner: every job fails, saying why.
///
/// NOTE: stands in only until the runner branch is merged, when the binary wires
/// `runner::run_job` through an executor instead (see `docs/src/limitations.md`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRunner;

impl Executor for NoRunner {
    async fn restic_version(&self) -> Option<String> {
        None
    }

    async fn run(
        &self,
        job: JobSpec,
        _events: mpsc::UnboundedSender<JobEvent>,
        _cancel: CancellationToken,
    ) -> JobResult {
        let now = jiff::Timestamp::now();
        crate::state::synthetic_result(
            &job.id,
            Outcome::Failed,
            "this build of restic-manager-agent has no restic runner, so the job was not run; \
             install a build that includes it"
                .to_owned(),
            now,
            now,
        )
    }
}
