//! The config files as written: serde types that mirror the TOML keys one to one.
//!
//! These types only describe shape (which keys exist, their TOML types). Everything that can be
//! wrong beyond shape — a cron that does not parse, a relative path, a repository that does not
//! exist — is checked when these are turned into the types of [`crate::config::model`]. Values
//! that need an error location later are kept as [`Spanned`]. The JSON Schemas in `schema/` are
//! generated from these same types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;

/// `hosts/<name>.toml`: one machine that runs an agent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(title = "restic-manager host")]
pub struct RawHost {
    /// The host name restic records with `--host`. Default: the file name.
    #[schemars(with = "Option<String>")]
    pub hostname: Option<Spanned<String>>,
    /// The agent's ed25519 public key, as printed by `restic-manager-agent keygen`
    /// (`ed25519:` followed by 32 bytes in base64). Without it the host cannot connect.
    #[schemars(with = "Option<String>")]
    pub agent_key: Option<Spanned<String>>,
    /// Labels (`name = "value"`) that policies and notifications select on. Names use letters,
    /// digits, `-`, `_`, `.` and `/`, start with a letter or digit, at most 63 characters.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub labels: BTreeMap<String, Spanned<String>>,
    /// IANA time zone of the host; schedules without their own time zone use it. Default: UTC.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// A paused host keeps its assignments but runs no jobs. Default: false.
    #[serde(default)]
    pub paused: bool,
    /// Free text shown in the status view.
    pub description: Option<String>,
}

/// `repositories/<name>.toml`: a restic repository and how to reach it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(title = "restic-manager repository")]
pub struct RawRepository {
    /// The restic repository location: an absolute local path (optionally `local:/path`), or
    /// `rest:`, `s3:`, `sftp:`, `b2:`, `azure:`, `gs:` or `rclone:`. Never with credentials
    /// inside: those go in `env`.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// The repository password, sealed to the server's age recipient.
    #[schemars(with = "SecretValue")]
    pub password: Spanned<SecretValue>,
    /// Environment for the backend (for example `AWS_ACCESS_KEY_ID`), names in `A-Z`, `0-9`
    /// and `_`. Secret values must be sealed; non-secret values may be plain strings.
    /// `RESTIC_PASSWORD*` and `RESTIC_REPOSITORY*` are refused: use `password` and `url`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SecretValue>")]
    pub env: BTreeMap<Spanned<String>, Spanned<SecretValue>>,
    /// The everyday credential cannot delete data (an append-only rest-server endpoint or a
    /// bucket policy without delete). forget and prune then need `maintenance`. Default: false.
    #[serde(default)]
    pub append_only: bool,
    /// A second credential used only by forget, prune and check jobs.
    pub maintenance: Option<RawMaintenance>,
    /// Free text shown in the status view.
    pub description: Option<String>,
}

/// The maintenance credential of a repository: what changes for forget, prune and check.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawMaintenance {
    /// Another URL for the same repository (for example a rest-server endpoint without
    /// `--append-only`). Default: the repository's url.
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Environment that replaces the everyday values of the same names.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SecretValue>")]
    pub env: BTreeMap<Spanned<String>, Spanned<SecretValue>>,
}

/// A value that is either sealed (`{ sealed = "<age armor>" }`) or a plain string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretValue {
    /// Age ASCII armor addressed to the server's recipient.
    Sealed(String),
    /// A plain value, allowed only where the value is not a secret.
    Plain(String),
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretValue;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a string or a sealed value `{ sealed = "-----BEGIN AGE ..." }`"#)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretValue, E> {
                Ok(SecretValue::Plain(v.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SecretValue, A::Error> {
                let mut sealed = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "sealed" {
                        return Err(serde::de::Error::unknown_field(&key, &["sealed"]));
                    }
                    if sealed.is_some() {
                        return Err(serde::de::Error::duplicate_field("sealed"));
                    }
                    sealed = Some(map.next_value::<String>()?);
                }
                sealed
                    .map(SecretValue::Sealed)
                    .ok_or_else(|| serde::de::Error::missing_field("sealed"))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for SecretValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A plain string (non-secret values only) or a sealed value made by \
                `restic-manager seal` or `age -r RECIPIENT -a`.",
            "anyOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": {
                        "sealed": {
                            "type": "string",
                            "description": "age ASCII armor addressed to the server's recipient"
                        }
                    },
                    "required": ["sealed"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// `policies/<name>.toml`: what to back up on which hosts, when, and how long to keep it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(title = "restic-manager policy")]
pub struct RawPolicy {
    /// Free text shown in the status view and in plans.
    pub description: Option<String>,
    /// Which hosts run this policy.
    #[schemars(with = "RawSelector")]
    pub hosts: Spanned<RawSelector>,
    /// The name of a file in `repositories/` (without `.toml`).
    #[schemars(with = "String")]
    pub repository: Spanned<String>,
    /// Absolute paths to back up, taken literally (no globs).
    #[schemars(with = "Vec<String>")]
    pub paths: Spanned<Vec<Spanned<String>>>,
    /// restic `--exclude` patterns.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude: Vec<Spanned<String>>,
    /// restic `--exclude-if-present` file names.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude_if_present: Vec<Spanned<String>>,
    /// restic `--exclude-caches`. Default: false.
    #[serde(default)]
    pub exclude_caches: bool,
    /// Extra snapshot tags, without `,` or spaces. Every backup is also tagged
    /// `policy:<name>`, so that prefix is reserved.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tags: Vec<Spanned<String>>,
    /// restic `--one-file-system`. Default: false.
    #[serde(default)]
    pub one_file_system: bool,
    /// When backups run.
    #[schemars(with = "RawSchedule")]
    pub schedule: Spanned<RawSchedule>,
    /// What to do with a run missed while the server or the agent was down. Default: run-once.
    #[schemars(with = "Option<MissedRun>")]
    pub missed_run: Option<Spanned<MissedRun>>,
    /// The longest a backup may run before it is stopped, e.g. `"4h"`. Default: 24h.
    #[schemars(with = "Option<String>")]
    pub max_duration: Option<Spanned<String>>,
    /// Whether a backup that saved a snapshot but could not read some files (restic exit 3)
    /// counts as a success. Default: false (it counts as partial and alerts).
    #[serde(default)]
    pub partial_is_success: bool,
    /// Which snapshots `forget` keeps. Without it, snapshots are never forgotten.
    #[schemars(with = "Option<RawRetention>")]
    pub retention: Option<Spanned<RawRetention>>,
    /// When forget runs. Default with a retention: daily at 03:00.
    #[schemars(with = "Option<RawSchedule>")]
    pub forget: Option<Spanned<RawSchedule>>,
    /// When prune runs, and how. Default: never.
    #[schemars(with = "Option<RawPrune>")]
    pub prune: Option<Spanned<RawPrune>>,
    /// When check runs, and how much data it reads. Default: never.
    #[schemars(with = "Option<RawCheck>")]
    pub check: Option<Spanned<RawCheck>>,
    /// Commands run on the host around the backup.
    pub hooks: Option<RawHooks>,
}

/// Which hosts an object applies to: `all`, or hosts that are named or carry every listed
/// label. At least one of the keys must be set.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSelector {
    /// Every host. Default: false.
    #[serde(default)]
    pub all: bool,
    /// Host names (file names in `hosts/`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub names: Vec<Spanned<String>>,
    /// Labels a host must all carry to be selected.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub labels: BTreeMap<String, Spanned<String>>,
}

/// A schedule: exactly one of a cron expression or a fixed interval.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSchedule {
    /// A cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first.
    #[schemars(with = "Option<String>")]
    pub cron: Option<Spanned<String>>,
    /// A fixed interval instead of cron, at least one minute, e.g. `"6h"` or `"30m"`.
    #[schemars(with = "Option<String>")]
    pub every: Option<Spanned<String>>,
    /// IANA time zone of the cron expression. Default: the host's time zone.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// A random-looking but stable delay per host, up to this long, e.g. `"15m"`.
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Spanned<String>>,
}

/// What happens to a run that was missed while the server or agent was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissedRun {
    /// Run once as soon as possible, however many instants were missed.
    RunOnce,
    /// Wait for the next instant.
    Skip,
}

/// Retention: restic's `forget --keep-*` options.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRetention {
    /// Keep the newest this many snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last this many hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last this many days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last this many weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last this many months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last this many years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this long of the newest snapshot, in restic's form:
    /// years, months, days, hours (`"2y5m7d3h"`).
    #[schemars(with = "Option<String>")]
    pub keep_within: Option<Spanned<String>>,
    /// Keep the newest snapshot of each hour within this long of the newest snapshot, e.g.
    /// `"1y"`.
    #[schemars(with = "Option<String>")]
    pub keep_within_hourly: Option<Spanned<String>>,
    /// Keep the newest snapshot of each day within this long of the newest snapshot, e.g.
    /// `"1y"`.
    #[schemars(with = "Option<String>")]
    pub keep_within_daily: Option<Spanned<String>>,
    /// Keep the newest snapshot of each week within this long of the newest snapshot, e.g.
    /// `"1y"`.
    #[schemars(with = "Option<String>")]
    pub keep_within_weekly: Option<Spanned<String>>,
    /// Keep the newest snapshot of each month within this long of the newest snapshot, e.g.
    /// `"1y"`.
    #[schemars(with = "Option<String>")]
    pub keep_within_monthly: Option<Spanned<String>>,
    /// Keep the newest snapshot of each year within this long of the newest snapshot, e.g.
    /// `"1y"`.
    #[schemars(with = "Option<String>")]
    pub keep_within_yearly: Option<Spanned<String>>,
    /// Keep every snapshot carrying one of these tags.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub keep_tag: Vec<Spanned<String>>,
    /// restic `--group-by`: a comma-separated subset of `host`, `paths`, `tags`.
    /// Default: `"host,paths"`.
    #[schemars(with = "Option<String>")]
    pub group_by: Option<Spanned<String>>,
}

/// The prune job: the keys of a schedule plus prune's own options.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPrune {
    /// A cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first.
    #[schemars(with = "Option<String>")]
    pub cron: Option<Spanned<String>>,
    /// A fixed interval instead of cron, at least one minute, e.g. `"6h"` or `"30m"`.
    #[schemars(with = "Option<String>")]
    pub every: Option<Spanned<String>>,
    /// IANA time zone of the cron expression. Default: the host's time zone.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// A random-looking but stable delay per host, up to this long, e.g. `"15m"`.
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Spanned<String>>,
    /// restic `--max-unused`: a percentage (`"5%"`), a size (`"2G"`) or `"unlimited"`.
    /// Default: restic's own.
    #[schemars(with = "Option<String>")]
    pub max_unused: Option<Spanned<String>>,
}

/// The check job: the keys of a schedule plus how much pack data to read.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawCheck {
    /// A cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first.
    #[schemars(with = "Option<String>")]
    pub cron: Option<Spanned<String>>,
    /// A fixed interval instead of cron, at least one minute, e.g. `"6h"` or `"30m"`.
    #[schemars(with = "Option<String>")]
    pub every: Option<Spanned<String>>,
    /// IANA time zone of the cron expression. Default: the host's time zone.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// A random-looking but stable delay per host, up to this long, e.g. `"15m"`.
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Spanned<String>>,
    /// restic `--read-data-subset`: `"5%"`, `"1/10"` or a size such as `"2G"`.
    /// Default: no data is read, only the structure.
    #[schemars(with = "Option<String>")]
    pub read_data_subset: Option<Spanned<String>>,
}

/// Commands run on the host, each an argv array (never a shell string).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawHooks {
    /// Run before the backup; a failing command fails the job without running restic.
    #[serde(default)]
    #[schemars(with = "Vec<Vec<String>>")]
    pub before: Vec<Spanned<Vec<String>>>,
    /// Run after a successful backup.
    #[serde(default)]
    #[schemars(with = "Vec<Vec<String>>")]
    pub after: Vec<Spanned<Vec<String>>>,
    /// Run after a failed backup.
    #[serde(default)]
    #[schemars(with = "Vec<Vec<String>>")]
    pub on_failure: Vec<Spanned<Vec<String>>>,
    /// How long each command may run, e.g. `"10m"`. Default: 15m.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}

/// `notifications/<name>.toml`: where failures and recoveries are reported. Each file has
/// exactly one target: `webhook`, `ntfy` or `healthchecks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(title = "restic-manager notification")]
pub struct RawNotification {
    /// Free text.
    pub description: Option<String>,
    /// Which events are sent. Default: `["failure", "recovery"]`.
    #[schemars(with = "Option<Vec<NotifyEvent>>")]
    pub events: Option<Spanned<Vec<NotifyEvent>>>,
    /// Which hosts are covered. Default: all.
    #[schemars(with = "Option<RawSelector>")]
    pub hosts: Option<Spanned<RawSelector>>,
    /// Which policies are covered (file names in `policies/`). Default: all.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub policies: Vec<Spanned<String>>,
    /// A generic HTTP POST with a handlebars body.
    pub webhook: Option<RawWebhook>,
    /// An ntfy-style topic URL; the message is sent as the plain-text body of a POST.
    pub ntfy: Option<RawUrlTarget>,
    /// A healthchecks-style ping URL: `<url>` on success, `<url>/fail` on failure.
    pub healthchecks: Option<RawUrlTarget>,
}

/// An event a notification can be sent for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    /// A job failed, timed out, was missed or was blocked by a lock.
    Failure,
    /// A host × policy that had failed succeeded again.
    Recovery,
    /// Every successful job (for ping-style monitors).
    Success,
}

/// A generic webhook target.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawWebhook {
    /// Where to POST. May be sealed when it carries a token.
    #[schemars(with = "SecretValue")]
    pub url: Spanned<SecretValue>,
    /// A handlebars template for the request body. It is checked to compile; the variables
    /// it can use are defined with notification delivery, which the server does not do yet.
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    /// The request's Content-Type. Default: `application/json`.
    pub content_type: Option<String>,
}

/// A target that only needs a URL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawUrlTarget {
    /// The topic or ping URL. May be sealed, since such URLs often work as a password.
    #[schemars(with = "SecretValue")]
    pub url: Spanned<SecretValue>,
}

/// The schedule keys shared by backups, forget, prune and check, borrowed from any of them.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleKeys<'a> {
    pub cron: Option<&'a Spanned<String>>,
    pub every: Option<&'a Spanned<String>>,
    pub timezone: Option<&'a Spanned<String>>,
    pub jitter: Option<&'a Spanned<String>>,
}

macro_rules! schedule_keys {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The schedule keys of this table.
            #[must_use]
            pub fn schedule_keys(&self) -> ScheduleKeys<'_> {
                ScheduleKeys {
                    cron: self.cron.as_ref(),
                    every: self.every.as_ref(),
                    timezone: self.timezone.as_ref(),
                    jitter: self.jitter.as_ref(),
                }
            }
        }
    )*};
}

schedule_keys!(RawSchedule, RawPrune, RawCheck);
