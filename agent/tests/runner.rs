//! The restic runner against the real restic binaries installed here (0.14 and 0.18, see
//! `restic_binaries`), on local repositories in temp dirs and a real REST server (`rclone
//! serve restic`). Fake `restic` scripts appear only where a fault must be injected that real
//! restic does not produce on demand: a hang, a huge JSON line, malformed output, an odd exit
//! code, an init whose repository cannot be read back.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::runner::{JobEvent, Limits, Restic, RunContext, RunnerError, run_job};
use protocol::{
    BackupSpec, CheckSpec, ForgetSpec, HookSpec, JobKind, JobResult, JobSpec, LogStream, Outcome,
    PruneSpec, RepositoryAccess, Secret,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[path = "shared/restic.rs"]
mod restic;

use restic::restic_binaries;

/// Every `run_job` in these tests must end within this.
const JOB_TIMEOUT: Duration = Duration::from_mins(2);

/// Each binary with its detected version.
async fn restics() -> Vec<(PathBuf, Restic)> {
    let mut out = Vec::new();
    for binary in restic_binaries() {
        let restic = Restic::detect(&binary)
            .await
            .unwrap_or_else(|err| panic!("cannot use {}: {err}", binary.display()));
        out.push((binary, restic));
    }
    out
}

/// A temp directory with everything one test needs.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A source directory `name` holding `files`.
    fn source(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        dir
    }

    fn ctx(
        &self,
        restic: &Restic,
        limits: Limits,
    ) -> (RunContext, mpsc::UnboundedReceiver<JobEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let ctx = RunContext {
            restic: restic.clone(),
            limits,
            work_dir: self.path("work"),
            events,
            cancel: CancellationToken::new(),
        };
        (ctx, rx)
    }

    /// Runs restic directly (test setup), with the password in the environment.
    fn cli(
        &self,
        binary: &Path,
        repo: &Path,
        password: &str,
        args: &[&str],
    ) -> std::process::Output {
        let output = std::process::Command::new(binary)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD", password)
            .env("RESTIC_CACHE_DIR", self.path("cli-cache"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "restic {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A fake restic that answers `version` like restic 0.18 and runs `body` otherwise.
    async fn fake_restic(&self, name: &str, body: &str) -> Restic {
        let path = self.path(name);
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then\n  echo 'restic 0.18.0 compiled with go1.24.4 \
             on linux/amd64'\n  exit 0\nfi\n{body}\n"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        detect_retrying(&path).await.unwrap()
    }
}

/// `Restic::detect`, retried while a freshly written script is still busy: another test's
/// fork may hold it open for a moment (ETXTBSY).
async fn detect_retrying(path: &Path) -> Result<Restic, RunnerError> {
    for _ in 0..50 {
        match Restic::detect(path).await {
            Err(RunnerError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::ExecutableFileBusy =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
    Restic::detect(path).await
}

fn job(kind: JobKind, url: &str, password: &str) -> JobSpec {
    JobSpec {
        id: format!("job-{}", kind.as_str()),
        kind,
        host: "web-1".into(),
        hostname: "web-1.example.net".into(),
        policy: "system".into(),
        repository: RepositoryAccess {
            name: "local".into(),
            url: url.into(),
            password: Secret::new(password.into()),
            env: BTreeMap::new(),
        },
        max_duration_secs: 120,
        init_if_missing: false,
        backup: None,
        forget: None,
        check: None,
        prune: None,
        hooks: HookSpec::default(),
    }
}

fn backup_job(url: &str, password: &str, paths: &[&Path]) -> JobSpec {
    let mut j = job(JobKind::Backup, url, password);
    j.backup = Some(BackupSpec {
        paths: paths
            .iter()
            .map(|p| p.to_str().unwrap().to_owned())
            .collect(),
        ..BackupSpec::default()
    });
    j
}

/// The inventory job the server queues after `backup`: the same host, policy and repository.
fn inventory_of(backup: &JobSpec) -> JobSpec {
    let mut j = backup.clone();
    j.id = format!("{}-inventory", backup.id);
    j.kind = JobKind::Snapshots;
    j.backup = None;
    j.init_if_missing = false;
    j
}

async fn run(ctx: &RunContext, job: &JobSpec) -> JobResult {
    tokio::time::timeout(JOB_TIMEOUT, run_job(ctx, job))
        .await
        .unwrap_or_else(|_| panic!("run_job of {} did not end within {JOB_TIMEOUT:?}", job.kind))
}

fn drain(rx: &mut mpsc::UnboundedReceiver<JobEvent>) -> Vec<JobEvent> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        out.push(event);
    }
    out
}

fn logs(events: &[JobEvent], stream: LogStream) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Log { stream: s, line } if *s == stream => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

fn url(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// Writes `bytes` of incompressible pseudo-random data to `path`.
fn write_random(path: &Path, bytes: usize, seed: u64) {
    let mut state = seed | 1;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    file.flush().unwrap();
}

fn lock_files(repo: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(repo.join("locks"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Polls `check` every 20 ms until it is true, failing after `limit`.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Detection

#[tokio::test]
async fn every_installed_restic_is_detected_with_its_version() {
    for (binary, restic) in restics().await {
        assert!(
            restic.version_line().starts_with("restic "),
            "{}: {}",
            binary.display(),
            restic.version_line()
        );
        assert!(restic.version() >= (0, 14, 0), "{:?}", restic.version());
    }
}

#[tokio::test]
async fn detection_refuses_old_unknown_and_missing_binaries() {
    let lab = Lab::new();
    let old = lab.path("old-restic");
    std::fs::write(
        &old,
        "#!/bin/sh\necho 'restic 0.13.1 compiled with go1.17 on linux/amd64'\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = detect_retrying(&old).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is restic 0.13.1, older than the oldest supported restic 0.14.0",
            old.display()
        )
    );

    let other = lab.path("not-restic");
    std::fs::write(&other, "#!/bin/sh\necho 'rustic 0.9.0'\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = detect_retrying(&other).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{0} version` printed \"rustic 0.9.0\", not restic's version line (`restic 0.18.0 \
             compiled with …`), so {0} does not look like restic",
            other.display()
        )
    );

    let missing = lab.path("no-such-restic");
    let err = Restic::detect(&missing).await.unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot run `{} version`: No such file or directory",
            missing.display()
        )),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Init, backup, check with a hostile password

#[tokio::test]
async fn init_backup_and_check_work_with_a_password_full_of_shell_characters() {
    let password = "q'uo\"te $HOME `id` back\\slash ! #hash  two  spaces ünïcødé ✓ %s";
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[("a.txt", "alpha"), ("b.txt", "beta")]);
        let (ctx, mut rx) = lab.ctx(&restic, Limits::default());

        let init = run(&ctx, &job(JobKind::Init, &url(&repo), password)).await;
        assert_eq!(
            init.outcome,
            Outcome::Succeeded,
            "{}: {}",
            binary.display(),
            init.message
        );
        assert!(init.initialized);
        assert_eq!(
            init.message,
            "created repository `local` and read its config back"
        );

        let again = run(&ctx, &job(JobKind::Init, &url(&repo), password)).await;
        assert_eq!(again.outcome, Outcome::Succeeded);
        assert!(!again.initialized);
        assert_eq!(
            again.message,
            "repository `local` already exists; nothing to do"
        );

        let backup_spec = backup_job(&url(&repo), password, &[&src]);
        let backup = run(&ctx, &backup_spec).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{}", backup.message);
        assert_eq!(backup.exit_code, Some(0));
        let summary = backup.summary.clone().expect("a backup summary");
        assert_eq!(summary.files_new, 2);
        assert_eq!(summary.total_bytes_processed, 9);
        let id = summary.snapshot_id.clone().unwrap();
        assert!(
            backup
                .message
                .starts_with(&format!("snapshot {} made: 2 new", &id[..8]))
        );
        // The inventory is its own job, not a second restic run inside the backup.
        assert_eq!(backup.snapshots, None);
        let listed = run(&ctx, &inventory_of(&backup_spec)).await;
        assert_eq!(listed.outcome, Outcome::Succeeded, "{}", listed.message);
        let snapshots = listed.snapshots.clone().expect("the inventory");
        assert_eq!(snapshots.len(), 1);
        assert!(id.starts_with(&snapshots[0].id) || snapshots[0].id.starts_with(&id));
        assert_eq!(snapshots[0].hostname, "web-1.example.net");
        assert_eq!(snapshots[0].tags, ["policy:system"]);
        assert_eq!(snapshots[0].paths, [url(&src)]);

        let mut check = job(JobKind::Check, &url(&repo), password);
        check.check = Some(CheckSpec {
            read_data_subset: Some("50%".into()),
        });
        let checked = run(&ctx, &check).await;
        assert_eq!(checked.outcome, Outcome::Succeeded, "{}", checked.message);

        // The same password opens the repository from the command line too.
        lab.cli(&binary, &repo, password, &["cat", "config"]);

        // The password file and its directory are gone.
        let left: Vec<_> = std::fs::read_dir(lab.path("work"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsString::from("cache")]);
        drain(&mut rx);
    }
}

// ---------------------------------------------------------------------------------------------
// Repository missing, init-if-missing, wrong password

#[tokio::test]
async fn a_missing_repository_is_reported_or_created_when_the_job_allows_it() {
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[("a.txt", "alpha")]);
        let (ctx, _rx) = lab.ctx(&restic, Limits::default());

        let refused = run(&ctx, &backup_job(&url(&repo), "pw", &[&src])).await;
        assert_eq!(
            refused.outcome,
            Outcome::RepositoryMissing,
            "{}",
            binary.display()
        );
        let expected_code = if restic.version() >= (0, 17, 0) {
            10
        } else {
            1
        };
        assert_eq!(refused.exit_code, Some(expected_code));
        let reason = if restic.version() >= (0, 17, 0) {
            format!(
                "Fatal: repository does not exist: unable to open config file: stat {}/config: \
                 no such file or directory",
                repo.display()
            )
        } else {
            format!(
                "Fatal: unable to open config file: stat {}/config: no such file or directory",
                repo.display()
            )
        };
        assert_eq!(
            refused.message,
            format!(
                "repository `local` does not exist ({reason}), and this job does not create \
                 repositories; run an init job for it, or check the repository's url"
            )
        );
        assert!(!repo.exists());

        let mut creating = backup_job(&url(&repo), "pw", &[&src]);
        creating.init_if_missing = true;
        let made = run(&ctx, &creating).await;
        assert_eq!(made.outcome, Outcome::Succeeded, "{}", made.message);
        assert!(made.initialized);
        assert!(
            made.message
                .starts_with("created repository `local`; snapshot "),
            "{}",
            made.message
        );
        let listed = run(&ctx, &inventory_of(&creating)).await;
        assert_eq!(listed.snapshots.map(|s| s.len()), Some(1));
    }
}

#[tokio::test]
async fn a_wrong_password_is_reported_with_the_sealing_hint() {
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[("a.txt", "alpha")]);
        lab.cli(&binary, &repo, "the right one", &["init"]);
        let (ctx, _rx) = lab.ctx(&restic, Limits::default());

        let result = run(&ctx, &backup_job(&url(&repo), "the wrong one", &[&src])).await;
        assert_eq!(
            result.outcome,
            Outcome::WrongPassword,
            "{}",
            binary.display()
        );
        let expected_code = if restic.version() >= (0, 17, 1) {
            12
        } else {
            1
        };
        assert_eq!(result.exit_code, Some(expected_code));
        assert_eq!(
            result.message,
            "restic could not open repository `local` with the password it was given (Fatal: \
             wrong password or no key found). Check the repository's sealed password: a \
             trailing newline or space sealed with it is a common cause (seal it with `printf \
             '%s' …`, not `echo`); note that restic drops leading and trailing whitespace from \
             the password it reads"
        );
        assert!(
            result
                .stderr_tail
                .contains("wrong password or no key found")
        );
    }
}

#[tokio::test]
async fn an_init_that_cannot_be_read_back_does_not_count() {
    let lab = Lab::new();
    let restic = lab
        .fake_restic(
            "restic-bad-init",
            "case \"$1\" in\n  init) echo 'created restic repository 0123456789'; exit 0;;\n  \
             cat) echo 'Fatal: unable to open config file: stat /x/config: no such file or \
             directory' >&2; exit 10;;\nesac\nexit 1",
        )
        .await;
    let (ctx, _rx) = lab.ctx(&restic, Limits::default());
    let result = run(&ctx, &job(JobKind::Init, "/x", "pw")).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert!(!result.initialized);
    assert_eq!(
        result.message,
        "restic init reported success, but `restic cat config` could not read repository \
         `local` back (exit code 10: Fatal: unable to open config file: stat /x/config: no such \
         file or directory); it is not counted as created"
    );
}

// ---------------------------------------------------------------------------------------------
// Partial backups and missing sources

/// A copy of `binary` that runs without the capabilities that let root read any file.
fn unprivileged(lab: &Lab, binary: &Path) -> PathBuf {
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(
        setpriv.is_file(),
        "the partial-backup test needs setpriv (Debian package util-linux) to run restic \
         without CAP_DAC_OVERRIDE"
    );
    let wrapper = lab.path("restic-unprivileged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --bounding-set -dac_override,-dac_read_search {} \"$@\"\n",
            setpriv.display(),
            binary.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[tokio::test]
async fn an_unreadable_file_makes_a_partial_backup_that_names_it() {
    for (binary, _) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[("fine.txt", "readable")]);
        let locked = src.join("locked.txt");
        std::fs::write(&locked, "secret").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let runner_binary = if nix::unistd::geteuid().is_root() {
            // Root reads everything; owned by nobody and run without DAC capabilities, it
            // cannot.
            nix::unistd::chown(&locked, Some(65534.into()), Some(65534.into())).unwrap();
            unprivileged(&lab, &binary)
        } else {
            binary.clone()
        };
        lab.cli(&binary, &repo, "pw", &["init"]);
        let restic = detect_retrying(&runner_binary).await.unwrap();
        let (ctx, _rx) = lab.ctx(&restic, Limits::default());

        let result = run(&ctx, &backup_job(&url(&repo), "pw", &[&src])).await;
        assert_eq!(
            result.outcome,
            Outcome::Partial,
            "{}: {}",
            binary.display(),
            result.message
        );
        assert_eq!(result.exit_code, Some(3));
        assert_eq!(result.unreadable, [url(&locked)]);
        let id = result
            .summary
            .as_ref()
            .and_then(|s| s.snapshot_id.clone())
            .unwrap();
        assert_eq!(
            result.message,
            format!(
                "snapshot {} made, but restic could not read 1 file: {}",
                &id[..8],
                locked.display()
            )
        );
        assert_eq!(result.snapshots, None, "the inventory is a job of its own");
    }
}

#[tokio::test]
async fn a_missing_source_path_fails_the_backup_without_running_restic() {
    let (_, restic) = restics().await.remove(0);
    let lab = Lab::new();
    let repo = lab.path("repo");
    let src = lab.source("src", &[("a.txt", "alpha")]);
    let gone = lab.path("gone");
    let (ctx, mut rx) = lab.ctx(&restic, Limits::default());
    let mut j = backup_job(&url(&repo), "pw", &[&src, &gone]);
    j.init_if_missing = true;
    let result = run(&ctx, &j).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(
        result.message,
        format!(
            "1 backup path of policy `system` does not exist: {}; restic was not run",
            gone.display()
        )
    );
    assert_eq!(result.exit_code, None);
    // restic never ran: not even init-if-missing created the repository.
    assert!(!repo.exists());
    assert!(drain(&mut rx).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Forget scoping

#[tokio::test]
async fn forget_touches_only_its_own_hosts_and_policys_snapshots() {
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[("a.txt", "alpha")]);
        lab.cli(&binary, &repo, "pw", &["init"]);
        let scopes = [
            ("web-1.example.net", "system"),
            ("web-1.example.net", "postgres"),
            ("web-2.example.net", "system"),
        ];
        for (host, policy) in scopes {
            for _ in 0..2 {
                let tag = format!("--tag=policy:{policy}");
                let host = format!("--host={host}");
                lab.cli(
                    &binary,
                    &repo,
                    "pw",
                    &["backup", &host, &tag, src.to_str().unwrap()],
                );
            }
        }
        let (ctx, _rx) = lab.ctx(&restic, Limits::default());

        let mut forget = job(JobKind::Forget, &url(&repo), "pw");
        forget.forget = Some(ForgetSpec {
            keep: vec![("keep-last".into(), "1".into())],
            group_by: "host,paths".into(),
            prune: true,
        });
        let result = run(&ctx, &forget).await;
        assert_eq!(
            result.outcome,
            Outcome::Succeeded,
            "{}: {}",
            binary.display(),
            result.message
        );
        assert_eq!(
            result.message,
            "forget kept 1 and removed 1 snapshots of host `web-1.example.net` for policy \
             `system`, then pruned the repository"
        );

        for ((host, policy), expected) in scopes.into_iter().zip([1, 2, 2]) {
            let mut list = job(JobKind::Snapshots, &url(&repo), "pw");
            list.hostname = host.into();
            list.policy = policy.into();
            let listed = run(&ctx, &list).await;
            assert_eq!(listed.outcome, Outcome::Succeeded, "{}", listed.message);
            let snapshots = listed.snapshots.unwrap();
            assert_eq!(snapshots.len(), expected, "{host} {policy}");
            assert!(
                snapshots
                    .iter()
                    .all(|s| s.hostname == host && s.tags.contains(&format!("policy:{policy}")))
            );
        }

        let mut prune = job(JobKind::Prune, &url(&repo), "pw");
        prune.prune = Some(PruneSpec {
            max_unused: Some("5%".into()),
        });
        let pruned = run(&ctx, &prune).await;
        assert_eq!(pruned.outcome, Outcome::Succeeded, "{}", pruned.message);
        assert_eq!(
            pruned.message,
            "restic prune finished on repository `local`: done"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Locks

#[tokio::test]
async fn a_stale_lock_blocks_until_an_unlock_job_clears_it() {
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[]);
        write_random(&src.join("big"), 96 << 20, 7);
        lab.cli(&binary, &repo, "pw", &["init"]);

        // A backup killed with SIGKILL leaves its lock behind. It is killed once it reports
        // progress: by then its lock file is complete (restic ignores unreadable ones).
        let mut killed = std::process::Command::new(&binary)
            .args(["backup", "--json", src.to_str().unwrap()])
            .env_clear()
            .env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD", "pw")
            .env("RESTIC_CACHE_DIR", lab.path("cli-cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = killed.stdout.take().unwrap();
        let (tx, progress) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut first);
            let _ = tx.send(first);
        });
        let first = progress
            .recv_timeout(Duration::from_secs(30))
            .expect("the backup to be killed reported no progress within 30 s");
        assert!(first.contains("\"status\""), "{first}");
        killed.kill().unwrap();
        killed.wait().unwrap();
        let pid = killed.id();
        assert_eq!(lock_files(&repo).len(), 1);

        let (ctx, mut rx) = lab.ctx(&restic, Limits::default());
        let mut forget = job(JobKind::Forget, &url(&repo), "pw");
        forget.forget = Some(ForgetSpec {
            keep: vec![("keep-last".into(), "3".into())],
            group_by: "host".into(),
            prune: false,
        });
        // A short job: the lock wait is three quarters of it.
        forget.max_duration_secs = 8;
        let started = Instant::now();
        let blocked = run(&ctx, &forget).await;
        assert_eq!(
            blocked.outcome,
            Outcome::BlockedByLock,
            "{}: {}",
            binary.display(),
            blocked.message
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let holder = format!("locked by PID {pid} on ");
        assert!(
            blocked.message.starts_with(&format!(
                "restic forget could not lock repository `local`: it is {holder}"
            )),
            "{}",
            blocked.message
        );
        assert!(
            blocked.message.contains(", lock created at "),
            "{}",
            blocked.message
        );
        assert!(
            blocked
                .message
                .contains("it was still locked after waiting "),
            "{}",
            blocked.message
        );
        assert!(
            blocked.message.ends_with(
                "If that process no longer runs, the lock is stale: after this result the \
                 server queues an unlock job for this host, which removes stale locks, and the \
                 job's next run can go ahead"
            ),
            "{}",
            blocked.message
        );
        let events = drain(&mut rx);
        assert!(
            logs(&events, LogStream::Agent)
                .iter()
                .any(|l| l.contains("waiting up to"))
        );

        let unlocked = run(&ctx, &job(JobKind::Unlock, &url(&repo), "pw")).await;
        assert_eq!(unlocked.outcome, Outcome::Succeeded, "{}", unlocked.message);
        assert!(
            unlocked
                .message
                .starts_with("restic unlock finished on repository `local`: successfully removed"),
            "{}",
            unlocked.message
        );
        assert!(lock_files(&repo).is_empty());

        let small = lab.source("small", &[("a.txt", "alpha")]);
        let backup = run(&ctx, &backup_job(&url(&repo), "pw", &[&small])).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{}", backup.message);
        let after_unlock = run(&ctx, &forget).await;
        assert_eq!(
            after_unlock.outcome,
            Outcome::Succeeded,
            "{}",
            after_unlock.message
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cancel and timeouts

#[tokio::test]
async fn a_cancelled_backup_stops_restic_which_removes_its_lock() {
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let repo = lab.path("repo");
        let src = lab.source("src", &[]);
        write_random(&src.join("big"), 160 << 20, 11);
        lab.cli(&binary, &repo, "pw", &["init"]);
        let (ctx, mut rx) = lab.ctx(&restic, Limits::default());
        let cancel = ctx.cancel.clone();

        let j = backup_job(&url(&repo), "pw", &[&src]);
        let job_future = run(&ctx, &j);
        tokio::pin!(job_future);
        let first_progress = async {
            while let Some(event) = rx.recv().await {
                if let JobEvent::Progress(p) = event {
                    return p;
                }
            }
            panic!("the event channel closed without progress");
        };
        let progress = tokio::select! {
            p = first_progress => p,
            r = &mut job_future => panic!("the backup ended before any progress: {r:?}"),
        };
        assert_eq!(progress.job_id, "job-backup");
        cancel.cancel();
        let result = job_future.await;
        assert_eq!(
            result.outcome,
            Outcome::Cancelled,
            "{}: {}",
            binary.display(),
            result.message
        );
        assert_eq!(
            result.message,
            "the job was cancelled; restic backup was stopped"
        );
        assert!(lock_files(&repo).is_empty(), "restic left its lock");
    }
}

#[tokio::test]
async fn a_hanging_restic_that_ignores_signals_is_killed_with_its_children() {
    let lab = Lab::new();
    let pid_file = lab.path("child.pid");
    let restic = lab
        .fake_restic(
            "restic-hang",
            &format!(
                "trap '' INT TERM\nsleep 300 &\necho $! > {}\nwait\nwait\nwait",
                pid_file.display()
            ),
        )
        .await;
    let src = lab.source("src", &[("a", "a")]);
    let (ctx, _rx) = lab.ctx(&restic, Limits::default());
    let mut j = backup_job("/unused", "pw", &[&src]);
    j.max_duration_secs = 2;
    let started = Instant::now();
    let result = run(&ctx, &j).await;
    let took = started.elapsed();
    assert_eq!(result.outcome, Outcome::TimedOut, "{}", result.message);
    assert_eq!(
        result.message,
        "restic backup did not finish within the job's maximum duration of 2s and was stopped"
    );
    // 2 s, then SIGINT, 1 s grace, SIGTERM, 1 s grace, SIGKILL.
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert!(took < Duration::from_secs(7), "{took:?}");

    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the script's child to die",
        Duration::from_secs(5),
        || match std::fs::read_to_string(format!("/proc/{child}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z')),
        },
    );
}

#[tokio::test]
async fn the_agents_limit_caps_the_jobs_own_duration() {
    let lab = Lab::new();
    let restic = lab.fake_restic("restic-slow", "sleep 30").await;
    let src = lab.source("src", &[("a", "a")]);
    let limits = Limits {
        max_duration: Some(Duration::from_secs(1)),
        ..Limits::default()
    };
    let (ctx, _rx) = lab.ctx(&restic, limits);
    let started = Instant::now();
    let result = run(&ctx, &backup_job("/unused", "pw", &[&src])).await;
    assert_eq!(result.outcome, Outcome::TimedOut, "{}", result.message);
    assert!(
        result.message.contains("maximum duration of 1s"),
        "{}",
        result.message
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// Output restic does not produce on demand

#[tokio::test]
async fn a_json_line_of_several_megabytes_and_malformed_lines_are_handled() {
    let lab = Lab::new();
    let restic = lab
        .fake_restic(
            "restic-noisy",
            "printf '{\"message_type\":\"status\",\"percent_done\":0.5,\"total_files\":3,\"current_files\":[\"'\n\
             head -c 6000000 /dev/zero | tr '\\0' a\n\
             printf '\"]}\\n'\n\
             echo '{\"message_type\":'\n\
             echo '{\"message_type\":\"brand_new_kind\",\"x\":1}'\n\
             echo 'some plain words'\n\
             echo '{\"message_type\":\"summary\",\"files_new\":3,\"data_added\":42,\"snapshot_id\":\"abcdef0123456789\"}'\n\
             exit 0",
        )
        .await;
    let src = lab.source("src", &[("a", "a")]);
    let (ctx, mut rx) = lab.ctx(&restic, Limits::default());
    let result = run(&ctx, &backup_job("/unused", "pw", &[&src])).await;
    assert_eq!(result.outcome, Outcome::Succeeded, "{}", result.message);
    let summary = result.summary.unwrap();
    assert_eq!(summary.snapshot_id.as_deref(), Some("abcdef0123456789"));
    assert_eq!((summary.files_new, summary.data_added), (3, 42));
    assert!(
        result.message.starts_with("snapshot abcdef01 made: 3 new"),
        "{}",
        result.message
    );
    assert_eq!(result.snapshots, None);

    let events = drain(&mut rx);
    let progress: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress(p) => Some(p),
            JobEvent::Log { .. } => None,
        })
        .collect();
    assert_eq!(progress.len(), 1);
    assert!((progress[0].percent_done - 0.5).abs() < f64::EPSILON);
    assert_eq!(progress[0].total_files, 3);
    // The malformed line and the plain text are logged; the unknown kind is not.
    assert_eq!(
        logs(&events, LogStream::Stdout),
        ["{\"message_type\":", "some plain words"]
    );
}

#[tokio::test]
async fn a_failed_inventory_job_says_why_and_a_backup_never_runs_one() {
    let lab = Lab::new();
    let restic = lab
        .fake_restic(
            "restic-no-list",
            "case \"$1\" in\n  snapshots) echo 'Fatal: listing snapshots failed' >&2; exit 1;;\n\
             esac\n\
             echo '{\"message_type\":\"summary\",\"files_new\":1,\"snapshot_id\":\"0123456789abcdef\"}'",
        )
        .await;
    let src = lab.source("src", &[("a", "a")]);
    let (ctx, _rx) = lab.ctx(&restic, Limits::default());
    let backup = backup_job("/unused", "pw", &[&src]);
    let result = run(&ctx, &backup).await;
    assert_eq!(result.outcome, Outcome::Succeeded, "{}", result.message);
    assert_eq!(result.snapshots, None);
    assert!(
        result.message.starts_with("snapshot 01234567 made"),
        "{}",
        result.message
    );

    let listed = run(&ctx, &inventory_of(&backup)).await;
    assert_eq!(listed.outcome, Outcome::Failed, "{}", listed.message);
    assert_eq!(listed.snapshots, None);
    assert!(
        listed.message.contains("Fatal: listing snapshots failed"),
        "{}",
        listed.message
    );
}

#[tokio::test]
async fn an_unknown_exit_code_is_a_failure_with_restics_reason() {
    let lab = Lab::new();
    let restic = lab
        .fake_restic(
            "restic-odd",
            "echo 'scanning...' >&2\necho 'Fatal: the backend returned something odd' >&2\n\
             echo 'Is there a repository at the following location?' >&2\necho '/x' >&2\nexit 42",
        )
        .await;
    let src = lab.source("src", &[("a", "a")]);
    let (ctx, mut rx) = lab.ctx(&restic, Limits::default());
    let result = run(&ctx, &backup_job("/x", "pw", &[&src])).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, Some(42));
    assert_eq!(
        result.message,
        "restic backup failed with exit code 42: Fatal: the backend returned something odd"
    );
    assert_eq!(
        result.stderr_tail,
        "scanning...\nFatal: the backend returned something odd\nIs there a repository at the \
         following location?\n/x"
    );
    assert_eq!(logs(&drain(&mut rx), LogStream::Stderr).len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Limits and hooks

#[tokio::test]
async fn jobs_outside_the_agents_limits_are_refused_by_name() {
    let (_, restic) = restics().await.remove(0);
    let lab = Lab::new();
    let src = lab.source("srv", &[("a", "a")]);
    let limits = Limits {
        allowed_paths: vec![src.clone()],
        ..Limits::default()
    };
    let (ctx, mut rx) = lab.ctx(&restic, limits);
    let repo = url(&lab.path("repo"));

    let outside = run(&ctx, &backup_job(&repo, "pw", &[Path::new("/etc")])).await;
    assert_eq!(outside.outcome, Outcome::Refused);
    assert_eq!(
        outside.message,
        format!(
            "backup path `/etc` is outside the paths this agent allows (`{}`); change the \
             policy, or add the path to `allowed-paths` in the agent's local settings file",
            src.display()
        )
    );

    let dotdot = format!("{}/../etc", src.display());
    let escaping = run(&ctx, &backup_job(&repo, "pw", &[Path::new(&dotdot)])).await;
    assert_eq!(escaping.outcome, Outcome::Refused);
    assert_eq!(
        escaping.message,
        format!("backup path \"{dotdot}\" contains `..`; write the path without it")
    );

    let relative = run(&ctx, &backup_job(&repo, "pw", &[Path::new("srv/a")])).await;
    assert_eq!(relative.outcome, Outcome::Refused);
    assert_eq!(
        relative.message,
        "backup path \"srv/a\" is relative; the agent backs up absolute paths only"
    );

    let mut hooked = backup_job(&repo, "pw", &[&src]);
    hooked.hooks = HookSpec {
        before: vec![vec![
            "pg_dumpall".into(),
            "-f".into(),
            "/var/backups/all.sql".into(),
        ]],
        after: vec![],
        on_failure: vec![],
        timeout_secs: 60,
    };
    let refused = run(&ctx, &hooked).await;
    assert_eq!(refused.outcome, Outcome::Refused);
    assert_eq!(
        refused.message,
        "the job carries hooks, starting with the before hook `pg_dumpall -f \
         /var/backups/all.sql`, and this agent does not run hooks; to allow them, set \
         `allow-hooks = true` in the agent's local settings file and restart the agent"
    );

    let mut injected = backup_job(&repo, "pw", &[&src]);
    injected.repository.env.insert(
        "RESTIC_PASSWORD_COMMAND".into(),
        Secret::new("sh -c 'id'".into()),
    );
    let refused = run(&ctx, &injected).await;
    assert_eq!(refused.outcome, Outcome::Refused);
    assert!(
        refused.message.contains("`RESTIC_PASSWORD_COMMAND`"),
        "{}",
        refused.message
    );

    // Nothing ran, so nothing was said and nothing was created.
    assert!(drain(&mut rx).is_empty());
    assert!(!lab.path("repo").exists());
}

#[tokio::test]
async fn hooks_run_around_a_backup_and_a_failing_before_hook_stops_it() {
    let (_, restic) = restics().await.remove(0);
    let lab = Lab::new();
    let repo = lab.path("repo");
    let src = lab.source("src", &[("a.txt", "alpha")]);
    let dump = src.join("dump.sql");
    let after_marker = lab.path("after-ran");
    let failure_marker = lab.path("on-failure-ran");
    let limits = Limits {
        allow_hooks: true,
        ..Limits::default()
    };
    let (ctx, mut rx) = lab.ctx(&restic, limits);

    // The before hook makes the file the backup then reads.
    let mut j = backup_job(&url(&repo), "pw", &[&src, &dump]);
    j.init_if_missing = true;
    j.hooks = HookSpec {
        before: vec![
            vec![
                "sh".into(),
                "-c".into(),
                format!("echo dumped > '{}'", dump.display()),
            ],
            vec!["echo".into(), "hello from the hook".into()],
        ],
        after: vec![vec!["touch".into(), url(&after_marker)]],
        on_failure: vec![vec!["touch".into(), url(&failure_marker)]],
        timeout_secs: 30,
    };
    let result = run(&ctx, &j).await;
    assert_eq!(result.outcome, Outcome::Succeeded, "{}", result.message);
    assert_eq!(result.summary.unwrap().files_new, 2);
    assert!(after_marker.exists() && !failure_marker.exists());
    let events = drain(&mut rx);
    assert!(logs(&events, LogStream::Stdout).contains(&"hello from the hook"));
    assert!(
        logs(&events, LogStream::Agent)
            .iter()
            .any(|l| l.starts_with("running the after hook `touch ")),
        "{events:?}"
    );

    // A failing before hook: restic does not run, the on-failure hooks do.
    let other_repo = lab.path("other-repo");
    let mut failing = backup_job(&url(&other_repo), "pw", &[&src]);
    failing.init_if_missing = true;
    failing.hooks = HookSpec {
        before: vec![vec!["false".into()]],
        after: vec![vec!["touch".into(), url(&after_marker)]],
        on_failure: vec![vec!["touch".into(), url(&failure_marker)]],
        timeout_secs: 30,
    };
    std::fs::remove_file(&after_marker).unwrap();
    let result = run(&ctx, &failing).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(
        result.message,
        "the before hook `false` failed with exit code 1; restic was not run"
    );
    assert!(failure_marker.exists() && !after_marker.exists());
    assert!(!other_repo.exists());
}

#[tokio::test]
async fn a_hook_that_outlives_its_timeout_is_stopped() {
    let (_, restic) = restics().await.remove(0);
    let lab = Lab::new();
    let src = lab.source("src", &[("a.txt", "alpha")]);
    let limits = Limits {
        allow_hooks: true,
        ..Limits::default()
    };
    let (ctx, _rx) = lab.ctx(&restic, limits);
    let mut j = backup_job(&url(&lab.path("repo")), "pw", &[&src]);
    j.hooks = HookSpec {
        before: vec![vec![
            "sh".into(),
            "-c".into(),
            "trap '' INT TERM; sleep 60".into(),
        ]],
        after: vec![],
        on_failure: vec![],
        timeout_secs: 1,
    };
    let started = Instant::now();
    let result = run(&ctx, &j).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(
        result.message,
        "the before hook `sh -c 'trap '\\'''\\'' INT TERM; sleep 60'` did not finish within 1s \
         and was stopped; restic was not run"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets never on a command line

/// A REST server (`rclone serve restic`) on loopback with HTTP basic auth; the credentials
/// reach rclone through its environment, not its command line.
struct RestServer {
    child: std::process::Child,
    port: u16,
}

impl RestServer {
    fn start(dir: &Path, user: &str, pass: &str) -> Self {
        let mut child = std::process::Command::new("rclone")
            .args(["serve", "restic", "--addr", "127.0.0.1:0"])
            .arg(dir)
            .env("RCLONE_USER", user)
            .env("RCLONE_PASS", pass)
            .env("RCLONE_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start rclone ({err}); install it (Debian package `rclone`)")
            });
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("rclone did not say which port it serves on within 20 s");
        Self { child, port }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a scan of `/proc` saw while a job ran.
#[derive(Default, Debug)]
struct Scan {
    rounds: usize,
    restic_seen: usize,
    leaks: Vec<String>,
    wrong_setup: Vec<String>,
    restic_env_names: Vec<Vec<String>>,
    password_files: Vec<PathBuf>,
}

/// One scan of `/proc`. Every process's command line is searched for `secrets`; how restic was
/// started (its process group, stdin, environment, password file) is checked only for this
/// test's own restic: a child of this process whose cache is under `work_dir`. Other tests of
/// this binary, another agent or a cron job on the host may run restic at the same time.
fn scan_proc(restic_binary: &Path, work_dir: &Path, secrets: &[String], scan: &mut Scan) {
    scan.rounds += 1;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let own_pid = std::process::id().to_string();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        for secret in secrets {
            if cmdline
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
            {
                scan.leaks.push(format!(
                    "{secret:?} in the command line of pid {}: {}",
                    name.to_string_lossy(),
                    String::from_utf8_lossy(&cmdline)
                ));
            }
        }
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        if argv0 != restic_binary.as_os_str().as_encoded_bytes() {
            continue;
        }
        // After the command name in parentheses: state, ppid, process group, …
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or(vec![], |(_, rest)| rest.split(' ').collect());
        if fields.get(1).copied() != Some(own_pid.as_str()) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<(String, String)> = environ
            .split(|&b| b == 0)
            .filter(|v| !v.is_empty())
            .map(|var| {
                let var = String::from_utf8_lossy(var);
                let (key, value) = var.split_once('=').unwrap_or((&var, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let ours = vars.iter().any(|(key, value)| {
            key == "RESTIC_CACHE_DIR" && Path::new(value).starts_with(work_dir)
        });
        if !ours {
            continue;
        }

        scan.restic_seen += 1;
        // Its own process group, and stdin on /dev/null.
        if fields.get(2).copied() != Some(name.to_string_lossy().as_ref()) {
            scan.wrong_setup
                .push(format!("process group of restic: {stat}"));
        }
        if let Ok(stdin) = std::fs::read_link(entry.path().join("fd/0"))
            && stdin != Path::new("/dev/null")
        {
            scan.wrong_setup
                .push(format!("stdin of restic: {}", stdin.display()));
        }
        let mut names = Vec::new();
        for (key, value) in vars {
            if key == "RESTIC_PASSWORD_FILE" {
                scan.password_files.push(PathBuf::from(value));
            }
            names.push(key);
        }
        names.sort();
        if !scan.restic_env_names.contains(&names) {
            scan.restic_env_names.push(names);
        }
    }
}

#[tokio::test]
async fn no_secret_shows_on_any_command_line_while_a_backup_runs() {
    let password = "Repo-Pass-7f3c19";
    let rest_user = "fleetuser";
    let rest_pass = "Rest/Pass:9a1b@x";
    for (binary, restic) in restics().await {
        let lab = Lab::new();
        let data = lab.path("rest-data");
        std::fs::create_dir_all(&data).unwrap();
        let server = RestServer::start(&data, rest_user, rest_pass);
        let src = lab.source("src", &[]);
        write_random(&src.join("big"), 128 << 20, 3);
        let (ctx, _rx) = lab.ctx(&restic, Limits::default());

        let url = format!("rest:http://127.0.0.1:{}/repo/", server.port);
        let mut j = backup_job(&url, password, &[&src]);
        j.init_if_missing = true;
        j.repository
            .env
            .insert("RESTIC_REST_USERNAME".into(), Secret::new(rest_user.into()));
        j.repository
            .env
            .insert("RESTIC_REST_PASSWORD".into(), Secret::new(rest_pass.into()));

        let secrets: Vec<String> = vec![
            password.into(),
            rest_pass.into(),
            "Rest%2FPass%3A9a1b%40x".into(),
            format!("{rest_user}:"),
            format!("127.0.0.1:{}", server.port),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let scanner = {
            let stop = Arc::clone(&stop);
            let binary = binary.clone();
            let work_dir = ctx.work_dir.clone();
            std::thread::spawn(move || {
                let mut scan = Scan::default();
                let mut checked_files = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    scan_proc(&binary, &work_dir, &secrets, &mut scan);
                    for file in &scan.password_files {
                        if checked_files.contains(file) {
                            continue;
                        }
                        if let (Ok(f), Some(Ok(d))) = (
                            std::fs::metadata(file),
                            file.parent().map(std::fs::metadata),
                        ) {
                            assert_eq!(f.permissions().mode() & 0o777, 0o600);
                            assert_eq!(d.permissions().mode() & 0o777, 0o700);
                            checked_files.push(file.clone());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (scan, checked_files)
            })
        };
        let result = run(&ctx, &j).await;
        stop.store(true, Ordering::Relaxed);
        let (scan, checked_files) = scanner.join().unwrap();

        assert_eq!(
            result.outcome,
            Outcome::Succeeded,
            "{}: {}",
            binary.display(),
            result.message
        );
        assert!(result.initialized);
        assert!(scan.leaks.is_empty(), "{:#?}", scan.leaks);
        assert!(scan.wrong_setup.is_empty(), "{:#?}", scan.wrong_setup);
        assert!(
            scan.restic_seen >= 10,
            "restic was seen in only {} of {} scans",
            scan.restic_seen,
            scan.rounds
        );
        assert!(
            !checked_files.is_empty(),
            "the password file was never seen"
        );
        for file in &scan.password_files {
            assert!(
                file.starts_with(&ctx.work_dir),
                "{} is outside the job's work directory",
                file.display()
            );
            assert!(!file.exists(), "{} outlived the job", file.display());
        }
        let left: Vec<PathBuf> = std::fs::read_dir(&ctx.work_dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("job-"))
            })
            .collect();
        assert!(
            left.is_empty(),
            "job directories outlived the job: {left:?}"
        );
        let mut expected = vec![
            "HOME",
            "LANG",
            "PATH",
            "RESTIC_CACHE_DIR",
            "RESTIC_PASSWORD_FILE",
            "RESTIC_PROGRESS_FPS",
            "RESTIC_REPOSITORY",
            "TMPDIR",
        ];
        if restic.version() >= (0, 16, 1) {
            expected.extend(["RESTIC_REST_PASSWORD", "RESTIC_REST_USERNAME"]);
        }
        expected.sort_unstable();
        assert_eq!(scan.restic_env_names, [expected], "{}", binary.display());
        drop(server);
    }
}
