//! Reconcile: what a valid revision asks of the fleet ([`desired`]), and the changes that turn
//! the applied state into it ([`diff`]).
//!
//! Both sides are a [`FleetState`], so the diff is a merge of two sorted lists and costs the
//! same whether one schedule changed or a thousand hosts were added. Nothing here touches the
//! store or the clock: the caller applies the actions in one transaction and audits each with
//! the commit that caused it.
//!
//! Removing a host, a policy or a repository only ever stops schedules. No action deletes a
//! snapshot: forget runs only from a policy's own retention, scoped to its own tag.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sha2::Digest as _;

use crate::config::effective::{host_zone, placements};
use crate::config::model::{Config, Policy, Schedule};

use super::model::{Action, AppliedAssignment, AssignmentKey, FleetState, HostRecord, JobKind};

/// The jobs a policy schedules on each of its hosts, with the schedule each runs on.
/// Snapshot refreshes are the scheduler's own and not part of the desired state.
#[must_use]
pub fn policy_jobs(policy: &Policy) -> Vec<(JobKind, &Schedule)> {
    let mut jobs = vec![(JobKind::Backup, &policy.schedule)];
    if let Some(forget) = &policy.forget {
        jobs.push((JobKind::Forget, forget));
    }
    if let Some(prune) = &policy.prune {
        jobs.push((JobKind::Prune, &prune.schedule));
    }
    if let Some(check) = &policy.check {
        jobs.push((JobKind::Check, &check.schedule));
    }
    jobs.sort_by_key(|(kind, _)| *kind);
    jobs
}

/// The desired state of a valid configuration: every host, every repository, and each
/// policy's jobs on each host it selects, sorted by host, policy and kind.
#[must_use]
pub fn desired(config: &Config) -> FleetState {
    let hosts = config
        .hosts
        .values()
        .map(|host| {
            let record = HostRecord {
                name: host.name.clone(),
                paused: host.paused,
                agent_key: host.agent_key.map(|key| key.to_string()),
            };
            (host.name.clone(), record)
        })
        .collect();

    // What a policy's jobs carry is the same on every host; only the schedule's text depends
    // on the host's zone. Both are computed once per policy (and zone), so 10,000 hosts cost
    // 10,000 clones, not 10,000 hashes and formats.
    let mut jobs: HashMap<&str, PolicyJobs<'_>> = config
        .policies
        .values()
        .map(|policy| {
            let jobs = policy_jobs(policy)
                .into_iter()
                .map(|(kind, schedule)| PolicyJob {
                    kind,
                    schedule,
                    digest: content_digest(policy, kind),
                    texts: Vec::new(),
                })
                .collect();
            let shared = PolicyJobs {
                name: policy.name.as_str().into(),
                repository: policy.repository.as_str().into(),
                jobs,
            };
            (policy.name.as_str(), shared)
        })
        .collect();

    let mut assignments = Vec::new();
    for (host, placed) in placements(config) {
        let zone = host_zone(host);
        let host_name: Arc<str> = host.name.as_str().into();
        for placement in placed {
            let Some(policy) = jobs.get_mut(placement.policy.name.as_str()) else {
                continue;
            };
            for job in &mut policy.jobs {
                let zone_name = job
                    .schedule
                    .timezone
                    .as_ref()
                    .map_or(&zone.name, |z| &z.name);
                let text = if let Some((_, text)) = job.texts.iter().find(|(z, _)| z == zone_name) {
                    Arc::clone(text)
                } else {
                    let text: Arc<str> = schedule_text(job.schedule, host).into();
                    job.texts.push((Arc::clone(zone_name), Arc::clone(&text)));
                    text
                };
                assignments.push(AppliedAssignment {
                    key: AssignmentKey {
                        host: Arc::clone(&host_name),
                        policy: Arc::clone(&policy.name),
                        kind: job.kind,
                    },
                    repository: Arc::clone(&policy.repository),
                    schedule: text,
                    content_digest: Arc::clone(&job.digest),
                });
            }
        }
    }

    FleetState {
        hosts,
        assignments,
        repositories: config
            .repositories
            .iter()
            .map(|(name, repo)| (name.clone(), Some(repo.url.text.clone())))
            .collect(),
    }
}

/// A policy's jobs, with what every host's assignment of them shares.
struct PolicyJobs<'a> {
    name: Arc<str>,
    repository: Arc<str>,
    jobs: Vec<PolicyJob<'a>>,
}

/// One job of a policy.
struct PolicyJob<'a> {
    kind: JobKind,
    schedule: &'a Schedule,
    digest: Arc<str>,
    /// The schedule's text per zone it was read in.
    texts: Vec<(Arc<str>, Arc<str>)>,
}

/// The schedule as stored and compared: its display form with the zone filled in.
fn schedule_text(schedule: &Schedule, host: &crate::config::model::Host) -> String {
    crate::config::effective::in_zone(schedule, host).to_string()
}

/// The part of a policy one kind of job carries besides its schedule, hashed.
fn content_digest(policy: &Policy, kind: JobKind) -> Arc<str> {
    let digest = sha2::Sha256::digest(content(policy, kind).to_string().as_bytes());
    Arc::from(hex::encode(&digest[..8]))
}

/// The part of a policy one kind of job carries besides its schedule.
///
/// NOTE: the backup's field names are serialised in snake case and must stay so: the stored
/// digests of every applied assignment were computed from them, and renaming a field would
/// make every assignment look changed after an upgrade. [`changed_keys`] says them in the
/// config's kebab case.
fn content(policy: &Policy, kind: JobKind) -> serde_json::Value {
    #[derive(Serialize)]
    struct Backup<'a> {
        paths: &'a [String],
        exclude: &'a [String],
        exclude_if_present: &'a [String],
        exclude_caches: bool,
        one_file_system: bool,
        tags: &'a [String],
        missed_run: crate::config::model::MissedRun,
        max_duration: i64,
        partial_is_success: bool,
        hooks: &'a crate::config::model::Hooks,
    }

    match kind {
        JobKind::Backup => serde_json::to_value(Backup {
            paths: &policy.paths,
            exclude: &policy.exclude,
            exclude_if_present: &policy.exclude_if_present,
            exclude_caches: policy.exclude_caches,
            one_file_system: policy.one_file_system,
            tags: &policy.tags,
            missed_run: policy.missed_run,
            max_duration: policy.max_duration.as_secs(),
            partial_is_success: policy.partial_is_success,
            hooks: &policy.hooks,
        }),
        JobKind::Forget => serde_json::to_value(&policy.retention),
        JobKind::Prune => serde_json::to_value(policy.prune.as_ref().map(|p| &p.max_unused)),
        JobKind::Check => serde_json::to_value(policy.check.as_ref().map(|c| &c.read_data_subset)),
        JobKind::Init | JobKind::Unlock | JobKind::Snapshots => Ok(serde_json::Value::Null),
    }
    .unwrap_or(serde_json::Value::Null)
}

/// The policy file keys whose values differ between two versions of a policy's job of
/// `kind`, sorted: `max-duration`, `hooks.before`, `retention.keep-daily`, `prune.max-unused`.
#[must_use]
pub fn changed_keys(old: &Policy, new: &Policy, kind: JobKind) -> Vec<String> {
    let root = match kind {
        JobKind::Forget => "retention",
        JobKind::Prune => "prune.max-unused",
        JobKind::Check => "check.read-data-subset",
        JobKind::Backup | JobKind::Init | JobKind::Unlock | JobKind::Snapshots => "",
    };
    let mut out = Vec::new();
    diff_values(root, &content(old, kind), &content(new, kind), &mut out);
    out
}

/// Collects the paths at which two values differ; tables are compared key by key, anything
/// else as a whole.
fn diff_values(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;

    if old == new {
        return;
    }
    if let (Value::Object(old), Value::Object(new)) = (old, new) {
        let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let name = key.replace('_', "-");
            let path = if path.is_empty() {
                name
            } else {
                format!("{path}.{name}")
            };
            let (a, b) = (
                old.get(key).unwrap_or(&Value::Null),
                new.get(key).unwrap_or(&Value::Null),
            );
            diff_values(&path, a, b, out);
        }
        return;
    }
    out.push(if path.is_empty() {
        "settings".to_owned()
    } else {
        path.to_owned()
    });
}

/// The keys that changed in each policy's jobs between the revision in force and the next,
/// for the audit log's `assignment-changed` entries. Computed once per policy, not per host.
#[derive(Debug, Clone, Default)]
pub struct ChangedKeys {
    /// `false` when the revision in force was not loaded, so what changed cannot be told.
    known: bool,
    by_job: HashMap<(String, JobKind), Vec<String>>,
}

impl ChangedKeys {
    /// The changes from `old` to `new`; `old` is `None` when the revision in force is not
    /// loaded (it could not be read again after a restart).
    #[must_use]
    pub fn between(old: Option<&Config>, new: &Config) -> Self {
        let Some(old) = old else {
            return Self::default();
        };
        let mut by_job = HashMap::new();
        for (name, new_policy) in &new.policies {
            let Some(old_policy) = old.policies.get(name) else {
                continue;
            };
            for kind in [
                JobKind::Backup,
                JobKind::Forget,
                JobKind::Prune,
                JobKind::Check,
            ] {
                let keys = changed_keys(old_policy, new_policy, kind);
                if !keys.is_empty() {
                    by_job.insert((name.clone(), kind), keys);
                }
            }
        }
        Self {
            known: true,
            by_job,
        }
    }

    /// The changed keys of `policy`'s job of `kind`; `None` when they cannot be told.
    #[must_use]
    pub fn get(&self, policy: &str, kind: JobKind) -> Option<&[String]> {
        if !self.known {
            return None;
        }
        Some(
            self.by_job
                .get(&(policy.to_owned(), kind))
                .map_or(&[][..], Vec::as_slice),
        )
    }
}

/// The actions that turn `applied` into `desired`, hosts first, then assignments, then
/// repositories, each group sorted by name.
#[must_use]
pub fn diff(applied: &FleetState, desired: &FleetState) -> Vec<Action> {
    let mut actions = Vec::new();
    diff_hosts(applied, desired, &mut actions);
    diff_assignments(&applied.assignments, &desired.assignments, &mut actions);

    // A repository is "added" when a revision first declares it; the scheduler then runs
    // `init` before any backup goes to it.
    for (name, location) in &desired.repositories {
        match applied.repositories.get(name) {
            None => actions.push(Action::RepositoryAdded {
                repository: name.clone(),
            }),
            // A location the store does not know yet (written before it kept them) is
            // recorded without an action.
            Some(Some(from)) => {
                if let Some(to) = location.as_ref().filter(|to| *to != from) {
                    actions.push(Action::RepositoryMoved {
                        repository: name.clone(),
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
            }
            Some(None) => {}
        }
    }
    for name in applied.repositories.keys() {
        if !desired.repositories.contains_key(name) {
            actions.push(Action::RepositoryRemoved {
                repository: name.clone(),
            });
        }
    }
    actions
}

fn diff_hosts(applied: &FleetState, desired: &FleetState, actions: &mut Vec<Action>) {
    for (name, want) in &desired.hosts {
        let Some(have) = applied.hosts.get(name) else {
            actions.push(Action::HostAdded { host: name.clone() });
            if want.paused {
                actions.push(Action::HostPaused { host: name.clone() });
            }
            continue;
        };
        if have.agent_key != want.agent_key {
            actions.push(Action::AgentKeyChanged { host: name.clone() });
        }
        match (have.paused, want.paused) {
            (false, true) => actions.push(Action::HostPaused { host: name.clone() }),
            (true, false) => actions.push(Action::HostResumed { host: name.clone() }),
            _ => {}
        }
    }
    for name in applied.hosts.keys() {
        if !desired.hosts.contains_key(name) {
            actions.push(Action::HostRemoved { host: name.clone() });
        }
    }
}

/// A merge of two lists sorted by key.
fn diff_assignments(
    applied: &[AppliedAssignment],
    desired: &[AppliedAssignment],
    actions: &mut Vec<Action>,
) {
    let (mut old, mut new) = (applied.iter().peekable(), desired.iter().peekable());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(o), Some(n)) if o.key == n.key => {
                if o != n {
                    actions.push(Action::AssignmentChanged {
                        old: (*o).clone(),
                        new: (*n).clone(),
                    });
                }
                old.next();
                new.next();
            }
            (Some(o), Some(n)) if o.key < n.key => {
                actions.push(Action::AssignmentRemoved((*o).clone()));
                old.next();
            }
            (Some(o), None) => {
                actions.push(Action::AssignmentRemoved((*o).clone()));
                old.next();
            }
            (_, Some(n)) => {
                actions.push(Action::AssignmentAdded((*n).clone()));
                new.next();
            }
        }
    }
}

/// What an assignment change consists of, for the audit log: `schedule: A → B`, a new
/// repository, and the keys of the job's settings that changed (`keys`, from
/// [`ChangedKeys`]; `None` when they cannot be told).
#[must_use]
pub fn describe_change(
    old: &AppliedAssignment,
    new: &AppliedAssignment,
    keys: Option<&[String]>,
) -> String {
    let mut parts = Vec::new();
    if old.schedule != new.schedule {
        parts.push(format!("schedule: {} → {}", old.schedule, new.schedule));
    }
    if old.repository != new.repository {
        parts.push(format!(
            "repository: {} → {}",
            old.repository, new.repository
        ));
    }
    if old.content_digest != new.content_digest {
        parts.push(match keys {
            Some(keys) if !keys.is_empty() => format!("changed: {}", keys.join(", ")),
            _ => "the job's settings changed (which ones cannot be told: the revision in force \
                  before was not loaded)"
                .to_owned(),
        });
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing;

    fn fleet(policy_extra: &str, hosts: &[&str]) -> Config {
        let mut files: Vec<(String, String)> = hosts
            .iter()
            .map(|h| {
                (
                    format!("hosts/{h}.toml"),
                    "labels = { role = \"web\" }\n".to_owned(),
                )
            })
            .collect();
        files.push((
            "policies/web.toml".into(),
            format!(
                "hosts = {{ labels = {{ role = \"web\" }} }}\nrepository = \"main\"\n\
                 paths = [\"/srv\"]\nschedule = {{ cron = \"0 2 * * *\" }}\n{policy_extra}"
            ),
        ));
        files.push((
            "repositories/main.toml".into(),
            testing::repository("/srv/repo"),
        ));
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        testing::config(&refs)
    }

    #[test]
    fn a_first_revision_adds_everything_and_a_second_identical_one_nothing() {
        let config = fleet("retention = { keep-daily = 7 }\n", &["a", "b"]);
        let want = desired(&config);
        let actions = diff(&FleetState::default(), &want);
        let names: Vec<_> = actions.iter().map(|a| (a.name(), a.subject())).collect();
        assert_eq!(
            names,
            [
                ("host-added", "a".to_owned()),
                ("host-added", "b".to_owned()),
                ("assignment-added", "a/web/backup".to_owned()),
                ("assignment-added", "a/web/forget".to_owned()),
                ("assignment-added", "b/web/backup".to_owned()),
                ("assignment-added", "b/web/forget".to_owned()),
                ("repository-added", "main".to_owned()),
            ]
        );
        assert!(diff(&want, &desired(&config)).is_empty());
    }

    #[test]
    fn a_schedule_change_is_one_change_per_host_naming_both_schedules() {
        let old = desired(&fleet("", &["a"]));
        let config = fleet("", &["a"]);
        let mut new = desired(&config);
        new.assignments[0].schedule = "cron `0 3 * * *` (UTC)".into();
        let actions = diff(&old, &new);
        assert_eq!(actions.len(), 1);
        let Action::AssignmentChanged { old, new } = &actions[0] else {
            panic!("{actions:?}");
        };
        assert_eq!(
            describe_change(old, new, Some(&[])),
            "schedule: cron `0 2 * * *` (UTC) → cron `0 3 * * *` (UTC)"
        );
    }

    #[test]
    fn changing_paths_changes_the_backup_but_not_the_forget_and_names_the_keys() {
        let config = fleet("retention = { keep-daily = 7 }\n", &["a"]);
        let old = desired(&config);
        let mut changed = config.clone();
        let policy = changed.policies.get_mut("web").unwrap();
        policy.paths.push("/etc".into());
        policy.max_duration = jiff::SignedDuration::from_hours(7);
        let actions = diff(&old, &desired(&changed));
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(actions[0].subject(), "a/web/backup");
        let Action::AssignmentChanged { old, new } = &actions[0] else {
            panic!("{actions:?}");
        };

        let keys = ChangedKeys::between(Some(&config), &changed);
        assert_eq!(
            keys.get("web", JobKind::Backup),
            Some(&["max-duration".to_owned(), "paths".to_owned()][..])
        );
        assert_eq!(keys.get("web", JobKind::Forget), Some(&[][..]));
        assert_eq!(
            describe_change(old, new, keys.get("web", JobKind::Backup)),
            "changed: max-duration, paths"
        );
        assert_eq!(
            describe_change(
                old,
                new,
                ChangedKeys::between(None, &changed).get("web", JobKind::Backup)
            ),
            "the job's settings changed (which ones cannot be told: the revision in force \
             before was not loaded)"
        );
    }

    #[test]
    fn retention_and_hook_changes_name_the_nested_key() {
        let config = fleet("retention = { keep-daily = 7 }\n", &["a"]);
        let mut changed = config.clone();
        let policy = changed.policies.get_mut("web").unwrap();
        let retention = policy.retention.as_mut().expect("a retention");
        retention.keep_daily = Some(14);
        retention.keep_weekly = Some(4);
        policy.hooks.before.push(vec!["/usr/local/bin/dump".into()]);

        let keys = ChangedKeys::between(Some(&config), &changed);
        assert_eq!(
            keys.get("web", JobKind::Forget),
            Some(
                &[
                    "retention.keep-daily".to_owned(),
                    "retention.keep-weekly".to_owned()
                ][..]
            )
        );
        assert_eq!(
            keys.get("web", JobKind::Backup),
            Some(&["hooks.before".to_owned()][..])
        );
    }

    #[test]
    fn removing_a_host_removes_its_assignments_and_pausing_is_one_action() {
        let old = desired(&fleet("", &["a", "b"]));
        let new = desired(&fleet("", &["a"]));
        let names: Vec<_> = diff(&old, &new)
            .iter()
            .map(|a| (a.name(), a.subject()))
            .collect();
        assert_eq!(
            names,
            [
                ("host-removed", "b".to_owned()),
                ("assignment-removed", "b/web/backup".to_owned())
            ]
        );

        let mut paused = fleet("", &["a"]);
        paused.hosts.get_mut("a").unwrap().paused = true;
        let actions = diff(&desired(&fleet("", &["a"])), &desired(&paused));
        assert_eq!(actions, [Action::HostPaused { host: "a".into() }]);
    }

    #[test]
    fn host_time_zones_reach_the_schedule_text() {
        let (config, _) = testing::example_config_with_identity();
        let state = desired(&config);
        let db = state
            .assignments
            .iter()
            .find(|a| &*a.key.host == "db-1" && a.key.kind == JobKind::Backup)
            .unwrap();
        assert!(db.schedule.contains("Europe/Berlin"), "{}", db.schedule);
        assert!(
            state.assignments.windows(2).all(|w| w[0].key < w[1].key),
            "sorted by key"
        );
    }
}
