//! Following the config repository: fetch the branch, validate each new revision in full, and
//! apply the valid ones. An invalid revision is recorded with its errors and never applied;
//! the last good one stays in force. A fetch that fails (branch deleted, remote unreachable,
//! clone corrupt) changes nothing but the error shown.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};

use crate::config::model::Config;

use super::model::{Action, RevisionInfo};
use super::reconcile::ChangedKeys;
use super::run::{Applied, Server};
use super::scheduler::{self, Scheduler};
use super::settings::{Settings, Source};
use super::source::{Fetched, GitSource, Location, SourceError};

/// Opens the git source the settings name.
pub fn open_source(settings: &Settings) -> Result<GitSource, SourceError> {
    match &settings.source {
        Source::Local(path) => GitSource::local(path.clone(), &settings.branch),
        Source::Remote(url) => GitSource::remote(url, &settings.branch, &settings.data_dir),
    }
}

/// What stays in force while a revision cannot be applied: the last good one, or, when none
/// was ever applied, nothing until `until`.
fn what_stays(server: &Server, until: &str) -> String {
    if server.applied().is_some() {
        "the last good revision stays in force".to_owned()
    } else {
        format!("no revision has been applied yet, so nothing is scheduled until {until}")
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Reads, validates and, when valid, applies a fetched revision. Runs on the blocking pool.
pub fn consider(server: &Server, fetched: &Fetched) {
    let revision = RevisionInfo {
        commit: fetched.commit.clone(),
        author: fetched.info.author.clone(),
        summary: fetched.info.summary.clone(),
        committed_at: fetched.info.time.parse::<jiff::Timestamp>().ok(),
    };
    let span = info_span!("reconcile", revision = %short(&revision.commit));
    let _enter = span.enter();
    let started = std::time::Instant::now();

    let config = match read_config(server, &fetched.repo_path, &revision.commit) {
        Ok(config) => config,
        Err(errors) => {
            error!(
                author = %revision.author,
                summary = %revision.summary,
                "revision is invalid; {}:\n{errors}",
                what_stays(server, "a valid revision arrives")
            );
            let mut store = server.store.lock().expect("store lock");
            match store.record_revision(&revision, Err(&errors)) {
                Ok(()) => server.note_invalid(&revision.commit),
                Err(e) => error!(error = %e, "could not record the invalid revision"),
            }
            return;
        }
    };

    let validated = started.elapsed();
    let desired = super::reconcile::desired(&config);
    let in_force = server.applied();
    let changed = ChangedKeys::between(in_force.as_ref().map(|a| &a.config), &config);
    let mut store = server.store.lock().expect("store lock");
    let applied = store.apply_revision(
        &revision,
        desired,
        fetched.rewritten_from.as_deref(),
        &changed,
    );
    drop(store);
    match applied {
        Ok(actions) => {
            if fetched.rewritten_from.is_some() {
                warn!("history of the followed branch was rewritten; following the new tip");
            }
            info!(
                actions = actions.len(),
                validate_ms = validated.as_millis(),
                total_ms = started.elapsed().as_millis(),
                "revision applied"
            );
            // A connection proved with a key that is no longer committed ends now.
            for action in &actions {
                if let Action::HostRemoved { host } | Action::AgentKeyChanged { host } = action {
                    server.hub.close(host);
                }
            }
            // Stored first, scheduled second: the schedule is rebuilt by its own task, off
            // the path from a commit to its stored assignments. Until then the scheduler
            // queues nothing (it knows which revision it was built for).
            server.set_applied(Applied { revision, config });
            server.rebuild.notify_one();
        }
        Err(e) => error!(error = %e, "could not apply the revision; it will be tried again"),
    }
}

/// How many warnings of a valid revision are logged; `restic-manager validate` shows them all.
const WARNINGS_LOGGED: usize = 20;

/// The configuration of a revision, or the errors that make it invalid, as text. The
/// warnings of a valid one (a misspelt directory whose files are not read) are logged.
fn read_config(server: &Server, repo: &std::path::Path, commit: &str) -> Result<Config, String> {
    let files = crate::git::read_revision(repo, commit).map_err(|e| e.to_string())?;
    let mut loaded = crate::config::load(&files);
    if loaded.config.is_some() {
        // A sealed value the server cannot open would fail every job that needs it: the
        // revision is refused instead, with the file and key named. The identity read at
        // start is used, so its file is not read (nor warned about) again per revision.
        crate::secrets::check_openable_with(
            &server.identity,
            &server.settings.identity,
            &mut loaded,
        );
    }
    match loaded.config {
        Some(config) if !loaded.diagnostics.has_errors() => {
            log_warnings(&loaded.diagnostics);
            Ok(config)
        }
        _ => Err(loaded.diagnostics.render_text(false)),
    }
}

/// Logs the first [`WARNINGS_LOGGED`] warnings of a valid revision in one event.
fn log_warnings(diagnostics: &crate::config::Diagnostics) {
    let warnings = diagnostics.items();
    if warnings.is_empty() {
        return;
    }
    let mut text: Vec<String> = warnings
        .iter()
        .take(WARNINGS_LOGGED)
        .map(crate::config::Diagnostic::headline)
        .collect();
    if warnings.len() > WARNINGS_LOGGED {
        text.push(format!(
            "and {} more; `restic-manager validate` lists them all",
            warnings.len() - WARNINGS_LOGGED
        ));
    }
    warn!(
        warnings = warnings.len(),
        "the revision is valid but has warnings:\n{}",
        text.join("\n")
    );
}

/// At start: puts the last applied revision back in force without applying it again, and
/// rebuilds the schedule from the stored state.
pub fn restore(server: &Server, source: &mut GitSource) {
    let last = {
        let store = server.store.lock().expect("store lock");
        store.last_applied_revision()
    };
    let revision = match last {
        Ok(Some(revision)) => revision,
        Ok(None) => return,
        Err(e) => {
            error!(error = %e, "could not read the last applied revision");
            return;
        }
    };
    if let Err(e) = source.set_last_seen(Some(&revision.commit)) {
        warn!(error = %e, "could not remember the last applied commit");
    }
    let repo = match source.location() {
        Location::Local(path) => path.clone(),
        Location::Remote { clone_dir, .. } => clone_dir.clone(),
    };
    let config = match read_config(server, &repo, &revision.commit) {
        Ok(config) => config,
        Err(e) => {
            warn!(
                revision = %short(&revision.commit),
                "cannot read the last applied revision again; waiting for a fetch: {e}"
            );
            return;
        }
    };
    info!(revision = %short(&revision.commit), "last applied revision restored");
    server.set_applied(Applied { revision, config });
    rebuild_schedule(server);
}

/// Rebuilds the schedule from the revision in force and the stored schedule state.
pub fn rebuild_schedule(server: &Server) {
    let Some(applied) = server.applied() else {
        return;
    };
    let states = server.store.lock().expect("store lock").schedule_states();
    let states = match states {
        Ok(states) => states,
        Err(e) => {
            error!(error = %e, "could not read the schedule state; nothing is queued until it can be");
            return;
        }
    };
    let mut rebuilt = Scheduler::build(
        scheduler::scheduled(&applied.config),
        &states,
        jiff::Timestamp::now(),
    );
    rebuilt.revision = Some(applied.revision.commit.clone());
    *server.scheduler.lock().expect("scheduler lock") = rebuilt;
    server.wake.notify_one();
}

/// Rebuilds the schedule whenever a revision was applied, until `shutdown` fires. Several
/// revisions applied in a row are one rebuild, from the newest.
pub async fn rebuild_schedules(server: Arc<Server>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = server.rebuild.notified() => {}
            () = shutdown.cancelled() => return,
        }
        let task_server = Arc::clone(&server);
        if let Err(e) = tokio::task::spawn_blocking(move || rebuild_schedule(&task_server)).await {
            error!(error = %e, "rebuilding the schedule failed");
        }
    }
}

/// How long shutdown waits for a fetch in progress to stop after being interrupted.
pub const FETCH_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// At shutdown during a fetch: interrupts it and waits at most [`FETCH_GRACE`] for it. A
/// fetch stuck where gix does not look at the interrupt flag (a remote that accepted the
/// connection and never answers) is left to the process's exit.
async fn abandon_at_shutdown<T>(
    interrupt: &std::sync::atomic::AtomicBool,
    fetch: tokio::task::JoinHandle<T>,
) {
    interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
    if tokio::time::timeout(FETCH_GRACE, fetch).await.is_err() {
        warn!(
            grace_ms = FETCH_GRACE.as_millis(),
            "the fetch in progress did not stop within its grace after shutdown; abandoned"
        );
    }
}

/// Follows the config repository until `shutdown` fires.
pub async fn follow(
    server: Arc<Server>,
    mut source: GitSource,
    mut changes: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    let interrupt = source.interrupt_flag();
    loop {
        let task_server = Arc::clone(&server);
        let span = info_span!("fetch");
        let done = tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let started = std::time::Instant::now();
            let fetched = source.fetch();
            tracing::debug!(took_ms = started.elapsed().as_millis(), "fetched");
            match fetched {
                Ok(fetched) => {
                    task_server.set_source_error(None);
                    // A revision already in force, or already found invalid by this process,
                    // is not read again; a restart validates an invalid tip once more, so a
                    // fixed identity file takes effect.
                    let in_force = task_server
                        .applied()
                        .is_some_and(|a| a.revision.commit == fetched.commit);
                    if !in_force && !task_server.is_known_invalid(&fetched.commit) {
                        consider(&task_server, &fetched);
                    }
                }
                Err(e) => {
                    error!(
                        error = %e,
                        "cannot fetch the config repository; {}",
                        what_stays(&task_server, "a fetch succeeds")
                    );
                    task_server.set_source_error(Some(e.to_string()));
                }
            }
            source
        });
        let mut done = done;
        let finished = tokio::select! {
            finished = &mut done => finished,
            () = shutdown.cancelled() => {
                abandon_at_shutdown(&interrupt, done).await;
                return;
            }
        };
        source = match finished {
            Ok(source) => source,
            Err(e) => {
                error!(error = %e, "the fetch task failed; the follower stops");
                return;
            }
        };

        let delay = super::watch::poll_delay(server.settings.poll_interval, &mut rand::rng());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            Some(()) = changes.recv() => {}
            () = server.fetch_now.notified() => {}
            () = shutdown.cancelled() => {
                interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }
}
