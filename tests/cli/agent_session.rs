//! The server's side of agent sessions, driven by a scripted agent over a real WebSocket on
//! loopback: enrolment by commit, refused keys and forged answers, dispatch, results stored
//! once, and crash safety of the server with `kill -9`.
//!
//! The scripted agent speaks the real protocol (`protocol` crate) and signs with a real
//! ed25519 key; it does not run restic. That is the point: these tests pin the server's
//! behaviour, and they control exactly when a job "finishes".

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{AgentMessage, Hello, JobResult, JobSpec, Outcome, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{git, restic_manager, workspace, write};
use crate::serve::{ServerProcess, free_port, start_server_at, state, wait_for};

/// The demo identity's recipient: test secrets are sealed to it so the server opens them.
pub const DEMO_RECIPIENT: &str = "age1f0v0jt5unk787ggctxpxyuemwu423632uvz8yq28p2rx7gxlx9kspauz66";

/// Armor of `plaintext` sealed to the demo identity.
pub fn sealed_for_server(plaintext: &str) -> String {
    let recipient = reconciler::secrets::parse_recipient(DEMO_RECIPIENT).expect("recipient");
    reconciler::secrets::seal(&[recipient], plaintext.as_bytes()).expect("seal")
}

/// A fresh agent key and its `agent-key` text.
pub fn agent_key(seed: u8) -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let text = protocol::public_key_text(&key.verifying_key());
    (key, text)
}

/// A config repository in git with one host `web-1` (enrolled with `key`), a local
/// repository and a policy that backs up every `every` seconds.
pub fn session_repo(dir: &Path, key: Option<&str>, every_secs: u32) -> PathBuf {
    let repo = dir.join("config");
    let host = match key {
        Some(key) => format!("agent-key = \"{key}\"\n"),
        None => String::new(),
    };
    write(&repo, "hosts/web-1.toml", host.as_bytes());
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
            "hosts = {{ all = true }}\nrepository = \"local\"\npaths = [\"{}\"]\n\
             schedule = {{ cron = \"*/{every_secs} * * * * *\" }}\n",
            dir.join("source").display()
        )
        .as_bytes(),
    );
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one host, one policy"]);
    repo
}

/// What the scripted agent saw and did.
#[derive(Default)]
pub struct Seen {
    /// Every job frame received, in order (ids may repeat when the server re-sends).
    pub jobs: Vec<JobSpec>,
    /// Ids the agent started (each at most once, as a real agent does).
    pub started: Vec<String>,
    pub acks: Vec<String>,
    pub rejected: Vec<(String, Option<u64>, Option<String>)>,
    pub welcomed: usize,
    /// Backup jobs started.
    pub backups: usize,
}

/// How the scripted agent answers jobs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Succeed every job at once.
    SucceedAll,
    /// Succeed inits, keep backups running until told.
    HoldBackups,
}

/// What the scripted agent does with a job: answer now with a result, or keep it running
/// until the test calls [`ScriptedAgent::finish`].
pub enum Reply {
    Now(Box<JobResult>),
    Hold,
}

/// Decides the reply to a job, given how many backups the agent started before it.
pub type Responder = Arc<dyn Fn(&JobSpec, usize) -> Reply + Send + Sync>;

impl Script {
    fn responder(self) -> Responder {
        Arc::new(move |job, _| {
            if self == Script::HoldBackups && job.kind == protocol::JobKind::Backup {
                Reply::Hold
            } else {
                Reply::Now(Box::new(result_for(job, Outcome::Succeeded)))
            }
        })
    }
}

/// A scripted agent: connects, authenticates and answers jobs on a thread of its own,
/// reconnecting every 200 ms after a disconnect, and stopping after a rejection.
pub struct ScriptedAgent {
    pub seen: Arc<Mutex<Seen>>,
    /// Ids "running" on the agent: reported in hello, finished by `finish`.
    running: Arc<Mutex<BTreeMap<String, JobSpec>>>,
    /// Results waiting for an ack, re-sent on reconnect like a real agent does.
    unacked: Arc<Mutex<HashMap<String, JobResult>>>,
    finish: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A result for `job` with `outcome`, as a real agent would send it.
pub fn result_for(job: &JobSpec, outcome: Outcome) -> JobResult {
    let now = jiff::Timestamp::now();
    JobResult {
        job_id: job.id.clone(),
        outcome,
        message: format!("{} done by the scripted agent", job.kind),
        exit_code: Some(0),
        started_at: now,
        finished_at: now,
        summary: None,
        unreadable: Vec::new(),
        initialized: job.kind == protocol::JobKind::Init,
        stderr_tail: String::new(),
        snapshots: None,
    }
}

impl ScriptedAgent {
    pub fn start(addr: &str, host: &str, key: ed25519_dalek::SigningKey, script: Script) -> Self {
        Self::with(addr, host, key, script.responder())
    }

    /// An agent whose replies `respond` decides.
    pub fn with(
        addr: &str,
        host: &str,
        key: ed25519_dalek::SigningKey,
        respond: Responder,
    ) -> Self {
        let url = format!("ws://{addr}{}", protocol::AGENT_PATH);
        let host = host.to_owned();
        let mut agent = Self {
            seen: Arc::default(),
            running: Arc::default(),
            unacked: Arc::default(),
            finish: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        let (seen, running, unacked, finish, stop) = (
            Arc::clone(&agent.seen),
            Arc::clone(&agent.running),
            Arc::clone(&agent.unacked),
            Arc::clone(&agent.finish),
            Arc::clone(&agent.stop),
        );
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = session(
                        &url, &host, &key, &respond, &seen, &running, &unacked, &finish, &stop,
                    )
                    .await;
                    if !seen.lock().expect("lock").rejected.is_empty() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        agent.thread = Some(thread);
        agent
    }

    /// Lets a held job finish with `outcome`.
    pub fn finish(&self, id: &str) {
        self.finish.lock().expect("lock").push(id.to_owned());
    }

    pub fn running(&self) -> Vec<String> {
        self.running.lock().expect("lock").keys().cloned().collect()
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the agent's shared state, passed once"
)]
async fn session(
    url: &str,
    host: &str,
    key: &ed25519_dalek::SigningKey,
    respond: &Responder,
    seen: &Mutex<Seen>,
    running: &Mutex<BTreeMap<String, JobSpec>>,
    unacked: &Mutex<HashMap<String, JobResult>>,
    finish: &Mutex<Vec<String>>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let public = protocol::public_key_text(&key.verifying_key());
    let hello = Hello {
        protocol: protocol::PROTOCOL_VERSION,
        agent_version: "test-agent 9.9".into(),
        restic_version: Some("restic 0.18.0".into()),
        host: host.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        public_key: public.clone(),
        running: running.lock().expect("lock").keys().cloned().collect(),
    };
    send(&mut socket, &AgentMessage::Hello(hello)).await?;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(100), socket.next()).await;
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        // Finish held jobs that the test released.
        let released: Vec<String> = finish.lock().expect("lock").drain(..).collect();
        for id in released {
            let job = running.lock().expect("lock").remove(&id);
            if let Some(job) = job {
                let result = result_for(&job, Outcome::Succeeded);
                unacked.lock().expect("lock").insert(id, result.clone());
                send(&mut socket, &AgentMessage::Result(Box::new(result))).await?;
            }
        }
        let Ok(frame) = next else { continue };
        let Some(frame) = frame else { return Ok(()) };
        let Message::Text(text) = frame? else {
            continue;
        };
        let message: ServerMessage = protocol::decode(&text)?;
        match message {
            ServerMessage::Challenge {
                server_id,
                nonce,
                timestamp,
                ..
            } => {
                let signed = protocol::auth_message(&server_id, &nonce, timestamp, host, &public);
                let signature = protocol::sign_challenge(key, &signed);
                send(&mut socket, &AgentMessage::Authenticate { signature }).await?;
            }
            ServerMessage::Welcome { .. } => {
                seen.lock().expect("lock").welcomed += 1;
                let pending: Vec<JobResult> =
                    unacked.lock().expect("lock").values().cloned().collect();
                for result in pending {
                    send(&mut socket, &AgentMessage::Result(Box::new(result))).await?;
                }
            }
            ServerMessage::Rejected {
                reason,
                retry_after_secs,
                enrol_snippet,
            } => {
                seen.lock()
                    .expect("lock")
                    .rejected
                    .push((reason, retry_after_secs, enrol_snippet));
                return Ok(());
            }
            ServerMessage::Job(job) => {
                let job = *job;
                seen.lock().expect("lock").jobs.push(job.clone());
                let id = job.id.clone();
                send(&mut socket, &AgentMessage::Accepted { job_id: id.clone() }).await?;
                // Like a real agent: a job id runs once; a repeat gets its result again.
                let result = unacked.lock().expect("lock").get(&id).cloned();
                if let Some(result) = result {
                    send(&mut socket, &AgentMessage::Result(Box::new(result))).await?;
                    continue;
                }
                if running.lock().expect("lock").contains_key(&id) {
                    continue;
                }
                let backups_before = {
                    let mut seen = seen.lock().expect("lock");
                    seen.started.push(id.clone());
                    let before = seen.backups;
                    if job.kind == protocol::JobKind::Backup {
                        seen.backups += 1;
                    }
                    before
                };
                match respond(&job, backups_before) {
                    Reply::Hold => {
                        running.lock().expect("lock").insert(id, job);
                    }
                    Reply::Now(result) => {
                        unacked.lock().expect("lock").insert(id, (*result).clone());
                        send(&mut socket, &AgentMessage::Result(result)).await?;
                    }
                }
            }
            ServerMessage::Ack { job_id } => {
                unacked.lock().expect("lock").remove(&job_id);
                seen.lock().expect("lock").acks.push(job_id);
            }
            ServerMessage::Cancel { .. } => {}
        }
    }
}

async fn send<S>(socket: &mut S, message: &AgentMessage) -> Result<(), Box<dyn std::error::Error>>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::error::Error + 'static,
{
    let text = protocol::encode(message)?;
    socket.send(Message::text(text)).await?;
    Ok(())
}

/// Rows of the jobs table: (id, kind, state).
pub fn jobs(data: &Path) -> Vec<(String, String, String)> {
    let Some(db) = state(data) else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT id, kind, state FROM jobs ORDER BY id") else {
        return Vec::new();
    };
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn demo_server(repo: &Path, data: &Path, addr: &str) -> ServerProcess {
    start_server_at(
        repo.to_str().expect("utf-8"),
        data,
        addr,
        &["--poll-interval", "1h"],
    )
}

#[test]
fn an_enrolled_agent_gets_an_init_then_its_backups_and_each_result_is_stored_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(11);
    let repo = session_repo(dir.path(), Some(&public), 2);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    let agent = ScriptedAgent::start(&addr, "web-1", key, Script::SucceedAll);

    let done = wait_for(Duration::from_secs(20), || {
        let jobs = jobs(&data);
        let init = jobs.iter().any(|(_, k, s)| k == "init" && s == "succeeded");
        let backups = jobs
            .iter()
            .filter(|(_, k, s)| k == "backup" && s == "succeeded")
            .count();
        (init && backups >= 2).then_some(jobs)
    })
    .unwrap_or_else(|| {
        panic!(
            "no init and two backups:\n{:?}\n{}",
            jobs(&data),
            server.log()
        )
    });

    let seen = agent.seen.lock().expect("lock");
    // The init came before any backup, and every job carried the opened password.
    let first = seen.jobs.first().expect("a job");
    assert_eq!(first.kind, protocol::JobKind::Init, "{:?}", seen.jobs);
    assert!(
        seen.jobs
            .iter()
            .all(|j| j.repository.password.expose() == "correct horse" && j.host == "web-1")
    );
    // Each job ran once, and each stored result is acknowledged (the ack may still be on
    // its way when the row is read).
    let mut started = seen.started.clone();
    started.sort();
    started.dedup();
    assert_eq!(started.len(), seen.started.len(), "{:?}", seen.started);
    drop(seen);
    for (id, _, state) in &done {
        if state == "succeeded" {
            let acked = wait_for(Duration::from_secs(5), || {
                agent
                    .seen
                    .lock()
                    .expect("lock")
                    .acks
                    .contains(id)
                    .then_some(())
            });
            assert!(acked.is_some(), "{id} not acknowledged");
        }
    }
    // No secret reached the stored job records or the server's log.
    let db = state(&data).expect("db");
    let leaked: i64 = db
        .query_row(
            "SELECT count(*) FROM jobs WHERE coalesce(message,'') || coalesce(summary,'') || \
             coalesce(log_tail,'') || coalesce(stderr_tail,'') LIKE '%correct horse%'",
            [],
            |row| row.get(0),
        )
        .expect("query");
    assert_eq!(leaked, 0);
    assert!(!server.log().contains("correct horse"));
}

#[test]
fn a_failed_init_fails_the_jobs_waiting_for_it_with_its_reason_instead_of_deferring_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(12);
    let repo = session_repo(dir.path(), Some(&public), 2);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    let respond: Responder = Arc::new(|job, _| {
        let mut result = result_for(job, Outcome::Succeeded);
        if job.kind == protocol::JobKind::Init {
            result.outcome = Outcome::Failed;
            result.initialized = false;
            result.message = "Fatal: create repository at /srv/x failed: permission denied".into();
        }
        Reply::Now(Box::new(result))
    });
    let agent = ScriptedAgent::with(&addr, "web-1", key, respond);

    let failed = wait_for(Duration::from_secs(20), || {
        let db = state(&data)?;
        db.query_row(
            "SELECT message FROM jobs WHERE kind = 'backup' AND state = 'failed' LIMIT 1",
            [],
            |row| row.get::<_, String>(0),
        )
        .ok()
    })
    .unwrap_or_else(|| panic!("no backup failed:\n{:?}\n{}", jobs(&data), server.log()));
    assert!(
        failed.contains("could not be initialised on web-1"),
        "{failed}"
    );
    assert!(failed.contains("permission denied"), "{failed}");
    assert!(failed.contains("the next init is tried after"), "{failed}");
    let reasons: Vec<Option<String>> = state(&data)
        .expect("db")
        .prepare("SELECT reason FROM jobs WHERE kind = 'backup' AND state = 'failed'")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(
        reasons.iter().all(Option::is_none),
        "what a failed job waited for is not kept as its reason: {reasons:?}"
    );
    // The failed init is not hammered: one init was sent, and no backup reached the agent.
    let seen = agent.seen.lock().expect("lock");
    let kinds: Vec<protocol::JobKind> = seen.jobs.iter().map(|j| j.kind).collect();
    assert_eq!(kinds, [protocol::JobKind::Init], "{kinds:?}");
    drop(seen);
    let none_waiting = wait_for(Duration::from_secs(5), || {
        (!jobs(&data)
            .iter()
            .any(|(_, k, s)| k == "backup" && s == "deferred"))
        .then_some(())
    });
    assert!(none_waiting.is_some(), "{:?}", jobs(&data));
}

#[test]
fn a_repository_moved_in_git_is_audited_and_initialised_again_at_its_new_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(13);
    let repo = session_repo(dir.path(), Some(&public), 2);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    let agent = ScriptedAgent::start(&addr, "web-1", key, Script::SucceedAll);
    let inits_at = |place: &str| {
        agent
            .seen
            .lock()
            .expect("lock")
            .jobs
            .iter()
            .filter(|j| j.kind == protocol::JobKind::Init && j.repository.url.ends_with(place))
            .count()
    };
    let first = wait_for(Duration::from_secs(20), || {
        let backups = jobs(&data)
            .iter()
            .filter(|(_, k, s)| k == "backup" && s == "succeeded")
            .count();
        (inits_at("restic-repo") == 1 && backups >= 1).then_some(())
    });
    assert!(first.is_some(), "{:?}\n{}", jobs(&data), server.log());

    let file = repo.join("repositories/local.toml");
    let text = std::fs::read_to_string(&file).expect("read");
    let moved = dir.path().join("restic-repo-moved");
    let text = text.replace(
        &dir.path().join("restic-repo").display().to_string(),
        &moved.display().to_string(),
    );
    std::fs::write(&file, text).expect("write");
    git(&repo, &["commit", "-q", "-am", "move the repository"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    let again = wait_for(Duration::from_secs(20), || {
        (inits_at("restic-repo-moved") == 1).then_some(())
    });
    assert!(
        again.is_some(),
        "no init at the new place:\n{}",
        server.log()
    );
    let detail: String = state(&data)
        .expect("db")
        .query_row(
            "SELECT detail FROM audit WHERE action = 'repository-moved' AND commit_id = ?1",
            [&commit],
            |row| row.get(0),
        )
        .expect("a repository-moved entry for the commit");
    assert!(detail.contains("restic-repo-moved"), "{detail}");
}

#[test]
fn two_agents_sharing_one_key_are_reported_when_they_keep_replacing_each_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(14);
    let repo = session_repo(dir.path(), Some(&public), 3600);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    let _one = ScriptedAgent::start(&addr, "web-1", key.clone(), Script::SucceedAll);
    let _other = ScriptedAgent::start(&addr, "web-1", key, Script::SucceedAll);
    let reported = wait_for(Duration::from_secs(30), || {
        server
            .log()
            .contains("connections of this host's agent keep replacing each other")
            .then_some(())
    });
    assert!(reported.is_some(), "{}", server.log());
    assert!(
        server
            .log()
            .contains("two agents seem to run with the same key")
    );
}

#[test]
fn an_agent_with_an_unknown_key_is_pending_with_the_snippet_and_a_commit_enrols_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(12);
    let repo = session_repo(dir.path(), None, 2);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    assert!(
        wait_for(Duration::from_secs(20), || crate::serve::applied_commit(
            &data
        ))
        .is_some(),
        "{}",
        server.log()
    );
    let agent = ScriptedAgent::start(&addr, "web-1", key, Script::SucceedAll);

    let rejection = wait_for(Duration::from_secs(10), || {
        agent.seen.lock().expect("lock").rejected.first().cloned()
    })
    .unwrap_or_else(|| panic!("not rejected:\n{}", server.log()));
    assert!(
        rejection.0.contains("has no agent-key yet"),
        "{}",
        rejection.0
    );
    assert_eq!(rejection.1, Some(30));
    assert_eq!(
        rejection.2.as_deref(),
        Some(format!("agent-key = \"{public}\"").as_str())
    );
    let pending: String = wait_for(Duration::from_secs(5), || {
        state(&data)?
            .query_row(
                "SELECT key FROM pending_keys WHERE host = 'web-1'",
                [],
                |r| r.get(0),
            )
            .ok()
    })
    .expect("pending key recorded");
    assert_eq!(pending, public);

    // Enrolling is a reviewed commit of the snippet.
    write(
        &repo,
        "hosts/web-1.toml",
        format!("agent-key = \"{public}\"\n").as_bytes(),
    );
    git(&repo, &["commit", "-q", "-am", "enrol web-1"]);
    let gone = wait_for(Duration::from_secs(5), || {
        let n: i64 = state(&data)?
            .query_row("SELECT count(*) FROM pending_keys", [], |r| r.get(0))
            .ok()?;
        (n == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "the pending key is resolved by the commit:\n{}",
        server.log()
    );
}

/// Opens one raw agent connection and returns the challenge fields.
async fn challenge(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    public: &str,
) -> (String, String, jiff::Timestamp) {
    let hello = Hello {
        protocol: protocol::PROTOCOL_VERSION,
        agent_version: "test".into(),
        restic_version: None,
        host: "web-1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        public_key: public.into(),
        running: Vec::new(),
    };
    send(socket, &AgentMessage::Hello(hello))
        .await
        .expect("hello");
    let Some(Ok(Message::Text(text))) = socket.next().await else {
        panic!("no challenge");
    };
    match protocol::decode::<ServerMessage>(&text).expect("challenge") {
        ServerMessage::Challenge {
            server_id,
            nonce,
            timestamp,
            ..
        } => (server_id, nonce, timestamp),
        other => panic!("{other:?}"),
    }
}

async fn answer(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    signature: String,
) -> ServerMessage {
    send(socket, &AgentMessage::Authenticate { signature })
        .await
        .expect("answer");
    let Some(Ok(Message::Text(text))) = socket.next().await else {
        panic!("no verdict");
    };
    protocol::decode(&text).expect("verdict")
}

#[test]
fn forged_and_replayed_answers_are_refused_and_audited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(13);
    let (other, _) = agent_key(14);
    let repo = session_repo(dir.path(), Some(&public), 30);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    assert!(
        wait_for(Duration::from_secs(20), || crate::serve::applied_commit(
            &data
        ))
        .is_some(),
        "{}",
        server.log()
    );
    let url = format!("ws://{addr}{}", protocol::AGENT_PATH);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // A signature by another key over the right challenge.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        let (server_id, nonce, at) = challenge(&mut socket, &public).await;
        let message = protocol::auth_message(&server_id, &nonce, at, "web-1", &public);
        let verdict = answer(&mut socket, protocol::sign_challenge(&other, &message)).await;
        let ServerMessage::Rejected { reason, .. } = verdict else {
            panic!("a forged answer was accepted: {verdict:?}");
        };
        assert!(reason.contains("signature does not verify"), "{reason}");

        // A valid answer from an earlier connection, replayed on a new one.
        let (mut first, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        let (server_id, nonce, at) = challenge(&mut first, &public).await;
        let old = protocol::sign_challenge(
            &key,
            &protocol::auth_message(&server_id, &nonce, at, "web-1", &public),
        );
        let (mut second, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        let _ = challenge(&mut second, &public).await;
        let verdict = answer(&mut second, old).await;
        assert!(
            matches!(&verdict, ServerMessage::Rejected { reason, .. } if reason.contains("does not verify")),
            "a replayed answer was accepted: {verdict:?}"
        );

        // A peer speaking another protocol version is told so, and not to retry.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
        let hello = serde_json::json!({
            "type": "hello", "protocol": 99, "agent-version": "x", "restic-version": null,
            "host": "web-1", "os": "linux", "arch": "x86_64", "public-key": public,
        });
        socket
            .send(Message::text(hello.to_string()))
            .await
            .expect("send");
        let Some(Ok(Message::Text(text))) = socket.next().await else {
            panic!("no answer to a version mismatch");
        };
        let verdict: ServerMessage = protocol::decode(&text).expect("verdict");
        assert!(
            matches!(&verdict, ServerMessage::Rejected { reason, retry_after_secs: None, .. }
                if reason.contains("protocol version 99")),
            "{verdict:?}"
        );
    });
    let failures = wait_for(Duration::from_secs(5), || {
        let n: i64 = state(&data)?
            .query_row(
                "SELECT count(*) FROM audit WHERE action = 'agent-auth-failed'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (n >= 2).then_some(n)
    });
    assert!(
        failures.is_some(),
        "failed answers are audited:\n{}",
        server.log()
    );
}

#[test]
fn kill_9_of_the_server_loses_no_job_and_runs_none_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(15);
    let repo = session_repo(dir.path(), Some(&public), 2);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = demo_server(&repo, &data, &addr);
    let agent = ScriptedAgent::start(&addr, "web-1", key, Script::HoldBackups);

    // A backup is running on the agent, and the next ones queue up behind it as overruns.
    let held = wait_for(Duration::from_secs(20), || agent.running().first().cloned())
        .unwrap_or_else(|| panic!("no backup started:\n{}", server.log()));
    wait_for(Duration::from_secs(10), || {
        jobs(&data)
            .iter()
            .any(|(_, k, s)| k == "backup" && s == "missed")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no overrun recorded:\n{:?}", jobs(&data)));

    for round in 0..3_usize {
        let before = jobs(&data);
        server.child.kill().expect("kill -9");
        let _ = server.child.wait();
        let after_kill = jobs(&data);
        assert!(
            before
                .iter()
                .all(|(id, _, _)| after_kill.iter().any(|(a, _, _)| a == id)),
            "round {round}: a job vanished with the crash"
        );
        std::thread::sleep(Duration::from_millis(
            300 * (u64::try_from(round).expect("small") + 1),
        ));
        server = demo_server(&repo, &data, &addr);
        // The agent reconnects and reports the held job; the server keeps it running.
        wait_for(Duration::from_secs(20), || {
            (agent.seen.lock().expect("lock").welcomed > round + 1).then_some(())
        })
        .unwrap_or_else(|| panic!("round {round}: agent not back:\n{}", server.log()));
        let state_of_held = wait_for(Duration::from_secs(5), || {
            jobs(&data)
                .into_iter()
                .find(|(id, _, _)| id == &held)
                .map(|(_, _, s)| s)
                .filter(|s| s == "running")
        });
        assert!(
            state_of_held.is_some(),
            "round {round}: the held job is not running after the restart: {:?}\n{}",
            jobs(&data),
            server.log()
        );
    }

    // The held job finishes; its result is stored once.
    agent.finish(&held);
    wait_for(Duration::from_secs(10), || {
        jobs(&data)
            .iter()
            .any(|(id, _, s)| id == &held && s == "succeeded")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("held job not stored:\n{}", server.log()));
    let seen = agent.seen.lock().expect("lock");
    let mut started = seen.started.clone();
    started.sort();
    let before = started.len();
    started.dedup();
    assert_eq!(started.len(), before, "a job ran twice: {:?}", seen.started);
    // Every backup row is a distinct instant: one job per instant, whatever the crashes.
    let ids: Vec<String> = jobs(&data)
        .into_iter()
        .filter(|(_, k, _)| k == "backup")
        .map(|(id, _, _)| id)
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids);
    drop(seen);
    drop(agent);
    drop(server);
    // The audit log survived three crashes intact.
    let out = crate::common::run(
        restic_manager()
            .args(["audit", "verify", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("audit log intact"), "{}", out.stdout);
    let _ = workspace();
}

#[test]
fn an_oversized_or_malformed_frame_from_an_agent_does_not_hurt_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(16);
    let repo = session_repo(dir.path(), Some(&public), 30);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = demo_server(&repo, &data, &addr);
    assert!(
        wait_for(Duration::from_secs(20), || crate::serve::applied_commit(
            &data
        ))
        .is_some(),
        "{}",
        server.log()
    );
    let url = format!("ws://{addr}{}", protocol::AGENT_PATH);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Before authenticating: garbage instead of a hello is turned away.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        socket
            .send(Message::text("{\"type\":\"hello\""))
            .await
            .expect("send");
        let closed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
        assert!(
            matches!(closed, Ok(None | Some(Ok(Message::Close(_)) | Err(_)))),
            "{closed:?}"
        );

        // After authenticating: a frame over the limit ends that connection only.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        let (server_id, nonce, at) = challenge(&mut socket, &public).await;
        let signed = protocol::auth_message(&server_id, &nonce, at, "web-1", &public);
        let verdict = answer(&mut socket, protocol::sign_challenge(&key, &signed)).await;
        assert!(
            matches!(verdict, ServerMessage::Welcome { .. }),
            "{verdict:?}"
        );
        let huge = format!(
            "{{\"type\":\"log\",\"job-id\":\"x\",\"stream\":\"agent\",\"line\":\"{}\"}}",
            "a".repeat(protocol::MAX_FRAME_BYTES + 1)
        );
        let _ = socket.send(Message::text(huge)).await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match socket.next().await {
                    None | Some(Err(_) | Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the oversized frame did not end the connection"
        );
    });
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "the server must keep running:\n{}",
        server.log()
    );
    // And it still serves agents.
    let agent = ScriptedAgent::start(&addr, "web-1", key, Script::SucceedAll);
    let back = wait_for(Duration::from_secs(10), || {
        (agent.seen.lock().expect("lock").welcomed > 0).then_some(())
    });
    assert!(back.is_some(), "{}", server.log());
}

#[test]
fn a_commit_that_replaces_a_hosts_key_closes_the_old_agents_connection_and_it_gets_no_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (old_key, old_public) = agent_key(17);
    let (_, new_public) = agent_key(18);
    let repo = session_repo(dir.path(), Some(&old_public), 2);
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = demo_server(&repo, &data, &addr);
    let agent = ScriptedAgent::start(&addr, "web-1", old_key, Script::SucceedAll);
    wait_for(Duration::from_secs(20), || {
        (agent.seen.lock().expect("lock").jobs.len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no jobs for the enrolled agent:\n{}", server.log()));

    // The host is re-keyed in a commit: the old agent is cut off at once.
    write(
        &repo,
        "hosts/web-1.toml",
        format!("agent-key = \"{new_public}\"\n").as_bytes(),
    );
    git(&repo, &["commit", "-q", "-am", "re-key web-1"]);
    let rejected = wait_for(Duration::from_secs(10), || {
        agent.seen.lock().expect("lock").rejected.first().cloned()
    })
    .unwrap_or_else(|| panic!("the old key was not turned away:\n{}", server.log()));
    assert!(
        rejected
            .0
            .contains("is not the agent-key committed for host `web-1`"),
        "{}",
        rejected.0
    );
    let jobs_then = agent.seen.lock().expect("lock").jobs.len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.seen.lock().expect("lock").jobs.len(),
        jobs_then,
        "the old key got jobs after the re-key"
    );
    assert!(
        server.log().contains("agent connection closed"),
        "{}",
        server.log()
    );
}
