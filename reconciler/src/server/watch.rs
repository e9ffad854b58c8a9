//! When to fetch again: a filesystem watch on a local repository's references, so a commit is
//! picked up within a second, and the jittered delay between polls of any repository.
//!
//! The watch sends `()` on a tokio channel; the receiver fetches and reads the branch itself,
//! so a dropped or merged message loses nothing. The watcher runs on its own thread and stops
//! when its [`RepoWatch`] is dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache};
use rand::Rng;
use tokio::sync::mpsc;

/// How long the watch waits for a burst of writes (a commit touches several files) to settle.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Watching a repository failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path is not a git repository.
    #[error("cannot watch {}: it is not a git repository ({reason})", path.display())]
    NotARepository { path: PathBuf, reason: String },
    /// The operating system refused the watch.
    #[error(
        "cannot watch {} for commits: {source}; the repository is still polled (on Linux, \
         raise fs.inotify.max_user_watches if the limit was reached)",
        path.display()
    )]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// A running watch; dropping it stops the watch and its thread.
pub struct RepoWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for RepoWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoWatch")
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

impl RepoWatch {
    /// The git directories being watched.
    #[must_use]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// Watches the git directory of the repository at `repo` (a work tree or a bare repository)
/// and sends `()` on `tx` after its references or `HEAD` change, at most once per `debounce`.
///
/// A full channel is not waited for: a message already waiting asks for the same fetch. Give
/// the channel a capacity of 1.
pub fn watch_repository(
    repo: &Path,
    debounce: Duration,
    tx: mpsc::Sender<()>,
) -> Result<RepoWatch, WatchError> {
    let git = gix::open(repo).map_err(|e| WatchError::NotARepository {
        path: repo.to_owned(),
        reason: e.to_string(),
    })?;
    let common_dir = absolute(git.common_dir());
    let git_dir = absolute(git.git_dir());
    drop(git);

    let filter_dirs = vec![common_dir.clone(), git_dir.clone()];
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let relevant = events
                .iter()
                .filter(|event| is_change(event.kind))
                .flat_map(|event| event.paths.iter())
                .any(|path| touches_refs(&filter_dirs, path));
            if relevant {
                tracing::debug!("references changed; asking for a fetch");
                // Full means a fetch is already asked for; closed means nobody listens.
                let _ = tx.try_send(());
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::warn!(error = %error, "watching the config repository failed");
            }
        }
    };
    let watch_error = |path: &Path| {
        let path = path.to_owned();
        move |source| WatchError::Watch { path, source }
    };
    let mut debouncer = notify_debouncer_full::new_debouncer(debounce, None, handler)
        .map_err(watch_error(&common_dir))?;
    debouncer
        .watch(&common_dir, RecursiveMode::Recursive)
        .map_err(watch_error(&common_dir))?;
    let mut dirs = vec![common_dir.clone()];
    // A linked work tree keeps its own HEAD outside the common directory.
    if !git_dir.starts_with(&common_dir) {
        debouncer
            .watch(&git_dir, RecursiveMode::NonRecursive)
            .map_err(watch_error(&git_dir))?;
        dirs.push(git_dir);
    }
    tracing::info!(dirs = ?dirs, "watching the config repository for commits");
    Ok(RepoWatch {
        _debouncer: debouncer,
        dirs,
    })
}

/// Whether an event may be a write; git reads its references all the time (every `git status`
/// does), and a read must not cause a fetch.
fn is_change(kind: EventKind) -> bool {
    !matches!(kind, EventKind::Access(access) if access != AccessKind::Close(AccessMode::Write))
}

/// Whether `path` is a reference, `packed-refs` or `HEAD` of one of the git `dirs`; objects,
/// the index and logs change with every commit too, but only references say where a branch is.
fn touches_refs(dirs: &[PathBuf], path: &Path) -> bool {
    dirs.iter().any(|dir| {
        let Ok(relative) = path.strip_prefix(dir) else {
            return false;
        };
        let mut parts = relative.components();
        let Some(first) = parts.next() else {
            return false;
        };
        let first = first.as_os_str();
        first == "refs" || first == "packed-refs" || (first == "HEAD" && parts.next().is_none())
    })
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

/// The wait before the next poll: `interval` moved randomly by up to ±10 %, so servers and
/// restarts do not poll a shared remote in step.
pub fn poll_delay(interval: Duration, rng: &mut impl Rng) -> Duration {
    let factor = rng.random_range(0.9..=1.1);
    interval.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rand::SeedableRng as _;

    use super::*;
    use crate::server::testutil::{commit_file, git, work_tree};

    /// Waits up to `timeout` for a message; true when one came.
    fn received(rx: &mut mpsc::Receiver<()>, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            match rx.try_recv() {
                Ok(()) => return true,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        false
    }

    /// Drains what the setup may have caused, then waits for quiet.
    fn settle(rx: &mut mpsc::Receiver<()>) {
        while received(rx, Duration::from_millis(400)) {}
    }

    #[test]
    fn a_commit_is_noticed_within_a_second() {
        let repo = work_tree();
        let (tx, mut rx) = mpsc::channel(1);
        let watch = watch_repository(repo.path(), DEFAULT_DEBOUNCE, tx).expect("watch starts");
        settle(&mut rx);

        let start = Instant::now();
        commit_file(repo.path(), "hosts/b.toml", "", "second");

        assert!(
            received(&mut rx, Duration::from_secs(1)),
            "no message within 1 s"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(
            watch.dirs(),
            [repo.path().canonicalize().expect("path").join(".git")]
        );
    }

    #[test]
    fn a_push_into_a_bare_repository_is_noticed() {
        let work = work_tree();
        let bare = tempfile::tempdir().expect("temp dir");
        git(bare.path(), &["init", "-q", "--bare"]);
        let bare_url = bare.path().display().to_string();
        git(work.path(), &["push", "-q", &bare_url, "main"]);
        let (tx, mut rx) = mpsc::channel(1);
        let _watch = watch_repository(bare.path(), DEFAULT_DEBOUNCE, tx).expect("watch starts");
        settle(&mut rx);

        commit_file(work.path(), "hosts/b.toml", "", "second");
        git(work.path(), &["push", "-q", &bare_url, "main"]);

        assert!(
            received(&mut rx, Duration::from_secs(1)),
            "no message within 1 s"
        );
    }

    #[test]
    fn work_tree_edits_without_a_commit_are_ignored() {
        let repo = work_tree();
        let (tx, mut rx) = mpsc::channel(1);
        let _watch = watch_repository(repo.path(), DEFAULT_DEBOUNCE, tx).expect("watch starts");
        settle(&mut rx);

        std::fs::write(repo.path().join("hosts/a.toml"), "a = 2\n").expect("write");
        git(repo.path(), &["add", "-A"]);

        assert!(
            !received(&mut rx, Duration::from_millis(600)),
            "a message without a commit"
        );
    }

    #[test]
    fn dropping_the_watch_stops_it() {
        let repo = work_tree();
        let (tx, mut rx) = mpsc::channel(1);
        let watch = watch_repository(repo.path(), DEFAULT_DEBOUNCE, tx).expect("watch starts");
        settle(&mut rx);

        drop(watch);
        commit_file(repo.path(), "hosts/b.toml", "", "unwatched");

        // The sender lived in the watcher; with it gone the channel closes.
        assert!(!received(&mut rx, Duration::from_secs(1)));
        assert_eq!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
    }

    #[test]
    fn a_directory_that_is_no_repository_cannot_be_watched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, _rx) = mpsc::channel(1);

        let err = watch_repository(dir.path(), DEFAULT_DEBOUNCE, tx).expect_err("no repository");

        assert!(
            err.to_string().starts_with(&format!(
                "cannot watch {}: it is not a git repository (",
                dir.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn only_references_and_head_count() {
        let dirs = [PathBuf::from("/r/.git")];

        assert!(touches_refs(&dirs, Path::new("/r/.git/refs/heads/main")));
        assert!(touches_refs(&dirs, Path::new("/r/.git/packed-refs")));
        assert!(touches_refs(&dirs, Path::new("/r/.git/HEAD")));
        assert!(!touches_refs(&dirs, Path::new("/r/.git/objects/ab/cdef")));
        assert!(!touches_refs(&dirs, Path::new("/r/.git/index")));
        assert!(!touches_refs(&dirs, Path::new("/r/.git/logs/HEAD")));
        assert!(!touches_refs(&dirs, Path::new("/r/hosts/a.toml")));
    }

    #[test]
    fn reads_do_not_count_as_changes() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};

        assert!(!is_change(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(EventKind::Create(CreateKind::File)));
        assert!(is_change(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }

    #[test]
    fn poll_delays_stay_within_ten_percent_and_vary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let interval = Duration::from_mins(1);

        let delays: Vec<Duration> = (0..200).map(|_| poll_delay(interval, &mut rng)).collect();

        let (min, max) = (Duration::from_secs(54), Duration::from_secs(66));
        assert!(delays.iter().all(|d| (min..=max).contains(d)), "{delays:?}");
        assert!(delays.iter().any(|d| *d < Duration::from_secs(57)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(63)));
        assert_eq!(poll_delay(Duration::ZERO, &mut rng), Duration::ZERO);
    }
}
