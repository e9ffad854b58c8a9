//! A job page's context: a sentence on what happened, then everything stored about the run.

use serde::Serialize;

use super::{host_href, state_class};
use crate::server::model::JobState;
use crate::server::store::JobRecord;
use crate::server::web::facts::{human, page_time};

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
pub(super) struct JobPage {
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

pub(super) fn context(record: &JobRecord, progress: Option<&protocol::Progress>) -> JobPage {
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
