//! The agent's connection to the server: dialling out, proving its key, serving jobs, and
//! dialling again whenever the connection is lost.
//!
//! One connection goes: WebSocket handshake (over TLS for `wss://`), Hello, the server's
//! challenge, checked before anything is signed (protocol version, the pinned server identity,
//! a timestamp close to the agent's clock so an old challenge cannot be replayed), the signed
//! answer, then Welcome or Rejected. After Welcome the stored results go out, then jobs,
//! cancels and acknowledgements come in until either side goes away. Frames above the
//! protocol's size limit end the connection; a malformed frame is logged and skipped.
//!
//! A lost connection is dialled again after a backoff with full jitter (see
//! [`crate::backoff`]). A rejection with a retry hint waits about that long, spread by
//! [`around_hint`] so a fleet does not return in lockstep; a rejection without one (a protocol
//! version mismatch) ends the agent, since only an operator can fix it.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{AgentMessage, Hello, MAX_FRAME_BYTES, PROTOCOL_VERSION, ServerMessage};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::backoff::{Backoff, DEFAULT_BASE, DEFAULT_CAP};
use crate::challenge::check_challenge;
use crate::executor::Executor;
use crate::jobs::JobManager;
use crate::settings::ServerUrl;

/// The longest wait a server's retry hint can impose; a larger hint is cut to this.
///
/// NOTE: a server asking for a longer wait is dialled again after an hour (see
/// `docs/src/limitations.md`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_hours(1);

/// The most a server's retry hint is moved either way by [`around_hint`].
pub const MAX_HINT_SPREAD: Duration = Duration::from_mins(1);

/// How long closing a connection may take; a hung server must not hold up a stop.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection must have been up for the backoff to start again from its base.
pub const STABLE_AFTER: Duration = Duration::from_mins(1);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The connection's intervals. The defaults are the protocol's; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ping_interval: Duration,
    /// No frame from the server for this long: the connection is dead.
    pub dead_peer: Duration,
    /// How long dialling, and each step of the handshake, may take.
    pub handshake_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub stable_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(protocol::PING_INTERVAL_SECS),
            dead_peer: Duration::from_secs(protocol::DEAD_PEER_SECS),
            handshake_timeout: Duration::from_secs(30),
            backoff_base: DEFAULT_BASE,
            backoff_cap: DEFAULT_CAP,
            stable_after: STABLE_AFTER,
        }
    }
}

/// Who the agent is and where it connects.
#[derive(Clone)]
pub struct ConnectionConfig {
    pub server: ServerUrl,
    pub host: String,
    pub key: SigningKey,
    /// When set, a challenge from a server with another identity is refused.
    pub server_id: Option<String>,
    /// For `wss://`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub timing: Timing,
}

/// Why the agent stopped connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("the server rejected this agent and said not to retry: {reason}")]
    Rejected { reason: String },
}

/// How one connection ended.
#[derive(Debug)]
enum SessionEnd {
    /// Lost or refused; dial again after the backoff. `up_for` is how long it was welcomed.
    Lost {
        reason: String,
        up_for: Option<Duration>,
    },
    /// The server asked to wait this long before dialling again.
    RetryAfter(Duration),
    /// The agent refused the server's challenge (an operator must look); dial again after the
    /// backoff.
    ChallengeRefused(String),
    Fatal(String),
    Shutdown,
}

/// Connects, serves, and connects again, until `shutdown` is cancelled or the server says
/// not to retry.
pub async fn run<E: Executor>(
    config: ConnectionConfig,
    manager: JobManager<E>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError> {
    let timing = config.timing;
    let mut backoff = Backoff::new(timing.backoff_base, timing.backoff_cap);
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let span = info_span!("connection", server = %config.server, attempt);
        let end = session(&config, &manager, &shutdown)
            .instrument(span.clone())
            .await;
        let wait = match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Fatal(reason) => return Err(ConnectionError::Rejected { reason }),
            SessionEnd::RetryAfter(asked) => {
                let wait = around_hint(asked, &mut rand::rng());
                span.in_scope(|| {
                    info!(
                        retry_in = ?wait,
                        server_asked = ?asked,
                        "dialling again about as long as the server asked"
                    );
                });
                wait
            }
            SessionEnd::ChallengeRefused(reason) => {
                let wait = backoff.next_delay(&mut rand::rng());
                span.in_scope(|| {
                    error!(retry_in = ?wait, "refusing to sign the server's challenge: {reason}");
                });
                wait
            }
            SessionEnd::Lost { reason, up_for } => {
                if up_for.is_some_and(|up| up >= timing.stable_after) {
                    backoff.reset();
                }
                let wait = backoff.next_delay(&mut rand::rng());
                span.in_scope(|| warn!(%reason, retry_in = ?wait, "not connected to the server"));
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// One connection, from dialling to its end.
async fn session<E: Executor>(
    config: &ConnectionConfig,
    manager: &JobManager<E>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let timing = config.timing;
    let mut socket = tokio::select! {
        dialled = dial(config) => match dialled {
            Ok(socket) => socket,
            Err(reason) => return SessionEnd::Lost { reason, up_for: None },
        },
        () = shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    debug!("WebSocket open; saying hello");

    let welcome = tokio::select! {
        result = handshake(&mut socket, config, manager) => result,
        () = shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    let server_version = match welcome {
        Ok(version) => version,
        Err(end) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
            return end;
        }
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let (number, pending) = manager.attach(tx);
    info!(%server_version, pending_results = pending, "connected to the server");
    let welcomed_at = Instant::now();
    let end = serve(&mut socket, rx, manager, &config.host, timing, shutdown).await;
    manager.detach(number);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
    match end {
        SessionEnd::Lost { reason, .. } => SessionEnd::Lost {
            reason,
            up_for: Some(welcomed_at.elapsed()),
        },
        other => other,
    }
}

/// Opens the WebSocket, with the frame size limits of the protocol.
async fn dial(config: &ConnectionConfig) -> Result<Socket, String> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connector = match (&config.tls, config.server.is_tls()) {
        (Some(tls), true) => Connector::Rustls(tls.clone()),
        (None, true) => {
            return Err("a wss:// URL needs a TLS configuration; none was set up".to_owned());
        }
        (_, false) => Connector::Plain,
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        config.server.as_str(),
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(config.timing.handshake_timeout, connect).await {
        Err(_) => Err(format!(
            "the server did not answer within {:?}",
            config.timing.handshake_timeout
        )),
        Ok(Err(e)) => Err(format!(
            "cannot connect: {}",
            describe_dial(&e, &config.server)
        )),
        Ok(Ok((socket, _response))) => Ok(socket),
    }
}

/// Hello, challenge, answer, welcome. Returns the server's version.
async fn handshake<E: Executor>(
    socket: &mut Socket,
    config: &ConnectionConfig,
    manager: &JobManager<E>,
) -> Result<String, SessionEnd> {
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        up_for: None,
    };
    let public_key = protocol::public_key_text(&config.key.verifying_key());
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        restic_version: manager.executor().restic_version().await,
        host: config.host.clone(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        public_key: public_key.clone(),
        running: manager.running_ids(),
    };
    send(
        socket,
        &AgentMessage::Hello(hello),
        config.timing.handshake_timeout,
    )
    .await
    .map_err(lost)?;

    let (server_id, nonce, timestamp) = match next_message(socket, config.timing).await {
        Ok(ServerMessage::Challenge {
            protocol,
            server_id,
            nonce,
            timestamp,
        }) => {
            let pinned = config.server_id.as_deref();
            let now = jiff::Timestamp::now();
            if let Err(e) = check_challenge(protocol, &server_id, &nonce, timestamp, pinned, now) {
                return Err(SessionEnd::ChallengeRefused(e.to_string()));
            }
            (server_id, nonce, timestamp)
        }
        Ok(ServerMessage::Rejected {
            reason,
            retry_after_secs,
            enrol_snippet,
        }) => {
            return Err(rejected(
                &config.host,
                reason,
                retry_after_secs,
                enrol_snippet.as_deref(),
            ));
        }
        Ok(other) => {
            return Err(lost(format!(
                "expected a challenge, the server sent {}",
                kind(&other)
            )));
        }
        Err(reason) => return Err(lost(reason)),
    };

    let message = protocol::auth_message(&server_id, &nonce, timestamp, &config.host, &public_key);
    let signature = protocol::sign_challenge(&config.key, &message);
    send(
        socket,
        &AgentMessage::Authenticate { signature },
        config.timing.handshake_timeout,
    )
    .await
    .map_err(lost)?;
    debug!(%server_id, "challenge answered");

    match next_message(socket, config.timing).await {
        Ok(ServerMessage::Welcome {
            host,
            server_version,
        }) => {
            if host != config.host {
                warn!(
                    welcomed_as = %host,
                    "the server welcomed this agent under another host name"
                );
            }
            Ok(server_version)
        }
        Ok(ServerMessage::Rejected {
            reason,
            retry_after_secs,
            enrol_snippet,
        }) => Err(rejected(
            &config.host,
            reason,
            retry_after_secs,
            enrol_snippet.as_deref(),
        )),
        Ok(other) => Err(lost(format!(
            "expected a welcome, the server sent {}",
            kind(&other)
        ))),
        Err(reason) => Err(lost(reason)),
    }
}

/// Logs a rejection for the operator and says what to do next.
fn rejected(
    host: &str,
    reason: String,
    retry_after_secs: Option<u64>,
    enrol_snippet: Option<&str>,
) -> SessionEnd {
    if let Some(snippet) = enrol_snippet {
        error!(
            %reason,
            enrol_snippet = %snippet,
            "the server does not know this agent's key; to enrol it, commit `{snippet}` to \
             hosts/{host}.toml in the config repository"
        );
    } else {
        error!(%reason, "the server rejected this agent");
    }
    match retry_after_secs {
        Some(secs) => SessionEnd::RetryAfter(Duration::from_secs(secs).min(MAX_RETRY_AFTER)),
        None => SessionEnd::Fatal(reason),
    }
}

/// After the welcome: jobs in, results and pings out, until the connection ends.
async fn serve<E: Executor>(
    socket: &mut Socket,
    mut outbox: mpsc::UnboundedReceiver<AgentMessage>,
    manager: &JobManager<E>,
    host: &str,
    timing: Timing,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        up_for: None,
    };
    let mut last_frame = Instant::now();
    let mut ping =
        tokio::time::interval_at(last_frame + timing.ping_interval, timing.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return SessionEnd::Shutdown,
            () = tokio::time::sleep_until(last_frame + timing.dead_peer) => {
                return lost(format!(
                    "no frame from the server for {:?}; taking the connection for dead",
                    timing.dead_peer
                ));
            }
            frame = socket.next() => {
                last_frame = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        warn!("the server sent a binary frame, which the protocol does not use; skipped");
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        return lost("the server closed the connection".to_owned());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return lost(describe(&e)),
                };
                match protocol::decode::<ServerMessage>(text.as_str()) {
                    Ok(message) => {
                        if let Some(end) = dispatch(manager, host, message) {
                            return end;
                        }
                    }
                    Err(e) => warn!(error = %e, "malformed message from the server; skipped"),
                }
            }
            message = outbox.recv() => {
                let Some(message) = message else {
                    return lost("the job manager let go of the connection".to_owned());
                };
                if let Err(reason) = send(socket, &message, timing.dead_peer).await {
                    return lost(reason);
                }
            }
            _ = ping.tick() => {
                let ping = socket.send(Message::Ping(Vec::new().into()));
                match tokio::time::timeout(timing.dead_peer, ping).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return lost(describe(&e)),
                    Err(_) => return lost("the server does not take frames; taking the connection for dead".to_owned()),
                }
            }
        }
    }
}

/// Hands a server message to the job manager; `Some` when it ends the connection.
fn dispatch<E: Executor>(
    manager: &JobManager<E>,
    host: &str,
    message: ServerMessage,
) -> Option<SessionEnd> {
    match message {
        ServerMessage::Job(job) => manager.handle_job(*job),
        ServerMessage::Cancel { job_id } => manager.handle_cancel(&job_id),
        ServerMessage::Ack { job_id } => manager.handle_ack(&job_id),
        ServerMessage::Rejected {
            reason,
            retry_after_secs,
            enrol_snippet,
        } => {
            return Some(rejected(
                host,
                reason,
                retry_after_secs,
                enrol_snippet.as_deref(),
            ));
        }
        other @ (ServerMessage::Challenge { .. } | ServerMessage::Welcome { .. }) => {
            warn!(
                message = kind(&other),
                "unexpected handshake message from the server; skipped"
            );
        }
    }
    None
}

/// Sends one message, within `limit`.
async fn send(socket: &mut Socket, message: &AgentMessage, limit: Duration) -> Result<(), String> {
    let text = match protocol::encode(message) {
        Ok(text) => text,
        Err(e) => {
            // Only a result can be this large, and results are cut to fit before they are
            // stored; anything else is dropped rather than ending the connection.
            error!(error = %e, "a message to the server could not be encoded; dropped");
            return Ok(());
        }
    };
    match tokio::time::timeout(limit, socket.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!(
            "the server took no data for {limit:?}; taking the connection for dead"
        )),
    }
}

/// The next protocol message of the handshake, skipping malformed frames.
async fn next_message(socket: &mut Socket, timing: Timing) -> Result<ServerMessage, String> {
    let deadline = Instant::now() + timing.handshake_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => {
                return Err(format!(
                    "the server did not answer within {:?}",
                    timing.handshake_timeout
                ));
            }
            Ok(None | Some(Ok(Message::Close(_)))) => {
                return Err("the server closed the connection".to_owned());
            }
            Ok(Some(Err(e))) => return Err(describe(&e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Message::Text(text) = frame else {
            continue;
        };
        match protocol::decode::<ServerMessage>(text.as_str()) {
            Ok(message) => return Ok(message),
            Err(e) => warn!(error = %e, "malformed message from the server; skipped"),
        }
    }
}

/// A WebSocket error in words, naming the frame limit when that is what was hit.
fn describe(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Capacity(e) => format!(
            "the server sent a frame over the limit of {MAX_FRAME_BYTES} bytes ({e}); dropping \
             the connection"
        ),
        other => other.to_string(),
    }
}

/// A failed dial in words, with what it most likely means when the other end is not a
/// restic-manager server at all (a plain-HTTP port dialled with `wss://`, a web server on the
/// path, an old proxy).
fn describe_dial(error: &tungstenite::Error, server: &ServerUrl) -> String {
    let at = server.authority();
    let not_our_server = || {
        let tls = if server.is_tls() {
            ""
        } else {
            "; if that port speaks TLS (a reverse proxy), use wss://"
        };
        format!(
            "{at} does not answer like a restic-manager server: check that the URL names the \
             server (or a reverse proxy that passes WebSocket upgrades on to it) and that its \
             path is the server's agent endpoint, {}{tls}",
            protocol::AGENT_PATH
        )
    };
    let hint = match error {
        tungstenite::Error::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref()) {
            Some(rustls::Error::InvalidMessage(_)) => Some(format!(
                "what {at} answered is not TLS: is it a restic-manager server? For wss:// the \
                 port must speak TLS (a reverse proxy in front of the server); the server's own \
                 port speaks plain HTTP and is reached with ws://"
            )),
            Some(rustls::Error::InvalidCertificate(_)) => Some(
                "if the server's certificate comes from a private CA, give that CA's \
                 certificate with `ca` (--ca)"
                    .to_owned(),
            ),
            _ => None,
        },
        tungstenite::Error::Http(response) if response.status().as_u16() == 404 => Some(format!(
            "{at} has no WebSocket endpoint at {}: the URL's path should be the server's agent \
             endpoint, {} (the default when the URL has no path)",
            server.path(),
            protocol::AGENT_PATH
        )),
        tungstenite::Error::Http(_)
        | tungstenite::Error::HttpFormat(_)
        | tungstenite::Error::Protocol(_) => Some(not_our_server()),
        _ => None,
    };
    let base = describe(error);
    match hint {
        Some(hint) => format!("{base}; {hint}"),
        None => base,
    }
}

/// A wait of about `asked`: drawn uniformly from half of it to one and a half times it, the
/// spread at most a minute either way, and at least half a second. A fleet told to come back
/// at once (all pending after a server restart) then does not come back in lockstep.
pub fn around_hint(asked: Duration, rng: &mut impl rand::Rng) -> Duration {
    let asked = asked.max(Duration::from_secs(1));
    let spread = (asked / 2).min(MAX_HINT_SPREAD);
    let low = asked.saturating_sub(spread);
    low + crate::backoff::full_jitter(spread * 2, rng)
}

/// A message's type, as the protocol spells it, for logs.
fn kind(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Challenge { .. } => "challenge",
        ServerMessage::Welcome { .. } => "welcome",
        ServerMessage::Rejected { .. } => "rejected",
        ServerMessage::Job(_) => "job",
        ServerMessage::Cancel { .. } => "cancel",
        ServerMessage::Ack { .. } => "ack",
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn a_retry_hint_is_spread_from_half_to_one_and_a_half_times_it() {
        let mut rng = StdRng::seed_from_u64(3);
        let hint = Duration::from_secs(30);
        let waits: Vec<Duration> = (0..2000).map(|_| around_hint(hint, &mut rng)).collect();
        let min = *waits.iter().min().unwrap();
        let max = *waits.iter().max().unwrap();
        assert!(
            min >= Duration::from_secs(15) && min < Duration::from_secs(16),
            "{min:?}"
        );
        assert!(
            max <= Duration::from_secs(45) && max > Duration::from_secs(44),
            "{max:?}"
        );
        let early = waits.iter().filter(|w| **w < hint).count();
        assert!(
            (800..1200).contains(&early),
            "{early} of 2000 before the hint"
        );
    }

    #[test]
    fn a_long_hint_moves_at_most_a_minute_and_a_zero_hint_is_not_a_busy_loop() {
        let mut rng = StdRng::seed_from_u64(5);
        let hour = Duration::from_hours(1);
        for _ in 0..500 {
            let wait = around_hint(hour, &mut rng);
            assert!(
                wait >= Duration::from_mins(59) && wait <= Duration::from_mins(61),
                "{wait:?}"
            );
            let wait = around_hint(Duration::ZERO, &mut rng);
            assert!(wait >= Duration::from_millis(500), "{wait:?}");
        }
    }
}
