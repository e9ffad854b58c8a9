//! The whole product on loopback: the real `restic-manager serve`, the real
//! `restic-manager-agent`, and the real `restic` (every version installed), following a real
//! git repository. The server schedules init, backup, snapshots, forget, prune and check; a
//! stale lock left by a killed restic makes a job blocked by the lock, after which the server
//! runs an unlock and maintenance goes on. Meanwhile no secret shows on any command line, in
//! either log, or in the stored job records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::agent_session::{jobs, sealed_for_server};
use crate::common::{git, workspace, write};
use crate::restic::restic_binaries;
use crate::serve::{ServerProcess, free_port, start_server_at, state, wait_for};

/// The password of the test repository: every character a shell or a parser could choke on.
const PASSWORD: &str = "p\"a'ss $HOME `id` \\n ! # wörd ☃";

/// The restic binary of version `major.minor`, or a failure saying how to get it.
fn restic_of(version: &str) -> PathBuf {
    let found = restic_binaries();
    found
        .iter()
        .find(|binary| {
            Command::new(binary)
                .arg("version")
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout).starts_with(&format!("restic {version}."))
                })
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "restic {version} is not among {found:?}: install it (0.14: `apt-get install \
                 restic` on Debian bookworm; 0.18: `.ci/install-restic-0.18`) or list it in \
                 RM_TEST_RESTIC_BINARIES"
            )
        })
}

/// The agent binary, built beside the server's by `cargo test --workspace`; built here when a
/// narrower `cargo test` did not.
pub fn agent_binary() -> PathBuf {
    let path =
        Path::new(env!("CARGO_BIN_EXE_restic-manager")).with_file_name("restic-manager-agent");
    if !path.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "restic-manager-agent",
                "--bin",
                "restic-manager-agent",
            ])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building restic-manager-agent failed");
    }
    path
}

/// A running agent, stopped when dropped.
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProcess {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Creates an agent key in `dir` and returns its `agent-key` text.
pub fn agent_keygen(dir: &Path) -> String {
    let out = Command::new(agent_binary())
        .args(["keygen", "--key"])
        .arg(dir.join("agent.key"))
        .output()
        .expect("keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    line.strip_prefix("agent-key = \"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("unexpected keygen output {line:?}"))
        .to_owned()
}

/// Starts the agent for `host` from a settings file in `dir`.
pub fn start_agent(
    dir: &Path,
    server: &str,
    host: &str,
    restic: &Path,
    extra: &str,
) -> AgentProcess {
    let settings = dir.join("agent.toml");
    let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    std::fs::write(
        &settings,
        format!(
            "server = \"ws://{server}\"\nkey = {}\nstate-dir = {}\nhost = \"{host}\"\nrestic = {}\n{extra}",
            quoted(&dir.join("agent.key")),
            quoted(&dir.join("state")),
            quoted(restic),
        ),
    )
    .expect("agent settings");
    let log = dir.join("agent.log");
    let log_file = std::fs::File::create(&log).expect("agent log");
    let child = Command::new(agent_binary())
        .args(["run", "--config"])
        .arg(&settings)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("agent starts");
    AgentProcess { child, log }
}

/// The jobs of a kind in a state.
fn count(data: &Path, kind: &str, state: &str) -> usize {
    jobs(data)
        .iter()
        .filter(|(_, k, s)| k == kind && s == state)
        .count()
}

/// Watches every process's command line for `needles` until stopped; returns what it saw.
struct CmdlineScan {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl CmdlineScan {
    fn start(needles: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut scans, mut leaks) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    for needle in &needles {
                        if text.contains(needle.as_str()) {
                            leaks.push(text.clone());
                        }
                    }
                }
                scans += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (scans, leaks)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Leaves a stale lock in the repository: starts a backup of a large file with restic
/// directly and kills it with SIGKILL once its lock exists.
fn leave_stale_lock(restic: &Path, repo: &Path, password_file: &Path, dir: &Path) {
    let big = dir.join("big");
    std::fs::create_dir_all(&big).expect("mkdir");
    let mut data = vec![0u8; 64 << 20];
    let mut state: u64 = 7;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(big.join("blob"), &data).expect("write");
    // Killed once it reports progress: by then its lock file is complete (restic skips a
    // lock file it cannot read). The agent's own maintenance may hold the repository
    // exclusively at that moment; then the backup is tried again once it is done.
    let mut refusals = Vec::new();
    for _ in 0..30 {
        let mut child = Command::new(restic)
            .args(["backup", "--json"])
            .arg(&big)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD_FILE", password_file)
            .env("RESTIC_CACHE_DIR", dir.join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("restic starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, first_line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let line = first_line
            .recv_timeout(Duration::from_secs(30))
            .expect("the backup to be killed reported nothing within 30 s");
        if line.contains("\"status\"") {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        let out = child.wait_with_output().expect("restic ends");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains("locked"),
            "the backup to be killed failed: {line}{stderr}"
        );
        refusals.push(stderr);
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the repository stayed locked for the backup to be killed: {refusals:?}");
}

fn whole_fleet_against(version: &str) {
    let restic = restic_of(version);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let agent_dir = root.join("agent");
    std::fs::create_dir_all(&agent_dir).expect("mkdir");
    let public = agent_keygen(&agent_dir);
    let source = root.join("source");
    write(&source, "etc/app.conf", b"listen = 127.0.0.1:1\n");
    for i in 0..20 {
        write(
            &source,
            &format!("notes/{i}.txt"),
            format!("note {i}\n").repeat(50).as_bytes(),
        );
    }
    let repo_path = root.join("restic-repo");

    // One host, one policy whose jobs all come round every few seconds.
    let config = root.join("config");
    write(
        &config,
        "hosts/web-1.toml",
        format!("agent-key = \"{public}\"\nhostname = \"web-1.test\"\n").as_bytes(),
    );
    write(
        &config,
        "repositories/local.toml",
        format!(
            "url = {}\npassword = {{ sealed = \"\"\"\n{}\"\"\" }}\n",
            toml::Value::String(repo_path.display().to_string()),
            sealed_for_server(PASSWORD)
        )
        .as_bytes(),
    );
    write(
        &config,
        "policies/files.toml",
        format!(
            "hosts = {{ all = true }}\nrepository = \"local\"\npaths = [{}]\n\
             schedule = {{ cron = \"*/3 * * * * *\" }}\nretention = {{ keep-last = 2 }}\n\
             forget = {{ cron = \"*/5 * * * * *\" }}\nprune = {{ cron = \"*/7 * * * * *\" }}\n\
             check = {{ cron = \"*/11 * * * * *\", read-data-subset = \"50%\" }}\n",
            toml::Value::String(source.display().to_string())
        )
        .as_bytes(),
    );
    git(&config, &["init", "-q"]);
    git(&config, &["add", "-A"]);
    git(
        &config,
        &[
            "commit",
            "-q",
            "-m",
            "one host, everything every few seconds",
        ],
    );

    let scan = CmdlineScan::start(vec![PASSWORD.to_owned(), "wörd".to_owned()]);
    let data = root.join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server: ServerProcess = start_server_at(
        config.to_str().expect("utf-8"),
        &data,
        &addr,
        &["--poll-interval", "1h"],
    );
    // The agent's own limit keeps a job waiting for a lock short, so the lock case below
    // does not take restic's default two minutes.
    let agent = start_agent(
        &agent_dir,
        &addr,
        "web-1",
        &restic,
        &format!(
            "allowed-paths = [{}]\nmax-duration = \"20s\"\n",
            toml::Value::String(source.display().to_string())
        ),
    );
    let context = |what: &str| {
        format!(
            "{what} (restic {version}):\njobs: {:?}\n--- server\n{}\n--- agent\n{}",
            jobs(&data),
            server.log(),
            agent.log()
        )
    };

    // Every kind of job runs and succeeds through the server and the agent.
    let all = wait_for(Duration::from_mins(2), || {
        let done = ["init", "backup", "snapshots", "forget", "prune", "check"]
            .iter()
            .all(|kind| count(&data, kind, "succeeded") > 0);
        (done && count(&data, "backup", "succeeded") >= 2).then_some(())
    });
    assert!(all.is_some(), "{}", context("not every job kind succeeded"));

    // The repository holds this host's snapshots, tagged with the policy, as restic sees it.
    let password_file = root.join("password");
    std::fs::write(&password_file, PASSWORD).expect("password file");
    // Without a lock: the agent's prune may hold the repository exclusively right now.
    let listed = Command::new(&restic)
        .args(["snapshots", "--json", "--no-lock"])
        .env("RESTIC_REPOSITORY", &repo_path)
        .env("RESTIC_PASSWORD_FILE", &password_file)
        .env("RESTIC_CACHE_DIR", root.join("cache"))
        .output()
        .expect("restic snapshots");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let snapshots: Vec<serde_json::Value> =
        serde_json::from_slice(&listed.stdout).expect("snapshot list");
    assert!(!snapshots.is_empty());
    for snapshot in &snapshots {
        assert_eq!(snapshot["hostname"], "web-1.test");
        let tags = snapshot["tags"].as_array().expect("tags");
        assert!(
            tags.contains(&serde_json::json!("policy:files")),
            "{snapshot}"
        );
    }
    let inventory: i64 = state(&data)
        .expect("db")
        .query_row(
            "SELECT count FROM snapshot_inventory WHERE host = 'web-1' AND policy = 'files'",
            [],
            |r| r.get(0),
        )
        .expect("an inventory");
    assert!(inventory >= 1);

    // A restic killed mid-backup leaves a stale lock: maintenance is blocked by it, the server
    // runs an unlock (which removes only stale locks), and maintenance goes on.
    leave_stale_lock(&restic, &repo_path, &password_file, root);
    let blocked = wait_for(Duration::from_secs(90), || {
        let db = state(&data)?;
        let message: String = db
            .query_row(
                "SELECT message FROM jobs WHERE outcome = 'blocked-by-lock' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .ok()?;
        Some(message)
    })
    .unwrap_or_else(|| panic!("{}", context("no job was blocked by the stale lock")));
    assert!(blocked.contains("lock"), "{blocked}");
    let unlocked = wait_for(Duration::from_mins(1), || {
        (count(&data, "unlock", "succeeded") > 0).then_some(())
    });
    assert!(
        unlocked.is_some(),
        "{}",
        context("no unlock after the blocked job")
    );
    let after: i64 = wait_for(Duration::from_mins(1), || {
        let n: i64 = state(&data)?
            .query_row(
                "SELECT count(*) FROM jobs WHERE kind IN ('forget', 'prune', 'check') AND \
                 state = 'succeeded' AND finished_at > (SELECT max(finished_at) FROM jobs \
                 WHERE kind = 'unlock' AND state = 'succeeded')",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (n > 0).then_some(n)
    })
    .unwrap_or_else(|| panic!("{}", context("maintenance did not go on after the unlock")));
    assert!(after > 0);

    // No secret anywhere it must not be.
    let (scans, leaks) = scan.finish();
    assert!(
        scans > 50,
        "the command lines were scanned only {scans} times"
    );
    assert!(leaks.is_empty(), "a secret on a command line: {leaks:?}");
    drop(agent);
    drop(server);
    let logs = format!(
        "{}{}",
        std::fs::read_to_string(data.with_extension("log")).unwrap_or_default(),
        std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default()
    );
    assert!(
        !logs.contains(PASSWORD) && !logs.contains("wörd"),
        "a secret in a log"
    );
    let db = state(&data).expect("db");
    let mut stmt = db
        .prepare(
            "SELECT coalesce(message,'') || coalesce(reason,'') || coalesce(summary,'') || \
             coalesce(stderr_tail,'') || coalesce(log_tail,'') FROM jobs",
        )
        .expect("query");
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("rows")
        .filter_map(Result::ok)
        .collect();
    assert!(!stored.is_empty());
    assert!(
        stored.iter().all(|text| !text.contains("wörd")),
        "a secret in a stored job record"
    );
}

#[test]
fn the_fleet_runs_every_job_kind_with_restic_0_14() {
    whole_fleet_against("0.14");
}

#[test]
fn the_fleet_runs_every_job_kind_with_restic_0_18() {
    whole_fleet_against("0.18");
}

#[test]
fn demo_once_backs_up_with_real_restic_and_the_snapshot_is_in_its_repository() {
    let dir = tempfile::tempdir().expect("temp dir");
    let area = dir.path().join("demo");
    let restic = restic_binaries().remove(0);
    let out = crate::common::run(
        crate::common::restic_manager()
            .args(["demo", "--once", "--dir"])
            .arg(&area)
            .arg("--restic")
            .arg(&restic),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for expected in [
        "agent for host",
        "ok   init",
        "ok   backup",
        "ok   snapshots",
        "ok   forget",
        "ok   check",
        "added to the repository",
    ] {
        assert!(
            out.stdout.contains(expected),
            "no `{expected}` in:\n{}",
            out.stdout
        );
    }
    let listed = Command::new(&restic)
        .args(["snapshots", "--json"])
        .env("RESTIC_REPOSITORY", area.join("restic-repo"))
        .env("RESTIC_PASSWORD_FILE", area.join("restic-password.txt"))
        .env("RESTIC_CACHE_DIR", dir.path().join("cache"))
        .output()
        .expect("restic snapshots");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let snapshots: Vec<serde_json::Value> =
        serde_json::from_slice(&listed.stdout).expect("snapshot list");
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(
        snapshots[0]["paths"][0],
        serde_json::json!(area.join("sample").display().to_string())
    );
    // The config repository tells the story in three commits.
    let log = git(&area.join("config"), &["log", "--format=%s"]);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.starts_with("Enrol "), "{log}");

    // Run again on the same area: it starts again and backs up again.
    let again = crate::common::run(
        crate::common::restic_manager()
            .args(["demo", "--once", "--dir"])
            .arg(&area)
            .arg("--restic")
            .arg(&restic),
    );
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("ok   backup"), "{}", again.stdout);
}

#[test]
fn demo_without_restic_says_how_to_install_it_and_refuses_a_busy_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = crate::common::run(
        crate::common::restic_manager()
            .args(["demo", "--once", "--restic"])
            .arg(dir.path().join("no-such-restic")),
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("cannot use restic"), "{}", out.stderr);
    assert!(out.stderr.contains("apt install restic"), "{}", out.stderr);

    let busy = dir.path().join("busy");
    write(&busy, "notes.txt", b"mine");
    let out = crate::common::run(
        crate::common::restic_manager()
            .args(["demo", "--once", "--dir"])
            .arg(&busy)
            .arg("--restic")
            .arg(restic_binaries().remove(0)),
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    assert_eq!(
        std::fs::read(busy.join("notes.txt")).expect("kept"),
        b"mine"
    );
}
