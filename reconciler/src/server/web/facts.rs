//! What the view knows about the fleet at one moment, gathered once per request from the
//! store and the running server, and judged: for each host × policy, whether its backups are
//! fine, failing, stale (older than twice the schedule's interval) or not there yet, with a
//! sentence saying what is wrong and why.
//!
//! The pages, the JSON API and `/metrics` all read this one picture, so they never disagree.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::config::effective::in_zone;
use crate::config::model::Config;
use crate::server::model::{AssignmentKey, JobKind, JobState};
use crate::server::run::{Applied, Server};
use crate::server::scheduler::jitter_offset;
use crate::server::store::SessionRecord;
use crate::server::store::queries::{BackupFacts, InventorySize, JobBrief, PendingKey, Revisions};

use super::error::WebError;

/// A backup older than this many schedule intervals is stale.
pub const STALE_INTERVALS: i32 = 2;

/// The fleet as the view shows it.
pub struct Fleet {
    pub now: Timestamp,
    /// The revision in force and its configuration.
    pub applied: Option<Arc<Applied>>,
    pub revisions: Revisions,
    /// Why the last fetch of the config repository failed.
    pub source_error: Option<String>,
    /// Hosts with an authenticated agent right now.
    pub connected: BTreeSet<String>,
    /// The newest session of each host that ever connected.
    pub sessions: HashMap<String, SessionRecord>,
    /// Every backup assignment (host × policy), sorted by host and policy.
    pub backups: Vec<BackupStatus>,
    /// Jobs that wait or run, by state.
    pub active_jobs: Vec<(JobState, u64)>,
    pub pending: Vec<PendingKey>,
    pub inventories: Vec<InventorySize>,
    /// Applied assignments of every kind.
    pub assignments: usize,
}

/// How a host × policy's backups stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last backup succeeded and is recent enough.
    Ok,
    /// The last backup that ended did not succeed.
    Failed,
    /// The last good backup is older than twice the schedule's interval.
    Stale,
    /// No backup has succeeded yet, and none failed.
    Never,
    /// The host is paused: it runs nothing, on purpose.
    Paused,
}

impl Health {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Failed => "failed",
            Health::Stale => "stale",
            Health::Never => "never",
            Health::Paused => "paused",
        }
    }

    /// Whether an operator should look at it.
    #[must_use]
    pub fn is_problem(self) -> bool {
        matches!(self, Health::Failed | Health::Stale)
    }
}

/// Where a host's agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    Connected {
        since: Timestamp,
    },
    /// Connected before, not now; `since` is when it was last seen.
    Offline {
        since: Timestamp,
    },
    /// Enrolled, but its agent never connected.
    NeverConnected,
    /// The host has no `agent-key` in the revision in force.
    NotEnrolled,
}

/// One host × policy's backups, judged.
#[derive(Debug, Clone)]
pub struct BackupStatus {
    pub host: String,
    pub policy: String,
    pub repository: String,
    pub health: Health,
    /// The newest backup job, in any state.
    pub newest: Option<JobBrief>,
    /// The newest backup job that ended.
    pub last_ended: Option<JobBrief>,
    /// The newest backup that succeeded: its job id and when it finished.
    pub last_success: Option<(String, Timestamp)>,
    /// Time since the last good backup finished.
    pub age: Option<SignedDuration>,
    /// The schedule's average interval between runs.
    pub interval: Option<SignedDuration>,
    /// When the next run is due (with this host's jitter).
    pub next_run: Option<Timestamp>,
    /// What is wrong and why, in plain words; for a healthy backup, how old it is.
    pub message: String,
}

/// Gathers the fleet (of one host when `host` is given) from the store and the server.
pub async fn gather(server: &Arc<Server>, host: Option<&str>) -> Result<Fleet, WebError> {
    let only = host.map(str::to_owned);
    let stored = server
        .with_store(
            move |store| -> Result<_, crate::server::store::StoreError> {
                let revisions = store.revisions_seen()?;
                let backups = store.backup_facts(only.as_deref())?;
                let sessions = store.latest_sessions()?;
                let active = store.active_job_counts()?;
                let pending = store.pending_key_records()?;
                let inventories = store.inventory_sizes(only.as_deref())?;
                let assignments = store.applied_state()?.assignments.len();
                Ok((
                    revisions,
                    backups,
                    sessions,
                    active,
                    pending,
                    inventories,
                    assignments,
                ))
            },
        )
        .await
        .map_err(|e| WebError::internal("reading the fleet's state", e))?;
    let (revisions, facts, sessions, active_jobs, pending, inventories, assignments) = stored;

    let now = Timestamp::now();
    let applied = server.applied();
    let connected: BTreeSet<String> = server.hub.connected().into_iter().collect();
    let sessions: HashMap<String, SessionRecord> =
        sessions.into_iter().map(|s| (s.host.clone(), s)).collect();
    let source_error = server.source_error.lock().expect("source lock").clone();

    let mut fleet = Fleet {
        now,
        applied,
        revisions,
        source_error,
        connected,
        sessions,
        backups: Vec::new(),
        active_jobs,
        pending,
        inventories,
        assignments,
    };
    fleet.backups = judge_all(server, &fleet, facts);
    Ok(fleet)
}

impl Fleet {
    /// The configuration in force, if a revision was applied.
    #[must_use]
    pub fn config(&self) -> Option<&Config> {
        self.applied.as_deref().map(|a| &a.config)
    }

    /// Where a host's agent is.
    #[must_use]
    pub fn agent(&self, host: &str) -> AgentState {
        if self.connected.contains(host) {
            let since = self.sessions.get(host).map_or(self.now, |s| s.connected_at);
            return AgentState::Connected { since };
        }
        if let Some(session) = self.sessions.get(host) {
            return AgentState::Offline {
                since: session.disconnected_at.unwrap_or(session.connected_at),
            };
        }
        let enrolled = self
            .config()
            .and_then(|c| c.hosts.get(host))
            .is_some_and(|h| h.agent_key.is_some());
        if enrolled {
            AgentState::NeverConnected
        } else {
            AgentState::NotEnrolled
        }
    }

    /// The backups of one host.
    pub fn backups_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a BackupStatus> {
        self.backups.iter().filter(move |b| b.host == host)
    }
}

/// Judges every backup assignment. Intervals are computed once per policy and time zone.
fn judge_all(server: &Server, fleet: &Fleet, facts: Vec<BackupFacts>) -> Vec<BackupStatus> {
    let mut intervals: HashMap<(String, String), Option<SignedDuration>> = HashMap::new();
    let scheduler = server.scheduler.lock().expect("scheduler lock");
    let mut out = Vec::with_capacity(facts.len());
    for fact in facts {
        let config = fleet.config();
        let host = config.and_then(|c| c.hosts.get(&fact.host));
        let policy = config.and_then(|c| c.policies.get(&fact.policy));
        let (interval, next_run) = match (host, policy) {
            (Some(host), Some(policy)) => {
                let schedule = in_zone(&policy.schedule, host);
                let zone = schedule
                    .timezone
                    .as_ref()
                    .map_or_else(|| "UTC".to_owned(), |z| z.name.to_string());
                let interval = *intervals
                    .entry((policy.name.clone(), zone))
                    .or_insert_with(|| {
                        schedule
                            .timezone
                            .as_ref()
                            .and_then(|zone| schedule.mean_interval(zone))
                    });
                let key = AssignmentKey::new(&fact.host, &fact.policy, JobKind::Backup);
                let next = scheduler
                    .next_instant(&key)
                    .map(|instant| instant + jitter_offset(&key, schedule.jitter));
                (interval, next)
            }
            _ => (None, None),
        };
        let paused = host.is_some_and(|h| h.paused);
        out.push(judge(fleet, fact, interval, next_run, paused));
    }
    out
}

/// Judges one backup assignment and words what is wrong.
fn judge(
    fleet: &Fleet,
    fact: BackupFacts,
    interval: Option<SignedDuration>,
    next_run: Option<Timestamp>,
    paused: bool,
) -> BackupStatus {
    let now = fleet.now;
    let age = fact
        .last_success
        .as_ref()
        .map(|(_, at)| now.duration_since(*at).max(SignedDuration::ZERO));
    let stale = match (age, interval) {
        (Some(age), Some(interval)) => age > interval * STALE_INTERVALS,
        _ => false,
    };
    let failed = fact
        .last_ended
        .as_ref()
        .is_some_and(|job| job.state != JobState::Succeeded);
    let health = if paused {
        Health::Paused
    } else if failed {
        Health::Failed
    } else if stale {
        Health::Stale
    } else if fact.last_success.is_some() {
        Health::Ok
    } else {
        Health::Never
    };

    let subject = format!("{}/{}", fact.host, fact.policy);
    let mut message = match health {
        Health::Paused => format!(
            "{} is paused in the config repository: it runs no backups until `paused` is \
             removed",
            fact.host
        ),
        Health::Ok => match age {
            Some(age) => format!("last backup of {subject} {} ago", human(age)),
            None => format!("{subject} backed up"),
        },
        Health::Failed => {
            let job = fact.last_ended.as_ref();
            let ended_as = job.map_or("failed", |j| j.state.as_str());
            let when = job
                .and_then(|j| j.finished_at)
                .map(|at| format!(" {} ago", human(now.duration_since(at))))
                .unwrap_or_default();
            let why = job.and_then(why_it_ended).unwrap_or_default();
            let last_good = match age {
                Some(age) => format!("; the last good backup is {} old", human(age)),
                None => "; no backup of it has succeeded yet".to_owned(),
            };
            format!("the last backup of {subject} {ended_as}{when}{why}{last_good}")
        }
        Health::Stale => {
            let age = age.unwrap_or(SignedDuration::ZERO);
            let expected = interval
                .map(|i| format!(" (it runs every {})", human(i)))
                .unwrap_or_default();
            format!("no backup of {subject} for {}{expected}", human(age))
        }
        Health::Never => format!("no backup of {subject} yet"),
    };
    if health != Health::Ok && health != Health::Paused {
        message.push_str(&cause(fleet, &fact, next_run));
    }

    BackupStatus {
        host: fact.host,
        policy: fact.policy,
        repository: fact.repository,
        health,
        newest: fact.newest,
        last_ended: fact.last_ended,
        last_success: fact.last_success,
        age,
        interval,
        next_run,
        message,
    }
}

/// `: <the job's message or reason>`, when it has one.
fn why_it_ended(job: &JobBrief) -> Option<String> {
    let text = job
        .message
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .or(job.reason.as_deref())?;
    Some(format!(": {}", text.trim()))
}

/// What explains a backup that is not fine: the agent's absence, a run in progress, or when
/// the next run is due.
fn cause(fleet: &Fleet, fact: &BackupFacts, next_run: Option<Timestamp>) -> String {
    let now = fleet.now;
    match fleet.agent(&fact.host) {
        AgentState::Offline { since } => {
            return format!(
                ": its agent is offline since {} ({} ago); check restic-manager-agent on {}",
                page_time(since),
                human(now.duration_since(since)),
                fact.host
            );
        }
        AgentState::NeverConnected => {
            return format!(
                ": its agent has never connected; install and start restic-manager-agent on {}",
                fact.host
            );
        }
        AgentState::NotEnrolled => {
            return format!(
                ": {} has no agent-key yet; start its agent and commit the key it shows \
                 (see pending agents)",
                fact.host
            );
        }
        AgentState::Connected { .. } => {}
    }
    if let Some(job) = fact.newest.as_ref().filter(|j| !j.state.is_terminal()) {
        let since = job.started_at.unwrap_or(job.created_at);
        let reason = job
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return format!(
            "; a backup is {} since {}{reason}",
            job.state,
            page_time(since)
        );
    }
    match next_run {
        Some(next) if next > now => format!("; the next run is due {}", page_time(next)),
        _ => String::new(),
    }
}

/// A duration in words: `42 s`, `17 min`, `5 h 10 min`, `3 days`.
#[must_use]
pub fn human(duration: SignedDuration) -> String {
    let secs = duration.as_secs().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..172_800 => {
            let minutes = (secs % 3_600) / 60;
            if minutes == 0 {
                format!("{} h", secs / 3_600)
            } else {
                format!("{} h {minutes} min", secs / 3_600)
            }
        }
        _ => format!("{} days", secs / 86_400),
    }
}

/// A time as the pages show it: `2026-12-04 03:12:05 UTC`.
#[must_use]
pub fn page_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time as the API gives it: RFC 3339 in UTC, whole seconds.
#[must_use]
pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    const DAY: i64 = 86_400;

    fn fleet(now: Timestamp) -> Fleet {
        Fleet {
            now,
            applied: None,
            revisions: Revisions::default(),
            source_error: None,
            connected: BTreeSet::new(),
            sessions: HashMap::new(),
            backups: Vec::new(),
            active_jobs: Vec::new(),
            pending: Vec::new(),
            inventories: Vec::new(),
            assignments: 0,
        }
    }

    fn job(id: &str, state: JobState, finished: Option<i64>, message: Option<&str>) -> JobBrief {
        JobBrief {
            id: id.into(),
            host: "web-1".into(),
            policy: "system".into(),
            kind: JobKind::Backup,
            repository: "local".into(),
            state,
            reason: None,
            outcome: None,
            exit_code: None,
            message: message.map(str::to_owned),
            catch_up: false,
            instant: None,
            created_at: at(finished.unwrap_or(0) - 60),
            started_at: None,
            finished_at: finished.map(at),
        }
    }

    fn facts(last_ended: Option<JobBrief>, success: Option<i64>) -> BackupFacts {
        BackupFacts {
            host: "web-1".into(),
            policy: "system".into(),
            repository: "local".into(),
            newest: last_ended.clone(),
            last_ended,
            last_success: success.map(|s| ("web-1.system.backup.1".to_owned(), at(s))),
        }
    }

    fn offline_since(fleet: &mut Fleet, secs: i64) {
        fleet.sessions.insert(
            "web-1".into(),
            SessionRecord {
                host: "web-1".into(),
                remote: "192.0.2.1:5000".into(),
                agent_version: "1".into(),
                restic_version: None,
                connected_at: at(secs - 3600),
                disconnected_at: Some(at(secs)),
            },
        );
    }

    #[test]
    fn a_backup_older_than_twice_its_interval_is_stale_and_the_offline_agent_is_named() {
        let mut fleet = fleet(at(3 * DAY + 100));
        offline_since(&mut fleet, 100);
        let ok = job("b1", JobState::Succeeded, Some(100), None);
        let status = judge(
            &fleet,
            facts(Some(ok), Some(100)),
            Some(SignedDuration::from_hours(24)),
            None,
            false,
        );
        assert_eq!(status.health, Health::Stale);
        assert_eq!(
            status.message,
            "no backup of web-1/system for 3 days (it runs every 24 h): its agent is offline \
             since 2027-01-15 08:01:40 UTC (3 days ago); check restic-manager-agent on web-1"
        );
        assert_eq!(status.age, Some(SignedDuration::from_secs(3 * DAY)));

        // Within twice the interval it is fine, and the message says how old it is.
        let mut fleet = super::tests::fleet(at(DAY + 100));
        fleet.connected.insert("web-1".into());
        let ok = job("b1", JobState::Succeeded, Some(100), None);
        let status = judge(
            &fleet,
            facts(Some(ok), Some(100)),
            Some(SignedDuration::from_hours(24)),
            None,
            false,
        );
        assert_eq!(status.health, Health::Ok);
        assert_eq!(status.message, "last backup of web-1/system 24 h ago");
    }

    #[test]
    fn a_failed_last_backup_says_why_and_how_old_the_last_good_one_is() {
        let mut fleet = fleet(at(2 * 3600));
        fleet.connected.insert("web-1".into());
        let failed = job(
            "b2",
            JobState::Failed,
            Some(3600),
            Some("repository is locked"),
        );
        let status = judge(
            &fleet,
            facts(Some(failed), Some(0)),
            Some(SignedDuration::from_hours(1)),
            Some(at(3 * 3600)),
            false,
        );
        assert_eq!(status.health, Health::Failed);
        assert_eq!(
            status.message,
            "the last backup of web-1/system failed 1 h ago: repository is locked; the last \
             good backup is 2 h old; the next run is due 2027-01-15 11:00:00 UTC"
        );

        let missed = job("b3", JobState::Missed, Some(3600), None);
        let status = judge(&fleet, facts(Some(missed), None), None, None, false);
        assert_eq!(status.health, Health::Failed);
        assert!(
            status
                .message
                .starts_with("the last backup of web-1/system missed 1 h ago; no backup of it"),
            "{}",
            status.message
        );
    }

    #[test]
    fn no_backup_yet_and_a_paused_host_are_not_alarms_but_say_why() {
        let fleet = fleet(at(0));
        let status = judge(&fleet, facts(None, None), None, None, false);
        assert_eq!(status.health, Health::Never);
        assert!(!status.health.is_problem());
        assert_eq!(
            status.message,
            "no backup of web-1/system yet: web-1 has no agent-key yet; start its agent and \
             commit the key it shows (see pending agents)"
        );
        let status = judge(&fleet, facts(None, Some(-10 * DAY)), None, None, true);
        assert_eq!(status.health, Health::Paused);
        assert!(status.message.contains("is paused"), "{}", status.message);
    }

    #[test]
    fn durations_read_as_words() {
        let s = SignedDuration::from_secs;
        assert_eq!(human(s(42)), "42 s");
        assert_eq!(human(s(17 * 60 + 5)), "17 min");
        assert_eq!(human(s(5 * 3600)), "5 h");
        assert_eq!(human(s(5 * 3600 + 600)), "5 h 10 min");
        assert_eq!(human(s(3 * 86_400 + 7)), "3 days");
        assert_eq!(human(s(-5)), "0 s");
    }

    #[test]
    fn times_are_utc_with_whole_seconds() {
        let at: Timestamp = "2026-12-04T03:12:05.123Z".parse().unwrap();
        assert_eq!(rfc3339(at), "2026-12-04T03:12:05Z");
        assert_eq!(page_time(at), "2026-12-04 03:12:05 UTC");
    }
}
