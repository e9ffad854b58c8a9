//! Effective assignments: what each host runs once selectors and defaults are applied.
//!
//! This is the view `show` prints and `plan` compares, and the desired state the server
//! reconciles towards. Every default is filled in here (time zones above all), so two
//! revisions that mean the same produce equal assignments.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::model::{
    Check, Config, Hooks, Host, MissedRun, Policy, Prune, Retention, Schedule, Selector,
    TimeZoneName,
};

/// Hosts indexed by label, so selecting among 10,000 hosts does not scan them all.
pub struct Fleet<'a> {
    config: &'a Config,
    by_label: HashMap<(&'a str, &'a str), Vec<&'a Host>>,
}

impl<'a> Fleet<'a> {
    /// Builds the label index of a config's hosts.
    #[must_use]
    pub fn new(config: &'a Config) -> Self {
        let mut by_label: HashMap<(&str, &str), Vec<&Host>> = HashMap::new();
        for host in config.hosts.values() {
            for (k, v) in &host.labels {
                by_label
                    .entry((k.as_str(), v.as_str()))
                    .or_default()
                    .push(host);
            }
        }
        Self { config, by_label }
    }

    /// The hosts a selector matches, by name.
    #[must_use]
    pub fn select(&self, selector: &Selector) -> Vec<&'a Host> {
        if selector.all {
            return self.config.hosts.values().collect();
        }
        let mut names: BTreeSet<&str> = selector
            .names
            .iter()
            .filter(|n| self.config.hosts.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !selector.labels.is_empty() {
            // Start from the rarest label and check the others on each candidate.
            let smallest = selector
                .labels
                .iter()
                .map(|(k, v)| {
                    self.by_label
                        .get(&(k.as_str(), v.as_str()))
                        .map_or(&[][..], Vec::as_slice)
                })
                .min_by_key(|hosts| hosts.len())
                .unwrap_or(&[]);
            names.extend(
                smallest
                    .iter()
                    .filter(|h| selector.matches(h))
                    .map(|h| h.name.as_str()),
            );
        }
        names.into_iter().map(|n| &self.config.hosts[n]).collect()
    }
}

/// What one host runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub name: String,
    pub hostname: String,
    pub paused: bool,
    pub timezone: String,
    pub enrolled: bool,
    pub assignments: Vec<Assignment>,
}

/// One policy as it applies to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Assignment {
    pub policy: String,
    pub repository: String,
    pub repository_url: String,
    pub append_only: bool,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: bool,
    /// Including the `policy:<name>` tag every backup carries.
    pub tags: Vec<String>,
    pub one_file_system: bool,
    pub schedule: Schedule,
    pub missed_run: MissedRun,
    #[serde(serialize_with = "super::schedule::serialize_duration")]
    pub max_duration: jiff::SignedDuration,
    pub partial_is_success: bool,
    pub retention: Option<Retention>,
    pub forget: Option<Schedule>,
    pub prune: Option<Prune>,
    pub check: Option<Check>,
    #[serde(skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
}

/// Every host's effective assignments, sorted by host name, then policy name.
#[must_use]
pub fn effective(config: &Config) -> Vec<HostView> {
    let fleet = Fleet::new(config);
    let mut per_host: HashMap<&str, Vec<Assignment>> = HashMap::new();
    for policy in config.policies.values() {
        for host in fleet.select(&policy.hosts) {
            per_host
                .entry(host.name.as_str())
                .or_default()
                .push(assignment(config, host, policy));
        }
    }
    config
        .hosts
        .values()
        .map(|host| HostView {
            name: host.name.clone(),
            hostname: host.hostname.clone(),
            paused: host.paused,
            timezone: host_zone(host).name,
            enrolled: host.agent_key.is_some(),
            assignments: per_host.remove(host.name.as_str()).unwrap_or_default(),
        })
        .collect()
}

fn host_zone(host: &Host) -> TimeZoneName {
    host.timezone.clone().unwrap_or_else(TimeZoneName::utc)
}

/// Fills a schedule's zone from the host when the policy leaves it open.
fn in_zone(schedule: &Schedule, host: &Host) -> Schedule {
    let mut schedule = schedule.clone();
    if schedule.timezone.is_none() {
        schedule.timezone = Some(host_zone(host));
    }
    schedule
}

fn assignment(config: &Config, host: &Host, policy: &Policy) -> Assignment {
    let repo = config.repositories.get(&policy.repository);
    let mut tags = vec![format!("policy:{}", policy.name)];
    tags.extend(policy.tags.iter().cloned());
    Assignment {
        policy: policy.name.clone(),
        repository: policy.repository.clone(),
        repository_url: repo.map(|r| r.url.text.clone()).unwrap_or_default(),
        append_only: repo.is_some_and(|r| r.append_only),
        paths: policy.paths.clone(),
        exclude: policy.exclude.clone(),
        exclude_if_present: policy.exclude_if_present.clone(),
        exclude_caches: policy.exclude_caches,
        tags,
        one_file_system: policy.one_file_system,
        schedule: in_zone(&policy.schedule, host),
        missed_run: policy.missed_run,
        max_duration: policy.max_duration,
        partial_is_success: policy.partial_is_success,
        retention: policy.retention.clone(),
        forget: policy.forget.as_ref().map(|s| in_zone(s, host)),
        prune: policy.prune.as_ref().map(|p| Prune {
            schedule: in_zone(&p.schedule, host),
            ..p.clone()
        }),
        check: policy.check.as_ref().map(|c| Check {
            schedule: in_zone(&c.schedule, host),
            ..c.clone()
        }),
        hooks: policy.hooks.clone(),
    }
}
