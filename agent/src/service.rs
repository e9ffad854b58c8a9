//! The running agent: the state directory, the job manager and the connection, started
//! together and stopped in order.
//!
//! [`prepare`] does what must hold before the agent connects (the state directory's lock, the
//! repair of what a crash left, the TLS settings), so the binary can refuse bad settings before
//! dialling; [`serve`] runs it; [`run`] is both.
//!
//! Stopping (SIGTERM, or the server saying not to retry) cancels the running jobs and waits a
//! grace period for them to end, so their results are stored (and sent, while connected)
//! before the connection closes.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::connection::{self, ConnectionConfig, ConnectionError};
use crate::executor::Executor;
use crate::jobs::JobManager;
use crate::settings::Settings;
use crate::state::{State, StateError};
use crate::tls::{self, TlsError};

/// How long running jobs get to stop and store their results when the agent stops.
///
/// NOTE: a job still running after that is reported as failed at the next start (see
/// `docs/src/limitations.md`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the agent stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("the agent's connection task stopped unexpectedly: {0}")]
    Internal(String),
}

/// The agent, ready to connect: its state directory open and locked, its TLS set up.
#[derive(Debug)]
pub struct Prepared {
    settings: Settings,
    state: State,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Opens and locks the state directory (refusing at once when another agent holds it),
/// repairs what a crash left, and reads the TLS settings.
pub fn prepare(settings: Settings) -> Result<Prepared, AgentError> {
    let state = State::open(&settings.state_dir)?;
    let tls = if settings.server.is_tls() {
        Some(tls::client_config(settings.ca.as_deref())?)
    } else {
        if !is_loopback(settings.server.host()) {
            warn!(
                server = %settings.server,
                "the connection to the server is not encrypted (ws://), and jobs carry \
                 repository credentials; use wss:// through a TLS proxy"
            );
        }
        None
    };
    Ok(Prepared {
        settings,
        state,
        tls,
    })
}

/// Runs the agent until `shutdown` is cancelled (then `Ok`) or the server rejects it for good.
pub async fn run<E: Executor>(
    settings: Settings,
    key: SigningKey,
    executor: Arc<E>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    serve(prepare(settings)?, key, executor, shutdown).await
}

/// Runs a prepared agent until `shutdown` is cancelled (then `Ok`) or the server rejects it
/// for good.
pub async fn serve<E: Executor>(
    prepared: Prepared,
    key: SigningKey,
    executor: Arc<E>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let Prepared {
        settings,
        state,
        tls,
    } = prepared;
    let manager = JobManager::new(settings.host.clone(), state, executor);
    let config = ConnectionConfig {
        server: settings.server,
        host: settings.host,
        key,
        server_id: settings.server_id,
        tls,
        timing: settings.timing,
    };

    let stop_connection = CancellationToken::new();
    let mut connection = tokio::spawn(connection::run(
        config,
        manager.clone(),
        stop_connection.clone(),
    ));
    let ended = tokio::select! {
        ended = &mut connection => ended,
        () = shutdown.cancelled() => {
            info!("stopping: cancelling running jobs");
            stop_jobs(&manager).await;
            stop_connection.cancel();
            connection.await
        }
    };
    let result = ended.map_err(|e| AgentError::Internal(e.to_string()))?;
    if result.is_err() {
        stop_jobs(&manager).await;
    }
    Ok(result?)
}

async fn stop_jobs<E: Executor>(manager: &JobManager<E>) {
    let left = manager.shutdown(SHUTDOWN_GRACE).await;
    if !left.is_empty() {
        warn!(
            jobs = ?left,
            "jobs did not stop within {SHUTDOWN_GRACE:?}; they are reported as failed after the \
             next start"
        );
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
