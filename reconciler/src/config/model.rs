//! The validated config: types that can only hold what restic-manager can act on.
//!
//! A [`Config`] exists only when every file of a revision parsed and every check passed, so
//! code that receives one never re-checks names, schedules, paths or references.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

pub use super::raw::{MissedRun, NotifyEvent};
pub use super::retention::{GroupBy, KeepWithin, Retention};
pub use super::schedule::{Schedule, Trigger};
pub use super::url::{Backend, RepoUrl};

/// A whole, valid config repository.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub hosts: BTreeMap<String, Host>,
    pub repositories: BTreeMap<String, Repository>,
    pub policies: BTreeMap<String, Policy>,
    pub notifications: BTreeMap<String, Notification>,
}

/// A machine that runs an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The file stem.
    pub name: String,
    /// What restic records as `--host`.
    pub hostname: String,
    /// The agent's public key; `None` until the host is enrolled.
    pub agent_key: Option<AgentKey>,
    pub labels: BTreeMap<String, String>,
    pub timezone: Option<TimeZoneName>,
    pub paused: bool,
    pub description: Option<String>,
}

/// An agent's ed25519 public key, written `ed25519:<base64 of 32 bytes>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentKey(pub [u8; 32]);

impl AgentKey {
    /// The prefix of the text form.
    pub const PREFIX: &'static str = "ed25519:";

    /// Parses the text form, checking the bytes are a valid ed25519 point.
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine as _;

        let Some(encoded) = text.strip_prefix(Self::PREFIX) else {
            return Err(format!(
                "agent-key must start with `{}`, followed by the agent's public key in base64",
                Self::PREFIX
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("agent-key is not valid base64: {e}"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!("agent-key must be 32 bytes, this one is {} bytes", b.len())
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "agent-key is not a valid ed25519 public key".to_owned())?;
        // A weak key (of small order) lets anyone forge signatures that verify against it.
        if key.is_weak() {
            return Err("agent-key is a weak ed25519 key that anyone could sign for".to_owned());
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        write!(
            f,
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentKey({self})")
    }
}

/// A checked IANA time zone name. Cheap to clone: each host's assignments carry one.
#[derive(Debug, Clone)]
pub struct TimeZoneName {
    pub name: Arc<str>,
    pub zone: jiff::tz::TimeZone,
}

impl TimeZoneName {
    /// Looks a name up in the system's time zone database, or the copy bundled with the
    /// binary where the system has none.
    pub fn parse(name: &str) -> Result<Self, String> {
        jiff::tz::TimeZone::get(name)
            .map(|zone| Self {
                name: Arc::from(name),
                zone,
            })
            .map_err(|_| {
                format!(
                    "unknown time zone `{name}`: use an IANA name such as `UTC` or \
                     `Europe/Berlin`"
                )
            })
    }

    /// Coordinated Universal Time, the default zone.
    #[must_use]
    pub fn utc() -> Self {
        Self {
            name: Arc::from("UTC"),
            zone: jiff::tz::TimeZone::UTC,
        }
    }
}

impl PartialEq for TimeZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TimeZoneName {}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A restic repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    pub url: RepoUrl,
    pub password: Sealed,
    pub env: BTreeMap<String, EnvValue>,
    pub append_only: bool,
    pub maintenance: Option<Maintenance>,
    pub description: Option<String>,
}

/// The credential forget, prune and check use instead of the everyday one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub url: Option<RepoUrl>,
    pub env: BTreeMap<String, EnvValue>,
}

/// Age ASCII armor, as committed. Only the server's identity can open it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// An environment value: sealed, or plain for values that are not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Sealed(Sealed),
    Plain(String),
}

/// What to back up on which hosts, when, and how long to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub hosts: Selector,
    pub repository: String,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: bool,
    pub tags: Vec<String>,
    pub one_file_system: bool,
    pub schedule: Schedule,
    pub missed_run: MissedRun,
    pub max_duration: jiff::SignedDuration,
    pub partial_is_success: bool,
    pub retention: Option<Retention>,
    /// Present exactly when `retention` is.
    pub forget: Option<Schedule>,
    pub prune: Option<Prune>,
    pub check: Option<Check>,
    pub hooks: Hooks,
}

/// Default longest run of a backup.
pub const DEFAULT_MAX_DURATION: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Default longest run of one hook command.
pub const DEFAULT_HOOK_TIMEOUT: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

/// Default forget schedule when a policy has a retention but no `forget` table.
pub const DEFAULT_FORGET_CRON: &str = "0 3 * * *";

/// Which hosts an object applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub all: bool,
    pub names: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether `host` is selected: `all`, or named, or carrying every listed label.
    #[must_use]
    pub fn matches(&self, host: &Host) -> bool {
        self.all
            || self.names.contains(&host.name)
            || (!self.labels.is_empty()
                && self
                    .labels
                    .iter()
                    .all(|(k, v)| host.labels.get(k) == Some(v)))
    }
}

/// The prune job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Prune {
    pub schedule: Schedule,
    pub max_unused: Option<String>,
}

/// The check job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Check {
    pub schedule: Schedule,
    pub read_data_subset: Option<String>,
}

/// Commands around a backup, each an argv vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hooks {
    pub before: Vec<Vec<String>>,
    pub after: Vec<Vec<String>>,
    pub on_failure: Vec<Vec<String>>,
    #[serde(serialize_with = "super::schedule::serialize_duration")]
    pub timeout: jiff::SignedDuration,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            before: Vec::new(),
            after: Vec::new(),
            on_failure: Vec::new(),
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

impl Hooks {
    /// Whether no hook is declared.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty() && self.on_failure.is_empty()
    }
}

/// Where failures and recoveries are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub name: String,
    pub events: BTreeSet<NotifyEvent>,
    pub hosts: Selector,
    /// Empty means every policy.
    pub policies: BTreeSet<String>,
    pub target: Target,
}

/// A notification target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Webhook {
        url: EnvValue,
        body: Option<String>,
        content_type: String,
    },
    Ntfy {
        url: EnvValue,
    },
    Healthchecks {
        url: EnvValue,
    },
}
