//! `/metrics`: the text parses as the Prometheus format and carries the fleet's series.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Fleet, get};
use crate::serve::wait_for;

pub type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parses the Prometheus text format strictly: every line is a `# HELP` or `# TYPE` comment
/// or `name{labels} value`.
pub fn parse_metrics(text: &str) -> Samples {
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP restic_manager_")
                    || comment.starts_with("TYPE restic_manager_"),
                "unexpected comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                parse_labels(
                    rest.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}")),
                    line,
                ),
            ),
            None => (series, BTreeMap::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label: {line}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unclosed label value: {line}"),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn metrics_parse_and_carry_the_backup_series_after_jobs_finished() {
    let fleet = Fleet::start();
    let addr = fleet.addr();
    let reply = get(addr, "/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let samples = parse_metrics(&reply.body);
    let web1 = [("host", "web-1"), ("policy", "files")];

    let success = value(
        &samples,
        "restic_manager_last_backup_success_timestamp_seconds",
        &web1,
    )
    .expect("last success");
    let now = jiff::Timestamp::now().as_second();
    #[allow(clippy::cast_possible_truncation, reason = "a Unix time in seconds")]
    let success = success as i64;
    assert!((now - 120..=now).contains(&success), "{success} vs {now}");
    assert_eq!(
        value(
            &samples,
            "restic_manager_last_backup_state",
            &[("host", "web-1"), ("policy", "files"), ("state", "failed")]
        ),
        Some(1.0),
        "{}",
        reply.body
    );
    let states: Vec<&str> = samples
        .iter()
        .filter(|(n, l, _)| n == "restic_manager_last_backup_state" && l["host"] == "web-1")
        .map(|(_, l, _)| l["state"].as_str())
        .collect();
    assert_eq!(states, ["failed"], "one series per host and policy");
    assert!(value(&samples, "restic_manager_backup_age_seconds", &web1).is_some_and(|a| a >= 0.0));
    assert_eq!(
        value(&samples, "restic_manager_backup_interval_seconds", &web1),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "restic_manager_snapshots", &web1),
        Some(2.0)
    );
    assert!(
        value(
            &samples,
            "restic_manager_job_results_total",
            &[("kind", "backup"), ("outcome", "succeeded")]
        ) == Some(1.0),
        "{}",
        reply.body
    );
    assert!(
        value(
            &samples,
            "restic_manager_job_results_total",
            &[("kind", "backup"), ("outcome", "failed")]
        )
        .is_some_and(|n| n >= 1.0),
        "{}",
        reply.body
    );
    assert_eq!(
        value(
            &samples,
            "restic_manager_job_results_total",
            &[("kind", "init"), ("outcome", "succeeded")]
        ),
        Some(1.0)
    );
    for state in ["queued", "deferred", "dispatched", "running"] {
        assert!(value(&samples, "restic_manager_jobs", &[("state", state)]).is_some());
    }
    assert_eq!(
        value(&samples, "restic_manager_agents_connected", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "restic_manager_agent_connected",
            &[("host", "web-1")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "restic_manager_agent_connected",
            &[("host", "db-1")]
        ),
        Some(0.0)
    );
    assert!(
        value(
            &samples,
            "restic_manager_revision_applied_timestamp_seconds",
            &[]
        )
        .is_some()
    );
    assert_eq!(
        value(&samples, "restic_manager_revision_invalid", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "restic_manager_source_error", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "restic_manager_pending_agent_keys", &[]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "restic_manager_hosts", &[]), Some(2.0));
    assert_eq!(
        value(&samples, "restic_manager_assignments", &[]),
        Some(1.0)
    );

    // The counter only grows between scrapes.
    let later = wait_for(Duration::from_secs(10), || {
        let samples = parse_metrics(&get(addr, "/metrics").body);
        let failed = |s: &Samples| {
            value(
                s,
                "restic_manager_job_results_total",
                &[("kind", "backup"), ("outcome", "failed")],
            )
            .unwrap_or(0.0)
        };
        (failed(&samples) > failed(&parse_metrics(&reply.body))).then_some(())
    });
    assert!(later.is_some(), "the failed-backup counter did not grow");
}
