//! What the demo prints: its steps, each job's state changes and progress, and each job's
//! outcome with restic's summary. Output goes to stdout; on a terminal, progress updates one
//! line in place.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use protocol::{BackupSummary, JobKind};

use super::area::{self, Area};
use crate::server::Server;
use crate::server::model::{AssignmentKey, JobState};
use crate::server::store::JobRecord;

/// The demo's output.
pub struct Report {
    terminal: bool,
    steps: usize,
    /// A progress line is on screen and must be ended before the next line.
    in_place: bool,
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    #[must_use]
    pub fn new() -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
            steps: 0,
            in_place: false,
        }
    }

    #[allow(clippy::print_stdout, reason = "the demo's output is its result")]
    fn line(&mut self, text: &str) {
        if self.in_place {
            println!();
            self.in_place = false;
        }
        println!("{}", crate::config::diag::printable(text));
    }

    #[allow(clippy::print_stdout, reason = "the demo's output is its result")]
    fn progress(&mut self, text: &str) {
        if !self.terminal {
            return;
        }
        print!("\r\x1b[2K{text}");
        let _ = std::io::stdout().flush();
        self.in_place = true;
    }

    pub fn intro(&mut self, area: &Area, kept: bool, restic: &str, binary: &Path) {
        self.line(
            "restic-manager demo: a server, an agent for this machine and a real restic backup",
        );
        let lifetime = if kept {
            "kept after the demo; run the same command again to restart it"
        } else {
            "temporary, removed when the demo stops; keep it with --dir DIR"
        };
        self.line(&format!(
            "  working area: {} ({lifetime})",
            area.root.display()
        ));
        self.line(&format!("  restic:       {restic} ({})", binary.display()));
    }

    pub fn step(&mut self, text: &str) {
        self.steps += 1;
        let n = self.steps;
        self.line(&format!("[{n}] {text}"));
    }

    pub fn note(&mut self, text: &str) {
        self.line(&format!("    {text}"));
    }

    pub fn warn(&mut self, text: &str) {
        self.line(&format!("    warning: {text}"));
    }

    pub fn look_around(&mut self, area: &Area) {
        let root = area.root.display();
        self.line("Look around:");
        self.line(&format!(
            "  restic -r {root}/restic-repo --password-file {root}/restic-password.txt snapshots"
        ));
        self.line(&format!("  git -C {root}/config log --stat"));
        let me = own_command();
        self.line(&format!("  {me} audit log --data-dir {root}/server"));
        self.line(&format!("  {me} show {root}/config"));
    }

    /// Says what happens next and when.
    pub fn keeps_running(&mut self, server: &Server, area: &Area) {
        self.line(
            "The demo keeps running: the server schedules as the config says. Press Ctrl-C to stop.",
        );
        let scheduler = server.scheduler.lock().expect("scheduler lock");
        for kind in [
            JobKind::Backup,
            JobKind::Forget,
            JobKind::Prune,
            JobKind::Check,
        ] {
            let key = AssignmentKey::new(&area.host, area::POLICY, kind);
            if let Some(next) = scheduler.next_instant(&key) {
                let local = next.to_zoned(jiff::tz::TimeZone::system());
                self.line(&format!(
                    "  next {kind:<6} {}",
                    local.strftime("%Y-%m-%d %H:%M %Z")
                ));
            }
        }
    }

    fn outcome(&mut self, job: &JobRecord) {
        let label = format!("{} {}/{}", job.kind, job.host, job.policy);
        // The store keeps whole seconds.
        let took = match (job.started_at, job.finished_at) {
            (Some(start), Some(end)) => match end.duration_since(start).as_secs() {
                0 => " in under a second".to_owned(),
                1 => " in about a second".to_owned(),
                n => format!(" in about {n} s"),
            },
            _ => String::new(),
        };
        let mark = if job.state == JobState::Succeeded {
            "ok  "
        } else {
            "FAIL"
        };
        self.line(&format!("  {mark} {label:<24} {}{took}", job.state));
        let summary = job
            .summary
            .as_deref()
            .and_then(|text| serde_json::from_str::<BackupSummary>(text).ok());
        // A backup's summary below says what its message says, in more detail.
        if let Some(message) = job
            .message
            .as_deref()
            .filter(|m| !m.is_empty() && (summary.is_none() || job.state != JobState::Succeeded))
        {
            self.line(&format!("       {message}"));
        }
        if job.state != JobState::Succeeded
            && let Some(reason) = job.reason.as_deref()
        {
            self.line(&format!("       {reason}"));
        }
        if let Some(summary) = summary {
            self.line(&format!(
                "       snapshot {}: {} files ({} new, {} changed, {} unmodified), {} processed, \
                 {} added to the repository, restic took {:.1} s",
                summary
                    .snapshot_id
                    .as_deref()
                    .map_or("?", |id| id.get(..8).unwrap_or(id)),
                summary.total_files_processed,
                summary.files_new,
                summary.files_changed,
                summary.files_unmodified,
                bytes(summary.total_bytes_processed),
                bytes(summary.data_added),
                summary.total_duration
            ));
        }
        if job.state != JobState::Succeeded
            && let Some(tail) = job.stderr_tail.as_deref().filter(|t| !t.trim().is_empty())
        {
            for line in tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                self.line(&format!("       restic: {line}"));
            }
        }
    }
}

/// A size in bytes, in binary units.
#[must_use]
pub fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "a size shown with one decimal")]
    let value = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", value / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", value / 1_048_576.0),
        _ => format!("{:.2} GiB", value / 1_073_741_824.0),
    }
}

/// Watches one job (and the init it waits for, if any) to its end; true when it succeeded.
pub async fn watch_job(
    server: &Arc<Server>,
    host: &str,
    id: &str,
    timeout: Duration,
    out: &mut Report,
) -> anyhow::Result<bool> {
    let mut seen: HashMap<String, JobState> = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (job, init) = {
            let (id, host) = (id.to_owned(), host.to_owned());
            server
                .with_store(move |store| {
                    let job = store.job(&id)?;
                    let init = match &job {
                        Some(job) => store.last_init(&host, &job.repository)?,
                        None => None,
                    };
                    Ok::<_, crate::server::store::StoreError>((job, init))
                })
                .await?
        };
        let Some(job) = job else {
            anyhow::bail!("job {id} is not in the state database");
        };
        if let Some(init) = init.filter(|init| init.created_at >= job.created_at) {
            show_changes(server, &init, &mut seen, out);
        }
        show_changes(server, &job, &mut seen, out);
        if job.state.is_terminal() {
            return Ok(job.state == JobState::Succeeded);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "job {id} did not finish within {timeout:?}; it is {}",
                job.state
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints what changed about a job since it was last seen.
fn show_changes(
    server: &Server,
    job: &JobRecord,
    seen: &mut HashMap<String, JobState>,
    out: &mut Report,
) {
    let before = seen.insert(job.id.clone(), job.state);
    if before == Some(job.state) {
        if job.state == JobState::Running
            && let Some(progress) = server
                .progress
                .lock()
                .expect("progress lock")
                .get(&job.id)
                .cloned()
        {
            out.progress(&format!(
                "       {} {}/{}: {:.0}%, {} of {} files, {} of {}",
                job.kind,
                job.host,
                job.policy,
                progress.percent_done * 100.0,
                progress.files_done,
                progress.total_files,
                bytes(progress.bytes_done),
                bytes(progress.total_bytes)
            ));
        }
        return;
    }
    if job.state.is_terminal() {
        out.outcome(job);
        return;
    }
    let why = job
        .reason
        .as_deref()
        .filter(|_| job.state == JobState::Deferred)
        .map_or(String::new(), |r| format!(": {r}"));
    out.line(&format!(
        "  ...  {:<24} {}{why}",
        format!("{} {}/{}", job.kind, job.host, job.policy),
        job.state
    ));
}

/// Prints the host's jobs as they come and go, until `stop` resolves.
pub async fn follow_jobs(
    server: &Arc<Server>,
    host: &str,
    out: &mut Report,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut seen: HashMap<String, JobState> = HashMap::new();
    let mut first = true;
    tokio::pin!(stop);
    loop {
        let owner = host.to_owned();
        let jobs = server
            .with_store(move |store| store.recent_jobs(Some(&owner), 20))
            .await
            .unwrap_or_default();
        for job in jobs.iter().rev() {
            if first {
                // What ran before is already on screen.
                seen.insert(job.id.clone(), job.state);
            } else {
                show_changes(server, job, &mut seen, out);
            }
        }
        first = false;
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// How to run this restic-manager again: its plain name when that is what `PATH` finds (an
/// installed binary), else its full path (run through `cargo run`, for example).
fn own_command() -> String {
    let Ok(me) = std::env::current_exe() else {
        return "restic-manager".to_owned();
    };
    let real = me.canonicalize().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("restic-manager"))
            .filter_map(|candidate| candidate.canonicalize().ok())
            .any(|candidate| real.as_ref() == Some(&candidate))
    });
    if on_path {
        "restic-manager".to_owned()
    } else {
        me.display().to_string()
    }
}
