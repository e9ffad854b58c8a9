//! The HTML pages: the overview, a host, a job and the audit log, rendered with handlebars
//! from the templates in the workspace's `web/` directory, which are compiled into the binary.
//!
//! Every value from the config repository or from an agent reaches a page through `{{…}}`,
//! which escapes it; no template uses the unescaped `{{{…}}}`. The pages need no script, and
//! their Content-Security-Policy allows none.

use handlebars::Handlebars;
use serde::Serialize;
use warp::http::StatusCode;

use crate::server::model::JobState;
use crate::server::store::{AuditEntry, JobRecord, Verified};

use super::api;
use super::facts::{AgentState, BackupStatus, Fleet, Health, human, page_time};

/// The style sheet, served at `/static/style.css`.
pub const STYLE_CSS: &str = include_str!("../../../../web/static/style.css");

const TEMPLATES: [(&str, &str); 7] = [
    (
        "header",
        include_str!("../../../../web/templates/header.hbs"),
    ),
    (
        "footer",
        include_str!("../../../../web/templates/footer.hbs"),
    ),
    ("error", include_str!("../../../../web/templates/error.hbs")),
    (
        "overview",
        include_str!("../../../../web/templates/overview.hbs"),
    ),
    ("host", include_str!("../../../../web/templates/host.hbs")),
    ("job", include_str!("../../../../web/templates/job.hbs")),
    ("audit", include_str!("../../../../web/templates/audit.hbs")),
];

/// How many snapshots of one inventory a host page lists.
const SNAPSHOTS_SHOWN: usize = 20;

/// The compiled templates.
pub struct Pages {
    registry: Handlebars<'static>,
}

impl Pages {
    /// Compiles the templates. Strict mode turns a template naming a field the page does not
    /// have into an error instead of an empty string.
    pub fn new() -> Result<Self, Box<handlebars::TemplateError>> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        for (name, text) in TEMPLATES {
            registry
                .register_template_string(name, text)
                .map_err(Box::new)?;
        }
        Ok(Self { registry })
    }

    /// Renders `page` with `context`; a failure is rendered as a plain error page, logged.
    fn render<T: Serialize>(&self, page: &str, context: &T) -> String {
        self.registry.render(page, context).unwrap_or_else(|e| {
            tracing::error!(page, error = %e, "a page template failed to render");
            format!(
                "<!DOCTYPE html><title>error</title><p>The page {page} could not be rendered; \
                 the server's log has the details.</p>"
            )
        })
    }

    /// The page of an error.
    #[must_use]
    pub fn error(&self, status: StatusCode, message: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Context<'a> {
            title: String,
            generated_at: String,
            status: String,
            message: &'a str,
        }
        let status = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        self.render(
            "error",
            &Context {
                title: status.clone(),
                generated_at: page_time(jiff::Timestamp::now()),
                status,
                message,
            },
        )
    }

    /// `/`: the fleet at a glance.
    #[must_use]
    pub fn overview(&self, fleet: &Fleet) -> String {
        self.render("overview", &overview(fleet))
    }

    /// `/hosts/<name>`.
    #[must_use]
    pub fn host(&self, fleet: &Fleet, detail: &api::HostDetail) -> String {
        self.render("host", &host(fleet, detail))
    }

    /// `/jobs/<id>`.
    #[must_use]
    pub fn job(&self, record: &JobRecord, progress: Option<&protocol::Progress>) -> String {
        self.render("job", &job(record, progress))
    }

    /// `/audit`.
    #[must_use]
    pub fn audit(&self, entries: &[AuditEntry], verified: &Verified, limit: usize) -> String {
        self.render("audit", &audit(entries, verified, limit))
    }
}

fn short(commit: &str) -> String {
    commit.get(..12).unwrap_or(commit).to_owned()
}

/// A path segment of a link: names and ids are `[a-z0-9.-]`, anything else is escaped.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn host_href(host: &str) -> String {
    format!("/hosts/{}", segment(host))
}

fn job_href(id: &str) -> String {
    format!("/jobs/{}", segment(id))
}

/// The style class of a job state: good, bad or in progress.
fn state_class(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "ok",
        JobState::Queued | JobState::Deferred | JobState::Dispatched | JobState::Running => {
            "running"
        }
        JobState::Partial
        | JobState::Failed
        | JobState::TimedOut
        | JobState::Cancelled
        | JobState::Missed => "failed",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct AgentView {
    text: String,
    class: &'static str,
}

fn agent_view(fleet: &Fleet, host: &str) -> AgentView {
    let now = fleet.now;
    match fleet.agent(host) {
        AgentState::Connected { since } => AgentView {
            text: format!("connected since {}", page_time(since)),
            class: "ok",
        },
        AgentState::Offline { since } => AgentView {
            text: format!(
                "offline since {} ({} ago)",
                page_time(since),
                human(now.duration_since(since))
            ),
            class: "stale",
        },
        AgentState::NeverConnected => AgentView {
            text: "never connected".to_owned(),
            class: "stale",
        },
        AgentState::NotEnrolled => AgentView {
            text: "not enrolled (no agent-key)".to_owned(),
            class: "never",
        },
    }
}

/// The short word of a backup's health in a table cell.
fn health_label(backup: &BackupStatus) -> String {
    match backup.health {
        Health::Ok => "ok".to_owned(),
        Health::Failed => backup
            .last_ended
            .as_ref()
            .map_or("failed", |j| j.state.as_str())
            .to_owned(),
        Health::Stale => "stale".to_owned(),
        Health::Never => "no backup yet".to_owned(),
        Health::Paused => "paused".to_owned(),
    }
}

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
struct PendingView {
    host: String,
    remote: String,
    last_seen: String,
    file: String,
    snippet: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Overview {
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

fn overview(fleet: &Fleet) -> Overview {
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
struct HostPage {
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

fn host(fleet: &Fleet, detail: &api::HostDetail) -> HostPage {
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

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct SummaryRow {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ProgressView {
    percent: String,
    files: String,
    bytes: String,
    elapsed: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct JobPage {
    title: String,
    generated_at: String,
    headline: String,
    id: String,
    host: String,
    host_href: String,
    policy: String,
    kind: &'static str,
    repository: String,
    state: &'static str,
    class: &'static str,
    reason: Option<String>,
    outcome: Option<String>,
    exit_code: Option<i32>,
    message: Option<String>,
    instant: Option<String>,
    catch_up: bool,
    created: String,
    run_after: String,
    deadline: String,
    max_duration: String,
    dispatched: Option<String>,
    started: Option<String>,
    finished: Option<String>,
    progress: Option<ProgressView>,
    summary: Vec<SummaryRow>,
    stderr_tail: Option<String>,
    log_tail: Option<String>,
}

/// One sentence on what happened to a job.
fn headline(record: &JobRecord) -> String {
    let what = format!("The {} of {}/{}", record.kind, record.host, record.policy);
    let why = record
        .message
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .or(record.reason.as_deref())
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    match record.state {
        JobState::Succeeded => format!("{what} succeeded{why}"),
        JobState::Queued => format!("{what} waits for its agent{why}"),
        JobState::Deferred => format!("{what} waits for another job on its repository{why}"),
        JobState::Dispatched => format!("{what} was sent to the agent and not yet accepted"),
        JobState::Running => format!("{what} is running"),
        JobState::Partial => format!(
            "{what} made a snapshot, but some files could not be read{why}; see restic's \
             error output below"
        ),
        JobState::Failed => format!("{what} failed{why}"),
        JobState::TimedOut => format!("{what} ran longer than allowed and was stopped{why}"),
        JobState::Cancelled => format!("{what} was cancelled{why}"),
        JobState::Missed => format!("{what} did not run{why}"),
    }
}

fn job(record: &JobRecord, progress: Option<&protocol::Progress>) -> JobPage {
    let summary = record
        .summary
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).ok())
        .map(|fields| {
            fields
                .into_iter()
                .map(|(name, value)| SummaryRow {
                    name,
                    value: match value {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => "–".to_owned(),
                        other => other.to_string(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let progress = progress
        .filter(|_| record.state == JobState::Running)
        .map(|p| ProgressView {
            percent: format!("{:.1}", p.percent_done * 100.0),
            files: format!("{} of {} files", p.files_done, p.total_files),
            bytes: format!("{} of {} bytes", p.bytes_done, p.total_bytes),
            elapsed: human(jiff::SignedDuration::from_secs(
                i64::try_from(p.seconds_elapsed).unwrap_or(i64::MAX),
            )),
        });
    JobPage {
        title: format!("Job {}", record.id),
        generated_at: page_time(jiff::Timestamp::now()),
        headline: headline(record),
        id: record.id.clone(),
        host: record.host.clone(),
        host_href: host_href(&record.host),
        policy: record.policy.clone(),
        kind: record.kind.as_str(),
        repository: record.repository.clone(),
        state: record.state.as_str(),
        class: state_class(record.state),
        reason: record.reason.clone(),
        outcome: record.outcome.clone(),
        exit_code: record.exit_code,
        message: record.message.clone().filter(|m| !m.is_empty()),
        instant: record.instant.map(page_time),
        catch_up: record.catch_up,
        created: page_time(record.created_at),
        run_after: page_time(record.run_after),
        deadline: page_time(record.deadline),
        max_duration: human(jiff::SignedDuration::from_secs(record.max_duration_secs)),
        dispatched: record.dispatched_at.map(page_time),
        started: record.started_at.map(page_time),
        finished: record.finished_at.map(page_time),
        progress,
        summary,
        stderr_tail: record.stderr_tail.clone().filter(|t| !t.is_empty()),
        log_tail: record.log_tail.clone().filter(|t| !t.is_empty()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct VerifyView {
    class: &'static str,
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct EntryRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    commit: Option<String>,
    commit_short: Option<String>,
    detail: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct AuditPage {
    title: &'static str,
    generated_at: String,
    verify: VerifyView,
    count: usize,
    limit: usize,
    entries: Vec<EntryRow>,
}

fn audit(entries: &[AuditEntry], verified: &Verified, limit: usize) -> AuditPage {
    let verify = match verified {
        Verified::Intact { entries, last_hash } => VerifyView {
            class: "ok",
            text: format!(
                "The audit log is intact: all {entries} entries fit the hash chain (last hash \
                 {}).",
                last_hash.get(..16).unwrap_or(last_hash)
            ),
        },
        Verified::Broken { seq, reason } => VerifyView {
            class: "failed",
            text: format!(
                "The audit log is broken at entry {seq}: {reason}. Someone with write access \
                 to the state database changed it; compare with a backup of the data \
                 directory."
            ),
        },
    };
    AuditPage {
        title: "Audit log",
        generated_at: page_time(jiff::Timestamp::now()),
        verify,
        count: entries.len(),
        limit,
        entries: entries
            .iter()
            .map(|e| EntryRow {
                seq: e.seq,
                at: page_time(e.at),
                actor: e.actor.clone(),
                action: e.action.clone(),
                subject: e.subject.clone(),
                commit: e.commit.clone(),
                commit_short: e.commit.as_deref().map(short),
                detail: e.detail.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_compile_and_never_write_unescaped_values() {
        Pages::new().unwrap();
        for (name, text) in TEMPLATES {
            assert!(!text.contains("{{{"), "template {name} uses {{{{{{…}}}}}}");
            assert!(
                !text.contains("<script"),
                "template {name} carries a script"
            );
        }
    }

    #[test]
    fn an_error_page_escapes_its_message() {
        let pages = Pages::new().unwrap();
        let html = pages.error(
            StatusCode::NOT_FOUND,
            "no host named `<script>alert(1)</script>`",
        );
        assert!(html.contains("404 Not Found"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn link_segments_keep_names_and_escape_the_rest() {
        assert_eq!(
            job_href("web-1.system.backup.17"),
            "/jobs/web-1.system.backup.17"
        );
        assert_eq!(host_href("a/b c"), "/hosts/a%2Fb%20c");
    }
}
