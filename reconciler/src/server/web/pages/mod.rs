//! The HTML pages: the overview, a host, a job and the audit log, rendered with handlebars
//! from the templates in the workspace's `web/` directory, which are compiled into the binary.
//!
//! Every value from the config repository or from an agent reaches a page through `{{…}}`,
//! which escapes it; no template uses the unescaped `{{{…}}}`. The pages need no script, and
//! their Content-Security-Policy allows none.

mod audit;
mod host;
mod job;
mod overview;

use handlebars::Handlebars;
use serde::Serialize;
use warp::http::StatusCode;

use crate::server::model::JobState;
use crate::server::store::{AuditCheck, AuditEntry, JobRecord};

use super::api;
use super::facts::{AgentState, BackupStatus, Fleet, Health, human, page_time};

/// The style sheet, served at `/static/style.css`.
pub const STYLE_CSS: &str = include_str!("../../../../../web/static/style.css");

const TEMPLATES: [(&str, &str); 7] = [
    (
        "header",
        include_str!("../../../../../web/templates/header.hbs"),
    ),
    (
        "footer",
        include_str!("../../../../../web/templates/footer.hbs"),
    ),
    (
        "error",
        include_str!("../../../../../web/templates/error.hbs"),
    ),
    (
        "overview",
        include_str!("../../../../../web/templates/overview.hbs"),
    ),
    (
        "host",
        include_str!("../../../../../web/templates/host.hbs"),
    ),
    ("job", include_str!("../../../../../web/templates/job.hbs")),
    (
        "audit",
        include_str!("../../../../../web/templates/audit.hbs"),
    ),
];

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
        self.render("overview", &overview::context(fleet))
    }

    /// `/hosts/<name>`.
    #[must_use]
    pub fn host(&self, fleet: &Fleet, detail: &api::HostDetail) -> String {
        self.render("host", &host::context(fleet, detail))
    }

    /// `/jobs/<id>`.
    #[must_use]
    pub fn job(&self, record: &JobRecord, progress: Option<&protocol::Progress>) -> String {
        self.render("job", &job::context(record, progress))
    }

    /// `/audit`.
    #[must_use]
    pub fn audit(&self, entries: &[AuditEntry], check: &AuditCheck, limit: usize) -> String {
        self.render("audit", &audit::context(entries, check, limit))
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
struct PendingView {
    host: String,
    remote: String,
    last_seen: String,
    file: String,
    snippet: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Verified;

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

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn fleet() -> Fleet {
        Fleet {
            now: at(100),
            applied: None,
            revisions: crate::server::store::queries::Revisions::default(),
            source_error: Some("cannot reach git.example.net".into()),
            connected: std::collections::BTreeSet::new(),
            sessions: std::collections::HashMap::new(),
            backups: Vec::new(),
            active_jobs: Vec::new(),
            pending: vec![crate::server::store::queries::PendingKey {
                host: "web-1".into(),
                key: "ed25519:AAAA".into(),
                remote: "192.0.2.1:1".into(),
                first_seen: at(0),
                last_seen: at(50),
                attempts: 2,
            }],
            inventories: Vec::new(),
            assignments: 0,
        }
    }

    /// Renders without falling back to the "could not be rendered" page: strict mode finds
    /// a template naming a field its page does not have.
    fn assert_renders(html: &str, expected: &[&str]) {
        assert!(!html.contains("could not be rendered"), "{html}");
        for text in expected {
            assert!(html.contains(text), "{text} missing from:\n{html}");
        }
    }

    #[test]
    fn every_part_of_the_job_page_renders() {
        let record = JobRecord {
            id: "web-1.system.backup.1".into(),
            host: "web-1".into(),
            policy: "system".into(),
            kind: protocol::JobKind::Backup,
            repository: "local".into(),
            state: JobState::Running,
            reason: Some("catch-up".into()),
            instant: Some(at(0)),
            catch_up: true,
            run_after: at(0),
            deadline: at(3600),
            max_duration_secs: 7200,
            created_at: at(0),
            dispatched_at: Some(at(1)),
            started_at: Some(at(2)),
            finished_at: None,
            outcome: Some("partial".into()),
            exit_code: Some(3),
            message: Some("1 file unreadable".into()),
            summary: Some("{\"files-new\":3,\"snapshot-id\":\"abc\"}".into()),
            stderr_tail: Some("permission denied".into()),
            log_tail: Some("open repository".into()),
        };
        let progress = protocol::Progress {
            job_id: record.id.clone(),
            percent_done: 0.5,
            files_done: 2,
            total_files: 4,
            ..protocol::Progress::default()
        };
        let html = Pages::new().unwrap().job(&record, Some(&progress));
        assert_renders(
            &html,
            &[
                "The backup of web-1/system is running",
                "50.0 %",
                "2 of 4 files",
                "(catch-up run)",
                "files-new",
                "permission denied",
                "open repository",
                "restic exit code",
            ],
        );
    }

    #[test]
    fn every_part_of_the_host_overview_and_audit_pages_renders() {
        let pages = Pages::new().unwrap();
        let fleet = fleet();
        let detail = api::HostDetail {
            host: api::Host {
                name: "web-1".into(),
                description: Some("front".into()),
                paused: true,
                enrolled: false,
                agent: api::Agent {
                    state: "not-enrolled",
                    connected: false,
                    since: None,
                    remote: None,
                    agent_version: None,
                    restic_version: None,
                },
                backups: Vec::new(),
            },
            assignments: vec![api::Assignment {
                policy: "system".into(),
                kind: "backup",
                repository: "local".into(),
                schedule: "every 6h".into(),
                next_run: Some("2027-01-15T09:00:00Z".into()),
            }],
            recent_jobs: Vec::new(),
            snapshots: vec![api::Inventory {
                policy: "system".into(),
                repository: "local".into(),
                count: 1,
                refreshed_at: Some("2027-01-15T08:00:00Z".into()),
                snapshots: vec![protocol::Snapshot {
                    id: "0123456789abcdef".into(),
                    time: "2027-01-15T07:59:00Z".into(),
                    hostname: "web-1".into(),
                    paths: vec!["/etc".into()],
                    tags: vec!["policy:system".into()],
                }],
            }],
        };
        assert_renders(
            &pages.host(&fleet, &detail),
            &[
                "Host web-1",
                "Paused",
                "hosts/web-1.toml",
                "agent-key &#x3D; &quot;ed25519:AAAA&quot;",
                "01234567",
                "2027-01-15 09:00:00 UTC",
            ],
        );
        assert_renders(
            &pages.overview(&fleet),
            &[
                "The config repository cannot be fetched",
                "cannot reach git.example.net",
                "No revision has been applied yet",
                "Agents waiting for enrolment",
            ],
        );
        let broken = AuditCheck {
            verified: Verified::Broken {
                seq: 7,
                reason: "its hash does not match".into(),
            },
            walked_at: None,
        };
        assert_renders(
            &pages.audit(&[], &broken, 100),
            &["The audit log is broken at entry 7: its hash does not match"],
        );
        let intact = AuditCheck {
            verified: Verified::Intact {
                entries: 1824,
                last_hash: "5be1".repeat(16),
            },
            walked_at: Some("2027-01-15T08:00:00Z".parse().expect("a time")),
        };
        assert_renders(
            &pages.audit(&[], &intact, 100),
            &[
                "The audit log is intact: all 1824 entries fit the hash chain (last hash \
                 5be15be15be15be1).",
                "This server walked the whole chain on 2027-01-15 08:00:00 UTC",
                "restic-manager audit verify",
            ],
        );
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
