//! The messages the restic-manager server and its agents exchange over their WebSocket.
//!
//! Every frame is one JSON object in a text frame, at most [`MAX_FRAME_BYTES`] long, tagged by
//! its `type`. A connection goes:
//!
//! 1. the agent sends [`AgentMessage::Hello`] (its protocol version, versions, hostname, key);
//! 2. the server answers [`ServerMessage::Challenge`] with a fresh nonce, its own identity and
//!    the time, or [`ServerMessage::Rejected`] when the versions do not match;
//! 3. the agent signs [`auth_message`] with its key and sends [`AgentMessage::Authenticate`];
//! 4. the server checks the signature against the `agent-key` of the host in the applied
//!    configuration and answers [`ServerMessage::Welcome`], or [`ServerMessage::Rejected`]
//!    (unknown key: recorded as pending, with the snippet to commit and a retry hint);
//! 5. then, in any order: the server sends [`ServerMessage::Job`], [`ServerMessage::Cancel`]
//!    and [`ServerMessage::Ack`]; the agent sends [`AgentMessage::Accepted`],
//!    [`AgentMessage::Progress`], [`AgentMessage::Log`] and [`AgentMessage::Result`].
//!
//! A result stays in the agent's state directory until the server acknowledges it, so a
//! result is delivered at least once; the server stores it by job id, so it counts once.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The version of this protocol. Both sides refuse a peer that speaks another.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts. A snapshot inventory of a few thousand snapshots
/// fits comfortably; anything larger is a broken or hostile peer.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// The longest log line an agent sends; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// How often each side pings the other.
pub const PING_INTERVAL_SECS: u64 = 15;

/// How long without any frame from the peer before it is taken for dead.
pub const DEAD_PEER_SECS: u64 = 45;

/// How far the challenge timestamp may be from the agent's clock before it refuses to sign.
pub const CHALLENGE_MAX_SKEW_SECS: i64 = 300;

/// The path on the server the agents connect to.
pub const AGENT_PATH: &str = "/agent/v1";

/// A job's id: unique per job, the same on both sides, and the key for idempotence.
pub type JobId = String;

/// Messages from the agent to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AgentMessage {
    Hello(Hello),
    Authenticate {
        /// Base64 ed25519 signature over [`auth_message`].
        signature: String,
    },
    /// The agent took the job and started it (or had already started it: the id repeats).
    Accepted {
        job_id: JobId,
    },
    /// The agent will not run the job; a [`AgentMessage::Result`] with outcome
    /// [`Outcome::Refused`] follows.
    Refused {
        job_id: JobId,
        reason: String,
    },
    Progress(Progress),
    Log {
        job_id: JobId,
        stream: LogStream,
        line: String,
    },
    Result(Box<JobResult>),
}

/// The first message of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hello {
    pub protocol: u32,
    pub agent_version: String,
    /// `restic version` as restic printed it; `None` when restic could not be run.
    pub restic_version: Option<String>,
    /// The host name this agent acts for: the stem of its file in the config repository.
    pub host: String,
    pub os: String,
    pub arch: String,
    /// The agent's public key, `ed25519:<base64>`.
    pub public_key: String,
    /// Jobs still running on the agent, so a restarted server can match them again.
    #[serde(default)]
    pub running: Vec<JobId>,
}

/// Messages from the server to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    Challenge {
        protocol: u32,
        /// The server's identity: its age recipient.
        server_id: String,
        /// Base64 of 32 random bytes, fresh for this connection.
        nonce: String,
        timestamp: jiff::Timestamp,
    },
    Welcome {
        host: String,
        server_version: String,
    },
    /// The server will not talk to this agent; the connection closes after this message.
    Rejected {
        reason: String,
        /// When the agent should try again; `None` means the agent should not retry without
        /// operator action (a version mismatch).
        retry_after_secs: Option<u64>,
        /// For an unknown key: the host file lines an operator commits to enrol it.
        enrol_snippet: Option<String>,
    },
    Job(Box<JobSpec>),
    Cancel {
        job_id: JobId,
    },
    /// The server stored this job's result; the agent may forget it.
    Ack {
        job_id: JobId,
    },
}

/// The bytes an agent signs to answer a challenge. Binding the server's identity, the nonce,
/// the timestamp, the host and the key means a signature cannot be replayed on another
/// connection, to another server, or for another host.
#[must_use]
pub fn auth_message(
    server_id: &str,
    nonce: &str,
    timestamp: jiff::Timestamp,
    host: &str,
    public_key: &str,
) -> Vec<u8> {
    format!(
        "restic-manager-auth-v{PROTOCOL_VERSION}\n{server_id}\n{nonce}\n{}\n{host}\n{public_key}\n",
        timestamp.as_second()
    )
    .into_bytes()
}

/// Signs a challenge with the agent's key; the result goes in [`AgentMessage::Authenticate`].
#[must_use]
pub fn sign_challenge(key: &ed25519_dalek::SigningKey, message: &[u8]) -> String {
    use ed25519_dalek::Signer as _;
    BASE64.encode(key.sign(message).to_bytes())
}

/// Checks a challenge answer. `public_key` is the raw key from the host's `agent-key`.
pub fn verify_challenge(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &str,
) -> Result<(), ProtocolError> {
    let bytes = BASE64
        .decode(signature.trim())
        .map_err(|_| ProtocolError::BadSignature("signature is not base64".to_owned()))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| ProtocolError::BadSignature("signature is not 64 bytes".to_owned()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|_| ProtocolError::BadSignature("public key is not valid".to_owned()))?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| ProtocolError::BadSignature("signature does not verify".to_owned()))
}

/// The text form of a public key, as written in a host file's `agent-key`.
#[must_use]
pub fn public_key_text(key: &ed25519_dalek::VerifyingKey) -> String {
    format!("ed25519:{}", BASE64.encode(key.as_bytes()))
}

/// Reads the text form of a public key back.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ProtocolError> {
    let b64 = text
        .trim()
        .strip_prefix("ed25519:")
        .ok_or_else(|| ProtocolError::BadKey("public key must start with `ed25519:`".to_owned()))?;
    let bytes = BASE64
        .decode(b64)
        .map_err(|_| ProtocolError::BadKey("public key is not base64".to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| ProtocolError::BadKey("public key is not 32 bytes".to_owned()))
}

/// Why a frame or an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {size} bytes is larger than the limit of {MAX_FRAME_BYTES} bytes")]
    FrameTooLarge { size: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("peer speaks protocol version {theirs}; this side speaks {PROTOCOL_VERSION}")]
    VersionMismatch { theirs: u32 },
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("bad key: {0}")]
    BadKey(String),
}

/// Decodes one text frame, enforcing the size limit first.
pub fn decode<T: serde::de::DeserializeOwned>(frame: &str) -> Result<T, ProtocolError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge { size: frame.len() });
    }
    serde_json::from_str(frame).map_err(|err| {
        // serde_json's message carries line and column, which locate the fault in the frame.
        ProtocolError::Malformed(err.to_string())
    })
}

/// Encodes one message as a text frame.
pub fn encode<T: Serialize>(message: &T) -> Result<String, ProtocolError> {
    let text =
        serde_json::to_string(message).map_err(|err| ProtocolError::Malformed(err.to_string()))?;
    if text.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::FrameTooLarge { size: text.len() });
    }
    Ok(text)
}

/// A credential in transit. It is decrypted by the server only to be sent in a job, and its
/// `Debug` form never shows the value, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that hands it to restic.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Init,
    Backup,
    Forget,
    Prune,
    Check,
    Unlock,
    Snapshots,
}

impl JobKind {
    pub const ALL: [JobKind; 7] = [
        JobKind::Init,
        JobKind::Backup,
        JobKind::Forget,
        JobKind::Prune,
        JobKind::Check,
        JobKind::Unlock,
        JobKind::Snapshots,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Init => "init",
            JobKind::Backup => "backup",
            JobKind::Forget => "forget",
            JobKind::Prune => "prune",
            JobKind::Check => "check",
            JobKind::Unlock => "unlock",
            JobKind::Snapshots => "snapshots",
        }
    }

    /// Parses the name [`JobKind::as_str`] gives.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Jobs that change or read the whole repository and must not overlap a backup to it.
    #[must_use]
    pub fn is_maintenance(self) -> bool {
        matches!(self, JobKind::Forget | JobKind::Prune | JobKind::Check)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job, as data. The agent builds restic's argv from it and checks it against its own
/// local limits; nothing here is ever a command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobSpec {
    pub id: JobId,
    pub kind: JobKind,
    /// The host this job is for (the stem of its file); an agent refuses a job for any other
    /// host.
    pub host: String,
    /// The name restic records for this host's snapshots (`--host`); backups, forgets and
    /// inventories are scoped to it.
    pub hostname: String,
    /// The policy that caused the job; every snapshot is tagged `policy:<name>` and forget is
    /// scoped to that tag.
    pub policy: String,
    pub repository: RepositoryAccess,
    /// Longest run before the agent stops restic.
    pub max_duration_secs: u64,
    /// Run `init` first when the repository does not exist yet.
    #[serde(default)]
    pub init_if_missing: bool,
    #[serde(default)]
    pub backup: Option<BackupSpec>,
    #[serde(default)]
    pub forget: Option<ForgetSpec>,
    #[serde(default)]
    pub check: Option<CheckSpec>,
    #[serde(default)]
    pub prune: Option<PruneSpec>,
    #[serde(default)]
    pub hooks: HookSpec,
}

/// How to reach a repository: where, and the credentials for this one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RepositoryAccess {
    /// The repository's name in the config repository.
    pub name: String,
    /// restic's repository string (`/path`, `rest:https://…`, `s3:…`).
    pub url: String,
    pub password: Secret,
    /// Backend variables (`AWS_ACCESS_KEY_ID`, `RESTIC_REST_USERNAME`, …). Plain values and
    /// opened sealed ones alike travel as secrets.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupSpec {
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    #[serde(default)]
    pub exclude_caches: bool,
    #[serde(default)]
    pub one_file_system: bool,
    /// Tags besides `policy:<name>`, which the agent always adds.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// restic forget's keep rules, as restic spells the flags without the leading dashes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ForgetSpec {
    /// `(flag, value)` pairs such as `("keep-daily", "7")` or `("keep-within", "30d")`.
    pub keep: Vec<(String, String)>,
    /// `--group-by` value, such as `host,paths`.
    pub group_by: String,
    /// Pass `--prune` to forget.
    #[serde(default)]
    pub prune: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PruneSpec {
    #[serde(default)]
    pub max_unused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckSpec {
    #[serde(default)]
    pub read_data_subset: Option<String>,
}

/// Commands around a backup, as argv arrays. The agent runs them only when its local file
/// allows hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HookSpec {
    #[serde(default)]
    pub before: Vec<Vec<String>>,
    #[serde(default)]
    pub after: Vec<Vec<String>>,
    #[serde(default)]
    pub on_failure: Vec<Vec<String>>,
    #[serde(default)]
    pub timeout_secs: u64,
}

impl HookSpec {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty() && self.on_failure.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogStream {
    Stdout,
    Stderr,
    Agent,
}

/// A backup's progress, sent at most once a second per job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Progress {
    pub job_id: JobId,
    pub percent_done: f64,
    #[serde(default)]
    pub files_done: u64,
    #[serde(default)]
    pub total_files: u64,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub seconds_elapsed: u64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    /// A snapshot was made but some files could not be read.
    Partial,
    Failed,
    /// The repository does not exist and the job could not create it.
    RepositoryMissing,
    /// Another process holds a lock on the repository.
    BlockedByLock,
    WrongPassword,
    TimedOut,
    Cancelled,
    /// The agent refused the job (wrong host, outside its local limits).
    Refused,
}

impl Outcome {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::RepositoryMissing => "repository-missing",
            Outcome::BlockedByLock => "blocked-by-lock",
            Outcome::WrongPassword => "wrong-password",
            Outcome::TimedOut => "timed-out",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused => "refused",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finished job reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobResult {
    pub job_id: JobId,
    pub outcome: Outcome,
    /// In plain words: why it failed, what was missing, who holds the lock.
    pub message: String,
    /// restic's exit code, when restic ran.
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
    /// The backup summary restic printed.
    #[serde(default)]
    pub summary: Option<BackupSummary>,
    /// Files restic could not read (partial backups).
    #[serde(default)]
    pub unreadable: Vec<String>,
    /// The repository was created by this job.
    #[serde(default)]
    pub initialized: bool,
    /// The last lines restic wrote to stderr.
    #[serde(default)]
    pub stderr_tail: String,
    /// For snapshot refreshes and after backups: the host's snapshots in the repository.
    #[serde(default)]
    pub snapshots: Option<Vec<Snapshot>>,
}

/// The summary line of `restic backup --json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupSummary {
    pub snapshot_id: Option<String>,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub data_added: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    pub total_duration: f64,
}

/// One snapshot in an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub id: String,
    pub time: String,
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_signed_challenge_verifies_and_any_change_breaks_it() {
        let key = key();
        let public = public_key_text(&key.verifying_key());
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let message = auth_message("age1server", "bm9uY2U=", at, "web-1", &public);
        let signature = sign_challenge(&key, &message);
        let raw = parse_public_key(&public).unwrap();
        verify_challenge(&raw, &message, &signature).unwrap();

        for other in [
            auth_message("age1other", "bm9uY2U=", at, "web-1", &public),
            auth_message("age1server", "b3RoZXI=", at, "web-1", &public),
            auth_message("age1server", "bm9uY2U=", at, "web-2", &public),
            auth_message(
                "age1server",
                "bm9uY2U=",
                jiff::Timestamp::from_second(1_700_000_001).unwrap(),
                "web-1",
                &public,
            ),
        ] {
            let err = verify_challenge(&raw, &other, &signature).unwrap_err();
            assert_eq!(
                err,
                ProtocolError::BadSignature("signature does not verify".into())
            );
        }
    }

    #[test]
    fn a_malformed_signature_says_what_is_wrong() {
        let raw = key().verifying_key().to_bytes();
        assert_eq!(
            verify_challenge(&raw, b"x", "not base64!").unwrap_err(),
            ProtocolError::BadSignature("signature is not base64".into())
        );
        assert_eq!(
            verify_challenge(&raw, b"x", "AAAA").unwrap_err(),
            ProtocolError::BadSignature("signature is not 64 bytes".into())
        );
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_named() {
        let public = public_key_text(&key().verifying_key());
        assert_eq!(
            parse_public_key(&public).unwrap(),
            key().verifying_key().to_bytes()
        );
        assert!(matches!(
            parse_public_key("ssh-ed25519 AAAA"),
            Err(ProtocolError::BadKey(m)) if m.contains("ed25519:")
        ));
        assert!(matches!(
            parse_public_key("ed25519:AAAA"),
            Err(ProtocolError::BadKey(m)) if m.contains("32 bytes")
        ));
    }

    #[test]
    fn an_oversized_frame_is_refused_before_parsing() {
        let frame = format!(
            "{{\"type\":\"ack\",\"job-id\":\"{}\"}}",
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(
            decode::<ServerMessage>(&frame).unwrap_err(),
            ProtocolError::FrameTooLarge { size: frame.len() }
        );
    }

    #[test]
    fn malformed_and_unknown_messages_are_errors_that_say_where() {
        let err = decode::<AgentMessage>("{\"type\":\"hello\"").unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Malformed(m) if m.contains("line 1")),
            "{err}"
        );
        let err = decode::<AgentMessage>("{\"type\":\"launch-missiles\"}").unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Malformed(m) if m.contains("launch-missiles")),
            "{err}"
        );
    }

    #[test]
    fn messages_round_trip_and_secrets_stay_out_of_debug() {
        let job = JobSpec {
            id: "j-1".into(),
            kind: JobKind::Backup,
            host: "web-1".into(),
            hostname: "web-1.example.net".into(),
            policy: "system".into(),
            repository: RepositoryAccess {
                name: "local".into(),
                url: "/srv/repo".into(),
                password: Secret::new("hunter2 \"$`!".into()),
                env: BTreeMap::new(),
            },
            max_duration_secs: 60,
            init_if_missing: true,
            backup: Some(BackupSpec {
                paths: vec!["/etc".into()],
                ..BackupSpec::default()
            }),
            forget: None,
            check: None,
            prune: None,
            hooks: HookSpec::default(),
        };
        let message = ServerMessage::Job(Box::new(job));
        let text = encode(&message).unwrap();
        assert_eq!(decode::<ServerMessage>(&text).unwrap(), message);
        assert!(!format!("{message:?}").contains("hunter2"));
    }

    #[test]
    fn job_kinds_parse_their_own_names() {
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::parse("rm"), None);
    }
}
