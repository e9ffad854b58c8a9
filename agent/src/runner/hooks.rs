//! Hooks: commands the policy runs before a job, after it succeeded, and after it failed.
//!
//! A hook is an argv array run without a shell, from `/`, in an environment with only `PATH`,
//! `HOME`, `LANG` and the job's `TMPDIR` (no repository credentials), in its own process
//! group, stopped like restic when it outlives its timeout. Its output becomes log lines.
//! Whether hooks may run at all is the agent's local decision (`allow-hooks`), checked before
//! the job starts.

use std::time::Duration;

use protocol::LogStream;
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::env::{JobDir, hook_env};
use super::lines::{Line, cut, plain};
use super::process::{self, Ended, Output, StopReason, describe_status, grace_for};
use super::{Events, JobEvent};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    Before,
    After,
    OnFailure,
}

impl When {
    fn name(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
            When::OnFailure => "on-failure",
        }
    }
}

/// Why a hook did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookFailure {
    pub message: String,
    pub cancelled: bool,
}

/// A hook as a user would read it: `` `pg_dumpall -f '/var/backups/all.sql'` ``.
pub(crate) fn describe(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|arg| {
            let simple = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
            if simple {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect();
    format!("`{}`", words.join(" "))
}

/// Runs `hooks` in order. Before and after hooks stop at the first failure; on-failure hooks
/// all run, and the first failure is returned. `latest` caps each hook's own timeout (the
/// job's deadline, for before hooks).
///
/// NOTE: what a hook leaves running in the background after it exits is not stopped
/// (docs/src/limitations.md).
pub(crate) async fn run_all(
    when: When,
    hooks: &[Vec<String>],
    timeout: Duration,
    latest: Option<Instant>,
    job_dir: &JobDir,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<(), HookFailure> {
    let mut first_failure = None;
    for hook in hooks {
        let result = run_one(when, hook, timeout, latest, job_dir, events, cancel).await;
        if let Err(failure) = result {
            if when != When::OnFailure || failure.cancelled {
                return Err(failure);
            }
            first_failure.get_or_insert(failure);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

async fn run_one(
    when: When,
    hook: &[String],
    timeout: Duration,
    latest: Option<Instant>,
    job_dir: &JobDir,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<(), HookFailure> {
    let name = format!("the {} hook {}", when.name(), describe(hook));
    let failure = |message: String| HookFailure {
        message,
        cancelled: false,
    };
    let Some((program, args)) = hook.split_first() else {
        return Err(failure(format!("{name} is empty")));
    };
    let started = Instant::now();
    let mut deadline = started + timeout;
    if let Some(latest) = latest {
        deadline = deadline.min(latest);
    }
    let allowed = deadline.saturating_duration_since(started);
    events.log(LogStream::Agent, format!("running {name}"));
    info!(hook = %describe(hook), when = when.name(), "running hook");

    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(hook_env(job_dir))
        .current_dir("/");
    let mut output = HookOutput { events };
    let ended = process::run(
        command,
        &name,
        deadline,
        cancel,
        grace_for(allowed),
        &mut output,
    )
    .await
    .map_err(|err| failure(format!("{name} could not run: {err}")))?;

    match ended {
        Ended::Exited(status) if status.success() => {
            events.log(LogStream::Agent, format!("{name} finished"));
            Ok(())
        }
        Ended::Exited(status) => {
            let message = format!("{name} failed with {}", describe_status(status));
            events.log(LogStream::Agent, message.clone());
            Err(failure(message))
        }
        Ended::Stopped(StopReason::TimedOut) => {
            let message = format!(
                "{name} did not finish within {} and was stopped",
                super::fmt_duration(allowed)
            );
            events.log(LogStream::Agent, message.clone());
            Err(failure(message))
        }
        Ended::Stopped(StopReason::Cancelled) => Err(HookFailure {
            message: format!("the job was cancelled while {name} ran; it was stopped"),
            cancelled: true,
        }),
    }
}

struct HookOutput<'a> {
    events: &'a Events,
}

impl HookOutput<'_> {
    fn line(&self, stream: LogStream, line: Line) {
        match line {
            Line::Text(text) => {
                let text = plain(&text);
                self.events
                    .send(JobEvent::Log {
                        stream,
                        line: cut(&text, protocol::MAX_LOG_LINE_BYTES).to_owned(),
                    });
            }
            Line::TooLong { bytes } => self.events.log(
                LogStream::Agent,
                format!("a hook wrote a line of {bytes} bytes, longer than the agent reads; it was skipped"),
            ),
        }
    }
}

impl Output for HookOutput<'_> {
    fn stdout(&mut self, line: Line) {
        self.line(LogStream::Stdout, line);
    }

    fn stderr(&mut self, line: Line) {
        self.line(LogStream::Stderr, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_display_as_quoted_words() {
        assert_eq!(
            describe(&[
                "pg_dumpall".into(),
                "-f".into(),
                "/var/backups/all.sql".into()
            ]),
            "`pg_dumpall -f /var/backups/all.sql`"
        );
        assert_eq!(
            describe(&[
                "sh".into(),
                "-c".into(),
                "echo 'hi' $X".into(),
                String::new()
            ]),
            r"`sh -c 'echo '\''hi'\'' $X' ''`"
        );
    }
}
