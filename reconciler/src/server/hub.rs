//! The agents' side of the server: one WebSocket per connected agent, its authentication, and
//! the channel jobs go out on.
//!
//! A connection is trusted only after its agent proves it holds the key committed in its host
//! file: the server sends a fresh nonce with its own identity and the time, the agent signs
//! them with the host name and its public key, and the signature is checked against the
//! `agent-key` of the applied configuration. A key the configuration does not name is proved
//! (the signature must verify under the presented key), recorded as pending with the snippet
//! an operator would commit, and the connection is closed with a retry hint. Until an agent is
//! authenticated nothing it sends reaches the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{AgentMessage, Hello, PROTOCOL_VERSION, ServerMessage};
use tokio::sync::mpsc;
use tracing::{Instrument as _, debug, info, info_span, warn};
use warp::ws::{Message, WebSocket};

use super::Server;

/// How long an agent has to say hello and to answer the challenge.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// When an agent with an unknown key should try again: soon enough that a commit enrolling
/// it takes effect quickly, rarely enough not to flood the log.
const PENDING_RETRY_SECS: u64 = 30;

/// The connected agents, by host name.
#[derive(Default)]
pub struct Hub {
    sessions: std::sync::Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
    /// Per host, the start of the current minute and how often a new connection replaced an
    /// open one in it: two machines with one key (a cloned VM) push each other off forever.
    takeovers: std::sync::Mutex<HashMap<String, (std::time::Instant, u32)>>,
}

/// Replacements of a host's open connection within a minute that are reported as two agents
/// sharing one key.
const TAKEOVERS_REPORTED: u32 = 5;

struct Session {
    id: u64,
    /// The key the agent proved when it connected.
    key: [u8; 32],
    tx: mpsc::UnboundedSender<ServerMessage>,
}

impl Hub {
    /// Sends a job (or anything that carries credentials) to a host's agent, only when that
    /// agent proved `key`, the host's committed key: a connection opened with a key that has
    /// since been replaced gets nothing. False when not sent.
    pub fn send_to_key(&self, host: &str, key: &[u8; 32], message: ServerMessage) -> bool {
        let sessions = self.sessions.lock().expect("hub lock");
        sessions
            .get(host)
            .filter(|session| &session.key == key)
            .is_some_and(|session| session.tx.send(message).is_ok())
    }

    /// Closes a host's connection (its key was replaced or the host removed); the agent
    /// reconnects and proves itself against the configuration now in force.
    pub fn close(&self, host: &str) -> bool {
        let closed = self
            .sessions
            .lock()
            .expect("hub lock")
            .remove(host)
            .is_some();
        if closed {
            info!(
                host,
                "agent connection closed: the host's key changed or it was removed"
            );
        }
        closed
    }

    /// Sends a message to a host's agent; false when it is not connected.
    pub fn send(&self, host: &str, message: ServerMessage) -> bool {
        let sessions = self.sessions.lock().expect("hub lock");
        sessions
            .get(host)
            .is_some_and(|session| session.tx.send(message).is_ok())
    }

    /// The hosts with an authenticated agent, sorted.
    #[must_use]
    pub fn connected(&self) -> Vec<String> {
        let sessions = self.sessions.lock().expect("hub lock");
        let mut hosts: Vec<String> = sessions.keys().cloned().collect();
        hosts.sort();
        hosts
    }

    #[must_use]
    pub fn is_connected(&self, host: &str) -> bool {
        self.sessions.lock().expect("hub lock").contains_key(host)
    }

    /// Registers a session; a previous session of the same host is dropped, which closes it.
    fn register(&self, host: &str, key: [u8; 32], tx: mpsc::UnboundedSender<ServerMessage>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = self
            .sessions
            .lock()
            .expect("hub lock")
            .insert(host.to_owned(), Session { id, key, tx });
        if old.is_some() {
            info!(host, "agent reconnected; the older connection is closed");
            self.count_takeover(host);
        }
        id
    }

    /// Counts a replaced connection and warns, once a minute, when they come too often.
    fn count_takeover(&self, host: &str) {
        let now = std::time::Instant::now();
        let mut takeovers = self.takeovers.lock().expect("hub lock");
        let (since, count) = takeovers.entry(host.to_owned()).or_insert((now, 0));
        if now.duration_since(*since) > Duration::from_mins(1) {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        if *count == TAKEOVERS_REPORTED {
            warn!(
                host,
                replaced = *count,
                "connections of this host's agent keep replacing each other (5 times within a \
                 minute): two agents seem to run with the same key and host name, such as a \
                 cloned machine or a second agent with its own state directory; give each \
                 machine its own key and host file"
            );
        }
    }

    fn unregister(&self, host: &str, id: u64) {
        let mut sessions = self.sessions.lock().expect("hub lock");
        if sessions.get(host).is_some_and(|s| s.id == id) {
            sessions.remove(host);
        }
    }

    /// Closes every session (at shutdown).
    pub fn close_all(&self) {
        self.sessions.lock().expect("hub lock").clear();
    }
}

/// Why a handshake ended without a session.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("agent closed the connection during the handshake")]
    Closed,
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Protocol(#[from] protocol::ProtocolError),
    #[error("expected {expected}, got another message")]
    Unexpected { expected: &'static str },
    #[error("websocket error: {0}")]
    Socket(#[from] warp::Error),
}

/// Runs one agent connection to its end.
pub async fn serve_connection(socket: WebSocket, remote: Option<SocketAddr>, server: Arc<Server>) {
    let addr = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let span = info_span!("agent", remote = %addr, host = tracing::field::Empty);
    async move {
        let (mut sink, mut stream) = socket.split();
        let hello = match handshake(&mut sink, &mut stream, &addr, &server).await {
            Ok(Some(hello)) => hello,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "agent handshake failed");
                let _ = sink.close().await;
                return;
            }
        };
        tracing::Span::current().record("host", hello.host.as_str());
        run_session(sink, stream, hello, &addr, server).await;
    }
    .instrument(span)
    .await;
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

async fn send(sink: &mut Sink, message: &ServerMessage) -> Result<(), HandshakeError> {
    let text = protocol::encode(message)?;
    sink.send(Message::text(text)).await?;
    Ok(())
}

/// Reads the next text frame, skipping pings and pongs.
async fn next_text(stream: &mut Stream) -> Result<String, HandshakeError> {
    loop {
        let frame = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next())
            .await
            .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))?;
        let Some(frame) = frame else {
            return Err(HandshakeError::Closed);
        };
        let frame = frame?;
        if frame.is_close() {
            return Err(HandshakeError::Closed);
        }
        if let Ok(text) = frame.to_str() {
            return Ok(text.to_owned());
        }
        if frame.is_binary() {
            return Err(HandshakeError::Protocol(
                protocol::ProtocolError::Malformed(
                    "binary frames are not part of the protocol".to_owned(),
                ),
            ));
        }
    }
}

async fn reject(
    sink: &mut Sink,
    reason: String,
    retry_after_secs: Option<u64>,
    enrol_snippet: Option<String>,
) {
    let message = ServerMessage::Rejected {
        reason,
        retry_after_secs,
        enrol_snippet,
    };
    let _ = send(sink, &message).await;
    let _ = sink.close().await;
}

/// Hello, challenge, answer. `Ok(None)`: the agent was turned away (and told why).
async fn handshake(
    sink: &mut Sink,
    stream: &mut Stream,
    addr: &str,
    server: &Server,
) -> Result<Option<Hello>, HandshakeError> {
    let AgentMessage::Hello(hello) = protocol::decode::<AgentMessage>(&next_text(stream).await?)?
    else {
        return Err(HandshakeError::Unexpected { expected: "hello" });
    };
    if hello.protocol != PROTOCOL_VERSION {
        let reason = protocol::ProtocolError::VersionMismatch {
            theirs: hello.protocol,
        }
        .to_string();
        warn!(host = %hello.host, %reason, "agent speaks another protocol version");
        reject(
            sink,
            format!("{reason}: upgrade the agent or the server"),
            None,
            None,
        )
        .await;
        return Ok(None);
    }

    let mut nonce_bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut nonce_bytes);
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce_bytes);
    let timestamp = jiff::Timestamp::now();
    let challenge = ServerMessage::Challenge {
        protocol: PROTOCOL_VERSION,
        server_id: server.server_id.clone(),
        nonce: nonce.clone(),
        timestamp,
    };
    send(sink, &challenge).await?;

    let AgentMessage::Authenticate { signature } =
        protocol::decode::<AgentMessage>(&next_text(stream).await?)?
    else {
        return Err(HandshakeError::Unexpected {
            expected: "authenticate",
        });
    };
    let message = protocol::auth_message(
        &server.server_id,
        &nonce,
        timestamp,
        &hello.host,
        &hello.public_key,
    );

    // The agent must hold the key it presents, whether or not that key is enrolled.
    let presented = match protocol::parse_public_key(&hello.public_key) {
        Ok(key) => key,
        Err(e) => {
            reject(sink, e.to_string(), None, None).await;
            return Ok(None);
        }
    };
    if let Err(e) = protocol::verify_challenge(&presented, &message, &signature) {
        warn!(host = %hello.host, error = %e, "agent failed the challenge");
        server.audit_blocking(
            "agent",
            "agent-auth-failed",
            &hello.host,
            &format!("from {addr}: {e}"),
        );
        reject(sink, e.to_string(), Some(PENDING_RETRY_SECS), None).await;
        return Ok(None);
    }

    let committed = server.committed_key(&hello.host);
    match committed {
        Some(Some(key)) if key == presented => Ok(Some(hello)),
        other => {
            let snippet = format!("agent-key = \"{}\"", hello.public_key.trim());
            let reason = match other {
                None => format!(
                    "host `{}` is not in the applied configuration; to enrol this agent, \
                     commit hosts/{}.toml containing: {snippet}",
                    hello.host, hello.host
                ),
                Some(None) => format!(
                    "host `{}` has no agent-key yet; to enrol this agent, add to hosts/{}.toml: \
                     {snippet}",
                    hello.host, hello.host
                ),
                Some(Some(_)) => format!(
                    "the key this agent presents is not the agent-key committed for host `{}`; \
                     if the host was re-keyed, replace the agent-key in hosts/{}.toml with: \
                     {snippet}",
                    hello.host, hello.host
                ),
            };
            warn!(host = %hello.host, "agent key is not enrolled; recorded as pending");
            server.record_pending_key(&hello.host, hello.public_key.trim(), addr);
            reject(sink, reason, Some(PENDING_RETRY_SECS), Some(snippet)).await;
            Ok(None)
        }
    }
}

/// Serves an authenticated agent until either side goes away.
async fn run_session(
    mut sink: Sink,
    mut stream: Stream,
    hello: Hello,
    addr: &str,
    server: Arc<Server>,
) {
    let host = hello.host.clone();
    // The handshake checked this key against the committed one.
    let Ok(key) = protocol::parse_public_key(&hello.public_key) else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMessage>();
    let welcome = ServerMessage::Welcome {
        host: host.clone(),
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    if let Err(e) = send(&mut sink, &welcome).await {
        warn!(error = %e, "could not welcome agent");
        return;
    }
    let session_id = server.hub.register(&host, key, tx);
    info!(
        agent_version = %hello.agent_version,
        restic_version = hello.restic_version.as_deref().unwrap_or("unknown"),
        "agent connected"
    );
    server.agent_connected(&hello, addr).await;

    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(protocol::PING_INTERVAL_SECS));
        ping.tick().await;
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else { break };
                    match protocol::encode(&message) {
                        Ok(text) => {
                            if sink.send(Message::text(text)).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => warn!(error = %e, "message not sent"),
                    }
                }
                _ = ping.tick() => {
                    if sink.send(Message::ping(Vec::new())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });

    let dead_after = Duration::from_secs(protocol::DEAD_PEER_SECS);
    loop {
        let frame = match tokio::time::timeout(dead_after, stream.next()).await {
            Err(_) => {
                warn!("no frame from agent for {dead_after:?}; taking it for dead");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                debug!(error = %e, "agent connection error");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_close() {
            break;
        }
        let Ok(text) = frame.to_str() else {
            continue;
        };
        match protocol::decode::<AgentMessage>(text) {
            Ok(message) => server.agent_message(&host, message).await,
            Err(e) => {
                // A broken frame from an authenticated agent is logged and skipped: the job
                // it concerned ends by its result or its deadline.
                warn!(error = %e, "malformed message from agent");
            }
        }
    }

    server.hub.unregister(&host, session_id);
    writer.abort();
    server.agent_disconnected(&host).await;
    info!("agent disconnected");
}
