//! Running one child (restic or a hook) to its end under a deadline and a cancel token.
//!
//! The child runs in its own process group with stdin on `/dev/null`; its stdout and stderr
//! are read line by line as they come, so neither pipe can fill and stall it. To stop it (the
//! deadline passed, or the job was cancelled) the whole group gets SIGINT, on which restic
//! removes its lock and exits; after a grace period SIGTERM; after another, SIGKILL. A child
//! that ignores the first two is still gone, and so is anything it started.

use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::RunnerError;
use super::lines::{Line, LineReader, MAX_LINE_BYTES};

/// How long output is still read after the child exited, for a grandchild that keeps the
/// pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Why a child was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    TimedOut,
    Cancelled,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited on its own.
    Exited(ExitStatus),
    /// The runner stopped it.
    Stopped(StopReason),
}

/// Receives the child's output lines.
pub(crate) trait Output {
    fn stdout(&mut self, line: Line);
    fn stderr(&mut self, line: Line);
}

/// The grace period between the signals of the stop sequence: a tenth of the time the child
/// was given, at least 1 s and at most 10 s. A job given seconds is stopped within seconds;
/// a long one leaves restic time to remove its lock from a slow backend.
///
/// NOTE: a restic that needs more than 10 s to remove its lock is killed and leaves a stale
/// lock (docs/src/limitations.md).
pub(crate) fn grace_for(budget: Duration) -> Duration {
    (budget / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// The exit code of a status, or a description of the signal that ended it.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(sig) => format!("signal {sig}"),
            Err(_) => format!("signal {signal}"),
        },
        (None, None) => "an unknown status".to_owned(),
    }
}

/// Sends SIGKILL to a process group when dropped while armed, so a child never outlives a
/// run that was abandoned (its future dropped) or stopped.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            match killpg(pgid, signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(err) => {
                    warn!(pgid = pgid.as_raw(), %signal, %err, "cannot signal the process group");
                }
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Where the stop sequence is.
#[derive(Clone, Copy)]
struct Stopping {
    reason: StopReason,
    /// Signals sent so far: 1 = SIGINT, 2 = SIGTERM, 3 = SIGKILL.
    sent: u8,
    next: Instant,
}

/// Runs `command` (stdio and process group are set here) until it exits or is stopped.
/// `program` names it in errors and logs.
pub(crate) async fn run(
    mut command: Command,
    program: &str,
    deadline: Instant,
    cancel: &CancellationToken,
    grace: Duration,
    output: &mut (dyn Output + Send),
) -> Result<Ended, RunnerError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| RunnerError::Start {
        program: program.to_owned(),
        source,
    })?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut guard = GroupGuard { pgid };
    debug!(program, pid = ?pgid.map(Pid::as_raw), "started");

    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunnerError::Start {
            program: program.to_owned(),
            source: std::io::Error::other("its output pipes were not set up"),
        });
    };
    let mut out = LineReader::new(stdout, MAX_LINE_BYTES);
    let mut err = LineReader::new(stderr, MAX_LINE_BYTES);
    let (mut out_open, mut err_open) = (true, true);
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut stopping: Option<Stopping> = None;

    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let status = loop {
        if let Some((status, at)) = exited
            && (!(out_open || err_open) || Instant::now() >= at + DRAIN_AFTER_EXIT)
        {
            break status;
        }
        let wake = match (exited, stopping) {
            (Some((_, at)), _) => at + DRAIN_AFTER_EXIT,
            (None, Some(stop)) => stop.next,
            (None, None) => deadline,
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(line)) => output.stdout(line),
                Ok(None) => out_open = false,
                Err(e) => {
                    warn!(program, err = %e, "cannot read stdout");
                    out_open = false;
                }
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(line)) => output.stderr(line),
                Ok(None) => err_open = false,
                Err(e) => {
                    warn!(program, err = %e, "cannot read stderr");
                    err_open = false;
                }
            },
            status = child.wait(), if exited.is_none() => {
                let status = status.map_err(|source| RunnerError::Wait {
                    program: program.to_owned(),
                    source,
                })?;
                debug!(program, status = %describe_status(status), "exited");
                if stopping.is_some() {
                    // Whatever it left behind in its group goes too.
                    guard.signal(Signal::SIGKILL);
                }
                exited = Some((status, Instant::now()));
            }
            () = cancel.cancelled(), if stopping.is_none() && exited.is_none() => {
                stopping = Some(begin_stop(&guard, StopReason::Cancelled, grace, program));
            }
            () = &mut timer => {
                if exited.is_some() {
                    continue;
                }
                stopping = Some(match stopping {
                    None => begin_stop(&guard, StopReason::TimedOut, grace, program),
                    Some(stop) => escalate(&guard, stop, grace, program),
                });
            }
        }
    };

    guard.disarm();
    Ok(match stopping {
        Some(stop) => Ended::Stopped(stop.reason),
        None => Ended::Exited(status),
    })
}

fn begin_stop(guard: &GroupGuard, reason: StopReason, grace: Duration, program: &str) -> Stopping {
    debug!(program, ?reason, "stopping: SIGINT to the process group");
    guard.signal(Signal::SIGINT);
    Stopping {
        reason,
        sent: 1,
        next: Instant::now() + grace,
    }
}

fn escalate(guard: &GroupGuard, stop: Stopping, grace: Duration, program: &str) -> Stopping {
    let (signal, sent) = if stop.sent < 2 {
        (Signal::SIGTERM, 2)
    } else {
        (Signal::SIGKILL, 3)
    };
    warn!(program, %signal, "still running after the grace period; signalling the process group");
    guard.signal(signal);
    Stopping {
        sent,
        next: Instant::now() + grace,
        ..stop
    }
}
