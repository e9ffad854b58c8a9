//! `restic-manager serve` end to end: a real git repository, the real binary, its `SQLite`
//! state read from the side, the webhook over real HTTP on loopback.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hmac::Mac as _;

use crate::common::{copy_tree, example_repo, git, restic_manager, workspace};

/// A running server, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `serve` with the demo identity, which opens the example repository's secrets.
pub fn start_server(repository: &str, data: &Path, extra: &[&str]) -> ServerProcess {
    let addr = format!("127.0.0.1:{}", free_port());
    start_server_at(repository, data, &addr, extra)
}

/// Starts `serve` on `addr`; its log is appended to `<data>.log`, so a restart keeps the
/// earlier runs' lines.
pub fn start_server_at(repository: &str, data: &Path, addr: &str, extra: &[&str]) -> ServerProcess {
    let addr = addr.to_owned();
    let log = data.with_extension("log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = restic_manager()
        .args(["serve", "--repository", repository, "--listen", &addr])
        .arg("--data-dir")
        .arg(data)
        .arg("--identity")
        .arg(workspace().join("examples/demo-identity.txt"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("serve starts");
    ServerProcess { child, addr, log }
}

/// Polls `check` until it gives a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Opens the server's state read-only, beside the running server.
pub fn state(data: &Path) -> Option<rusqlite::Connection> {
    let path = data.join("state.db");
    if !path.exists() {
        return None;
    }
    rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()
}

/// The stored schedule of one assignment.
pub fn schedule_of(data: &Path, host: &str, policy: &str, kind: &str) -> Option<String> {
    state(data)?
        .query_row(
            "SELECT schedule FROM assignments WHERE host = ?1 AND policy = ?2 AND kind = ?3",
            [host, policy, kind],
            |row| row.get(0),
        )
        .ok()
}

/// How many audit entries name `commit`.
pub fn audited(data: &Path, commit: &str) -> i64 {
    state(data)
        .and_then(|db| {
            db.query_row(
                "SELECT count(*) FROM audit WHERE commit_id = ?1",
                [commit],
                |row| row.get(0),
            )
            .ok()
        })
        .unwrap_or(0)
}

/// The last applied revision's commit.
pub fn applied_commit(data: &Path) -> Option<String> {
    state(data)?
        .query_row(
            "SELECT commit_id FROM revisions WHERE status = 'applied' ORDER BY attempt DESC \
             LIMIT 1",
            [],
            |row| row.get(0),
        )
        .ok()
}

/// A git work tree holding the example config repository, committed on `main`.
pub fn example_work_tree(dir: &Path) -> PathBuf {
    let repo = dir.join("config");
    copy_tree(&example_repo(), &repo);
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fleet as in the examples"]);
    repo
}

/// The example fleet in git, followed by a server (polling hourly, so only the watch or a
/// webhook tells it of a commit) that has applied the first commit.
pub struct Following {
    pub repo: PathBuf,
    pub data: PathBuf,
    pub server: ServerProcess,
    /// The commit in force.
    pub head: String,
}

/// Starts a server on the example fleet in `dir` and waits until it applied the first commit.
pub fn following_example(dir: &Path) -> Following {
    let repo = example_work_tree(dir);
    let data = dir.join("data");
    let server = start_server(
        repo.to_str().expect("utf-8"),
        &data,
        &["--poll-interval", "1h"],
    );
    let head = git(&repo, &["rev-parse", "HEAD"]);
    wait_until_applied(&data, &head, &server);
    Following {
        repo,
        data,
        server,
        head,
    }
}

/// Waits until `commit` is the revision in force, or fails with the server's log.
pub fn wait_until_applied(data: &Path, commit: &str, server: &ServerProcess) {
    assert!(
        wait_for(Duration::from_secs(20), || (applied_commit(data)?
            == commit)
            .then_some(()))
        .is_some(),
        "revision {commit} was not applied:\n{}",
        server.log()
    );
}

/// Changes the system policy's backup schedule and commits; returns the commit id.
fn change_schedule(repo: &Path, cron: &str) -> String {
    let path = repo.join("policies/system.toml");
    let text = std::fs::read_to_string(&path).expect("policy");
    let old = text
        .lines()
        .find(|line| line.starts_with("schedule = "))
        .expect("schedule line")
        .to_owned();
    let new = format!("schedule = {{ cron = \"{cron}\", jitter = \"30m\" }}");
    std::fs::write(&path, text.replace(&old, &new)).expect("write policy");
    git(
        repo,
        &["commit", "-q", "-am", &format!("system backups at {cron}")],
    );
    git(repo, &["rev-parse", "HEAD"])
}

/// Sends `POST /hooks/git` with the given headers; returns the status code.
fn post_hook(addr: &str, body: &str, headers: &[(&str, String)]) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!(
        "POST /hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// Sends only the head of a `POST /hooks/git` announcing a `length`-byte body; returns the
/// status code the server answers before any of the body arrives.
fn post_hook_head(addr: &str, length: u64) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send");
    let mut response = [0_u8; 64];
    let read = stream.read(&mut response).expect("an answer");
    let response = String::from_utf8_lossy(&response[..read]).into_owned();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// Sends SIGTERM and waits up to `timeout` for the server to exit; returns how long it took.
pub fn terminate(server: &mut ServerProcess, timeout: Duration) -> Duration {
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM failed");
    let exited = wait_for(timeout, || server.child.try_wait().expect("status"));
    let status = exited.unwrap_or_else(|| {
        panic!(
            "the server did not exit within {timeout:?} of SIGTERM:\n{}",
            server.log()
        )
    });
    assert!(status.success(), "{status}:\n{}", server.log());
    started.elapsed()
}

/// The details of the `webhook-refused` audit entries, oldest first.
fn refusals_audited(data: &Path) -> Vec<String> {
    let Some(db) = state(data) else {
        return Vec::new();
    };
    let mut stmt = db
        .prepare("SELECT detail FROM audit WHERE action = 'webhook-refused' ORDER BY seq")
        .expect("query");
    stmt.query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("details")
}

fn github_signature(secret: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn a_committed_schedule_change_is_stored_and_audited_within_two_seconds_via_the_watch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo, data, server, ..
    } = following_example(dir.path());
    let before = schedule_of(&data, "web-1", "system", "backup").expect("assignment stored");
    assert!(before.contains("30 1 * * *"), "{before}");

    let commit = change_schedule(&repo, "45 1 * * *");
    let seen = wait_for(Duration::from_secs(2), || {
        let schedule = schedule_of(&data, "web-1", "system", "backup")?;
        (schedule.contains("45 1 * * *") && audited(&data, &commit) > 0).then_some(())
    });
    assert!(
        seen.is_some(),
        "the change was not stored and audited within 2 s:\n{}",
        server.log()
    );
}

#[test]
fn a_signed_webhook_fetches_at_once_and_refusals_are_audited_without_flooding_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = example_work_tree(dir.path());
    // The server follows a bare "remote", so only the webhook (not a watch) can tell it early.
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8"),
            "remote.git",
        ],
    );
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().expect("utf-8")],
    );
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "s3cret-for-tests\n").expect("secret");
    let data = dir.path().join("data");
    let url = format!("file://{}", remote.display());
    let mut server = start_server(
        &url,
        &data,
        &[
            "--poll-interval",
            "1h",
            "--webhook-secret-file",
            secret_file.to_str().expect("utf-8"),
        ],
    );
    let first = git(&work, &["rev-parse", "HEAD"]);
    assert!(
        wait_for(Duration::from_secs(20), || (applied_commit(&data)?
            == first)
            .then_some(()))
        .is_some(),
        "the first revision was not applied:\n{}",
        server.log()
    );

    let commit = change_schedule(&work, "50 1 * * *");
    git(&work, &["push", "-q", "origin", "main"]);
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{commit}\"}}");

    // A signature for another body (a replay) and a missing one are refused.
    let replayed = github_signature("s3cret-for-tests", "{\"ref\":\"refs/heads/main\"}");
    assert_eq!(
        post_hook(&server.addr, &body, &[("X-Hub-Signature-256", replayed)]),
        401
    );
    assert_eq!(post_hook(&server.addr, &body, &[]), 401);
    let wrong = github_signature("not-the-secret", &body);
    assert_eq!(
        post_hook(&server.addr, &body, &[("X-Hub-Signature-256", wrong)]),
        401
    );
    // A body over the limit is refused before it is read.
    assert_eq!(post_hook_head(&server.addr, 2_000_000), 413);
    assert_eq!(
        schedule_of(&data, "web-1", "system", "backup").map(|s| s.contains("50 1")),
        Some(false),
        "a refused webhook must not fetch"
    );
    // The first refusal is audited and logged; the next ones within a minute are counted.
    let first_refusal = wait_for(Duration::from_secs(5), || {
        refusals_audited(&data).into_iter().next()
    })
    .unwrap_or_else(|| panic!("the first refusal was not audited:\n{}", server.log()));
    assert!(
        first_refusal.contains("X-Hub-Signature-256"),
        "{first_refusal}"
    );

    let good = github_signature("s3cret-for-tests", &body);
    assert_eq!(
        post_hook(&server.addr, &body, &[("X-Hub-Signature-256", good)]),
        202
    );
    let seen = wait_for(Duration::from_secs(2), || {
        let schedule = schedule_of(&data, "web-1", "system", "backup")?;
        (schedule.contains("50 1 * * *") && audited(&data, &commit) > 0).then_some(())
    });
    assert!(
        seen.is_some(),
        "the change was not stored and audited within 2 s of the webhook:\n{}",
        server.log()
    );

    assert_eq!(
        refusals_audited(&data).len(),
        1,
        "{:?}",
        refusals_audited(&data)
    );
    assert_eq!(
        server.log().matches("webhook refused").count(),
        1,
        "{}",
        server.log()
    );

    // At shutdown the counted ones are audited as one summary.
    terminate(&mut server, Duration::from_secs(10));
    let audited = refusals_audited(&data);
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(
        audited[1].contains("3 more refused webhook requests since"),
        "{audited:?}"
    );
    assert!(
        audited[1].contains("2000000 bytes, more than the 1048576 bytes"),
        "{audited:?}"
    );
    assert!(
        server
            .log()
            .contains("3 more refused webhook requests since"),
        "{}",
        server.log()
    );
}

/// The stored record of one revision: its status and errors.
fn revision_status(data: &Path, commit: &str) -> Option<(String, Option<String>)> {
    state(data)?
        .query_row(
            "SELECT status, errors FROM revisions WHERE commit_id = ?1",
            [commit],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .ok()
}

#[test]
fn an_invalid_revision_after_a_valid_one_is_recorded_and_the_last_good_one_stays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo,
        data,
        server,
        head: good,
    } = following_example(dir.path());

    // An unknown key in a policy makes the whole revision invalid.
    let path = repo.join("policies/system.toml");
    let text = std::fs::read_to_string(&path).expect("policy");
    std::fs::write(
        &path,
        text.replace("30 1 * * *", "45 1 * * *") + "keep-forever = true\n",
    )
    .expect("write");
    git(&repo, &["commit", "-q", "-am", "typo in a key"]);
    let bad = git(&repo, &["rev-parse", "HEAD"]);

    let recorded = wait_for(Duration::from_secs(5), || {
        let (status, errors) = revision_status(&data, &bad)?;
        (status == "invalid").then_some(errors.unwrap_or_default())
    })
    .unwrap_or_else(|| panic!("the invalid revision was not recorded:\n{}", server.log()));
    assert!(recorded.contains("policies/system.toml"), "{recorded}");
    assert!(recorded.contains("keep-forever"), "{recorded}");
    assert_eq!(applied_commit(&data).as_deref(), Some(good.as_str()));
    let schedule = schedule_of(&data, "web-1", "system", "backup").expect("kept");
    assert!(schedule.contains("30 1 * * *"), "{schedule}");
    assert!(
        server
            .log()
            .contains("revision is invalid; the last good revision stays in force"),
        "{}",
        server.log()
    );

    // Fixing it applies the fix.
    std::fs::write(&path, text.replace("30 1 * * *", "45 1 * * *")).expect("write");
    git(&repo, &["commit", "-q", "-am", "fix the key"]);
    let fixed = git(&repo, &["rev-parse", "HEAD"]);
    assert!(
        wait_for(Duration::from_secs(5), || (applied_commit(&data)? == fixed)
            .then_some(()))
        .is_some(),
        "{}",
        server.log()
    );
}

#[test]
fn a_changed_assignment_is_audited_with_the_keys_that_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo, data, server, ..
    } = following_example(dir.path());
    let path = repo.join("policies/system.toml");
    let text = std::fs::read_to_string(&path).expect("policy");
    let changed = text
        .replace("max-duration = \"4h\"", "max-duration = \"6h\"")
        .replace("keep-daily = 7", "keep-daily = 10");
    assert_ne!(changed, text);
    std::fs::write(&path, changed).expect("write");
    git(
        &repo,
        &["commit", "-q", "-am", "longer backups, more dailies"],
    );
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    wait_until_applied(&data, &commit, &server);

    let detail = |subject: &str| -> String {
        state(&data)
            .and_then(|db| {
                db.query_row(
                    "SELECT detail FROM audit WHERE action = 'assignment-changed' \
                     AND subject = ?1 AND commit_id = ?2",
                    [subject, &commit],
                    |row| row.get(0),
                )
                .ok()
            })
            .unwrap_or_else(|| panic!("no entry for {subject}:\n{}", server.log()))
    };
    let backup = detail("web-1/system/backup");
    assert!(
        backup.contains("\"change\":\"changed: max-duration\""),
        "{backup}"
    );
    let forget = detail("web-1/system/forget");
    assert!(
        forget.contains("\"change\":\"changed: retention.keep-daily\""),
        "{forget}"
    );
}

#[test]
fn a_misspelt_directory_is_logged_as_a_warning_when_the_revision_is_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo, data, server, ..
    } = following_example(dir.path());
    crate::common::write(&repo, "hots/web-9.toml", b"labels = { role = \"web\" }\n");
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &["commit", "-q", "-m", "a new host, in the wrong place"],
    );
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    wait_until_applied(&data, &commit, &server);

    let log = server.log();
    assert!(
        log.contains("the revision is valid but has warnings:\nhots: warning: `hots` holds .toml"),
        "{log}"
    );
    assert!(log.contains("did you mean `hosts/`?"), "{log}");
}

#[test]
fn an_invalid_first_revision_says_nothing_is_applied_yet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("config");
    copy_tree(&example_repo(), &repo);
    let policy = repo.join("policies/system.toml");
    let text = std::fs::read_to_string(&policy).expect("policy");
    std::fs::write(&policy, text + "keep-forever = true\n").expect("write");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "invalid from the start"]);
    let data = dir.path().join("data");
    let server = start_server(
        repo.to_str().expect("utf-8"),
        &data,
        &["--poll-interval", "1h"],
    );

    let said = wait_for(Duration::from_secs(10), || {
        let log = server.log();
        log.contains("revision is invalid").then_some(log)
    })
    .unwrap_or_else(|| panic!("the invalid revision was not logged:\n{}", server.log()));
    assert!(
        said.contains(
            "revision is invalid; no revision has been applied yet, so nothing is scheduled \
             until a valid revision arrives"
        ),
        "{said}"
    );
    assert!(!said.contains("last good revision"), "{said}");
}

#[test]
fn a_force_push_is_followed_and_audited_as_rewritten_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo,
        data,
        server,
        head: base,
    } = following_example(dir.path());
    let ahead = change_schedule(&repo, "40 1 * * *");
    wait_until_applied(&data, &ahead, &server);

    // Rewrite: drop the last commit and commit something else in its place.
    git(&repo, &["reset", "-q", "--hard", &base]);
    let rewritten = change_schedule(&repo, "20 1 * * *");
    let audited_rewrite = wait_for(Duration::from_secs(5), || {
        let detail: String = state(&data)?
            .query_row(
                "SELECT detail FROM audit WHERE action = 'history-rewritten' AND commit_id = ?1",
                [&rewritten],
                |row| row.get(0),
            )
            .ok()?;
        Some(detail)
    })
    .unwrap_or_else(|| panic!("the rewrite was not audited:\n{}", server.log()));
    assert!(audited_rewrite.contains(&ahead), "{audited_rewrite}");
    assert_eq!(applied_commit(&data).as_deref(), Some(rewritten.as_str()));
    let schedule = schedule_of(&data, "web-1", "system", "backup").expect("stored");
    assert!(schedule.contains("20 1 * * *"), "{schedule}");
}

#[test]
fn a_force_push_over_an_invalid_tip_names_that_tip_and_the_last_applied_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo,
        data,
        server,
        head: base,
    } = following_example(dir.path());
    let path = repo.join("policies/system.toml");
    let text = std::fs::read_to_string(&path).expect("policy");
    std::fs::write(&path, text + "keep-forever = true\n").expect("write");
    git(&repo, &["commit", "-q", "-am", "typo in a key"]);
    let invalid = git(&repo, &["rev-parse", "HEAD"]);
    wait_for(Duration::from_secs(5), || {
        let (status, _) = revision_status(&data, &invalid)?;
        (status == "invalid").then_some(())
    })
    .unwrap_or_else(|| panic!("the invalid revision was not recorded:\n{}", server.log()));

    git(&repo, &["reset", "-q", "--hard", &base]);
    let rewritten = change_schedule(&repo, "20 1 * * *");
    wait_until_applied(&data, &rewritten, &server);
    let detail: String = state(&data)
        .and_then(|db| {
            db.query_row(
                "SELECT detail FROM audit WHERE action = 'history-rewritten' AND commit_id = ?1",
                [&rewritten],
                |row| row.get(0),
            )
            .ok()
        })
        .unwrap_or_else(|| panic!("the rewrite was not audited:\n{}", server.log()));
    assert!(
        detail.contains(&format!(
            "the branch no longer contains {invalid}, the tip fetched before, which was not \
             applied; the last applied commit was {base}; following the new tip {rewritten}"
        )),
        "{detail}"
    );
}

#[test]
fn following_a_bare_repository_does_not_log_the_watchers_noise_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = example_work_tree(dir.path());
    let bare = dir.path().join("bare.git");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8"),
            "bare.git",
        ],
    );
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    // No RUST_LOG: the default filter.
    let child = restic_manager()
        .args(["serve", "--repository", bare.to_str().expect("utf-8")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--identity")
        .arg(workspace().join("examples/demo-identity.txt"))
        .args([
            "--poll-interval",
            "1h",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve starts");
    let server = ServerProcess {
        child,
        addr: String::new(),
        log,
    };
    wait_until_applied(&data, &git(&work, &["rev-parse", "HEAD"]), &server);

    for cron in ["10 1 * * *", "20 1 * * *"] {
        let commit = change_schedule(&work, cron);
        git(
            &work,
            &["push", "-q", bare.to_str().expect("utf-8"), "main"],
        );
        wait_until_applied(&data, &commit, &server);
    }

    let text = server.log();
    assert_eq!(text.matches("revision applied").count(), 3, "{text}");
    assert!(!text.contains("notify"), "{text}");
}

#[test]
fn a_deleted_branch_keeps_the_last_good_revision_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo,
        data,
        server,
        head: good,
    } = following_example(dir.path());

    git(&repo, &["checkout", "-q", "-b", "other"]);
    git(&repo, &["branch", "-q", "-D", "main"]);
    let said = wait_for(Duration::from_secs(5), || {
        let log = server.log();
        (log.contains("cannot fetch") && log.contains("main")).then_some(log)
    });
    assert!(
        said.is_some(),
        "the deleted branch was not reported:\n{}",
        server.log()
    );
    assert_eq!(applied_commit(&data).as_deref(), Some(good.as_str()));
    assert!(schedule_of(&data, "web-1", "system", "backup").is_some());
}

#[test]
fn an_unreachable_remote_at_start_is_reported_and_the_server_keeps_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let url = format!("http://127.0.0.1:{}/fleet.git", free_port());
    let mut server = start_server(&url, &data, &["--poll-interval", "1h"]);
    let said = wait_for(Duration::from_secs(10), || {
        let log = server.log();
        log.contains("cannot fetch").then_some(log)
    })
    .unwrap_or_else(|| panic!("{}", server.log()));
    // Nothing was ever applied: the log does not speak of a last good revision.
    assert!(
        said.contains(
            "cannot fetch the config repository; no revision has been applied yet, so nothing \
             is scheduled until a fetch succeeds"
        ),
        "{said}"
    );
    assert!(!said.contains("last good revision"), "{said}");
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "the server must keep running:\n{}",
        server.log()
    );
}

#[test]
fn sigterm_during_a_fetch_that_hangs_exits_after_a_short_grace() {
    // A "remote" that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let url = format!("http://127.0.0.1:{port}/fleet.git");
    let mut server = start_server(&url, &data, &["--poll-interval", "1h"]);
    accepted
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the server never connected:\n{}", server.log()));
    // The fetch is now waiting for an answer that never comes.
    wait_for(Duration::from_secs(10), || {
        server.log().contains("listening").then_some(())
    })
    .unwrap_or_else(|| panic!("not listening:\n{}", server.log()));

    let took = terminate(&mut server, Duration::from_secs(10));

    assert!(took < Duration::from_secs(5), "{took:?}:\n{}", server.log());
    assert!(
        server.log().contains(
            "the fetch in progress did not stop within its grace after shutdown; abandoned"
        ),
        "{}",
        server.log()
    );
}

#[test]
fn a_data_directory_that_cannot_be_written_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = example_work_tree(dir.path());
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = crate::common::run(
        restic_manager()
            .args([
                "serve",
                "--repository",
                repo.to_str().expect("utf-8"),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&file)
            .arg("--identity")
            .arg(workspace().join("examples/demo-identity.txt")),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not-a-dir"), "{}", out.stderr);
}

/// Runs the server until it has applied the example and stops it; returns the data dir.
fn applied_example(dir: &Path) -> PathBuf {
    following_example(dir).data
}

#[test]
fn audit_verify_passes_an_intact_log_and_names_the_first_tampered_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = applied_example(dir.path());
    let verify = || {
        crate::common::run(
            restic_manager()
                .args(["audit", "verify", "--data-dir"])
                .arg(&data),
        )
    };
    let out = verify();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("audit log intact: "),
        "{}",
        out.stdout
    );

    let log = crate::common::run(
        restic_manager()
            .args(["audit", "log", "--limit", "3", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert!(log.stdout.contains("revision-applied"), "{}", log.stdout);

    // Someone who can write the file rewrites history: drops the guard and edits entry 5.
    let db = rusqlite::Connection::open(data.join("state.db")).expect("open");
    db.execute_batch("DROP TRIGGER audit_is_append_only_update;")
        .expect("drop trigger");
    db.execute(
        "UPDATE audit SET detail = '{\"schedule\":\"never\"}' WHERE seq = 5",
        [],
    )
    .expect("tamper");
    drop(db);
    let out = verify();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("audit log BROKEN"), "{}", out.stdout);
    assert!(out.stdout.contains("entry 5 ("), "{}", out.stdout);
    assert!(
        out.stdout.contains("changed after it was written"),
        "{}",
        out.stdout
    );

    // No database at all is an error, not "intact".
    let out = crate::common::run(
        restic_manager()
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path().join("nowhere")),
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("state.db"), "{}", out.stderr);
}

#[test]
fn a_corrupt_state_database_is_a_clear_error_at_start_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = example_work_tree(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let junk = b"SQLite format 3\0 but then nothing sensible".repeat(200);
    std::fs::write(data.join("state.db"), &junk).expect("write");
    let out = crate::common::run(
        restic_manager()
            .args([
                "serve",
                "--repository",
                repo.to_str().expect("utf-8"),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--identity")
            .arg(workspace().join("examples/demo-identity.txt")),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("state database"), "{}", out.stderr);
    assert!(out.stderr.contains("state.db"), "{}", out.stderr);
    assert_eq!(std::fs::read(data.join("state.db")).expect("read"), junk);
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_at_start_with_no_partial_write() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let data = applied_example(dir.path());
    let before = std::fs::read(data.join("state.db")).expect("read");
    for entry in std::fs::read_dir(&data).expect("read_dir") {
        let path = entry.expect("entry").path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).expect("chmod");

    // The tests run as root, which writes anywhere: drop the capabilities that let it.
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--bounding-set=-dac_override,-dac_read_search,-fowner",
        "--inh-caps=-all",
    ])
    .arg(env!("CARGO_BIN_EXE_restic-manager"))
    .args([
        "serve",
        "--repository",
        dir.path().join("config").to_str().expect("utf-8"),
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(&data)
    .arg("--identity")
    .arg(workspace().join("examples/demo-identity.txt"))
    .env("NO_COLOR", "1");
    let out = crate::common::run(&mut cmd);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("state.db"), "{}", out.stderr);
    assert!(
        out.stderr.contains("writable") || out.stderr.contains("read-only"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(data.join("state.db")).expect("read"), before);
}

#[test]
fn a_cron_that_never_fires_makes_the_revision_invalid_and_the_schedule_stays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo, data, server, ..
    } = following_example(dir.path());
    // 30 February does not exist.
    let bad = change_schedule(&repo, "0 0 30 2 *");
    let errors = wait_for(Duration::from_secs(5), || {
        let (status, errors) = revision_status(&data, &bad)?;
        (status == "invalid").then_some(errors.unwrap_or_default())
    })
    .unwrap_or_else(|| panic!("not recorded as invalid:\n{}", server.log()));
    assert!(errors.contains("never fires"), "{errors}");
    assert!(errors.contains("policies/system.toml"), "{errors}");
    let schedule = schedule_of(&data, "web-1", "system", "backup").expect("kept");
    assert!(schedule.contains("30 1 * * *"), "{schedule}");
}

/// Starts `serve` with the demo identity, expecting it to refuse at start (exit code 2);
/// returns what it said.
fn refused_start(repo: &Path, listen: &str, data: &Path) -> String {
    let out = crate::common::run(
        restic_manager()
            .args(["serve", "--repository"])
            .arg(repo)
            .args(["--listen", listen])
            .arg("--data-dir")
            .arg(data)
            .arg("--identity")
            .arg(workspace().join("examples/demo-identity.txt")),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    out.stderr
}

#[test]
fn a_second_server_on_a_data_directory_in_use_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = following_example(dir.path());
    let audit_before = audited(&first.data, &first.head);
    let stderr = refused_start(&first.repo, "127.0.0.1:0", &first.data);
    assert!(
        stderr.contains("another restic-manager server is running"),
        "{stderr}"
    );
    assert!(stderr.contains("serve.lock"), "{stderr}");
    assert_eq!(audited(&first.data, &first.head), audit_before);
}

#[test]
fn a_deleted_state_database_in_a_used_data_directory_is_refused_not_recreated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following { repo, data, .. } = following_example(dir.path());
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let stderr = refused_start(&repo, "127.0.0.1:0", &data);
    assert!(stderr.contains("is missing"), "{stderr}");
    assert!(stderr.contains("restore state.db"), "{stderr}");
    assert!(
        !data.join("state.db").exists(),
        "no empty database was made"
    );
}

/// `GET path` over plain HTTP; returns the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn the_audit_page_checks_only_new_entries_after_the_first_walk_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Following {
        repo, data, server, ..
    } = following_example(dir.path());
    let entries = || -> i64 {
        state(&data)
            .and_then(|db| {
                db.query_row("SELECT max(seq) FROM audit", [], |row| row.get(0))
                    .ok()
            })
            .expect("entries")
    };
    let walked = |page: &str| -> String {
        let at = page
            .find("This server walked the whole chain on ")
            .unwrap_or_else(|| panic!("{page}"));
        page[at..].split(';').next().expect("a time").to_owned()
    };

    let first = http_get(&server.addr, "/audit");
    let count = entries();
    assert!(
        first.contains(&format!(
            "The audit log is intact: all {count} entries fit the hash chain"
        )),
        "{first}"
    );
    assert!(first.contains("restic-manager audit verify"), "{first}");

    let commit = change_schedule(&repo, "55 1 * * *");
    wait_until_applied(&data, &commit, &server);
    let second = http_get(&server.addr, "/audit");
    let grown = entries();
    assert!(grown > count);
    assert!(
        second.contains(&format!("all {grown} entries fit the hash chain")),
        "{second}"
    );
    assert_eq!(walked(&second), walked(&first));

    // The chain rewritten from the last checked entry on is noticed on the next visit.
    let db = rusqlite::Connection::open(data.join("state.db")).expect("open");
    db.execute_batch("DROP TRIGGER audit_is_append_only_update;")
        .expect("drop trigger");
    db.execute("UPDATE audit SET hash = 'forged' WHERE seq = ?1", [grown])
        .expect("tamper");
    drop(db);
    let third = http_get(&server.addr, "/audit");
    assert!(
        third.contains(&format!("The audit log is broken at entry {grown}")),
        "{third}"
    );
}

#[test]
fn a_busy_listen_address_is_reported_before_the_data_directory_is_made() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = example_work_tree(dir.path());
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let data = dir.path().join("data");
    let stderr = refused_start(&repo, &addr, &data);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!data.exists(), "a failed start leaves no data directory");
}
