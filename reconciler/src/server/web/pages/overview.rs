//! The overview's page context: the revision, what needs attention, and the hosts × policies
//! table.

use serde::Serialize;

use super::{AgentView, PendingView, agent_view, health_label, host_href, job_href, short};
use crate::server::model::JobState;
use crate::server::web::api;
use crate::server::web::facts::{Fleet, Health, human, page_time};

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct RevisionView {
    short: String,
    commit: String,
    author: String,
    summary: String,
    committed_at: Option<String>,
    applied_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct InvalidView {
    short: String,
    author: String,
    summary: String,
    seen_at: String,
    errors: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Counts {
    hosts: usize,
    agents_connected: usize,
    problems: usize,
    ok: usize,
    never: usize,
    running: u64,
    waiting: u64,
    pending_keys: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cell {
    present: bool,
    class: &'static str,
    label: String,
    age: Option<String>,
    message: String,
    job_href: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Row {
    host: String,
    href: String,
    description: Option<String>,
    agent: AgentView,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Problem {
    host: String,
    policy: String,
    health: &'static str,
    message: String,
    host_href: String,
    job_href: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Overview {
    title: &'static str,
    generated_at: String,
    revision: Option<RevisionView>,
    invalid: Option<InvalidView>,
    source_error: Option<String>,
    counts: Counts,
    problems: Vec<Problem>,
    policies: Vec<String>,
    rows: Vec<Row>,
    pending: Vec<PendingView>,
}

pub(super) fn context(fleet: &Fleet) -> Overview {
    let revision = fleet.revisions.applied.as_ref().map(|r| RevisionView {
        short: short(&r.info.commit),
        commit: r.info.commit.clone(),
        author: r.info.author.clone(),
        summary: r.info.summary.clone(),
        committed_at: r.info.committed_at.map(page_time),
        applied_at: page_time(r.seen_at),
    });
    let invalid = fleet.revisions.invalid.as_ref().map(|r| InvalidView {
        short: short(&r.info.commit),
        author: r.info.author.clone(),
        summary: r.info.summary.clone(),
        seen_at: page_time(r.seen_at),
        errors: r.errors.clone().unwrap_or_default(),
    });

    // Columns: every policy that backs up at least one host.
    let mut policies: Vec<String> = fleet.backups.iter().map(|b| b.policy.clone()).collect();
    policies.sort();
    policies.dedup();

    let mut rows = Vec::new();
    if let Some(config) = fleet.config() {
        for host in config.hosts.values() {
            let mut cells: Vec<Cell> = policies
                .iter()
                .map(|_| Cell {
                    present: false,
                    class: "none",
                    label: String::new(),
                    age: None,
                    message: String::new(),
                    job_href: None,
                })
                .collect();
            for backup in fleet.backups_of(&host.name) {
                let Ok(column) = policies.binary_search(&backup.policy) else {
                    continue;
                };
                cells[column] = Cell {
                    present: true,
                    class: backup.health.as_str(),
                    label: health_label(backup),
                    age: backup.age.map(|a| format!("{} ago", human(a))),
                    message: backup.message.clone(),
                    job_href: backup.last_ended.as_ref().map(|j| job_href(&j.id)),
                };
            }
            rows.push(Row {
                host: host.name.clone(),
                href: host_href(&host.name),
                description: host.description.clone(),
                agent: agent_view(fleet, &host.name),
                cells,
            });
        }
    }

    let problems: Vec<Problem> = fleet
        .backups
        .iter()
        .filter(|b| b.health.is_problem())
        .map(|b| Problem {
            host: b.host.clone(),
            policy: b.policy.clone(),
            health: b.health.as_str(),
            message: b.message.clone(),
            host_href: host_href(&b.host),
            job_href: b.last_ended.as_ref().map(|j| job_href(&j.id)),
        })
        .collect();
    let active = |state: JobState| {
        fleet
            .active_jobs
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let counts = Counts {
        hosts: fleet.config().map_or(0, |c| c.hosts.len()),
        agents_connected: fleet.connected.len(),
        problems: problems.len(),
        ok: fleet
            .backups
            .iter()
            .filter(|b| b.health == Health::Ok)
            .count(),
        never: fleet
            .backups
            .iter()
            .filter(|b| b.health == Health::Never)
            .count(),
        running: active(JobState::Running) + active(JobState::Dispatched),
        waiting: active(JobState::Queued) + active(JobState::Deferred),
        pending_keys: fleet.pending.len(),
    };
    let pending = api::pending_keys(&fleet.pending)
        .pending_keys
        .into_iter()
        .zip(&fleet.pending)
        .map(|(p, raw)| PendingView {
            host: p.host,
            remote: p.remote,
            last_seen: page_time(raw.last_seen),
            file: p.file,
            snippet: p.snippet,
        })
        .collect();

    Overview {
        title: "Overview",
        generated_at: page_time(fleet.now),
        revision,
        invalid,
        source_error: fleet.source_error.clone(),
        counts,
        problems,
        policies,
        rows,
        pending,
    }
}
