//! Effective assignments: what each host runs once selectors and defaults are applied.
//!
//! This is the view `show` prints and `plan` compares, and the desired state the server
//! reconciles towards. Every default is filled in here (time zones above all), so two
//! revisions that mean the same produce equal assignments.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::model::{
    Check, Config, Hooks, Host, MissedRun, Policy, Prune, Repository, Retention, Schedule,
    Selector, TimeZoneName,
};

/// Hosts indexed by label, so selecting among 10,000 hosts does not scan them all.
pub struct Fleet<'a> {
    config: &'a Config,
    /// label name → label value → hosts carrying it, in name order.
    by_label: HashMap<&'a str, HashMap<&'a str, Vec<&'a Host>>>,
}

impl<'a> Fleet<'a> {
    /// Builds the label index of a config's hosts.
    #[must_use]
    pub fn new(config: &'a Config) -> Self {
        let mut by_label: HashMap<&str, HashMap<&str, Vec<&Host>>> = HashMap::new();
        for host in config.hosts.values() {
            for (k, v) in &host.labels {
                by_label
                    .entry(k.as_str())
                    .or_default()
                    .entry(v.as_str())
                    .or_default()
                    .push(host);
            }
        }
        Self { config, by_label }
    }

    /// The hosts a selector matches, sorted by name.
    #[must_use]
    pub fn select(&self, selector: &Selector) -> Vec<&'a Host> {
        if selector.all {
            return self.config.hosts.values().collect();
        }
        let by_labels = self
            .label_candidates(selector)
            .iter()
            .copied()
            .filter(|h| selector.matches(h));
        if selector.names.is_empty() {
            // The index lists hosts in name order, so no sorting is needed.
            return by_labels.collect();
        }
        let mut names: BTreeSet<&str> = selector
            .names
            .iter()
            .filter(|n| self.config.hosts.contains_key(*n))
            .map(String::as_str)
            .collect();
        names.extend(by_labels.map(|h| h.name.as_str()));
        names.into_iter().map(|n| &self.config.hosts[n]).collect()
    }

    /// Whether a selector matches at least one host.
    #[must_use]
    pub fn selects_any(&self, selector: &Selector) -> bool {
        (selector.all && !self.config.hosts.is_empty())
            || selector
                .names
                .iter()
                .any(|n| self.config.hosts.contains_key(n))
            || self
                .label_candidates(selector)
                .iter()
                .any(|h| selector.matches(h))
    }

    /// The hosts carrying the rarest of the selector's labels: a superset of those matching
    /// all of them. Empty when the selector has no labels.
    fn label_candidates(&self, selector: &Selector) -> &[&'a Host] {
        selector
            .labels
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(k.as_str())
                    .and_then(|values| values.get(v.as_str()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|hosts| hosts.len())
            .unwrap_or(&[])
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

/// A policy placed on a host: references only, so placing 50,000 of them is cheap. Turn one
/// into an [`Assignment`] to see its values with every default filled in.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub host: &'a Host,
    pub policy: &'a Policy,
    /// `None` only in configs that did not validate.
    pub repository: Option<&'a Repository>,
}

impl Placement<'_> {
    /// The assignment with its values, zones filled in from the host.
    #[must_use]
    pub fn assignment(&self) -> Assignment {
        assignment(self.repository, self.host, self.policy)
    }
}

/// Every host with the policies placed on it, sorted by host name, then policy name.
#[must_use]
pub fn placements(config: &Config) -> Vec<(&Host, Vec<Placement<'_>>)> {
    let fleet = Fleet::new(config);
    let mut per_host: HashMap<&str, Vec<Placement>> = HashMap::new();
    for policy in config.policies.values() {
        let repository = config.repositories.get(&policy.repository);
        for host in fleet.select(&policy.hosts) {
            per_host
                .entry(host.name.as_str())
                .or_default()
                .push(Placement {
                    host,
                    policy,
                    repository,
                });
        }
    }
    config
        .hosts
        .values()
        .map(|host| {
            (
                host,
                per_host.remove(host.name.as_str()).unwrap_or_default(),
            )
        })
        .collect()
}

/// Every host's effective assignments, sorted by host name, then policy name.
#[must_use]
pub fn effective(config: &Config) -> Vec<HostView> {
    placements(config)
        .into_iter()
        .map(|(host, placed)| HostView {
            name: host.name.clone(),
            hostname: host.hostname.clone(),
            paused: host.paused,
            timezone: host_zone(host).name.to_string(),
            enrolled: host.agent_key.is_some(),
            assignments: placed.iter().map(Placement::assignment).collect(),
        })
        .collect()
}

/// The zone a host's schedules are read in when a policy names none: the host's, else UTC.
#[must_use]
pub fn host_zone(host: &Host) -> TimeZoneName {
    host.timezone.clone().unwrap_or_else(TimeZoneName::utc)
}

/// Fills a schedule's zone from the host when the policy leaves it open.
#[must_use]
pub fn in_zone(schedule: &Schedule, host: &Host) -> Schedule {
    let mut schedule = schedule.clone();
    if schedule.timezone.is_none() {
        schedule.timezone = Some(host_zone(host));
    }
    schedule
}

fn assignment(repo: Option<&Repository>, host: &Host, policy: &Policy) -> Assignment {
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
