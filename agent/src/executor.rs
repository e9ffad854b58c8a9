//! The seam between the job manager and whatever runs a job: in the agent, the restic runner
//! ([`ResticExecutor`]).
//!
//! The job manager decides whether a job runs at all (its host, its id, whether it ran
//! before) and what happens to its result; an [`Executor`] only runs it. Keeping that seam a
//! trait lets the connection's tests drive reconnection, idempotence and exactly-once delivery
//! with an executor of their own, without restic.

use std::future::Future;

use std::path::PathBuf;

use protocol::{JobResult, JobSpec, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runner::{INSTALL_HINT, Limits, Restic, RunContext, run_job};
use crate::settings::Settings;

/// Something to tell the server while a job runs: the runner's events.
pub use crate::runner::JobEvent;

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

/// The agent's executor: the restic runner, with the agent's restic binary, local limits and
/// work directory. restic is detected for every job (a cheap `restic version`), so an upgrade
/// of restic takes effect without restarting the agent.
#[derive(Debug, Clone)]
pub struct ResticExecutor {
    restic: PathBuf,
    limits: Limits,
    work_dir: PathBuf,
}

impl ResticExecutor {
    #[must_use]
    pub fn new(settings: &Settings) -> Self {
        Self {
            restic: settings.restic.clone(),
            limits: settings.limits.clone(),
            work_dir: crate::state::work_dir(&settings.state_dir),
        }
    }
}

impl Executor for ResticExecutor {
    async fn restic_version(&self) -> Option<String> {
        Restic::detect(&self.restic)
            .await
            .ok()
            .map(|restic| restic.version_line().to_owned())
    }

    async fn run(
        &self,
        job: JobSpec,
        events: mpsc::UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> JobResult {
        let restic = match Restic::detect(&self.restic).await {
            Ok(restic) => restic,
            Err(e) => {
                let now = jiff::Timestamp::now();
                return crate::state::synthetic_result(
                    &job.id,
                    Outcome::Failed,
                    format!("restic cannot be run on this host: {e}. {INSTALL_HINT}"),
                    now,
                    now,
                );
            }
        };
        let ctx = RunContext {
            restic,
            limits: self.limits.clone(),
            work_dir: self.work_dir.clone(),
            events,
            cancel,
        };
        run_job(&ctx, &job).await
    }
}
