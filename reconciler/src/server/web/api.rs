//! The JSON API under `/api/v1/`: the bodies it answers with and how each is built.
//!
//! Field names are kebab-case and stable: a field is added, never renamed. Times are RFC 3339
//! in UTC with whole seconds; durations are whole seconds in fields ending in `-seconds`.
//! Absent values are `null`, not left out, so a client can tell "none" from "not known to
//! this version".

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::server::model::{JobKind, JobState};
use crate::server::run::Server;
use crate::server::scheduler::{SNAPSHOT_REFRESH, jitter_offset};
use crate::server::store::queries::{JobBrief, JobFilter, PendingKey};
use crate::server::store::{AuditCheck, AuditEntry, JobRecord, Step, Verified};

use super::error::WebError;
use super::facts::{AgentState, BackupStatus, Fleet, Health, rfc3339};
use super::params::Query;

/// How many recent jobs a host's answer carries.
pub const HOST_RECENT_JOBS: usize = 50;

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    pub generated_at: String,
    /// The revision in force; `null` before the first valid revision.
    pub revision: Option<Revision>,
    /// The newest revision the server looked at, when it is invalid and so not applied.
    pub invalid_revision: Option<InvalidRevision>,
    /// Why the last fetch of the config repository failed; `null` when it worked.
    pub source_error: Option<String>,
    pub hosts: usize,
    pub hosts_paused: usize,
    pub agents_connected: usize,
    pub assignments: usize,
    pub pending_keys: usize,
    /// Jobs that have not ended, per state.
    pub jobs: BTreeMap<&'static str, u64>,
    /// Backup assignments (host × policy) per health: ok, failed, stale, never, paused.
    pub backups: BTreeMap<&'static str, usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Revision {
    pub commit: String,
    pub author: String,
    pub summary: String,
    pub committed_at: Option<String>,
    pub applied_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InvalidRevision {
    pub commit: String,
    pub author: String,
    pub summary: String,
    pub committed_at: Option<String>,
    pub seen_at: String,
    /// The validation errors, one per line, as `restic-manager validate` prints them.
    pub errors: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hosts {
    pub hosts: Vec<Host>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Host {
    pub name: String,
    pub description: Option<String>,
    pub paused: bool,
    /// Whether the host has an `agent-key` in the revision in force.
    pub enrolled: bool,
    pub agent: Agent,
    /// One entry per policy that backs the host up.
    pub backups: Vec<Backup>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Agent {
    /// `connected`, `offline`, `never-connected` or `not-enrolled`.
    pub state: &'static str,
    pub connected: bool,
    /// Connected since, or (when offline) last seen at.
    pub since: Option<String>,
    /// The address of its newest session.
    pub remote: Option<String>,
    pub agent_version: Option<String>,
    pub restic_version: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Backup {
    pub policy: String,
    pub repository: String,
    /// `ok`, `failed`, `stale`, `never` or `paused`.
    pub health: &'static str,
    /// What is wrong and why, in plain words.
    pub message: String,
    /// The newest backup that ended, whichever way.
    pub last_backup: Option<JobRef>,
    pub last_success_at: Option<String>,
    /// Seconds since the last good backup finished.
    pub age_seconds: Option<i64>,
    /// The schedule's average time between runs.
    pub interval_seconds: Option<i64>,
    pub next_run: Option<String>,
    /// A backup that is queued, waiting or running now.
    pub in_progress: Option<JobRef>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobRef {
    pub id: String,
    pub state: &'static str,
    pub outcome: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostDetail {
    pub host: Host,
    pub assignments: Vec<Assignment>,
    pub recent_jobs: Vec<Job>,
    pub snapshots: Vec<Inventory>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Assignment {
    pub policy: String,
    pub kind: &'static str,
    pub repository: String,
    pub schedule: String,
    pub next_run: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Inventory {
    pub policy: String,
    pub repository: String,
    pub count: usize,
    pub refreshed_at: Option<String>,
    pub snapshots: Vec<protocol::Snapshot>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Jobs {
    pub limit: usize,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Job {
    pub id: String,
    pub host: String,
    pub policy: String,
    pub kind: &'static str,
    pub repository: String,
    pub state: &'static str,
    /// Why it waits, was missed, or was called off.
    pub reason: Option<String>,
    /// How the agent said it ended.
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub catch_up: bool,
    /// The schedule instant this run is for.
    pub instant: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub run_after: String,
    pub deadline: String,
    pub max_duration_seconds: i64,
    pub dispatched_at: Option<String>,
    /// restic's backup summary.
    pub summary: Option<serde_json::Value>,
    pub stderr_tail: Option<String>,
    pub log_tail: Option<String>,
    /// The agent's last progress report, while the job runs.
    pub progress: Option<protocol::Progress>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Audit {
    pub limit: usize,
    pub entries: Vec<AuditItem>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuditItem {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub commit: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuditVerify {
    pub intact: bool,
    pub entries: Option<u64>,
    pub last_hash: Option<String>,
    /// The first entry that does not fit, when the chain is broken.
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PendingKeys {
    pub pending_keys: Vec<Pending>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Pending {
    pub host: String,
    pub key: String,
    pub remote: String,
    pub first_seen: String,
    pub last_seen: String,
    pub attempts: u64,
    /// The file to commit the snippet to.
    pub file: String,
    /// The line that enrols the agent once committed.
    pub snippet: String,
}

/// `GET /api/v1/status`.
#[must_use]
pub fn status(fleet: &Fleet) -> Status {
    let config = fleet.config();
    let mut jobs: BTreeMap<&'static str, u64> = JobState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .map(|s| (s.as_str(), 0))
        .collect();
    for (state, n) in &fleet.active_jobs {
        jobs.insert(state.as_str(), *n);
    }
    let mut backups: BTreeMap<&'static str, usize> = [
        Health::Ok,
        Health::Failed,
        Health::Stale,
        Health::Never,
        Health::Paused,
    ]
    .into_iter()
    .map(|h| (h.as_str(), 0))
    .collect();
    for backup in &fleet.backups {
        *backups.entry(backup.health.as_str()).or_default() += 1;
    }
    Status {
        generated_at: rfc3339(fleet.now),
        revision: fleet.revisions.applied.as_ref().map(|r| Revision {
            commit: r.info.commit.clone(),
            author: r.info.author.clone(),
            summary: r.info.summary.clone(),
            committed_at: r.info.committed_at.map(rfc3339),
            applied_at: rfc3339(r.seen_at),
        }),
        invalid_revision: fleet.revisions.invalid.as_ref().map(|r| InvalidRevision {
            commit: r.info.commit.clone(),
            author: r.info.author.clone(),
            summary: r.info.summary.clone(),
            committed_at: r.info.committed_at.map(rfc3339),
            seen_at: rfc3339(r.seen_at),
            errors: r.errors.clone().unwrap_or_default(),
        }),
        source_error: fleet.source_error.clone(),
        hosts: config.map_or(0, |c| c.hosts.len()),
        hosts_paused: config.map_or(0, |c| c.hosts.values().filter(|h| h.paused).count()),
        agents_connected: fleet.connected.len(),
        assignments: fleet.assignments,
        pending_keys: fleet.pending.len(),
        jobs,
        backups,
    }
}

/// `GET /api/v1/hosts`.
#[must_use]
pub fn hosts(fleet: &Fleet) -> Hosts {
    let Some(config) = fleet.config() else {
        return Hosts { hosts: Vec::new() };
    };
    Hosts {
        hosts: config
            .hosts
            .keys()
            .filter_map(|name| host(fleet, name))
            .collect(),
    }
}

/// One host of the configuration in force; `None` when it is not in it.
#[must_use]
pub fn host(fleet: &Fleet, name: &str) -> Option<Host> {
    let config = fleet.config()?.hosts.get(name)?;
    let session = fleet.sessions.get(name);
    let agent = fleet.agent(name);
    let (state, since) = match &agent {
        AgentState::Connected { since } => ("connected", Some(rfc3339(*since))),
        AgentState::Offline { since } => ("offline", Some(rfc3339(*since))),
        AgentState::NeverConnected => ("never-connected", None),
        AgentState::NotEnrolled => ("not-enrolled", None),
    };
    Some(Host {
        name: name.to_owned(),
        description: config.description.clone(),
        paused: config.paused,
        enrolled: config.agent_key.is_some(),
        agent: Agent {
            state,
            connected: matches!(agent, AgentState::Connected { .. }),
            since,
            remote: session.map(|s| s.remote.clone()),
            agent_version: session.map(|s| s.agent_version.clone()),
            restic_version: session.and_then(|s| s.restic_version.clone()),
        },
        backups: fleet.backups_of(name).map(backup).collect(),
    })
}

fn backup(status: &BackupStatus) -> Backup {
    Backup {
        policy: status.policy.clone(),
        repository: status.repository.clone(),
        health: status.health.as_str(),
        message: status.message.clone(),
        last_backup: status.last_ended.as_ref().map(job_ref),
        last_success_at: status.last_success.as_ref().map(|(_, at)| rfc3339(*at)),
        age_seconds: status.age.map(|a| a.as_secs()),
        interval_seconds: status.interval.map(|i| i.as_secs()),
        next_run: status.next_run.map(rfc3339),
        in_progress: status
            .newest
            .as_ref()
            .filter(|j| !j.state.is_terminal())
            .map(job_ref),
    }
}

fn job_ref(job: &JobBrief) -> JobRef {
    JobRef {
        id: job.id.clone(),
        state: job.state.as_str(),
        outcome: job.outcome.clone(),
        created_at: rfc3339(job.created_at),
        finished_at: job.finished_at.map(rfc3339),
    }
}

/// `GET /api/v1/hosts/<name>`: the host with its assignments, recent jobs and snapshots.
pub async fn host_detail(
    server: &Arc<Server>,
    fleet: &Fleet,
    name: &str,
) -> Result<HostDetail, WebError> {
    let Some(host_out) = host(fleet, name) else {
        return Err(unknown_host(name));
    };
    let owned = name.to_owned();
    let (assignments, recent, inventories) = server
        .with_store(
            move |store| -> Result<_, crate::server::store::StoreError> {
                let assignments: Vec<_> = store
                    .applied_state()?
                    .assignments
                    .iter()
                    .filter(|a| *a.key.host == *owned)
                    .cloned()
                    .collect();
                let recent = store.jobs_matching(&JobFilter {
                    host: Some(owned.clone()),
                    state: None,
                    limit: HOST_RECENT_JOBS,
                })?;
                let mut inventories = Vec::new();
                let mut pairs: Vec<(String, String)> = assignments
                    .iter()
                    .map(|a| (a.key.policy.to_string(), a.repository.to_string()))
                    .collect();
                pairs.dedup();
                for (policy, repository) in pairs {
                    let snapshots = store.snapshots(&owned, &policy, &repository)?;
                    inventories.push((policy, repository, snapshots));
                }
                Ok((assignments, recent, inventories))
            },
        )
        .await
        .map_err(|e| WebError::internal("reading a host's jobs and snapshots", e))?;

    let config = fleet.config();
    let host_config = config.and_then(|c| c.hosts.get(name));
    let scheduler = server.scheduler.lock().expect("scheduler lock");
    let assignments = assignments
        .iter()
        .map(|a| {
            let jitter = match (a.key.kind, config, host_config) {
                (JobKind::Snapshots, _, _) => Some(SNAPSHOT_REFRESH),
                (kind, Some(config), Some(host)) => {
                    config.policies.get(&*a.key.policy).and_then(|policy| {
                        crate::server::reconcile::policy_jobs(policy)
                            .into_iter()
                            .find(|(k, _)| *k == kind)
                            .map(|(_, s)| crate::config::effective::in_zone(s, host).jitter)
                    })
                }
                _ => None,
            };
            let next = scheduler.next_instant(&a.key).map(|instant| {
                instant + jitter.map_or(jiff::SignedDuration::ZERO, |j| jitter_offset(&a.key, j))
            });
            Assignment {
                policy: a.key.policy.to_string(),
                kind: a.key.kind.as_str(),
                repository: a.repository.to_string(),
                schedule: a.schedule.to_string(),
                next_run: next.map(rfc3339),
            }
        })
        .collect();
    drop(scheduler);

    let snapshots = inventories
        .into_iter()
        .map(|(policy, repository, snapshots)| {
            let refreshed_at = fleet
                .inventories
                .iter()
                .find(|i| i.policy == policy && i.repository == repository && i.host == name)
                .map(|i| rfc3339(i.refreshed_at));
            let mut snapshots = snapshots.unwrap_or_default();
            snapshots.sort_by(|a, b| b.time.cmp(&a.time));
            Inventory {
                policy,
                repository,
                count: snapshots.len(),
                refreshed_at,
                snapshots,
            }
        })
        .collect();

    Ok(HostDetail {
        host: host_out,
        assignments,
        recent_jobs: recent.iter().map(job).collect(),
        snapshots,
    })
}

/// The 404 for a host that is not in the revision in force.
#[must_use]
pub fn unknown_host(name: &str) -> WebError {
    WebError::NotFound(format!("no host named `{name}` in the revision in force"))
}

/// `GET /api/v1/jobs?host=&state=&limit=`.
pub async fn jobs(server: &Arc<Server>, query: &Query) -> Result<Jobs, WebError> {
    let filter = JobFilter {
        host: query.get("host").map(str::to_owned),
        state: query.state()?,
        limit: query.limit()?,
    };
    let limit = filter.limit;
    let host = filter.host.clone();
    let found = server
        .with_store(move |store| store.jobs_matching(&filter))
        .await
        .map_err(|e| WebError::internal("listing jobs", e))?;
    // A host that is neither configured nor has jobs is most likely a typo: say so.
    if let Some(host) = host
        && found.is_empty()
        && server
            .applied()
            .is_none_or(|a| !a.config.hosts.contains_key(&host))
    {
        return Err(WebError::NotFound(format!(
            "no host named `{host}` in the revision in force, and no jobs of it are stored"
        )));
    }
    Ok(Jobs {
        limit,
        jobs: found.iter().map(job).collect(),
    })
}

#[must_use]
pub fn job(brief: &JobBrief) -> Job {
    Job {
        id: brief.id.clone(),
        host: brief.host.clone(),
        policy: brief.policy.clone(),
        kind: brief.kind.as_str(),
        repository: brief.repository.clone(),
        state: brief.state.as_str(),
        reason: brief.reason.clone(),
        outcome: brief.outcome.clone(),
        exit_code: brief.exit_code,
        message: brief.message.clone(),
        catch_up: brief.catch_up,
        instant: brief.instant.map(rfc3339),
        created_at: rfc3339(brief.created_at),
        started_at: brief.started_at.map(rfc3339),
        finished_at: brief.finished_at.map(rfc3339),
    }
}

/// The stored record of one job, with its progress while it runs.
pub async fn job_record(
    server: &Arc<Server>,
    id: &str,
) -> Result<(JobRecord, Option<protocol::Progress>), WebError> {
    let owned = id.to_owned();
    let record = server
        .with_store(move |store| store.job(&owned))
        .await
        .map_err(|e| WebError::internal("reading a job", e))?;
    let Some(record) = record else {
        return Err(WebError::NotFound(format!(
            "no job with id `{id}`; recent jobs are listed at /api/v1/jobs"
        )));
    };
    let progress = server
        .progress
        .lock()
        .expect("progress lock")
        .get(id)
        .cloned();
    Ok((record, progress))
}

/// `GET /api/v1/jobs/<id>`.
#[must_use]
pub fn job_detail(record: &JobRecord, progress: Option<protocol::Progress>) -> JobDetail {
    let brief = JobBrief {
        id: record.id.clone(),
        host: record.host.clone(),
        policy: record.policy.clone(),
        kind: record.kind,
        repository: record.repository.clone(),
        state: record.state,
        reason: record.reason.clone(),
        outcome: record.outcome.clone(),
        exit_code: record.exit_code,
        message: record.message.clone(),
        catch_up: record.catch_up,
        instant: record.instant,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
    };
    JobDetail {
        job: job(&brief),
        run_after: rfc3339(record.run_after),
        deadline: rfc3339(record.deadline),
        max_duration_seconds: record.max_duration_secs,
        dispatched_at: record.dispatched_at.map(rfc3339),
        summary: record.summary.as_deref().map(json_or_text),
        stderr_tail: record.stderr_tail.clone().filter(|t| !t.is_empty()),
        log_tail: record.log_tail.clone().filter(|t| !t.is_empty()),
        progress: progress.filter(|_| record.state == JobState::Running),
    }
}

/// Stored JSON as a value; text that is not JSON stays text.
fn json_or_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// `GET /api/v1/audit?limit=`.
pub async fn audit(server: &Arc<Server>, query: &Query) -> Result<Audit, WebError> {
    let limit = query.limit()?;
    let entries = server
        .with_store(move |store| store.audit_entries(limit))
        .await
        .map_err(|e| WebError::internal("reading the audit log", e))?;
    Ok(Audit {
        limit,
        entries: entries.iter().map(audit_item).collect(),
    })
}

fn audit_item(entry: &AuditEntry) -> AuditItem {
    AuditItem {
        seq: entry.seq,
        at: rfc3339(entry.at),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        subject: entry.subject.clone(),
        commit: entry.commit.clone(),
        detail: json_or_text(&entry.detail),
        prev_hash: entry.prev_hash.clone(),
        hash: entry.hash.clone(),
    }
}

/// How many audit entries one step of a chain check reads: the store is let go between
/// steps, so a long chain does not hold up agents' results for seconds.
const AUDIT_STEP: usize = 5000;

/// `GET /api/v1/audit/verify`: walks the whole chain, in steps.
pub async fn audit_verify(server: &Arc<Server>) -> Result<AuditVerify, WebError> {
    let mut from = None;
    let verified = loop {
        let step = server
            .with_store(move |store| store.verify_audit_step(from.as_ref(), AUDIT_STEP))
            .await
            .map_err(|e| WebError::internal("checking the audit log", e))?;
        match step {
            Step::Done(verified) => break verified,
            Step::More(point) => from = Some(point),
        }
    };
    Ok(match verified {
        Verified::Intact { entries, last_hash } => AuditVerify {
            intact: true,
            entries: Some(entries),
            last_hash: Some(last_hash),
            broken_at: None,
            reason: None,
        },
        Verified::Broken { seq, reason } => AuditVerify {
            intact: false,
            entries: None,
            last_hash: None,
            broken_at: Some(seq),
            reason: Some(reason),
        },
    })
}

/// The audit page's check of the chain: the whole chain the first time, then only what was
/// added since ([`crate::server::store::Store::check_audit_step`]), in steps.
pub async fn check_audit(server: &Arc<Server>) -> Result<AuditCheck, WebError> {
    loop {
        let step = server
            .with_store(|store| store.check_audit_step(AUDIT_STEP))
            .await
            .map_err(|e| WebError::internal("checking the audit log", e))?;
        if let Some(check) = step {
            return Ok(check);
        }
    }
}

/// `GET /api/v1/pending-keys`.
#[must_use]
pub fn pending_keys(pending: &[PendingKey]) -> PendingKeys {
    PendingKeys {
        pending_keys: pending
            .iter()
            .map(|p| Pending {
                host: p.host.clone(),
                key: p.key.clone(),
                remote: p.remote.clone(),
                first_seen: rfc3339(p.first_seen),
                last_seen: rfc3339(p.last_seen),
                attempts: p.attempts,
                file: format!("hosts/{}.toml", p.host),
                snippet: format!("agent-key = \"{}\"", p.key),
            })
            .collect(),
    }
}
