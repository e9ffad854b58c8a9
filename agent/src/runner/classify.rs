//! Telling how a restic run ended: from its exit code where the version has a code for the
//! case, and from what it wrote on stderr where it does not.
//!
//! restic 0.14.0 exits 1 for almost every failure; these are the texts it prints (and 0.18.0
//! prints them too, so the texts work as a fallback on every version):
//!
//! - no repository, local path: `Fatal: unable to open config file: stat /srv/repo/config: no
//!   such file or directory`;
//! - no repository, `rest:`: `Fatal: unable to open config file: <config/> does not exist`;
//! - locked: `unable to create lock in backend: repository is already locked by PID 17589 on
//!   vm by root (UID 0, GID 0)` (or `locked exclusively by`), then `lock was created at
//!   2026-12-04 03:32:53 (1.49s ago)` and `storage ID f54133fa`;
//! - wrong password: `Fatal: wrong password or no key found`.
//!
//! Both versions follow a failed config read with `Is there a repository at the following
//! location?` and the location, whatever the cause; those two lines are never the reason.

use std::collections::VecDeque;

use super::json::{self, Message};
use super::lines::cut;
use super::version::Features;

/// Lines of stderr kept for the result.
const TAIL_LINES: usize = 50;
/// Bytes of stderr kept for the result.
const TAIL_BYTES: usize = 8 * 1024;
/// Unreadable paths kept for the result; the rest are counted.
/// NOTE: a cap, so a result stays well inside a protocol frame (docs/src/limitations.md).
pub(crate) const MAX_UNREADABLE: usize = 1000;

/// How a restic run ended, in the runner's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    /// A backup made its snapshot but could not read some files (exit 3).
    Partial,
    Missing,
    Locked,
    WrongPassword,
    Failed,
}

/// Who holds a lock, as restic printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LockHolder {
    /// `PID 17589 on vm by root (UID 0, GID 0)`.
    pub holder: String,
    pub exclusive: bool,
    /// `2026-12-04 03:32:53 (1.49s ago)`.
    pub created: Option<String>,
    pub storage_id: Option<String>,
}

impl LockHolder {
    pub(crate) fn describe(&self) -> String {
        let mut text = format!(
            "{}locked by {}",
            if self.exclusive { "exclusively " } else { "" },
            self.holder
        );
        if let Some(created) = &self.created {
            text.push_str(&format!(", lock created at {created}"));
        }
        if let Some(id) = &self.storage_id {
            text.push_str(&format!(", lock ID {id}"));
        }
        text
    }
}

/// What restic's stderr said, gathered line by line as it arrives.
#[derive(Debug, Default)]
pub(crate) struct StderrFacts {
    pub lock: Option<LockHolder>,
    pub wrong_password: bool,
    pub missing: bool,
    pub exit_error: Option<(Option<i32>, String)>,
    pub unreadable: Vec<String>,
    pub unreadable_more: usize,
    last_fatal: Option<String>,
    last_line: Option<String>,
    after_location_question: bool,
    awaiting_lock_detail: bool,
    tail: VecDeque<String>,
}

impl StderrFacts {
    /// Takes in one stderr line (already stripped of terminal sequences).
    pub(crate) fn observe(&mut self, line: &str) {
        self.tail.push_back(cut(line, TAIL_BYTES).to_owned());
        if self.tail.len() > TAIL_LINES {
            self.tail.pop_front();
        }
        match json::parse(line) {
            Ok(Message::Error { item }) => self.unreadable(item),
            Ok(Message::ExitError { code, message }) => {
                for text in message.lines() {
                    self.observe_text(text);
                }
                self.exit_error = Some((code, message));
            }
            Ok(_) => {}
            Err(_) => self.observe_text(line),
        }
    }

    /// Notes an unreadable path (from stdout or stderr `error` messages).
    pub(crate) fn unreadable(&mut self, item: Option<String>) {
        let Some(item) = item else { return };
        if self.unreadable.contains(&item) {
            return;
        }
        if self.unreadable.len() < MAX_UNREADABLE {
            self.unreadable.push(item);
        } else {
            self.unreadable_more += 1;
        }
    }

    fn observe_text(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.lock_detail(line);
        if let Some(at) = line.find("repository is already locked ") {
            let rest = &line[at + "repository is already locked ".len()..];
            let (exclusive, holder) = match rest.strip_prefix("exclusively by ") {
                Some(holder) => (true, holder),
                None => (false, rest.strip_prefix("by ").unwrap_or(rest)),
            };
            self.lock = Some(LockHolder {
                holder: holder.to_owned(),
                exclusive,
                created: None,
                storage_id: None,
            });
            self.awaiting_lock_detail = true;
        }
        if line.contains("wrong password or no key found") {
            self.wrong_password = true;
        }
        if (line.contains("unable to open config file")
            && (line.contains("no such file or directory") || line.contains("does not exist")))
            || line.contains("repository does not exist")
        {
            self.missing = true;
        }

        // The location restic prints after its question is not a reason either.
        let is_question = line == "Is there a repository at the following location?";
        let is_location = std::mem::replace(&mut self.after_location_question, is_question);
        if is_question || is_location {
            return;
        }
        if line.starts_with("Fatal:") {
            self.last_fatal = Some(line.to_owned());
        }
        self.last_line = Some(line.to_owned());
    }

    fn lock_detail(&mut self, line: &str) {
        if !self.awaiting_lock_detail {
            return;
        }
        let Some(lock) = self.lock.as_mut() else {
            return;
        };
        if let Some(created) = line.strip_prefix("lock was created at ") {
            lock.created = Some(created.to_owned());
        } else if let Some(id) = line.strip_prefix("storage ID ") {
            lock.storage_id = Some(id.to_owned());
            self.awaiting_lock_detail = false;
        }
    }

    /// The reason to report for a failure: restic's exit error, else its last `Fatal:` line,
    /// else its last line that says something.
    pub(crate) fn reason(&self) -> Option<String> {
        if let Some((_, message)) = &self.exit_error
            && let Some(first) = message.lines().map(str::trim).find(|l| !l.is_empty())
        {
            return Some(first.to_owned());
        }
        self.last_fatal.clone().or_else(|| self.last_line.clone())
    }

    /// The last lines of stderr: at most 50 lines and 8 KiB, keeping the end.
    pub(crate) fn tail(&self) -> String {
        let joined = self.tail.iter().cloned().collect::<Vec<_>>().join("\n");
        if joined.len() <= TAIL_BYTES {
            return joined;
        }
        let mut start = joined.len() - TAIL_BYTES;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        joined[start..].to_owned()
    }
}

/// How a run that exited with `code` ended. `backup` says whether exit 3 means a partial
/// snapshot (it does only for `backup`).
///
/// NOTE: before restic 0.17 a missing repository is recognised from the texts of the local
/// and `rest:` backends only; other backends' wording is unchecked (docs/src/limitations.md).
pub(crate) fn verdict(code: i32, facts: &StderrFacts, features: Features, backup: bool) -> Verdict {
    match code {
        0 => return Verdict::Ok,
        3 if backup => return Verdict::Partial,
        10 if features.exit_codes_missing_locked => return Verdict::Missing,
        11 if features.exit_codes_missing_locked => return Verdict::Locked,
        12 if features.exit_code_wrong_password => return Verdict::WrongPassword,
        _ => {}
    }
    if facts.lock.is_some() {
        Verdict::Locked
    } else if facts.wrong_password {
        Verdict::WrongPassword
    } else if facts.missing {
        Verdict::Missing
    } else {
        Verdict::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(lines: &[&str]) -> StderrFacts {
        let mut f = StderrFacts::default();
        for line in lines {
            f.observe(line);
        }
        f
    }

    const OLD: (u32, u32, u32) = (0, 14, 0);
    const NEW: (u32, u32, u32) = (0, 18, 0);

    #[test]
    fn a_missing_repository_is_recognised_from_0_14_texts() {
        let local = facts(&[
            "Fatal: unable to open config file: stat /tmp/exp/none/config: no such file or \
             directory",
            "Is there a repository at the following location?",
            "/tmp/exp/none",
        ]);
        assert_eq!(
            verdict(1, &local, Features::of(OLD), false),
            Verdict::Missing
        );
        assert_eq!(
            local.reason().as_deref(),
            Some(
                "Fatal: unable to open config file: stat /tmp/exp/none/config: no such file or directory"
            )
        );
        let rest = facts(&[
            "Fatal: unable to open config file: <config/> does not exist",
            "Is there a repository at the following location?",
            "rest:http://u:***@127.0.0.1:43107/none/",
        ]);
        assert_eq!(verdict(1, &rest, Features::of(OLD), true), Verdict::Missing);
    }

    #[test]
    fn other_config_failures_are_not_a_missing_repository() {
        let unauthorized = facts(&[
            "Fatal: unable to open config file: unexpected HTTP response (401): 401 Unauthorized",
            "Is there a repository at the following location?",
            "rest:http://u:***@127.0.0.1:43107/x/",
        ]);
        assert_eq!(
            verdict(1, &unauthorized, Features::of(OLD), false),
            Verdict::Failed
        );
        assert_eq!(
            unauthorized.reason().as_deref(),
            Some(
                "Fatal: unable to open config file: unexpected HTTP response (401): 401 Unauthorized"
            )
        );
    }

    #[test]
    fn newer_exit_codes_decide_and_older_ones_fall_back_to_text() {
        let nothing = StderrFacts::default();
        assert_eq!(
            verdict(10, &nothing, Features::of(NEW), false),
            Verdict::Missing
        );
        assert_eq!(
            verdict(11, &nothing, Features::of(NEW), false),
            Verdict::Locked
        );
        assert_eq!(
            verdict(12, &nothing, Features::of(NEW), false),
            Verdict::WrongPassword
        );
        assert_eq!(
            verdict(12, &nothing, Features::of((0, 17, 0)), false),
            Verdict::Failed
        );
        assert_eq!(
            verdict(10, &nothing, Features::of(OLD), false),
            Verdict::Failed
        );
        assert_eq!(
            verdict(3, &nothing, Features::of(OLD), true),
            Verdict::Partial
        );
        assert_eq!(
            verdict(3, &nothing, Features::of(OLD), false),
            Verdict::Failed
        );
        let password = facts(&["Fatal: wrong password or no key found"]);
        assert_eq!(
            verdict(1, &password, Features::of(OLD), false),
            Verdict::WrongPassword
        );
    }

    #[test]
    fn the_lock_holder_is_read_from_plain_and_json_stderr() {
        let plain = facts(&[
            "unable to create lock in backend: repository is already locked by PID 17589 on vm \
             by root (UID 0, GID 0)",
            "lock was created at 2026-12-04 03:32:53 (1.497478785s ago)",
            "storage ID f54133fa",
            "the `unlock` command can be used to remove stale locks",
        ]);
        assert_eq!(
            verdict(1, &plain, Features::of(OLD), false),
            Verdict::Locked
        );
        assert_eq!(
            plain.lock.as_ref().unwrap().describe(),
            "locked by PID 17589 on vm by root (UID 0, GID 0), lock created at 2026-12-04 \
             03:32:53 (1.497478785s ago), lock ID f54133fa"
        );
        let json = facts(&[
            r#"{"message_type":"exit_error","code":11,"message":"unable to create lock in backend: repository is already locked exclusively by PID 18033 on vm by root (UID 0, GID 0)\nlock was created at 2026-12-04 03:33:13 (667.252252ms ago)\nstorage ID 3a5de0f7\nthe `unlock` command can be used to remove stale locks"}"#,
        ]);
        let lock = json.lock.clone().unwrap();
        assert!(lock.exclusive);
        assert_eq!(lock.holder, "PID 18033 on vm by root (UID 0, GID 0)");
        assert_eq!(
            lock.created.as_deref(),
            Some("2026-12-04 03:33:13 (667.252252ms ago)")
        );
        assert_eq!(
            json.reason().as_deref(),
            Some(
                "unable to create lock in backend: repository is already locked exclusively by \
                 PID 18033 on vm by root (UID 0, GID 0)"
            )
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_bytes() {
        let many: Vec<String> = (0..80).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let f = facts(&refs);
        let tail = f.tail();
        assert!(
            tail.starts_with("line 30\n") && tail.ends_with("line 79"),
            "{tail}"
        );

        let long: Vec<String> = (0..10)
            .map(|i| format!("{i}{}", "é".repeat(1000)))
            .collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let tail = facts(&refs).tail();
        assert!(tail.len() <= TAIL_BYTES && tail.ends_with('é'));
    }

    #[test]
    fn unreadable_paths_are_deduplicated_and_capped() {
        let mut f = StderrFacts::default();
        for i in 0..(MAX_UNREADABLE + 5) {
            f.unreadable(Some(format!("/data/{i}")));
        }
        f.unreadable(Some("/data/0".into()));
        assert_eq!(f.unreadable.len(), MAX_UNREADABLE);
        assert_eq!(f.unreadable_more, 5);
    }
}
