//! `/metrics` in the Prometheus text format, computed on each scrape from the same picture of
//! the fleet the pages show.
//!
//! Every series is bounded by the size of the fleet (hosts × policies), never by its history.
//! The one counter, `restic_manager_job_results_total`, is kept by [`ResultCounter`]: it
//! starts at zero when the server starts and, at each scrape, reads only the jobs stored
//! since the previous scrape and the ones that had not ended then, so a scrape costs the same
//! after a year as after a day. Prometheus's `rate()` and `increase()` handle the restart.

use std::collections::{BTreeMap, HashSet};

use prometheus::{Encoder as _, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::server::model::{JobKind, JobState};
use crate::server::store::{Store, StoreError};

use super::facts::Fleet;

/// How many new job rows one step of the counter reads.
const BATCH: usize = 10_000;

/// Counts jobs as they end, by kind and outcome, reading the store incrementally.
#[derive(Debug, Default)]
pub struct ResultCounter {
    /// The highest job row seen.
    watermark: i64,
    /// Rows seen before they ended; looked at again at each scrape.
    pending: HashSet<i64>,
    counts: BTreeMap<(JobKind, String), u64>,
}

impl ResultCounter {
    /// Starts counting from now: jobs that already ended are not counted, jobs that wait or
    /// run are counted when they end.
    pub fn start(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            watermark: store.max_job_rowid()?,
            pending: store.active_job_rowids()?.into_iter().collect(),
            counts: BTreeMap::new(),
        })
    }

    /// Counts the jobs that ended since the last update.
    pub fn update(&mut self, store: &Store) -> Result<(), StoreError> {
        let waiting: Vec<i64> = self.pending.iter().copied().collect();
        let mut still = HashSet::new();
        for job in store.jobs_by_rowid(&waiting)? {
            if job.state.is_terminal() {
                self.count(job.kind, job.state, job.outcome);
            } else {
                still.insert(job.rowid);
            }
        }
        self.pending = still;

        loop {
            let batch = store.jobs_after(self.watermark, BATCH)?;
            let full = batch.len() == BATCH;
            for job in batch {
                self.watermark = self.watermark.max(job.rowid);
                if job.state.is_terminal() {
                    self.count(job.kind, job.state, job.outcome);
                } else {
                    self.pending.insert(job.rowid);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn count(&mut self, kind: JobKind, state: JobState, outcome: Option<String>) {
        // A job that ended without a result from its agent is named by its state.
        let outcome = outcome.unwrap_or_else(|| {
            match state {
                JobState::Missed => "missed",
                JobState::Cancelled => "cancelled",
                _ => "no-result",
            }
            .to_owned()
        });
        *self.counts.entry((kind, outcome)).or_default() += 1;
    }

    /// The counts so far, by kind and outcome.
    #[must_use]
    pub fn counts(&self) -> &BTreeMap<(JobKind, String), u64> {
        &self.counts
    }
}

/// Seconds as Prometheus's float samples hold them; times and ages are far below 2^53.
#[allow(
    clippy::cast_precision_loss,
    reason = "epoch seconds and ages stay far below 2^53"
)]
fn secs(value: i64) -> f64 {
    value as f64
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let gauge = IntGauge::new(name, help)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

fn gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn float_gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<prometheus::GaugeVec, prometheus::Error> {
    let vec = prometheus::GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The text of one scrape. A fresh registry each time: a host or policy removed from the
/// configuration disappears from the next scrape instead of lingering.
pub fn render(
    fleet: &Fleet,
    results: &BTreeMap<(JobKind, String), u64>,
) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let hp = &["host", "policy"];

    let success = float_gauges(
        &registry,
        "restic_manager_last_backup_success_timestamp_seconds",
        "When the newest successful backup of a host and policy finished (Unix time).",
        hp,
    )?;
    let state = gauges(
        &registry,
        "restic_manager_last_backup_state",
        "1 for the state of the newest backup of a host and policy that ended (none: no \
         backup ended yet).",
        &["host", "policy", "state"],
    )?;
    let age = float_gauges(
        &registry,
        "restic_manager_backup_age_seconds",
        "Seconds since the newest successful backup of a host and policy finished.",
        hp,
    )?;
    let interval = float_gauges(
        &registry,
        "restic_manager_backup_interval_seconds",
        "The average time between two scheduled backups of a host and policy.",
        hp,
    )?;
    let snapshots = gauges(
        &registry,
        "restic_manager_snapshots",
        "Snapshots of a host and policy in its repository, as of the last inventory.",
        hp,
    )?;
    for backup in &fleet.backups {
        let labels = [backup.host.as_str(), backup.policy.as_str()];
        if let Some((_, at)) = &backup.last_success {
            success.with_label_values(&labels).set(secs(at.as_second()));
        }
        let ended = backup
            .last_ended
            .as_ref()
            .map_or("none", |job| job.state.as_str());
        state
            .with_label_values(&[labels[0], labels[1], ended])
            .set(1);
        if let Some(value) = backup.age {
            age.with_label_values(&labels).set(secs(value.as_secs()));
        }
        if let Some(value) = backup.interval {
            interval
                .with_label_values(&labels)
                .set(secs(value.as_secs()));
        }
        if let Some(inventory) = fleet.inventories.iter().find(|i| {
            i.host == backup.host && i.policy == backup.policy && i.repository == backup.repository
        }) {
            snapshots
                .with_label_values(&labels)
                .set(to_i64(inventory.count));
        }
    }

    let jobs = gauges(
        &registry,
        "restic_manager_jobs",
        "Jobs that have not ended, by state (queued, deferred, dispatched, running).",
        &["state"],
    )?;
    for state in JobState::ALL.into_iter().filter(|s| !s.is_terminal()) {
        let n = fleet
            .active_jobs
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n);
        jobs.with_label_values(&[state.as_str()]).set(to_i64(n));
    }
    let ended = IntCounterVec::new(
        Opts::new(
            "restic_manager_job_results_total",
            "Jobs that ended since the server started, by kind and outcome (missed, \
             cancelled or no-result when no result came from the agent).",
        ),
        &["kind", "outcome"],
    )?;
    registry.register(Box::new(ended.clone()))?;
    for ((kind, outcome), n) in results {
        ended
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .inc_by(*n);
    }

    let config = fleet.config();
    gauge(
        &registry,
        "restic_manager_agents_connected",
        "Agents connected and authenticated now.",
    )?
    .set(to_i64(fleet.connected.len()));
    let connected = gauges(
        &registry,
        "restic_manager_agent_connected",
        "1 when the host's agent is connected now, else 0.",
        &["host"],
    )?;
    let paused = gauges(
        &registry,
        "restic_manager_host_paused",
        "1 when the host is paused in the configuration in force, else 0.",
        &["host"],
    )?;
    for host in config.iter().flat_map(|c| c.hosts.values()) {
        connected
            .with_label_values(&[host.name.as_str()])
            .set(i64::from(fleet.connected.contains(&host.name)));
        paused
            .with_label_values(&[host.name.as_str()])
            .set(i64::from(host.paused));
    }
    gauge(
        &registry,
        "restic_manager_hosts",
        "Hosts in the configuration in force.",
    )?
    .set(to_i64(config.map_or(0, |c| c.hosts.len())));
    gauge(
        &registry,
        "restic_manager_assignments",
        "Applied assignments: one per host, policy and job kind.",
    )?
    .set(to_i64(fleet.assignments));

    if let Some(applied) = &fleet.revisions.applied {
        let applied_at = prometheus::Gauge::new(
            "restic_manager_revision_applied_timestamp_seconds",
            "When the revision in force was applied (Unix time).",
        )?;
        registry.register(Box::new(applied_at.clone()))?;
        applied_at.set(secs(applied.seen_at.as_second()));
    }
    gauge(
        &registry,
        "restic_manager_revision_invalid",
        "1 when the newest revision of the followed branch is invalid and was not applied.",
    )?
    .set(i64::from(fleet.revisions.invalid.is_some()));
    gauge(
        &registry,
        "restic_manager_source_error",
        "1 when the last fetch of the config repository failed.",
    )?
    .set(i64::from(fleet.source_error.is_some()));
    gauge(
        &registry,
        "restic_manager_pending_agent_keys",
        "Agents waiting for their key to be committed.",
    )?
    .set(to_i64(fleet.pending.len()));

    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
