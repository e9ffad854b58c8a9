//! The restic runner: the one module of the agent that starts restic.
//!
//! [`run_job`] takes a job as data and runs it to its end: it checks the job against the
//! agent's local [`Limits`], runs the before hooks, builds restic's argv itself, runs restic
//! with an explicit environment in its own process group, reads its JSON output, retries
//! when the repository is locked, creates a missing repository when the job allows it, runs
//! the after or on-failure hooks, and says how the job ended as an [`protocol::Outcome`] with
//! a message in plain words. It never panics and never returns an error.
//!
//! The files: `version` (which restic, and what it can do), `validate` (refusing jobs),
//! `args` (argv), `env` (environment and the private job directory), `process` (spawning,
//! signals, timeouts), `lines` and `json` (reading output), `classify` (how a run ended),
//! `hooks`.

mod args;
mod classify;
mod env;
mod error;
mod hooks;
mod json;
mod lines;
mod process;
mod validate;
mod version;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use protocol::{BackupSummary, JobKind, JobResult, JobSpec, LogStream, Outcome, Snapshot};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info_span, warn};

pub use error::{INSTALL_HINT, RunnerError};
pub use version::Restic;

use args::Command;
use classify::{StderrFacts, Verdict};
use env::JobDir;
use hooks::When;
use json::Message;
use lines::{Line, cut, plain};
use process::{Ended, Output, StopReason, describe_status, grace_for};
use version::Features;

/// What the agent's own local file allows. A compromised server or config repository cannot
/// make the agent go beyond these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Hooks run only when true. Default: false.
    pub allow_hooks: bool,
    /// When non-empty, every backup path must be one of these absolute prefixes or below one
    /// (compared by path components after lexical normalisation; `..` in a requested path is
    /// refused). Empty: any absolute path.
    pub allowed_paths: Vec<PathBuf>,
    /// Upper bound on any job's run time, whatever the server asks. None: the job's own.
    pub max_duration: Option<Duration>,
}

/// Something to tell the server while a job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// At most one per second per job (the runner throttles).
    Progress(protocol::Progress),
    /// A line restic or a hook wrote (not JSON status lines), cut to
    /// `protocol::MAX_LOG_LINE_BYTES`.
    Log {
        stream: protocol::LogStream,
        line: String,
    },
}

/// Everything a run needs besides the job.
pub struct RunContext {
    pub restic: Restic,
    pub limits: Limits,
    /// A private directory (0700) of the agent's; the runner makes a per-job temp dir (0700)
    /// inside it for the password file, and uses `<work_dir>/cache` as restic's cache dir.
    pub work_dir: PathBuf,
    pub events: mpsc::UnboundedSender<JobEvent>,
    /// Cancelled by the agent when the server sends Cancel or the agent shuts down.
    pub cancel: CancellationToken,
}

/// How long a locked repository is waited for, at most (then `BlockedByLock`).
const LOCK_WAIT: Duration = Duration::from_mins(2);
/// The first pause between attempts on a locked repository, for restic without
/// `--retry-lock`; it doubles up to [`LOCK_RETRY_MAX`].
const LOCK_RETRY_FIRST: Duration = Duration::from_secs(5);
const LOCK_RETRY_MAX: Duration = Duration::from_mins(1);
/// Progress goes to the server at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs one job to its end and says how it ended. Never panics and never returns an error:
/// every failure is an `Outcome` with a plain-words `message`. The caller has already
/// checked that `job.host` is this agent's host; the runner enforces `Limits` (a job outside
/// them ends with `Outcome::Refused` and a message naming the path or hook refused).
pub async fn run_job(ctx: &RunContext, job: &JobSpec) -> JobResult {
    let span = info_span!(
        "job",
        job_id = %job.id,
        kind = %job.kind,
        policy = %job.policy,
        repository = %job.repository.name
    );
    async {
        let started_at = jiff::Timestamp::now();
        let mut run = Run::new(ctx, job);
        // The job manager logs the job's start and end at the level its outcome calls for.
        debug!(restic = ctx.restic.version_line(), "running the job");
        let finish = run.execute().await;
        debug!(outcome = %finish.outcome, message = %finish.message, "the job's run ended");
        run.result(finish, started_at)
    }
    .instrument(span)
    .await
}

/// How a job ended, before the result is assembled.
struct Finish {
    outcome: Outcome,
    message: String,
}

impl Finish {
    fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
        }
    }
}

/// Sends a job's events: progress throttled, log lines cut.
pub(crate) struct Events {
    tx: mpsc::UnboundedSender<JobEvent>,
    job_id: String,
    progress: Mutex<Throttle>,
}

impl Events {
    pub(crate) fn send(&self, event: JobEvent) {
        // A receiver that is gone (the agent shutting down) is not the job's problem.
        let _ = self.tx.send(event);
    }

    pub(crate) fn log(&self, stream: LogStream, mut line: String) {
        let keep = cut(&line, protocol::MAX_LOG_LINE_BYTES).len();
        line.truncate(keep);
        self.send(JobEvent::Log { stream, line });
    }

    fn progress(&self, status: &json::Status) {
        let allowed = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now());
        if allowed {
            self.send(JobEvent::Progress(protocol::Progress {
                job_id: self.job_id.clone(),
                percent_done: status.percent_done,
                files_done: status.files_done,
                total_files: status.total_files,
                bytes_done: status.bytes_done,
                total_bytes: status.total_bytes,
                seconds_elapsed: status.seconds_elapsed,
            }));
        }
    }
}

/// Lets one event through per interval.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < PROGRESS_INTERVAL)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// How one restic run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Verdict(Verdict),
    TimedOut,
    Cancelled,
}

/// One restic run and what it printed.
struct Step {
    command: Command,
    ended: Result<Ended, String>,
    facts: StderrFacts,
    summary: Option<json::Summary>,
    /// JSON arrays on stdout (the answers of `snapshots` and `forget`).
    documents: Vec<String>,
    last_stdout: Option<String>,
    /// How long the runner waited for a lock before this run, if it did.
    lock_wait: Option<Duration>,
}

impl Step {
    fn stopped(command: Command, reason: StopReason) -> Self {
        Self {
            command,
            ended: Ok(Ended::Stopped(reason)),
            facts: StderrFacts::default(),
            summary: None,
            documents: Vec::new(),
            last_stdout: None,
            lock_wait: None,
        }
    }

    fn ending(&self, features: Features) -> Ending {
        match &self.ended {
            Ok(Ended::Stopped(StopReason::TimedOut)) => Ending::TimedOut,
            Ok(Ended::Stopped(StopReason::Cancelled)) => Ending::Cancelled,
            Ok(Ended::Exited(status)) => match status.code() {
                Some(code) => Ending::Verdict(classify::verdict(
                    code,
                    &self.facts,
                    features,
                    self.command == Command::Backup,
                )),
                None => Ending::Verdict(Verdict::Failed),
            },
            Err(_) => Ending::Verdict(Verdict::Failed),
        }
    }

    fn exit_code(&self) -> Option<i32> {
        match &self.ended {
            Ok(Ended::Exited(status)) => status.code(),
            _ => None,
        }
    }

    /// Why it failed, in restic's words where it gave some.
    fn reason(&self) -> String {
        let how = match &self.ended {
            Ok(Ended::Exited(status)) => describe_status(*status),
            Ok(Ended::Stopped(_)) => "being stopped".to_owned(),
            Err(err) => return err.clone(),
        };
        match self.facts.reason() {
            Some(reason) => format!("{how}: {reason}"),
            None => format!("{how}, and printed nothing on stderr"),
        }
    }
}

/// Reads one restic run's output as it comes.
struct ResticOutput<'a> {
    events: &'a Events,
    command: Command,
    step: Step,
}

impl Output for ResticOutput<'_> {
    fn stdout(&mut self, line: Line) {
        let Line::Text(text) = line else {
            self.too_long("stdout", &line);
            return;
        };
        // `cat config` prints the repository's config; nothing in it is for the log.
        if self.command == Command::CatConfig {
            return;
        }
        if matches!(self.command, Command::Snapshots | Command::Forget)
            && text.trim_start().starts_with('[')
        {
            self.step.documents.push(text);
            return;
        }
        match json::parse(&text) {
            Ok(Message::Status(status)) => {
                if self.command == Command::Backup {
                    self.events.progress(&status);
                }
            }
            Ok(Message::Summary(summary)) => {
                if self.command == Command::Backup {
                    self.step.summary = Some(summary);
                }
            }
            Ok(Message::Error { item }) => self.step.facts.unreadable(item),
            Ok(Message::ExitError { .. } | Message::Other(_)) => {}
            Err(_) => {
                let text = plain(&text);
                if !text.trim().is_empty() {
                    self.step.last_stdout = Some(text.trim().to_owned());
                }
                self.events.log(LogStream::Stdout, text);
            }
        }
    }

    fn stderr(&mut self, line: Line) {
        let Line::Text(text) = line else {
            self.too_long("stderr", &line);
            return;
        };
        let text = plain(&text);
        self.step.facts.observe(&text);
        self.events.log(LogStream::Stderr, text);
    }
}

impl ResticOutput<'_> {
    fn too_long(&self, stream: &str, line: &Line) {
        if let Line::TooLong { bytes } = line {
            warn!(stream, bytes, "restic wrote an over-long line; skipped");
            self.events.log(
                LogStream::Agent,
                format!(
                    "restic {} wrote a line of {bytes} bytes on {stream}, more than the {} MiB \
                     the agent reads; the line was skipped",
                    self.command.name(),
                    lines::MAX_LINE_BYTES / (1024 * 1024)
                ),
            );
        }
    }
}

/// One job in progress.
struct Run<'a> {
    ctx: &'a RunContext,
    job: &'a JobSpec,
    events: Events,
    features: Features,
    max: Duration,
    deadline: Instant,
    grace: Duration,
    exit_code: Option<i32>,
    stderr_tail: String,
    summary: Option<BackupSummary>,
    unreadable: Vec<String>,
    initialized: bool,
    snapshots: Option<Vec<Snapshot>>,
}

impl<'a> Run<'a> {
    fn new(ctx: &'a RunContext, job: &'a JobSpec) -> Self {
        let mut max = Duration::from_secs(job.max_duration_secs);
        if let Some(limit) = ctx.limits.max_duration {
            max = max.min(limit);
        }
        Self {
            ctx,
            job,
            events: Events {
                tx: ctx.events.clone(),
                job_id: job.id.clone(),
                progress: Mutex::new(Throttle::default()),
            },
            features: ctx.restic.features(),
            max,
            deadline: Instant::now() + max,
            grace: grace_for(max),
            exit_code: None,
            stderr_tail: String::new(),
            summary: None,
            unreadable: Vec::new(),
            initialized: false,
            snapshots: None,
        }
    }

    fn result(self, finish: Finish, started_at: jiff::Timestamp) -> JobResult {
        JobResult {
            job_id: self.job.id.clone(),
            outcome: finish.outcome,
            message: finish.message,
            exit_code: self.exit_code,
            started_at,
            finished_at: jiff::Timestamp::now(),
            summary: self.summary,
            unreadable: self.unreadable,
            initialized: self.initialized,
            stderr_tail: self.stderr_tail,
            snapshots: self.snapshots,
        }
    }

    fn repo(&self) -> &str {
        &self.job.repository.name
    }

    async fn execute(&mut self) -> Finish {
        if let Err(message) = validate::check(self.job, &self.ctx.limits) {
            return Finish::new(Outcome::Refused, message);
        }
        if self.ctx.cancel.is_cancelled() {
            return Finish::new(
                Outcome::Cancelled,
                "the job was cancelled before it started",
            );
        }
        let job_dir = match JobDir::create(&self.ctx.work_dir, &self.job.repository.password) {
            Ok(dir) => dir,
            Err(err) => return Finish::new(Outcome::Failed, err.to_string()),
        };
        let finish = self.with_hooks(&job_dir).await;
        job_dir.remove();
        finish
    }

    /// The job between its before hooks and its after or on-failure hooks.
    async fn with_hooks(&mut self, dir: &JobDir) -> Finish {
        let hooks = &self.job.hooks;
        let timeout = Duration::from_secs(hooks.timeout_secs);
        let ran = hooks::run_all(
            When::Before,
            &hooks.before,
            timeout,
            Some(self.deadline),
            dir,
            &self.events,
            &self.ctx.cancel,
        )
        .await;
        if let Err(failure) = ran {
            if failure.cancelled {
                return Finish::new(Outcome::Cancelled, failure.message);
            }
            let mut finish = Finish::new(
                Outcome::Failed,
                format!("{}; restic was not run", failure.message),
            );
            self.on_failure(dir, &mut finish).await;
            return finish;
        }

        let mut finish = self.main(dir).await;
        match finish.outcome {
            Outcome::Succeeded | Outcome::Partial => {
                let ran = hooks::run_all(
                    When::After,
                    &hooks.after,
                    timeout,
                    None,
                    dir,
                    &self.events,
                    &self.ctx.cancel,
                )
                .await;
                if let Err(failure) = ran {
                    finish = Finish::new(
                        if failure.cancelled {
                            Outcome::Cancelled
                        } else {
                            Outcome::Failed
                        },
                        format!("{}; then {}", finish.message, failure.message),
                    );
                    if !failure.cancelled {
                        self.on_failure(dir, &mut finish).await;
                    }
                }
            }
            Outcome::Refused | Outcome::Cancelled => {}
            _ => self.on_failure(dir, &mut finish).await,
        }
        finish
    }

    async fn on_failure(&self, dir: &JobDir, finish: &mut Finish) {
        let hooks = &self.job.hooks;
        if hooks.on_failure.is_empty() {
            return;
        }
        let ran = hooks::run_all(
            When::OnFailure,
            &hooks.on_failure,
            Duration::from_secs(hooks.timeout_secs),
            None,
            dir,
            &self.events,
            &self.ctx.cancel,
        )
        .await;
        if let Err(failure) = ran {
            finish.message.push_str(&format!("; {}", failure.message));
        }
    }

    async fn main(&mut self, dir: &JobDir) -> Finish {
        let job = self.job;
        match job.kind {
            JobKind::Init => self.init_job(dir).await,
            JobKind::Backup => self.backup_job(dir).await,
            JobKind::Snapshots => self.snapshots_job(dir).await,
            JobKind::Forget => {
                let Some(spec) = &job.forget else {
                    return Finish::new(Outcome::Failed, "the forget job carries no rules");
                };
                self.forget_job(dir, args::forget(job, spec), spec.prune)
                    .await
            }
            JobKind::Prune => {
                let args = args::prune(job.prune.as_ref());
                self.plain_job(dir, Command::Prune, args).await
            }
            JobKind::Check => {
                let args = args::check(job.check.as_ref(), self.features);
                self.plain_job(dir, Command::Check, args).await
            }
            JobKind::Unlock => self.plain_job(dir, Command::Unlock, args::unlock()).await,
        }
    }

    /// Runs restic once.
    async fn restic(&self, dir: &JobDir, command: Command, args: Vec<OsString>) -> Step {
        if self.ctx.cancel.is_cancelled() {
            return Step::stopped(command, StopReason::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Step::stopped(command, StopReason::TimedOut);
        }
        let mut cmd = tokio::process::Command::new(self.ctx.restic.binary());
        cmd.args(&args)
            .env_clear()
            .envs(env::restic_env(
                &self.ctx.work_dir,
                dir,
                &self.job.repository,
                self.features,
            ))
            .current_dir("/");
        // The argv carries no secret (see args.rs), so it may be logged.
        debug!(?args, "running restic");
        let mut output = ResticOutput {
            events: &self.events,
            command,
            step: Step {
                command,
                ended: Err(String::new()),
                facts: StderrFacts::default(),
                summary: None,
                documents: Vec::new(),
                last_stdout: None,
                lock_wait: None,
            },
        };
        let label = format!("restic {}", command.name());
        let ended = process::run(
            cmd,
            &label,
            self.deadline,
            &self.ctx.cancel,
            self.grace,
            &mut output,
        )
        .await;
        let mut step = output.step;
        step.ended = ended.map_err(|err| err.to_string());
        step
    }

    /// Runs restic, and again while the repository is locked: with `--retry-lock` where
    /// restic has it, else with a pause that doubles; at most [`LOCK_WAIT`] and three
    /// quarters of the job's remaining time, so the job ends as blocked, not timed out.
    async fn restic_waiting_for_lock(
        &self,
        dir: &JobDir,
        command: Command,
        args: Vec<OsString>,
    ) -> Step {
        let first = self.restic(dir, command, args.clone()).await;
        if first.ending(self.features) != Ending::Verdict(Verdict::Locked) {
            return first;
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let budget = LOCK_WAIT.min(remaining * 3 / 4);
        if budget < Duration::from_secs(1) {
            return first;
        }
        let holder = first
            .facts
            .lock
            .as_ref()
            .map_or_else(|| "locked".to_owned(), classify::LockHolder::describe);
        self.events.log(
            LogStream::Agent,
            format!(
                "repository `{}` is {holder}; waiting up to {} for the lock",
                self.repo(),
                fmt_duration(budget)
            ),
        );

        if self.features.retry_lock {
            let mut step = self
                .restic(dir, command, args::with_retry_lock(args, budget))
                .await;
            step.lock_wait = Some(budget);
            return step;
        }
        let started = Instant::now();
        let until = started + budget;
        let mut pause = LOCK_RETRY_FIRST;
        let mut last = first;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let pause_now = pause.min(left);
            if pause_now < Duration::from_secs(1) {
                last.lock_wait = Some(started.elapsed());
                return last;
            }
            tokio::select! {
                () = tokio::time::sleep(pause_now) => {}
                () = self.ctx.cancel.cancelled() => return Step::stopped(command, StopReason::Cancelled),
            }
            let next = self.restic(dir, command, args.clone()).await;
            if next.ending(self.features) != Ending::Verdict(Verdict::Locked) {
                return next;
            }
            last = next;
            pause = (pause * 2).min(LOCK_RETRY_MAX);
        }
    }

    /// Runs the job's main command; when the repository is missing and the job may create
    /// it, creates it and runs the command again.
    async fn main_command(
        &mut self,
        dir: &JobDir,
        command: Command,
        args: Vec<OsString>,
    ) -> Result<Step, Finish> {
        let step = self
            .restic_waiting_for_lock(dir, command, args.clone())
            .await;
        if step.ending(self.features) != Ending::Verdict(Verdict::Missing)
            || !self.job.init_if_missing
        {
            return Ok(step);
        }
        self.record(&step);
        self.events.log(
            LogStream::Agent,
            format!("repository `{}` does not exist; creating it", self.repo()),
        );
        self.init(dir).await?;
        Ok(self.restic_waiting_for_lock(dir, command, args).await)
    }

    /// Creates the repository. It counts as created only once `cat config` reads it back.
    async fn init(&mut self, dir: &JobDir) -> Result<(), Finish> {
        let created = self.restic(dir, Command::Init, args::init()).await;
        self.record(&created);
        let verify = self
            .restic(dir, Command::CatConfig, args::cat_config())
            .await;
        let made_it = created.ending(self.features) == Ending::Verdict(Verdict::Ok);
        match verify.ending(self.features) {
            Ending::Verdict(Verdict::Ok) => {
                if made_it {
                    self.initialized = true;
                    self.events.log(
                        LogStream::Agent,
                        format!(
                            "created repository `{}` and read its config back",
                            self.repo()
                        ),
                    );
                }
                Ok(())
            }
            Ending::TimedOut | Ending::Cancelled => Err(self.failure(&verify)),
            Ending::Verdict(_) if !made_it => Err(match created.ending(self.features) {
                Ending::Verdict(Verdict::Failed) => Finish::new(
                    Outcome::Failed,
                    format!(
                        "restic init could not create repository `{}`: {}",
                        self.repo(),
                        created.reason()
                    ),
                ),
                _ => self.failure(&created),
            }),
            Ending::Verdict(_) => {
                self.record(&verify);
                Err(Finish::new(
                    Outcome::Failed,
                    format!(
                        "restic init reported success, but `restic cat config` could not read \
                         repository `{}` back ({}); it is not counted as created",
                        self.repo(),
                        verify.reason()
                    ),
                ))
            }
        }
    }

    /// Keeps the exit code and stderr of the step the result reports on.
    fn record(&mut self, step: &Step) {
        self.exit_code = step.exit_code();
        self.stderr_tail = step.facts.tail();
    }

    /// The outcome of a step that did not succeed.
    fn failure(&self, step: &Step) -> Finish {
        let name = step.command.name();
        let repo = self.repo();
        match step.ending(self.features) {
            Ending::TimedOut => Finish::new(
                Outcome::TimedOut,
                format!(
                    "restic {name} did not finish within the job's maximum duration of {} and \
                     was stopped",
                    fmt_duration(self.max)
                ),
            ),
            Ending::Cancelled => Finish::new(
                Outcome::Cancelled,
                format!("the job was cancelled; restic {name} was stopped"),
            ),
            Ending::Verdict(Verdict::Missing) => Finish::new(
                Outcome::RepositoryMissing,
                format!(
                    "repository `{repo}` does not exist ({}), and this job does not create \
                     repositories; run an init job for it, or check the repository's url",
                    step.facts
                        .reason()
                        .unwrap_or_else(|| "restic exited with code 10".to_owned())
                ),
            ),
            Ending::Verdict(Verdict::Locked) => {
                let holder = step
                    .facts
                    .lock
                    .as_ref()
                    .map_or_else(|| "locked".to_owned(), classify::LockHolder::describe);
                let waited = match step.lock_wait {
                    Some(wait) => {
                        format!("it was still locked after waiting {}", fmt_duration(wait))
                    }
                    None => "the job had no time left to wait for it".to_owned(),
                };
                Finish::new(
                    Outcome::BlockedByLock,
                    format!(
                        "restic {name} could not lock repository `{repo}`: it is {holder}; \
                         {waited}. If that process no longer runs, the lock is stale: after this \
                         result the server queues an unlock job for this host, which removes \
                         stale locks, and the job's next run can go ahead"
                    ),
                )
            }
            Ending::Verdict(Verdict::WrongPassword) => Finish::new(
                Outcome::WrongPassword,
                format!(
                    "restic could not open repository `{repo}` with the password it was given \
                     ({}). Check the repository's sealed password: a trailing newline or space \
                     sealed with it is a common cause (seal it with `printf '%s' …`, not \
                     `echo`); note that restic drops leading and trailing whitespace from the \
                     password it reads",
                    step.facts
                        .reason()
                        .unwrap_or_else(|| "wrong password or no key found".to_owned())
                ),
            ),
            Ending::Verdict(Verdict::Ok | Verdict::Partial | Verdict::Failed) => Finish::new(
                Outcome::Failed,
                format!("restic {name} failed with {}", step.reason()),
            ),
        }
    }

    async fn init_job(&mut self, dir: &JobDir) -> Finish {
        let probe = self
            .restic(dir, Command::CatConfig, args::cat_config())
            .await;
        self.record(&probe);
        match probe.ending(self.features) {
            Ending::Verdict(Verdict::Ok) => Finish::new(
                Outcome::Succeeded,
                format!("repository `{}` already exists; nothing to do", self.repo()),
            ),
            Ending::Verdict(Verdict::Missing) => match self.init(dir).await {
                Ok(()) if self.initialized => Finish::new(
                    Outcome::Succeeded,
                    format!(
                        "created repository `{}` and read its config back",
                        self.repo()
                    ),
                ),
                Ok(()) => Finish::new(
                    Outcome::Succeeded,
                    format!(
                        "repository `{}` was created by someone else meanwhile; it exists",
                        self.repo()
                    ),
                ),
                Err(finish) => finish,
            },
            _ => self.failure(&probe),
        }
    }

    async fn backup_job(&mut self, dir: &JobDir) -> Finish {
        let job = self.job;
        let Some(spec) = &job.backup else {
            return Finish::new(Outcome::Failed, "the backup job carries no paths");
        };
        let missing = validate::missing_paths(&spec.paths);
        if !missing.is_empty() {
            return Finish::new(
                Outcome::Failed,
                format!(
                    "{} backup path{} of policy `{}` do{} not exist: {}; restic was not run",
                    missing.len(),
                    if missing.len() == 1 { "" } else { "s" },
                    job.policy,
                    if missing.len() == 1 { "es" } else { "" },
                    missing.join(", ")
                ),
            );
        }

        let step = match self
            .main_command(dir, Command::Backup, args::backup(job, spec))
            .await
        {
            Ok(step) => step,
            Err(finish) => return finish,
        };
        self.record(&step);
        self.unreadable.clone_from(&step.facts.unreadable);
        self.summary = step.summary.clone().map(Into::into);
        let created = if self.initialized {
            format!("created repository `{}`; ", self.repo())
        } else {
            String::new()
        };
        // The inventory is a job of its own, which the server queues after every backup that
        // made a snapshot: a backup through the agent costs what the backup costs.
        match step.ending(self.features) {
            Ending::Verdict(Verdict::Ok) => Finish::new(
                Outcome::Succeeded,
                format!("{created}{}", self.made_snapshot()),
            ),
            Ending::Verdict(Verdict::Partial) => Finish::new(
                Outcome::Partial,
                format!("{created}{}", self.partial_message(&step)),
            ),
            _ => self.failure(&step),
        }
    }

    fn made_snapshot(&self) -> String {
        let Some(s) = &self.summary else {
            return "restic backup reported success but printed no summary".to_owned();
        };
        format!(
            "snapshot {} made: {} new, {} changed, {} unmodified files, {} added of {} \
             processed in {:.1} s",
            s.snapshot_id.as_deref().map_or("(no id)", short_id),
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            fmt_bytes(s.data_added),
            fmt_bytes(s.total_bytes_processed),
            s.total_duration
        )
    }

    fn partial_message(&self, step: &Step) -> String {
        let snapshot = self
            .summary
            .as_ref()
            .and_then(|s| s.snapshot_id.as_deref())
            .map_or("(no id)", short_id);
        let facts = &step.facts;
        if facts.unreadable.is_empty() {
            return format!(
                "snapshot {snapshot} made, but restic could not read some files (exit code 3); \
                 see the end of its stderr"
            );
        }
        let count = facts.unreadable.len() + facts.unreadable_more;
        let shown: Vec<&str> = facts
            .unreadable
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        let more = if count > shown.len() {
            format!(" and {} more", count - shown.len())
        } else {
            String::new()
        };
        format!(
            "snapshot {snapshot} made, but restic could not read {count} file{}: {}{more}",
            if count == 1 { "" } else { "s" },
            shown.join(", ")
        )
    }

    async fn snapshots_job(&mut self, dir: &JobDir) -> Finish {
        let args = args::snapshots(self.job);
        let step = match self.main_command(dir, Command::Snapshots, args).await {
            Ok(step) => step,
            Err(finish) => return finish,
        };
        self.record(&step);
        if step.ending(self.features) != Ending::Verdict(Verdict::Ok) {
            return self.failure(&step);
        }
        match read_snapshots(&step) {
            Ok(list) => {
                let message = format!(
                    "{} snapshot{} of host `{}` for policy `{}` in repository `{}`",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" },
                    self.job.hostname,
                    self.job.policy,
                    self.repo()
                );
                self.snapshots = Some(list);
                Finish::new(Outcome::Succeeded, message)
            }
            Err(reason) => Finish::new(Outcome::Failed, reason),
        }
    }

    async fn forget_job(&mut self, dir: &JobDir, args: Vec<OsString>, prune: bool) -> Finish {
        let step = match self.main_command(dir, Command::Forget, args).await {
            Ok(step) => step,
            Err(finish) => return finish,
        };
        self.record(&step);
        if step.ending(self.features) != Ending::Verdict(Verdict::Ok) {
            return self.failure(&step);
        }
        let scope = format!(
            "snapshots of host `{}` for policy `{}`",
            self.job.hostname, self.job.policy
        );
        let pruned = if prune {
            ", then pruned the repository"
        } else {
            ""
        };
        match step.documents.first().map(|doc| json::parse_forget(doc)) {
            Some(Ok((kept, removed))) => Finish::new(
                Outcome::Succeeded,
                format!("forget kept {kept} and removed {removed} {scope}{pruned}"),
            ),
            Some(Err(err)) => Finish::new(
                Outcome::Succeeded,
                format!(
                    "forget finished on the {scope}{pruned}; its JSON answer could not be read: {err}"
                ),
            ),
            None => Finish::new(
                Outcome::Succeeded,
                format!("forget finished on the {scope}{pruned}; it printed no JSON answer"),
            ),
        }
    }

    /// prune, check and unlock: success is the exit code; restic's last line says the rest.
    async fn plain_job(&mut self, dir: &JobDir, command: Command, args: Vec<OsString>) -> Finish {
        let step = match self.main_command(dir, command, args).await {
            Ok(step) => step,
            Err(finish) => return finish,
        };
        self.record(&step);
        if step.ending(self.features) != Ending::Verdict(Verdict::Ok) {
            return self.failure(&step);
        }
        let said = step
            .last_stdout
            .as_deref()
            .map_or_else(String::new, |line| format!(": {line}"));
        Finish::new(
            Outcome::Succeeded,
            format!(
                "restic {} finished on repository `{}`{said}",
                command.name(),
                self.repo()
            ),
        )
    }
}

/// The snapshot list in a `snapshots --json` step.
fn read_snapshots(step: &Step) -> Result<Vec<Snapshot>, String> {
    let Some(doc) = step.documents.first() else {
        return Err("restic snapshots printed no JSON list".to_owned());
    };
    json::parse_snapshots(doc)
        .map_err(|err| format!("restic snapshots printed a list the agent cannot read: {err}"))
}

fn short_id(id: &str) -> &str {
    cut(id, 8)
}

/// `1h 30m`, `2m`, `45s`, `1.5s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

/// `1.5 GiB`, `707 B`.
fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "a display value with one decimal; precision beyond 2^52 bytes does not show"
    )]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_let_through_once_a_second() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        assert!(throttle.allow(t0));
        assert!(!throttle.allow(t0 + Duration::from_millis(400)));
        assert!(!throttle.allow(t0 + Duration::from_millis(999)));
        assert!(throttle.allow(t0 + Duration::from_secs(1)));
        assert!(!throttle.allow(t0 + Duration::from_millis(1500)));
        assert!(throttle.allow(t0 + Duration::from_millis(2600)));
    }

    #[test]
    fn durations_and_sizes_read_plainly() {
        assert_eq!(fmt_duration(Duration::from_mins(90)), "1h 30m");
        assert_eq!(fmt_duration(Duration::from_mins(2)), "2m");
        assert_eq!(fmt_duration(Duration::from_secs(61)), "1m 1s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "0.3s");
        assert_eq!(fmt_bytes(707), "707 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
