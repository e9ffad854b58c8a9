//! What the agent's tests share: a server on loopback that speaks the real protocol (each
//! connection driven step by step by the test), an executor the test controls, and helpers to
//! start the agent in-process or as the real binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::connection::Timing;
use agent::executor::{Executor, JobEvent};
use agent::service::AgentError;
use agent::settings::{Limits, ServerUrl, Settings};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{
    AgentMessage, Hello, JobKind, JobResult, JobSpec, LogStream, Outcome, RepositoryAccess, Secret,
    ServerMessage,
};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// The server identity the test server presents.
pub const SERVER_ID: &str = "age1testserver0000000000000000000000000000000000000000000000";

/// The host the agents under test act for.
pub const HOST: &str = "web-1";

/// Awaits `future`, failing the test with `what` when it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// A WebSocket server on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    connections: mpsc::UnboundedReceiver<ServerConn>,
    _accept: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|tcp| async move { Some(Box::new(tcp) as Box<dyn Stream>) }).await
    }

    /// A server whose TCP connections are first wrapped by `wrap` (for TLS).
    pub async fn start_with<F, Fut>(wrap: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Option<Box<dyn Stream>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, connections) = mpsc::unbounded_channel();
        let wrap = Arc::new(wrap);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let wrap = Arc::clone(&wrap);
                tokio::spawn(async move {
                    let Some(stream) = wrap(tcp).await else {
                        return;
                    };
                    // The test server reads whatever the agent sends; only the agent's limits
                    // are under test.
                    let config = WebSocketConfig::default()
                        .max_message_size(None)
                        .max_frame_size(None);
                    if let Ok(ws) =
                        tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
                    {
                        let _ = tx.send(ServerConn::spawn(ws));
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            _accept: accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The next connection an agent opens.
    pub async fn accept(&mut self) -> ServerConn {
        within("the agent to connect", self.connections.recv())
            .await
            .expect("the accept loop ended")
    }

    /// The next connection, if one comes within `limit`.
    pub async fn accept_within(&mut self, limit: Duration) -> Option<ServerConn> {
        tokio::time::timeout(limit, self.connections.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A TCP server on 127.0.0.1 that is no restic-manager server: it answers every connection
/// with `response` once the client has sent something, then closes it.
pub async fn raw_server(response: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = tcp.read(&mut request).await;
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// Any byte stream a WebSocket can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Command {
    Send(Message),
    /// Stop reading and writing, but keep the TCP connection open: a hung server.
    Freeze,
    /// Drop the TCP connection without a close frame: a server that went away.
    Drop,
}

/// What the agent sent on one connection.
#[derive(Debug)]
pub enum Incoming {
    Message(AgentMessage),
    Malformed(String),
    Closed,
}

/// One agent connection, read by a task of its own (so pings are answered while the test
/// waits on something else).
pub struct ServerConn {
    commands: mpsc::UnboundedSender<Command>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
}

impl ServerConn {
    fn spawn(mut ws: tokio_tungstenite::WebSocketStream<Box<dyn Stream>>) -> Self {
        let (commands, mut command_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(Command::Send(message)) => {
                            if ws.send(message).await.is_err() {
                                let _ = incoming_tx.send(Incoming::Closed);
                                return;
                            }
                        }
                        Some(Command::Freeze) => {
                            // Hold the socket without touching it until the test ends.
                            std::future::pending::<()>().await;
                        }
                        Some(Command::Drop) | None => return,
                    },
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            let item = match protocol::decode::<AgentMessage>(text.as_str()) {
                                Ok(message) => Incoming::Message(message),
                                Err(e) => Incoming::Malformed(e.to_string()),
                            };
                            let _ = incoming_tx.send(item);
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            let _ = incoming_tx.send(Incoming::Closed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
        Self { commands, incoming }
    }

    pub fn send(&self, message: &ServerMessage) {
        self.send_text(protocol::encode(message).unwrap());
    }

    pub fn send_text(&self, text: String) {
        let _ = self.commands.send(Command::Send(Message::text(text)));
    }

    pub fn freeze(&self) {
        let _ = self.commands.send(Command::Freeze);
    }

    pub fn drop_connection(self) {
        let _ = self.commands.send(Command::Drop);
    }

    /// The next thing the agent sent or did.
    pub async fn next(&mut self) -> Incoming {
        within("a message from the agent", self.incoming.recv())
            .await
            .unwrap_or(Incoming::Closed)
    }

    /// The next message, if one comes within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Incoming> {
        tokio::time::timeout(limit, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message; the test fails if the connection closes or a frame is malformed.
    pub async fn recv(&mut self) -> AgentMessage {
        match self.next().await {
            Incoming::Message(message) => message,
            other => panic!("expected a message from the agent, got {other:?}"),
        }
    }

    /// Waits until the agent closes the connection; fails the test if it authenticates.
    pub async fn expect_closed_without_signing(&mut self) {
        match self.next().await {
            Incoming::Closed => {}
            Incoming::Message(AgentMessage::Authenticate { .. }) => {
                panic!("the agent signed a challenge it should have refused")
            }
            other => panic!("expected the agent to close the connection, got {other:?}"),
        }
    }

    pub async fn hello(&mut self) -> Hello {
        match self.recv().await {
            AgentMessage::Hello(hello) => hello,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Sends a challenge; returns its nonce.
    pub fn challenge(&self, server_id: &str, timestamp: jiff::Timestamp) -> String {
        let nonce = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
        self.send(&ServerMessage::Challenge {
            protocol: protocol::PROTOCOL_VERSION,
            server_id: server_id.to_owned(),
            nonce: nonce.clone(),
            timestamp,
        });
        nonce
    }

    /// Reads the agent's answer and checks its signature, as the server does.
    pub async fn verify_answer(&mut self, hello: &Hello, nonce: &str, at: jiff::Timestamp) {
        let signature = match self.recv().await {
            AgentMessage::Authenticate { signature } => signature,
            other => panic!("expected authenticate, got {other:?}"),
        };
        let message = protocol::auth_message(SERVER_ID, nonce, at, &hello.host, &hello.public_key);
        let key = protocol::parse_public_key(&hello.public_key).unwrap();
        protocol::verify_challenge(&key, &message, &signature).expect("the signature verifies");
    }

    /// Hello, challenge, checked answer, welcome.
    pub async fn handshake(&mut self) -> Hello {
        let hello = self.hello().await;
        let at = jiff::Timestamp::now();
        let nonce = self.challenge(SERVER_ID, at);
        self.verify_answer(&hello, &nonce, at).await;
        self.send(&ServerMessage::Welcome {
            host: hello.host.clone(),
            server_version: "test".to_owned(),
        });
        hello
    }

    /// The next result, skipping other messages (which are returned too, in order).
    pub async fn recv_result(&mut self) -> (JobResult, Vec<AgentMessage>) {
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                AgentMessage::Result(result) => return (*result, before),
                other => before.push(other),
            }
        }
    }

    /// Everything the agent sends within `limit`.
    pub async fn drain(&mut self, limit: Duration) -> Vec<AgentMessage> {
        let mut messages = Vec::new();
        while let Some(item) = self.next_within(limit).await {
            match item {
                Incoming::Message(message) => messages.push(message),
                Incoming::Closed => break,
                Incoming::Malformed(text) => panic!("the agent sent a malformed frame: {text}"),
            }
        }
        messages
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    bytes
}

/// A job for `host` with a given id.
pub fn job(id: &str, host: &str) -> JobSpec {
    JobSpec {
        id: id.to_owned(),
        kind: JobKind::Backup,
        host: host.to_owned(),
        hostname: format!("{host}.example.net"),
        policy: "system".to_owned(),
        repository: RepositoryAccess {
            name: "local".to_owned(),
            url: "/nonexistent/restic-manager-test-repo".to_owned(),
            password: Secret::new("not-a-real-password".to_owned()),
            env: std::collections::BTreeMap::new(),
        },
        max_duration_secs: 60,
        init_if_missing: false,
        backup: Some(protocol::BackupSpec {
            paths: vec!["/etc/hostname".to_owned()],
            ..protocol::BackupSpec::default()
        }),
        forget: None,
        check: None,
        prune: None,
        hooks: protocol::HookSpec::default(),
    }
}

/// An executor the test drives: each run reports a log line and a progress, then waits for
/// [`TestExecutor::release`] (or its cancellation).
pub struct TestExecutor {
    runs: Mutex<Vec<String>>,
    gate: Semaphore,
    started: Notify,
    started_count: AtomicUsize,
    finished: Notify,
    finished_count: AtomicUsize,
    /// Sent after the gate opens, to see that events while disconnected are dropped.
    after_release_line: &'static str,
}

impl TestExecutor {
    /// Runs block until released.
    pub fn blocking() -> Arc<Self> {
        Arc::new(Self::with_permits(0))
    }

    /// Runs end at once.
    pub fn immediate() -> Arc<Self> {
        Arc::new(Self::with_permits(Semaphore::MAX_PERMITS))
    }

    fn with_permits(permits: usize) -> Self {
        Self {
            runs: Mutex::new(Vec::new()),
            gate: Semaphore::new(permits),
            started: Notify::new(),
            started_count: AtomicUsize::new(0),
            finished: Notify::new(),
            finished_count: AtomicUsize::new(0),
            after_release_line: "released",
        }
    }

    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// The ids run so far, in order.
    pub fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }

    /// Waits until `n` runs have started.
    pub async fn wait_started(&self, n: usize) {
        within("the executor to start a job", async {
            loop {
                let notified = self.started.notified();
                if self.started_count.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Waits until `n` runs have returned.
    pub async fn wait_finished(&self, n: usize) {
        within("the executor to finish a job", async {
            loop {
                let notified = self.finished.notified();
                if self.finished_count.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

impl Executor for TestExecutor {
    async fn restic_version(&self) -> Option<String> {
        Some("restic 0.18.0 (test executor)".to_owned())
    }

    async fn run(
        &self,
        job: JobSpec,
        events: mpsc::UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> JobResult {
        let started_at = jiff::Timestamp::now();
        self.runs.lock().unwrap().push(job.id.clone());
        let _ = events.send(JobEvent::Log {
            stream: LogStream::Stdout,
            line: "started".to_owned(),
        });
        let _ = events.send(JobEvent::Progress(protocol::Progress {
            job_id: String::new(),
            percent_done: 0.5,
            ..protocol::Progress::default()
        }));
        self.started_count.fetch_add(1, Ordering::SeqCst);
        self.started.notify_waiters();

        let outcome = tokio::select! {
            permit = self.gate.acquire() => {
                permit.expect("the gate stays open").forget();
                Outcome::Succeeded
            }
            () = cancel.cancelled() => Outcome::Cancelled,
        };
        let _ = events.send(JobEvent::Log {
            stream: LogStream::Stdout,
            line: self.after_release_line.to_owned(),
        });
        let result = JobResult {
            job_id: job.id.clone(),
            outcome,
            message: format!("test run of {}", job.id),
            exit_code: Some(0),
            started_at,
            finished_at: jiff::Timestamp::now(),
            summary: None,
            unreadable: Vec::new(),
            initialized: false,
            stderr_tail: String::new(),
            snapshots: None,
        };
        self.finished_count.fetch_add(1, Ordering::SeqCst);
        self.finished.notify_waiters();
        result
    }
}

/// Short backoff so reconnects are quick; the protocol's ping and dead-peer intervals.
pub fn test_timing() -> Timing {
    Timing {
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(300),
        ..Timing::default()
    }
}

pub fn settings(url: &str, state_dir: &Path, timing: Timing) -> Settings {
    Settings {
        config_file: None,
        server: ServerUrl::parse(url).unwrap(),
        key: PathBuf::from("/unused"),
        ca: None,
        state_dir: state_dir.to_owned(),
        host: HOST.to_owned(),
        restic: PathBuf::from("restic"),
        server_id: None,
        limits: Limits::default(),
        timing,
    }
}

/// The agent, running in this process.
pub struct InProcessAgent {
    pub shutdown: CancellationToken,
    handle: JoinHandle<Result<(), AgentError>>,
}

impl InProcessAgent {
    pub fn start(settings: Settings, executor: Arc<TestExecutor>) -> Self {
        let key = SigningKey::from_bytes(&[42u8; 32]);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agent::service::run(
            settings,
            key,
            executor,
            shutdown.clone(),
        ));
        Self { shutdown, handle }
    }

    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Stops the agent as SIGTERM would and waits for it.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        within("the agent to stop", self.handle)
            .await
            .expect("the agent task does not panic")
    }
}

/// The real binary, with its stderr read line by line.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

fn command(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_restic-manager-agent"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the binary to its end: exit code, stdout, stderr.
pub async fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = within("the agent binary to finish", command(args, env).output())
        .await
        .expect("the agent binary starts");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `restic-manager-agent` with `args`, in a clean environment apart from `env`.
pub fn spawn_binary(args: &[&str], env: &[(&str, &str)]) -> AgentProcess {
    let mut child = command(args, env).spawn().expect("the agent binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log_writer = Arc::clone(&log);
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            log_writer.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    AgentProcess { child, lines, log }
}

impl AgentProcess {
    /// Waits for a stderr line containing every one of `needles`, and returns it.
    pub async fn wait_for_line(&mut self, needles: &[&str]) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if needles.iter().all(|n| line.contains(n)) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no stderr line with {needles:?}; the agent wrote:\n{}",
                self.log.lock().unwrap().join("\n")
            ),
        }
    }

    /// Waits for the process to exit and returns its code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let status = within("the agent to exit", self.child.wait())
            .await
            .unwrap();
        status.code()
    }

    /// Everything the process wrote to stderr, once it has exited and its stderr is read to
    /// the end.
    pub async fn log_to_end(&mut self) -> String {
        within("the agent's stderr to end", async {
            while self.lines.recv().await.is_some() {}
        })
        .await;
        self.stderr_text()
    }

    pub fn stderr_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = within("the agent to die", self.child.wait()).await;
    }
}

/// A temporary directory with a key file, an empty settings file and a state directory.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        agent::key::generate(&dir.path().join("agent.key")).unwrap();
        std::fs::write(dir.path().join("agent.toml"), "").unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// `run` arguments for a server URL, with short backoff and a real restic.
    pub fn run_args(&self, url: &str) -> Vec<String> {
        vec![
            "run".into(),
            "--restic".into(),
            restic_binary().to_str().unwrap().to_owned(),
            "--config".into(),
            self.path("agent.toml"),
            "--server".into(),
            url.to_owned(),
            "--key".into(),
            self.path("agent.key"),
            "--state-dir".into(),
            self.path("state"),
            "--host".into(),
            HOST.into(),
            "--test-backoff-base-ms".into(),
            "50".into(),
            "--test-backoff-cap-ms".into(),
            "300".into(),
        ]
    }
}

/// A real restic for the agents these tests start (which check it before connecting): the
/// first of the binaries the tests find.
pub fn restic_binary() -> PathBuf {
    crate::restic::restic_binaries().remove(0)
}

/// Spawns the binary with `args` given as owned strings.
pub fn spawn_run(args: &[String], env: &[(&str, &str)]) -> AgentProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_binary(&args, env)
}
