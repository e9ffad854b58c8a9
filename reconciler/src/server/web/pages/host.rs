//! A host page's context: its agent, each policy's backups, schedules, jobs and snapshots.

use serde::Serialize;

use super::{PendingView, agent_view, health_label, job_href, state_class};
use crate::server::model::JobState;
use crate::server::web::api;
use crate::server::web::facts::{Fleet, human, page_time};

/// How many snapshots of one inventory a host page lists.
const SNAPSHOTS_SHOWN: usize = 20;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct HostAgentView {
    text: String,
    class: &'static str,
    remote: Option<String>,
    agent_version: Option<String>,
    restic_version: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct BackupView {
    policy: String,
    health: &'static str,
    label: String,
    message: String,
    job_href: Option<String>,
    last_success: Option<String>,
    next_run: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct JobRow {
    href: String,
    id: String,
    policy: String,
    kind: &'static str,
    state: &'static str,
    class: &'static str,
    created: String,
    finished: String,
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct SnapshotRow {
    id: String,
    time: String,
    paths: String,
    tags: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct InventoryView {
    policy: String,
    repository: String,
    count: usize,
    refreshed: Option<String>,
    shown: Vec<SnapshotRow>,
    shown_count: usize,
    more: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct HostPage {
    title: String,
    generated_at: String,
    name: String,
    description: Option<String>,
    paused: bool,
    enrolled: bool,
    agent: HostAgentView,
    pending: Option<PendingView>,
    backups: Vec<BackupView>,
    assignments: Vec<api::Assignment>,
    jobs: Vec<JobRow>,
    snapshots: Vec<InventoryView>,
}

pub(super) fn context(fleet: &Fleet, detail: &api::HostDetail) -> HostPage {
    let name = &detail.host.name;
    let agent = agent_view(fleet, name);
    let backups = fleet
        .backups_of(name)
        .map(|b| BackupView {
            policy: b.policy.clone(),
            health: b.health.as_str(),
            label: health_label(b),
            message: b.message.clone(),
            job_href: b.last_ended.as_ref().map(|j| job_href(&j.id)),
            last_success: b.last_success.as_ref().map(|(_, at)| {
                format!(
                    "{} ({} ago)",
                    page_time(*at),
                    human(fleet.now.duration_since(*at))
                )
            }),
            next_run: b.next_run.map(page_time),
        })
        .collect();
    let jobs = detail
        .recent_jobs
        .iter()
        .map(|j| {
            let state = JobState::parse(j.state).unwrap_or(JobState::Failed);
            JobRow {
                href: job_href(&j.id),
                id: j.id.clone(),
                policy: j.policy.clone(),
                kind: j.kind,
                state: j.state,
                class: state_class(state),
                created: display_api_time(Some(&j.created_at)),
                finished: display_api_time(j.finished_at.as_ref()),
                text: j
                    .message
                    .clone()
                    .filter(|m| !m.is_empty())
                    .or_else(|| j.reason.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let snapshots = detail
        .snapshots
        .iter()
        .map(|inv| {
            let shown: Vec<SnapshotRow> = inv
                .snapshots
                .iter()
                .take(SNAPSHOTS_SHOWN)
                .map(|s| SnapshotRow {
                    id: s.id.get(..8).unwrap_or(&s.id).to_owned(),
                    time: s.time.clone(),
                    paths: s.paths.join(", "),
                    tags: s.tags.join(", "),
                })
                .collect();
            InventoryView {
                policy: inv.policy.clone(),
                repository: inv.repository.clone(),
                count: inv.count,
                refreshed: inv.refreshed_at.clone().map(|t| display_api_time(Some(&t))),
                shown_count: shown.len(),
                more: inv.count > shown.len(),
                shown,
            }
        })
        .collect();
    let pending = fleet
        .pending
        .iter()
        .find(|p| &p.host == name)
        .map(|p| PendingView {
            host: p.host.clone(),
            remote: p.remote.clone(),
            last_seen: page_time(p.last_seen),
            file: format!("hosts/{}.toml", p.host),
            snippet: format!("agent-key = \"{}\"", p.key),
        });
    let assignments = detail
        .assignments
        .iter()
        .map(|a| api::Assignment {
            policy: a.policy.clone(),
            kind: a.kind,
            repository: a.repository.clone(),
            schedule: a.schedule.clone(),
            next_run: a.next_run.as_ref().map(|t| display_api_time(Some(t))),
        })
        .collect();
    HostPage {
        title: format!("Host {name}"),
        generated_at: page_time(fleet.now),
        name: name.clone(),
        description: detail.host.description.clone(),
        paused: detail.host.paused,
        enrolled: detail.host.enrolled,
        agent: HostAgentView {
            text: agent.text,
            class: agent.class,
            remote: detail.host.agent.remote.clone(),
            agent_version: detail.host.agent.agent_version.clone(),
            restic_version: detail.host.agent.restic_version.clone(),
        },
        pending,
        backups,
        assignments,
        jobs,
        snapshots,
    }
}

/// An API time (RFC 3339) as the pages write times; empty for none.
fn display_api_time(text: Option<&String>) -> String {
    text.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(page_time)
        .unwrap_or_default()
}
