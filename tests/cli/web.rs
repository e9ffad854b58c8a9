//! The status view, the JSON API and `/metrics` of `restic-manager serve`, over real HTTP on
//! loopback: a real git repository, the real binary, and a scripted agent on a real WebSocket
//! that finishes jobs the way the test says (one backup succeeds, the next ones fail with a
//! message full of markup). The pages are also opened in a real headless Chromium.
//!
//! This file holds what the tests share: a small HTTP client and the fleet with its agent.

mod access;
mod api;
mod browser;
mod metrics;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::{JobKind, JobResult, JobSpec, Outcome};

use crate::agent_session::{self, ScriptedAgent, agent_key, sealed_for_server};
use crate::common::{git, write};
use crate::serve::{ServerProcess, free_port, start_server_at, wait_for};

/// Text an agent or an operator could put anywhere; it must only ever show as text.
const MARKUP: &str = "<script>alert(1)</script>";

/// The message of every failed backup of the scripted agent.
fn failure_message() -> String {
    format!("{MARKUP} disk on fire")
}

// ---------------------------------------------------------------------------------------------
// HTTP on loopback

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Sends one request and reads the whole answer; `from` binds the client to that loopback
/// address first.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> Reply {
    try_request(addr, method, path, headers, from)
        .unwrap_or_else(|| panic!("{method} {path}: no answer from {addr}"))
}

fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[], None)
}

/// A GET that gives `None` while nothing listens yet, for polling a starting server.
fn try_get(addr: &str, path: &str, from: Option<IpAddr>) -> Option<Reply> {
    try_request(addr, "GET", path, &[], from)
}

fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> Option<Reply> {
    let mut stream = match from {
        None => TcpStream::connect(addr).ok()?,
        Some(ip) => connect_from(ip, addr)?,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        text.push_str("Content-Length: 0\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).ok()?;
    let raw = read_answer(&mut stream, method == "HEAD")?;
    let raw = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
        "chunked answers are not expected: {raw}"
    );
    Some(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// Reads an answer: up to the end of the stream, or of the body its Content-Length gives
/// (chromedriver keeps connections open).
fn read_answer(stream: &mut TcpStream, head_only: bool) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                Some(_) if head_only => return Some(raw),
                Some(n) if raw.len() >= end + 4 + n => return Some(raw),
                _ => {}
            }
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return Some(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// A connection whose source address is `ip` (any 127.x address works on Linux).
fn connect_from(ip: IpAddr, addr: &str) -> Option<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let target: SocketAddr = addr.parse().expect("address");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(ip, 0)).expect("bind");
        socket.connect(target).await.ok()
    })?;
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    Some(stream)
}

// ---------------------------------------------------------------------------------------------
// A fleet with a scripted agent

/// A config repository: `web-1` (enrolled, described with markup) backed up every two
/// seconds by `files`, and `db-1` without an agent-key.
fn web_repo(dir: &Path, key: &str) -> PathBuf {
    let repo = dir.join("config");
    write(
        &repo,
        "hosts/web-1.toml",
        format!("description = \"{MARKUP} front\"\nagent-key = \"{key}\"\n").as_bytes(),
    );
    write(&repo, "hosts/db-1.toml", b"description = \"database\"\n");
    write(
        &repo,
        "repositories/local.toml",
        format!(
            "url = \"{}\"\npassword = {{ sealed = \"\"\"\n{}\"\"\" }}\n",
            dir.join("restic-repo").display(),
            sealed_for_server("correct horse")
        )
        .as_bytes(),
    );
    write(
        &repo,
        "policies/files.toml",
        format!(
            "hosts = {{ names = [\"web-1\"] }}\nrepository = \"local\"\npaths = [\"{}\"]\n\
             schedule = {{ cron = \"*/2 * * * * *\" }}\n",
            dir.join("source").display()
        )
        .as_bytes(),
    );
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "web-1 and db-1"]);
    repo
}

/// What the scripted agent answers: inits succeed; the first backup succeeds with a summary
/// and an inventory of two snapshots; every later backup fails with [`failure_message`].
fn respond(job: &JobSpec, backups_before: usize) -> agent_session::Reply {
    let now = jiff::Timestamp::now();
    let mut result = JobResult {
        job_id: job.id.clone(),
        outcome: Outcome::Succeeded,
        message: format!("{} done", job.kind),
        exit_code: Some(0),
        started_at: now,
        finished_at: now,
        summary: None,
        unreadable: Vec::new(),
        initialized: job.kind == JobKind::Init,
        stderr_tail: String::new(),
        snapshots: None,
    };
    if job.kind != JobKind::Backup {
        return agent_session::Reply::Now(Box::new(result));
    }
    if backups_before == 0 {
        result.summary = Some(protocol::BackupSummary {
            snapshot_id: Some("4f6c2a1bd0e9".into()),
            files_new: 12,
            data_added: 4096,
            total_files_processed: 12,
            total_bytes_processed: 8192,
            total_duration: 0.5,
            ..protocol::BackupSummary::default()
        });
        result.snapshots = Some(
            ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]
                .iter()
                .enumerate()
                .map(|(n, time)| protocol::Snapshot {
                    id: format!("{n}abcdef0123456789"),
                    time: (*time).into(),
                    hostname: job.hostname.clone(),
                    paths: vec!["/srv".into()],
                    tags: vec!["policy:files".into()],
                })
                .collect(),
        );
    } else {
        result.outcome = Outcome::Failed;
        result.message = failure_message();
        result.exit_code = Some(1);
        result.stderr_tail = format!("Fatal: {MARKUP} unable to open the source");
    }
    agent_session::Reply::Now(Box::new(result))
}

/// The scripted agent of these tests, answering with [`respond`].
pub(crate) fn start_agent(addr: &str, host: &str, key: ed25519_dalek::SigningKey) -> ScriptedAgent {
    ScriptedAgent::with(addr, host, key, Arc::new(respond))
}

/// A running server whose `web-1` has one good and at least one failed backup, and whose
/// `db-1` agent waits with a key nobody committed.
struct Fleet {
    server: ServerProcess,
    _agents: Vec<ScriptedAgent>,
    repo: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn addr(&self) -> &str {
        &self.server.addr
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (key, public) = agent_key(41);
        let repo = web_repo(dir.path(), &public);
        let data = dir.path().join("data");
        let addr = format!("127.0.0.1:{}", free_port());
        let server = start_server_at(
            repo.to_str().expect("utf-8"),
            &data,
            &addr,
            &["--poll-interval", "1h"],
        );
        // An agent that connects before its key is applied is refused, and this one stops.
        wait_for(Duration::from_secs(20), || {
            let status = try_get(&addr, "/api/v1/status", None)?.json();
            (!status["revision"].is_null()).then_some(())
        })
        .unwrap_or_else(|| panic!("no revision applied:\n{}", server.log()));
        let web1 = start_agent(&addr, "web-1", key);
        let (stranger, _) = agent_key(42);
        let db1 = start_agent(&addr, "db-1", stranger);

        // The state the tests read: a good backup, then a failed one, and a pending key.
        let ready = wait_for(Duration::from_secs(30), || {
            let jobs = try_get(&addr, "/api/v1/jobs?host=web-1&limit=1000", None)?.json();
            let states: Vec<&str> = jobs["jobs"]
                .as_array()?
                .iter()
                .filter(|j| j["kind"] == "backup")
                .filter_map(|j| j["state"].as_str())
                .collect();
            let pending = get(&addr, "/api/v1/pending-keys").json();
            (states.contains(&"succeeded")
                && states.contains(&"failed")
                && pending["pending-keys"].as_array()?.len() == 1)
                .then_some(())
        });
        assert!(
            ready.is_some(),
            "no good and failed backup, or no pending key:\n{}",
            server.log()
        );
        Self {
            server,
            _agents: vec![web1, db1],
            repo,
            _dir: dir,
        }
    }
}
