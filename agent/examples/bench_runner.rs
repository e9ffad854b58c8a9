//! Compares a backup run through the runner (`run_job`) with the same restic command run
//! directly, on the same data, each into a fresh repository.
//!
//! Every round initialises two new repositories (not timed), then times, in alternating
//! order, `restic backup --json --host=… --tag=policy:… -- <data>` with its output going to a
//! file, and `run_job` of the equivalent backup job, and reports the backup time restic itself
//! reports in its summary either way. One warm-up round is not counted. The figures are in
//! `docs/src/performance.md`.
//!
//! ```sh
//! cargo run --release -p restic-manager-agent --example bench_runner -- \
//!     [--restic /usr/bin/restic] [--mib 300] [--runs 7] [--dir /tmp/bench-runner]
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::runner::{Limits, Restic, RunContext, run_job};
use protocol::{BackupSpec, HookSpec, JobKind, JobSpec, Outcome, RepositoryAccess, Secret};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "bench-password";

struct Options {
    restic: PathBuf,
    mib: usize,
    runs: usize,
    dir: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        restic: PathBuf::from("/usr/bin/restic"),
        mib: 300,
        runs: 7,
        dir: std::env::temp_dir().join("bench-runner"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--restic" => o.restic = value.into(),
            "--mib" => o.mib = value.parse().expect("--mib takes a number"),
            "--runs" => o.runs = value.parse().expect("--runs takes a number"),
            "--dir" => o.dir = value.into(),
            _ => panic!("unknown flag {flag}; see the comment at the top of bench_runner.rs"),
        }
    }
    o
}

/// Files of 10 MiB of incompressible pseudo-random data, `mib` in all.
fn make_data(dir: &Path, mib: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    for file in 0..mib.div_ceil(10) {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("file-{file:03}"))).unwrap(),
        );
        for _ in 0..10.min(mib - file * 10) {
            for word in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            out.write_all(&chunk).unwrap();
        }
        out.flush().unwrap();
    }
}

/// The environment the runner gives restic, for the direct runs.
fn direct_env(work: &Path, repo: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    std::fs::create_dir_all(work.join("direct-tmp")).unwrap();
    std::fs::write(work.join("password"), PASSWORD).unwrap();
    vec![
        ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        (
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        ),
        ("LANG", "C.UTF-8".into()),
        ("RESTIC_CACHE_DIR", work.join("cache").into()),
        ("TMPDIR", work.join("direct-tmp").into()),
        ("RESTIC_PASSWORD_FILE", work.join("password").into()),
        ("RESTIC_REPOSITORY", repo.into()),
    ]
}

/// Runs restic with its stdout in a file; returns the wall time and, for a backup, the
/// `total_duration` restic reported in its summary.
fn restic(binary: &Path, work: &Path, repo: &Path, args: &[&str]) -> (Duration, Option<f64>) {
    let env = direct_env(work, repo);
    let out_path = work.join("direct-stdout");
    let out = std::fs::File::create(&out_path).unwrap();
    let started = Instant::now();
    let status = Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "restic {args:?} failed with {status}");
    let reported = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["total_duration"].as_f64());
    (took, reported)
}

fn job(repo: &Path, data: &Path) -> JobSpec {
    JobSpec {
        id: "bench".into(),
        kind: JobKind::Backup,
        host: "bench".into(),
        hostname: "bench.example.net".into(),
        policy: "bench".into(),
        repository: RepositoryAccess {
            name: "bench".into(),
            url: repo.to_str().unwrap().into(),
            password: Secret::new(PASSWORD.into()),
            env: BTreeMap::new(),
        },
        max_duration_secs: 3600,
        init_if_missing: false,
        backup: Some(BackupSpec {
            paths: vec![data.to_str().unwrap().into()],
            ..BackupSpec::default()
        }),
        forget: None,
        check: None,
        prune: None,
        hooks: HookSpec::default(),
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// `min–max` of a series.
fn spread(values: &[Duration]) -> String {
    let min = values.iter().min().copied().unwrap_or_default();
    let max = values.iter().max().copied().unwrap_or_default();
    format!("{min:.2?}–{max:.2?}")
}

#[allow(
    clippy::print_stdout,
    reason = "a benchmark program: its report is its output"
)]
#[tokio::main]
async fn main() {
    let opts = options();
    let data = opts.dir.join("data");
    if !data.exists() {
        make_data(&data, opts.mib);
    }
    let work = opts.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let detected = Restic::detect(&opts.restic).await.unwrap();
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let ctx = RunContext {
        restic: detected.clone(),
        limits: Limits::default(),
        work_dir: work.clone(),
        events,
        cancel: CancellationToken::new(),
    };
    let data_arg = data.to_str().unwrap().to_owned();
    let backup_args = [
        "backup",
        "--json",
        "--host=bench.example.net",
        "--tag=policy:bench",
        "--",
        &data_arg,
    ];
    let (mut direct, mut runner) = (Vec::new(), Vec::new());
    let mut said: Vec<(f64, f64)> = Vec::new();
    for round in 0..=opts.runs {
        let repo_direct = opts.dir.join(format!("repo-direct-{round}"));
        let repo_runner = opts.dir.join(format!("repo-runner-{round}"));
        for repo in [&repo_direct, &repo_runner] {
            let _ = std::fs::remove_dir_all(repo);
            restic(&opts.restic, &work, repo, &["init"]);
        }
        let time_direct = || {
            let (backup, reported) = restic(&opts.restic, &work, &repo_direct, &backup_args);
            (backup, reported.unwrap_or(f64::NAN))
        };
        let backup_job = job(&repo_runner, &data);
        let time_runner = async || {
            let started = Instant::now();
            let result = run_job(&ctx, &backup_job).await;
            assert_eq!(result.outcome, Outcome::Succeeded, "{}", result.message);
            let reported = result.summary.map_or(f64::NAN, |s| s.total_duration);
            (started.elapsed(), reported)
        };
        let (took_direct, said_direct, took_runner, said_runner);
        if round % 2 == 0 {
            (took_direct, said_direct) = time_direct();
            (took_runner, said_runner) = time_runner().await;
        } else {
            (took_runner, said_runner) = time_runner().await;
            (took_direct, said_direct) = time_direct();
        }
        for repo in [&repo_direct, &repo_runner] {
            let _ = std::fs::remove_dir_all(repo);
        }
        let line = format!(
            "direct {took_direct:.2?}, run_job {took_runner:.2?}; \
             restic's own backup time: direct {said_direct:.2}s, in run_job {said_runner:.2}s"
        );
        if round == 0 {
            println!("warm-up: {line}");
            continue;
        }
        println!("round {round}: {line}");
        direct.push(took_direct);
        runner.push(took_runner);
        said.push((said_direct, said_runner));
    }
    let secs = |pick: fn(&(f64, f64)) -> f64| {
        median(
            said.iter()
                .map(|p| Duration::from_secs_f64(pick(p).max(0.0)))
                .collect(),
        )
    };
    let (said_direct, said_runner) = (secs(|p| p.0), secs(|p| p.1));
    let (s_backup, s_run) = (spread(&direct), spread(&runner));
    let (backup, run) = (median(direct), median(runner));
    let pct = |a: Duration, base: Duration| (a.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0;
    println!("{}", detected.version_line());
    println!(
        "data: {} MiB in {} files, {} rounds, fresh repository each",
        opts.mib,
        opts.mib.div_ceil(10),
        opts.runs
    );
    println!("median direct `restic backup`:             {backup:.2?} ({s_backup})");
    println!("median run_job of the backup job:          {run:.2?} ({s_run})");
    println!(
        "run_job vs direct backup:                  {:+.1} %",
        pct(run, backup)
    );
    println!(
        "median backup time restic reported itself: direct {said_direct:.2?}, in run_job \
         {said_runner:.2?}"
    );
}
