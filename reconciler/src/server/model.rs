//! The server's own vocabulary, shared by the store, reconcile, the scheduler and dispatch:
//! what an assignment is once applied, the actions a revision causes, the states a job moves
//! through, and the record of a revision.
//!
//! These types hold plain data (strings, timestamps, numbers) so the store can persist them
//! without knowing the config model, and the scheduler can be tested without a store.

use std::fmt;
use std::sync::Arc;

pub use protocol::JobKind;

/// One scheduled duty: a policy's job of one kind on one host. The names are shared: a fleet
/// of 10,000 hosts holds each name once, however many assignments refer to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssignmentKey {
    pub host: Arc<str>,
    pub policy: Arc<str>,
    pub kind: JobKind,
}

impl AssignmentKey {
    #[must_use]
    pub fn new(host: &str, policy: &str, kind: JobKind) -> Self {
        Self {
            host: host.into(),
            policy: policy.into(),
            kind,
        }
    }
}

impl fmt::Display for AssignmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.host, self.policy, self.kind)
    }
}

/// An assignment as the store keeps it: enough to diff two revisions and to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedAssignment {
    pub key: AssignmentKey,
    pub repository: Arc<str>,
    /// The schedule in a stable text form (``cron `30 1 * * *` (Europe/Berlin), jitter up to
    /// 30m``), compared to tell a schedule change from other changes.
    pub schedule: Arc<str>,
    /// A digest of everything else the job carries (paths, excludes, retention, hooks, …), so
    /// a change to the job's content is seen even when the schedule stays. Shared by every
    /// host the policy applies to.
    pub content_digest: Arc<str>,
}

/// A host as the store keeps it. Whether it is paused lives here, not in its assignments:
/// pausing a host is one change, not one per assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    pub paused: bool,
    /// The committed `agent-key`, in its text form.
    pub agent_key: Option<String>,
}

/// The whole fleet as the server schedules it: what a revision asks for (desired) or what the
/// store holds (applied). Both sides of a diff have this one shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetState {
    pub hosts: std::collections::BTreeMap<String, HostRecord>,
    /// Sorted by key.
    pub assignments: Vec<AppliedAssignment>,
    /// Each repository's location (its URL, which never holds credentials), by name; `None`
    /// for one a server before schema version 3 recorded, until the next applied revision
    /// fills it in.
    pub repositories: std::collections::BTreeMap<String, Option<String>>,
}

/// What applying a revision changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    HostAdded {
        host: String,
    },
    HostRemoved {
        host: String,
    },
    HostPaused {
        host: String,
    },
    HostResumed {
        host: String,
    },
    /// The host's agent key changed (or was set or removed).
    AgentKeyChanged {
        host: String,
    },
    AssignmentAdded(AppliedAssignment),
    AssignmentChanged {
        old: AppliedAssignment,
        new: AppliedAssignment,
    },
    /// Stops the schedule; snapshots are never touched.
    AssignmentRemoved(AppliedAssignment),
    /// A repository is new to the fleet: its hosts run `init` before their first backup.
    RepositoryAdded {
        repository: String,
    },
    /// The repository's file is gone; its snapshots stay where they are.
    RepositoryRemoved {
        repository: String,
    },
    /// The repository's URL changed: its hosts run `init` again (which leaves an existing
    /// repository as it is) before their next job there.
    RepositoryMoved {
        repository: String,
        from: String,
        to: String,
    },
}

impl Action {
    /// The audit log's name for this kind of change.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Action::HostAdded { .. } => "host-added",
            Action::HostRemoved { .. } => "host-removed",
            Action::HostPaused { .. } => "host-paused",
            Action::HostResumed { .. } => "host-resumed",
            Action::AgentKeyChanged { .. } => "agent-key-changed",
            Action::AssignmentAdded(_) => "assignment-added",
            Action::AssignmentChanged { .. } => "assignment-changed",
            Action::AssignmentRemoved(_) => "assignment-removed",
            Action::RepositoryAdded { .. } => "repository-added",
            Action::RepositoryRemoved { .. } => "repository-removed",
            Action::RepositoryMoved { .. } => "repository-moved",
        }
    }

    /// What the change concerns: a host, `host/policy/kind`, or a repository.
    #[must_use]
    pub fn subject(&self) -> String {
        match self {
            Action::HostAdded { host }
            | Action::HostRemoved { host }
            | Action::HostPaused { host }
            | Action::HostResumed { host }
            | Action::AgentKeyChanged { host } => host.clone(),
            Action::AssignmentAdded(a) | Action::AssignmentRemoved(a) => a.key.to_string(),
            Action::AssignmentChanged { new, .. } => new.key.to_string(),
            Action::RepositoryAdded { repository }
            | Action::RepositoryRemoved { repository }
            | Action::RepositoryMoved { repository, .. } => repository.clone(),
        }
    }
}

/// The life of a job. Terminal states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its agent.
    Queued,
    /// Waiting for another job on the same repository to finish.
    Deferred,
    /// Sent to the agent, not yet accepted.
    Dispatched,
    Running,
    Succeeded,
    Partial,
    Failed,
    TimedOut,
    Cancelled,
    /// Its deadline passed before it could run.
    Missed,
}

impl JobState {
    pub const ALL: [JobState; 10] = [
        JobState::Queued,
        JobState::Deferred,
        JobState::Dispatched,
        JobState::Running,
        JobState::Succeeded,
        JobState::Partial,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Missed,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Deferred => "deferred",
            JobState::Dispatched => "dispatched",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Partial => "partial",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed-out",
            JobState::Cancelled => "cancelled",
            JobState::Missed => "missed",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobState::Queued | JobState::Deferred | JobState::Dispatched | JobState::Running
        )
    }

    /// The job holds (or may hold) the repository: it was sent to an agent.
    #[must_use]
    pub fn is_in_flight(self) -> bool {
        matches!(self, JobState::Dispatched | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A commit the server fetched, as shown on the status page and in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionInfo {
    pub commit: String,
    pub author: String,
    pub summary: String,
    pub committed_at: Option<jiff::Timestamp>,
}

/// Schedule bookkeeping for one assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub key: AssignmentKey,
    /// The nominal instant (before jitter) of the last run that was queued.
    pub last_instant: Option<jiff::Timestamp>,
    /// The nominal instant of the next run.
    pub next_instant: Option<jiff::Timestamp>,
}

/// Stable job id for a scheduled run: the same assignment and instant always give the same
/// id, so a restart that recomputes the schedule cannot queue a run twice.
#[must_use]
pub fn scheduled_job_id(key: &AssignmentKey, instant: jiff::Timestamp) -> String {
    format!(
        "{}.{}.{}.{}",
        key.host,
        key.policy,
        key.kind,
        instant.as_second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_parse_their_own_names() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("done"), None);
    }

    #[test]
    fn scheduled_ids_depend_on_assignment_and_instant_only() {
        let key = AssignmentKey {
            host: "web-1".into(),
            policy: "system".into(),
            kind: JobKind::Backup,
        };
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(scheduled_job_id(&key, at), "web-1.system.backup.1800000000");
        assert_ne!(
            scheduled_job_id(&key, at),
            scheduled_job_id(&key, at + jiff::SignedDuration::from_secs(60))
        );
    }
}
