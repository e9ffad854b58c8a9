//! restic's JSON output, as far as the agent reads it.
//!
//! Every object restic prints with `--json` names its kind in `message_type`; the agent picks
//! what it needs by that field (`status`, `summary`, `error`, `exit_error`) and ignores kinds
//! it does not know. `snapshots` and `forget` answer with one JSON array instead. Field sets
//! differ between versions (0.18 adds `backup_start`, `data_added_packed`, …), so every struct
//! here ignores unknown fields and defaults missing ones.

use serde::Deserialize;

/// One object line of restic's output, decoded by its `message_type`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    Status(Status),
    Summary(Summary),
    /// A file or directory restic could not read; `item` is its path.
    Error {
        item: Option<String>,
    },
    /// 0.18+: the error restic exits with, when `--json` is given.
    ExitError {
        code: Option<i32>,
        message: String,
    },
    /// Valid JSON with a `message_type` the agent does not use.
    Other(String),
}

/// Why a line is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotMessage {
    /// Not a JSON object at all (restic's plain text).
    Text,
    /// Looks like JSON but does not parse, or has no `message_type`.
    Malformed(String),
}

#[derive(Deserialize)]
struct Envelope {
    message_type: Option<String>,
}

/// `message_type: status` of `backup --json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Status {
    pub seconds_elapsed: u64,
    pub percent_done: f64,
    pub total_files: u64,
    pub files_done: u64,
    pub total_bytes: u64,
    pub bytes_done: u64,
}

/// `message_type: summary` of `backup --json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Summary {
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
    pub snapshot_id: Option<String>,
}

impl From<Summary> for protocol::BackupSummary {
    fn from(s: Summary) -> Self {
        Self {
            snapshot_id: s.snapshot_id,
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            dirs_new: s.dirs_new,
            dirs_changed: s.dirs_changed,
            dirs_unmodified: s.dirs_unmodified,
            data_added: s.data_added,
            total_files_processed: s.total_files_processed,
            total_bytes_processed: s.total_bytes_processed,
            total_duration: s.total_duration,
        }
    }
}

#[derive(Deserialize)]
struct ErrorLine {
    item: Option<String>,
}

#[derive(Deserialize)]
struct ExitErrorLine {
    code: Option<i32>,
    #[serde(default)]
    message: String,
}

/// Decodes one line of output.
pub(crate) fn parse(line: &str) -> Result<Message, NotMessage> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return Err(NotMessage::Text);
    }
    let malformed = |err: serde_json::Error| NotMessage::Malformed(err.to_string());
    let envelope: Envelope = serde_json::from_str(trimmed).map_err(malformed)?;
    let Some(kind) = envelope.message_type else {
        return Err(NotMessage::Malformed("no `message_type` field".to_owned()));
    };
    Ok(match kind.as_str() {
        "status" => Message::Status(serde_json::from_str(trimmed).map_err(malformed)?),
        "summary" => Message::Summary(serde_json::from_str(trimmed).map_err(malformed)?),
        "error" => {
            let e: ErrorLine = serde_json::from_str(trimmed).map_err(malformed)?;
            Message::Error {
                item: e.item.filter(|i| !i.is_empty()),
            }
        }
        "exit_error" => {
            let e: ExitErrorLine = serde_json::from_str(trimmed).map_err(malformed)?;
            Message::ExitError {
                code: e.code,
                message: e.message,
            }
        }
        _ => Message::Other(kind),
    })
}

/// One snapshot of `snapshots --json`.
#[derive(Deserialize)]
struct SnapshotLine {
    #[serde(default)]
    id: String,
    #[serde(default)]
    time: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// Decodes the array `snapshots --json` prints.
pub(crate) fn parse_snapshots(line: &str) -> Result<Vec<protocol::Snapshot>, String> {
    let list: Vec<SnapshotLine> =
        serde_json::from_str(line.trim()).map_err(|err| err.to_string())?;
    Ok(list
        .into_iter()
        .map(|s| protocol::Snapshot {
            id: s.id,
            time: s.time,
            hostname: s.hostname,
            paths: s.paths.unwrap_or_default(),
            tags: s.tags.unwrap_or_default(),
        })
        .collect())
}

/// One group of `forget --json`.
#[derive(Deserialize)]
struct ForgetGroup {
    #[serde(default)]
    keep: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    remove: Option<Vec<serde::de::IgnoredAny>>,
}

/// How many snapshots `forget --json` kept and removed.
pub(crate) fn parse_forget(line: &str) -> Result<(usize, usize), String> {
    let groups: Vec<ForgetGroup> =
        serde_json::from_str(line.trim()).map_err(|err| err.to_string())?;
    Ok(groups.iter().fold((0, 0), |(kept, removed), g| {
        (
            kept + g.keep.as_ref().map_or(0, Vec::len),
            removed + g.remove.as_ref().map_or(0, Vec::len),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_picked_by_message_type() {
        let summary = r#"{"message_type":"summary","files_new":1,"files_changed":0,"files_unmodified":0,"dirs_new":1,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":1,"tree_blobs":2,"data_added":707,"data_added_packed":666,"total_files_processed":1,"total_bytes_processed":3,"total_duration":0.64875573,"backup_start":"2026-12-04T03:32:16Z","snapshot_id":"e8b63a17e5d7"}"#;
        let Ok(Message::Summary(s)) = parse(summary) else {
            panic!("not a summary");
        };
        assert_eq!(s.snapshot_id.as_deref(), Some("e8b63a17e5d7"));
        assert_eq!(
            (s.files_new, s.data_added, s.total_bytes_processed),
            (1, 707, 3)
        );

        let status = r#"{"message_type":"status","percent_done":0.14,"total_files":30,"files_done":4,"total_bytes":314572800,"bytes_done":44013411,"current_files":["/big/f13"]}"#;
        assert_eq!(
            parse(status),
            Ok(Message::Status(Status {
                seconds_elapsed: 0,
                percent_done: 0.14,
                total_files: 30,
                files_done: 4,
                total_bytes: 314_572_800,
                bytes_done: 44_013_411,
            }))
        );
        assert_eq!(
            parse(r#"{"message_type":"verbose_status","action":"new"}"#),
            Ok(Message::Other("verbose_status".into()))
        );
    }

    #[test]
    fn unreadable_items_are_read_from_both_versions_error_lines() {
        let v014 = r#"{"message_type":"error","error":{"Op":"open","Path":"src/locked","Err":13},"during":"archival","item":"/tmp/exp/src/locked"}"#;
        let v018 = r#"{"message_type":"error","error":{"message":"/tmp/exp/src/locked: open src/locked: permission denied"},"during":"archival","item":"/tmp/exp/src/locked"}"#;
        for line in [v014, v018] {
            assert_eq!(
                parse(line),
                Ok(Message::Error {
                    item: Some("/tmp/exp/src/locked".into())
                })
            );
        }
        assert_eq!(
            parse(r#"{"message_type":"error","error":{},"during":"scan","item":""}"#),
            Ok(Message::Error { item: None })
        );
    }

    #[test]
    fn exit_errors_of_newer_restic_are_read() {
        let line = r#"{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}"#;
        assert_eq!(
            parse(line),
            Ok(Message::ExitError {
                code: Some(12),
                message: "Fatal: wrong password or no key found".into()
            })
        );
    }

    #[test]
    fn text_and_malformed_lines_are_told_apart() {
        assert_eq!(
            parse("created restic repository f03e37f6d3"),
            Err(NotMessage::Text)
        );
        assert!(matches!(
            parse("{\"message_type\":"),
            Err(NotMessage::Malformed(_))
        ));
        assert_eq!(
            parse(r#"{"no_type":1}"#),
            Err(NotMessage::Malformed("no `message_type` field".into()))
        );
        assert!(matches!(
            parse(r#"{"message_type":"summary","files_new":"many"}"#),
            Err(NotMessage::Malformed(m)) if m.contains("invalid type")
        ));
    }

    #[test]
    fn snapshots_and_forget_arrays_are_read() {
        let snapshots = r#"[{"time":"2026-12-04T03:32:22Z","tree":"01","paths":["/tmp/exp/src"],"hostname":"h1","username":"root","tags":["policy:a"],"id":"5c16ba60aa","short_id":"5c16ba60"},{"time":"t","hostname":"h1","paths":null,"tags":null,"id":"x"}]"#;
        let list = parse_snapshots(snapshots).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].tags, ["policy:a"]);
        assert!(list[1].tags.is_empty() && list[1].paths.is_empty());
        assert!(parse_snapshots("[{").is_err());

        let forget = r#"[{"tags":null,"host":"h1","paths":null,"keep":[{"id":"a"}],"remove":[{"id":"b"},{"id":"c"}],"reasons":[]},{"keep":[{"id":"d"}],"remove":null}]"#;
        assert_eq!(parse_forget(forget), Ok((2, 2)));
        assert_eq!(parse_forget("[]"), Ok((0, 0)));
    }
}
