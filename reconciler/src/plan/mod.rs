//! `plan`: the semantic difference between two valid configs, for pull-request review.
//!
//! The comparison works on effective assignments (what each host runs after selection and
//! defaults), so a change is described by its effect — "keep-daily lowered from 14 to 7 on
//! web-1, web-2" — whichever file caused it. Each change says whether it is risky: whether it
//! can lose backup history or stop data from being backed up. Changes that are the same on
//! many hosts are grouped into one line listing the hosts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::config::Config;
use crate::config::effective::{Assignment, Placement, placements};
use crate::config::model::{Host, MissedRun, Schedule, TimeZoneName};
use crate::config::retention::Retention;
use crate::config::schedule::format_duration;

/// What kind of change a plan line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    HostAdded,
    HostRemoved,
    HostPaused,
    HostResumed,
    HostnameChanged,
    PolicyAdded,
    PolicyRemoved,
    RepositoryMoved,
    PathAdded,
    PathRemoved,
    ExcludeChanged,
    TagsChanged,
    ScheduleChanged,
    RetentionChanged,
    ForgetChanged,
    PruneChanged,
    CheckChanged,
    HooksChanged,
    OptionChanged,
    RepositoryChanged,
    NotificationChanged,
}

/// One change, possibly on many hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub risky: bool,
    /// The policy concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The hosts it affects, sorted; empty for changes to repositories or notifications.
    pub hosts: Vec<String>,
    /// What changes, in plain words, without the host names.
    pub summary: String,
}

/// The difference between two configs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether anything changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any change is risky.
    #[must_use]
    pub fn has_risky(&self) -> bool {
        self.changes.iter().any(|c| c.risky)
    }

    /// The number of distinct hosts any change touches.
    #[must_use]
    pub fn hosts_affected(&self) -> usize {
        self.changes
            .iter()
            .flat_map(|c| &c.hosts)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// Compares two configs.
#[must_use]
pub fn diff(base: &Config, head: &Config) -> Plan {
    // A policy whose definition and repository are the same in both revisions yields the
    // same assignment on a host whose zone did not change, so most comparisons stop early.
    let unchanged = base
        .policies
        .iter()
        .filter(|(name, old)| {
            head.policies.get(*name) == Some(old)
                && base.repositories.get(&old.repository) == head.repositories.get(&old.repository)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let mut cx = Differ {
        unchanged,
        ..Differ::default()
    };

    let base_hosts = placements(base);
    let head_hosts = placements(head);
    let head_by_name: HashMap<&str, &HostPlacements> =
        head_hosts.iter().map(|h| (h.0.name.as_str(), h)).collect();

    for old in &base_hosts {
        match head_by_name.get(old.0.name.as_str()) {
            None => cx.host_removed(old),
            Some(new) => cx.host_changed(old, new),
        }
    }
    for new in &head_hosts {
        if !base.hosts.contains_key(&new.0.name) {
            cx.host_added(new);
        }
    }
    for (name, old) in &base.repositories {
        cx.repository(name, Some(old), head.repositories.get(name));
    }
    for (name, new) in &head.repositories {
        if !base.repositories.contains_key(name) {
            cx.repository(name, None, Some(new));
        }
    }
    for (name, old) in &base.notifications {
        cx.notification(name, Some(old), head.notifications.get(name));
    }
    for (name, new) in &head.notifications {
        if !base.notifications.contains_key(name) {
            cx.notification(name, None, Some(new));
        }
    }

    cx.finish()
}

/// Collects per-host changes and groups equal ones.
#[derive(Default)]
struct Differ {
    grouped: BTreeMap<(bool, ChangeKind, Option<String>, String), Vec<String>>,
    intervals: HashMap<String, Option<jiff::SignedDuration>>,
    /// Policies defined identically, with identical repositories, in both revisions.
    unchanged: HashSet<String>,
}

/// A host and the policies placed on it.
type HostPlacements<'a> = (&'a Host, Vec<Placement<'a>>);

impl Differ {
    fn push(
        &mut self,
        host: Option<&str>,
        kind: ChangeKind,
        risky: bool,
        policy: Option<&str>,
        summary: String,
    ) {
        let hosts = self
            .grouped
            .entry((!risky, kind, policy.map(str::to_owned), summary))
            .or_default();
        if let Some(host) = host {
            hosts.push(host.to_owned());
        }
    }

    fn finish(self) -> Plan {
        let changes = self
            .grouped
            .into_iter()
            .map(|((not_risky, kind, policy, summary), mut hosts)| {
                hosts.sort();
                hosts.dedup();
                Change {
                    kind,
                    risky: !not_risky,
                    policy,
                    hosts,
                    summary,
                }
            })
            .collect();
        Plan { changes }
    }

    fn host_added(&mut self, (host, placed): &HostPlacements) {
        let runs = policy_list(placed);
        self.push(
            Some(&host.name),
            ChangeKind::HostAdded,
            false,
            None,
            format!("host added; {runs}"),
        );
    }

    fn host_removed(&mut self, (host, placed): &HostPlacements) {
        let (risky, summary) = if placed.is_empty() {
            (false, "host removed; it ran no policy".to_owned())
        } else {
            (
                true,
                format!(
                    "host removed: it is no longer backed up ({} stop; existing snapshots are \
                     kept)",
                    policy_list(placed).trim_start_matches("runs ")
                ),
            )
        };
        self.push(
            Some(&host.name),
            ChangeKind::HostRemoved,
            risky,
            None,
            summary,
        );
    }

    fn host_changed(
        &mut self,
        (old, old_placed): &HostPlacements,
        (new, new_placed): &HostPlacements,
    ) {
        let host = Some(new.name.as_str());
        if old.hostname != new.hostname {
            self.push(
                host,
                ChangeKind::HostnameChanged,
                true,
                None,
                format!(
                    "restic hostname changes from `{}` to `{}`: new snapshots start a new \
                     history and retention no longer applies to the old ones",
                    old.hostname, new.hostname
                ),
            );
        }
        if !old.paused && new.paused {
            self.push(
                host,
                ChangeKind::HostPaused,
                true,
                None,
                "host paused: it runs no backups until resumed".to_owned(),
            );
        } else if old.paused && !new.paused {
            self.push(
                host,
                ChangeKind::HostResumed,
                false,
                None,
                "host resumed".to_owned(),
            );
        }

        // Paths the host still has backed up anywhere, to tell a move from a loss.
        let covered_after: BTreeSet<&str> = new_placed
            .iter()
            .flat_map(|p| p.policy.paths.iter().map(String::as_str))
            .collect();

        let same_zone = old.timezone == new.timezone;
        let new_by_policy: HashMap<&str, &Placement> = new_placed
            .iter()
            .map(|p| (p.policy.name.as_str(), p))
            .collect();
        for a in old_placed {
            let policy = a.policy.name.as_str();
            if let Some(b) = new_by_policy.get(policy) {
                if !(same_zone && self.unchanged.contains(policy)) {
                    self.assignment_changed(
                        &new.name,
                        &a.assignment(),
                        &b.assignment(),
                        &covered_after,
                    );
                }
                continue;
            }
            let lost: Vec<&str> = a
                .policy
                .paths
                .iter()
                .map(String::as_str)
                .filter(|p| !covered_after.contains(p))
                .collect();
            let (risky, summary) = if lost.is_empty() {
                (
                    false,
                    "policy no longer applies; its paths are still backed up by another policy"
                        .to_owned(),
                )
            } else {
                (
                    true,
                    format!(
                        "policy no longer applies: {} no longer backed up",
                        quote_list(&lost)
                    ),
                )
            };
            self.push(
                host,
                ChangeKind::PolicyRemoved,
                risky,
                Some(policy),
                summary,
            );
        }
        let old_policies: BTreeSet<&str> =
            old_placed.iter().map(|p| p.policy.name.as_str()).collect();
        for b in new_placed {
            if !old_policies.contains(b.policy.name.as_str()) {
                let b = b.assignment();
                self.push(
                    host,
                    ChangeKind::PolicyAdded,
                    false,
                    Some(&b.policy),
                    format!(
                        "policy now applies: backs up {} into repository `{}`, {}",
                        quote_list(&b.paths),
                        b.repository,
                        b.schedule
                    ),
                );
            }
        }
    }

    fn assignment_changed(
        &mut self,
        host: &str,
        a: &Assignment,
        b: &Assignment,
        covered_after: &BTreeSet<&str>,
    ) {
        let host = Some(host);
        let policy = Some(a.policy.as_str());

        if a.repository != b.repository || a.repository_url != b.repository_url {
            let what = if a.repository == b.repository {
                format!(
                    "repository `{}` moves from `{}` to `{}`",
                    a.repository, a.repository_url, b.repository_url
                )
            } else {
                format!(
                    "moves from repository `{}` to `{}`",
                    a.repository, b.repository
                )
            };
            self.push(
                host,
                ChangeKind::RepositoryMoved,
                true,
                policy,
                format!(
                    "{what}: new snapshots start without history there, and the old \
                     snapshots are no longer forgotten or checked"
                ),
            );
        }

        let removed = missing_from(&a.paths, &b.paths);
        let lost: Vec<&str> = removed
            .iter()
            .copied()
            .filter(|p| !covered_after.contains(p))
            .collect();
        let moved: Vec<&str> = removed
            .iter()
            .copied()
            .filter(|p| covered_after.contains(p))
            .collect();
        if !lost.is_empty() {
            self.push(
                host,
                ChangeKind::PathRemoved,
                true,
                policy,
                format!("{} no longer backed up", quote_list(&lost)),
            );
        }
        if !moved.is_empty() {
            self.push(
                host,
                ChangeKind::PathRemoved,
                false,
                policy,
                format!(
                    "{} removed here, still backed up by another policy",
                    quote_list(&moved)
                ),
            );
        }
        let added = missing_from(&b.paths, &a.paths);
        if !added.is_empty() {
            self.push(
                host,
                ChangeKind::PathAdded,
                false,
                policy,
                format!("now backs up {}", quote_list(&added)),
            );
        }

        self.excludes(host, policy, a, b);

        if a.tags != b.tags {
            self.push(
                host,
                ChangeKind::TagsChanged,
                false,
                policy,
                format!(
                    "tags change from [{}] to [{}]",
                    a.tags.join(", "),
                    b.tags.join(", ")
                ),
            );
        }

        if a.schedule != b.schedule {
            let (rarer, summary) = self.schedule_change(
                ("backups run less often", "backup schedule"),
                &a.schedule,
                &b.schedule,
            );
            self.push(host, ChangeKind::ScheduleChanged, rarer, policy, summary);
        }

        self.options(host, policy, a, b);
        self.retention(host, policy, a.retention.as_ref(), b.retention.as_ref());

        if a.forget != b.forget
            && let (Some(x), Some(y)) = (&a.forget, &b.forget)
        {
            self.push(
                host,
                ChangeKind::ForgetChanged,
                false,
                policy,
                format!("forget schedule: {x} → {y}"),
            );
        }
        if a.prune != b.prune {
            let summary = match (&a.prune, &b.prune) {
                (None, Some(p)) => format!("prune enabled: {}", p.schedule),
                (Some(_), None) => "prune disabled: forgotten data is no longer removed".to_owned(),
                (Some(x), Some(y)) => format!(
                    "prune: {}{} → {}{}",
                    x.schedule,
                    opt_suffix("max-unused", x.max_unused.as_deref()),
                    y.schedule,
                    opt_suffix("max-unused", y.max_unused.as_deref())
                ),
                (None, None) => String::new(),
            };
            self.push(host, ChangeKind::PruneChanged, false, policy, summary);
        }
        self.check(host, policy, a, b);

        let same_commands = a.hooks.before == b.hooks.before
            && a.hooks.after == b.hooks.after
            && a.hooks.on_failure == b.hooks.on_failure;
        if same_commands && a.hooks.timeout != b.hooks.timeout {
            self.push(
                host,
                ChangeKind::HooksChanged,
                false,
                policy,
                format!(
                    "hook timeout: {} → {}",
                    format_duration(a.hooks.timeout),
                    format_duration(b.hooks.timeout)
                ),
            );
        } else if !same_commands {
            let describe = |h: &crate::config::model::Hooks| {
                let mut parts = Vec::new();
                for (what, list) in [
                    ("before", &h.before),
                    ("after", &h.after),
                    ("on-failure", &h.on_failure),
                ] {
                    for argv in list {
                        parts.push(format!("{what} {argv:?}"));
                    }
                }
                if parts.is_empty() {
                    "none".to_owned()
                } else {
                    parts.join("; ")
                }
            };
            self.push(
                host,
                ChangeKind::HooksChanged,
                true,
                policy,
                format!(
                    "commands run on the host change: {} → {} (timeout {})",
                    describe(&a.hooks),
                    describe(&b.hooks),
                    format_duration(b.hooks.timeout)
                ),
            );
        }
    }

    fn excludes(
        &mut self,
        host: Option<&str>,
        policy: Option<&str>,
        a: &Assignment,
        b: &Assignment,
    ) {
        let added = missing_from(&b.exclude, &a.exclude);
        let removed = missing_from(&a.exclude, &b.exclude);
        if !added.is_empty() {
            self.push(
                host,
                ChangeKind::ExcludeChanged,
                true,
                policy,
                format!(
                    "new exclude patterns {}: matching files are no longer backed up",
                    quote_list(&added)
                ),
            );
        }
        if !removed.is_empty() {
            self.push(
                host,
                ChangeKind::ExcludeChanged,
                false,
                policy,
                format!("exclude patterns removed: {}", quote_list(&removed)),
            );
        }
        let added_if = missing_from(&b.exclude_if_present, &a.exclude_if_present);
        if !added_if.is_empty() {
            self.push(
                host,
                ChangeKind::ExcludeChanged,
                true,
                policy,
                format!(
                    "directories containing {} are no longer backed up",
                    quote_list(&added_if)
                ),
            );
        }
        if !a.exclude_caches && b.exclude_caches {
            self.push(
                host,
                ChangeKind::ExcludeChanged,
                true,
                policy,
                "cache directories (CACHEDIR.TAG) are no longer backed up".to_owned(),
            );
        }
        if !a.one_file_system && b.one_file_system {
            self.push(host, ChangeKind::ExcludeChanged, true, policy, "one-file-system on: other file systems mounted below the paths are no longer backed up".to_owned());
        }
        if (a.exclude_caches && !b.exclude_caches)
            || (a.one_file_system && !b.one_file_system)
            || b.exclude_if_present.len() < a.exclude_if_present.len()
        {
            self.push(
                host,
                ChangeKind::ExcludeChanged,
                false,
                policy,
                "exclusions narrowed: more data is backed up".to_owned(),
            );
        }
    }

    fn options(
        &mut self,
        host: Option<&str>,
        policy: Option<&str>,
        a: &Assignment,
        b: &Assignment,
    ) {
        if a.missed_run != b.missed_run {
            // Skipping means a host that was down at backup time goes without until the next
            // instant, which for a daily or weekly schedule is a long gap.
            let risky = b.missed_run == MissedRun::Skip;
            self.push(
                host,
                ChangeKind::OptionChanged,
                risky,
                policy,
                format!(
                    "missed-run: {} → {}",
                    missed(a.missed_run),
                    missed(b.missed_run)
                ),
            );
        }
        if a.max_duration != b.max_duration {
            self.push(
                host,
                ChangeKind::OptionChanged,
                false,
                policy,
                format!(
                    "max-duration: {} → {}",
                    format_duration(a.max_duration),
                    format_duration(b.max_duration)
                ),
            );
        }
        if a.partial_is_success != b.partial_is_success {
            let (risky, summary) = if b.partial_is_success {
                (
                    true,
                    "partial backups (unreadable files) now count as success and no longer alert",
                )
            } else {
                (
                    false,
                    "partial backups (unreadable files) now count as failures and alert",
                )
            };
            self.push(
                host,
                ChangeKind::OptionChanged,
                risky,
                policy,
                summary.to_owned(),
            );
        }
    }

    fn retention(
        &mut self,
        host: Option<&str>,
        policy: Option<&str>,
        old: Option<&Retention>,
        new: Option<&Retention>,
    ) {
        match (old, new) {
            (None, Some(r)) => self.push(
                host,
                ChangeKind::RetentionChanged,
                true,
                policy,
                format!("retention added: forget will delete every snapshot not kept by {r}"),
            ),
            (Some(r), None) => self.push(
                host,
                ChangeKind::RetentionChanged,
                true,
                policy,
                format!("retention removed (was {r}): forget stops and the repository grows without bound"),
            ),
            (Some(x), Some(y)) if x != y => {
                let old_rules: BTreeMap<&str, _> = x.rules().into_iter().collect();
                let new_rules: BTreeMap<&str, _> = y.rules().into_iter().collect();
                for (name, old_value) in &old_rules {
                    match new_rules.get(name) {
                        None => self.push(
                            host,
                            ChangeKind::RetentionChanged,
                            true,
                            policy,
                            format!("{name} {old_value} removed: fewer snapshots are kept"),
                        ),
                        Some(new_value) if new_value.keeps_less_than(old_value) => self.push(
                            host,
                            ChangeKind::RetentionChanged,
                            true,
                            policy,
                            format!("{name} lowered from {old_value} to {new_value}"),
                        ),
                        Some(new_value) if new_value != old_value => self.push(
                            host,
                            ChangeKind::RetentionChanged,
                            false,
                            policy,
                            format!("{name} raised from {old_value} to {new_value}"),
                        ),
                        Some(_) => {}
                    }
                }
                for (name, new_value) in &new_rules {
                    if !old_rules.contains_key(name) {
                        self.push(host, ChangeKind::RetentionChanged, false, policy, format!("{name} {new_value} added"));
                    }
                }
                if x.group_by != y.group_by {
                    self.push(
                        host,
                        ChangeKind::RetentionChanged,
                        true,
                        policy,
                        format!(
                            "group-by changes from `{}` to `{}`: retention counts snapshots in \
                             different groups, which can delete snapshots kept so far",
                            x.group_by, y.group_by
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    fn check(&mut self, host: Option<&str>, policy: Option<&str>, a: &Assignment, b: &Assignment) {
        match (&a.check, &b.check) {
            (Some(_), None) => self.push(
                host,
                ChangeKind::CheckChanged,
                true,
                policy,
                "check disabled: repository damage would go unnoticed".to_owned(),
            ),
            (None, Some(c)) => self.push(
                host,
                ChangeKind::CheckChanged,
                false,
                policy,
                format!(
                    "check enabled: {}{}",
                    c.schedule,
                    opt_suffix("read-data-subset", c.read_data_subset.as_deref())
                ),
            ),
            (Some(x), Some(y)) if x != y => {
                if x.schedule != y.schedule {
                    let (rarer, summary) = self.schedule_change(
                        ("check runs less often", "check schedule"),
                        &x.schedule,
                        &y.schedule,
                    );
                    self.push(host, ChangeKind::CheckChanged, rarer, policy, summary);
                }
                if x.read_data_subset != y.read_data_subset {
                    let risky = match (&x.read_data_subset, &y.read_data_subset) {
                        (_, None) => true,
                        (Some(old), Some(new)) => {
                            matches!(
                                (subset_share(old), subset_share(new)),
                                (Some(before), Some(after)) if after < before
                            )
                        }
                        (None, Some(_)) => false,
                    };
                    let summary = format!(
                        "check reads {} → {}",
                        x.read_data_subset
                            .as_deref()
                            .map_or("no pack data".to_owned(), |s| format!("{s} of the data")),
                        y.read_data_subset
                            .as_deref()
                            .map_or("no pack data".to_owned(), |s| format!("{s} of the data")),
                    );
                    self.push(host, ChangeKind::CheckChanged, risky, policy, summary);
                }
            }
            _ => {}
        }
    }

    /// Describes a schedule change as `(risky, summary)`: running less often is risky.
    /// The two words are those for a rarer and for any other change.
    fn schedule_change(
        &mut self,
        (rarer_words, other_words): (&str, &str),
        old: &Schedule,
        new: &Schedule,
    ) -> (bool, String) {
        let rarer = self.is_rarer(old, new);
        let words = if rarer { rarer_words } else { other_words };
        (rarer, format!("{words}: {old} → {new}"))
    }

    /// Whether `new` fires less often than `old`. Schedules carry their zone (filled in from
    /// the host), so UTC here is only a fallback.
    fn is_rarer(&mut self, old: &Schedule, new: &Schedule) -> bool {
        let (Some(old), Some(new)) = (self.interval(old), self.interval(new)) else {
            return false;
        };
        new > old
    }

    fn interval(&mut self, schedule: &Schedule) -> Option<jiff::SignedDuration> {
        let key = schedule.to_string();
        *self.intervals.entry(key).or_insert_with(|| {
            schedule
                .mean_interval(&TimeZoneName::utc())
                .or(Some(jiff::SignedDuration::MAX))
        })
    }
}

/// The share of the data a `read-data-subset` of `n%` or `n/m` reads; `None` for sizes,
/// which cannot be compared without knowing the repository.
fn subset_share(subset: &str) -> Option<f64> {
    if let Some(percent) = subset.strip_suffix('%') {
        return percent.parse::<f64>().ok().map(|p| p / 100.0);
    }
    let (n, m) = subset.split_once('/')?;
    Some(n.parse::<f64>().ok()? / m.parse::<f64>().ok()?)
}

fn missed(m: crate::config::model::MissedRun) -> &'static str {
    match m {
        crate::config::model::MissedRun::RunOnce => "run-once",
        crate::config::model::MissedRun::Skip => "skip",
    }
}

fn policy_list(placed: &[Placement]) -> String {
    if placed.is_empty() {
        return "runs no policy".to_owned();
    }
    let names: Vec<String> = placed
        .iter()
        .map(|p| format!("`{}`", p.policy.name))
        .collect();
    format!("runs {}", names.join(", "))
}

/// The items of `items` that `other` does not have, in order.
fn missing_from<'a>(items: &'a [String], other: &[String]) -> Vec<&'a str> {
    items
        .iter()
        .filter(|item| !other.contains(item))
        .map(String::as_str)
        .collect()
}

fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{}`", s.as_ref())).collect();
    quoted.join(", ")
}

fn opt_suffix(name: &str, value: Option<&str>) -> String {
    value.map_or(String::new(), |v| format!(", {name} {v}"))
}

mod objects;
mod render;

pub use render::Revisions;

#[cfg(test)]
mod tests;
