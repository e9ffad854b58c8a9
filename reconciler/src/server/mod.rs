//! `restic-manager serve`: the reconciler. It follows the config repository ([`source`],
//! [`watch`], [`webhook`]), keeps its state in `SQLite`, turns the applied revision into
//! schedules, and dispatches jobs ([`jobspec`]) to agents. Its state can be read, never
//! changed, through the status view, the JSON API and `/metrics` ([`web`]).

pub mod dispatch;
pub mod follow;
pub mod http;
pub mod hub;
pub mod jobspec;
pub mod model;
pub mod reconcile;
pub mod refusals;
pub mod run;
pub mod scheduler;
pub mod secret_file;
pub mod settings;
pub mod source;
pub mod store;
pub mod watch;
pub mod web;
pub mod webhook;

#[cfg(test)]
mod testutil;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use run::Server;
use settings::{Settings, Source};

/// A started server: its shared state, its address, and the tasks that run it.
pub struct Running {
    pub server: Arc<Server>,
    /// The address it listens on (the port is known even when the settings asked for 0).
    pub listen: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _watch: Option<watch::RepoWatch>,
}

impl Running {
    /// Stops every task and closes the agents' connections; returns when all have ended.
    /// Refused webhook requests counted since the last summary are audited before.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.hub.close_all();
        for task in self.tasks {
            let _ = task.await;
        }
        refusals::write_summary(&self.server).await;
    }
}

/// Starts the server: loads the identity and the secret files, checks the config repository's
/// location, opens the state, binds the address and starts following the config repository,
/// scheduling and serving HTTP. Everything that can be wrong with the settings, the identity,
/// the secret files, the repository's location, the data directory or the address is reported
/// before anything listens, and the inputs are checked before the data directory or `state.db`
/// is created, so a typo leaves nothing behind.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let identity = crate::secrets::load_identity(&settings.identity)
        .map_err(|e| identity_error(&settings.identity, e))?;
    let webhook_secret = settings
        .webhook_secret_file
        .as_deref()
        .map(webhook::WebhookSecret::from_file)
        .transpose()?;
    let view_access = web::access::ViewAccess::load(&settings.view)?;
    let mut source = follow::open_source(&settings)?;

    // A local repository is watched so a commit is picked up at once; polling covers both.
    let (changes_tx, changes) = mpsc::channel(1);
    let watch = match &settings.source {
        Source::Local(path) => Some(watch::watch_repository(
            path,
            watch::DEFAULT_DEBOUNCE,
            changes_tx,
        )?),
        Source::Remote(_) => None,
    };

    // The address is taken before the data directory is made, so a busy port leaves nothing
    // behind; a second server on this data directory is named as such first.
    store::DataDirLock::probe(&settings.data_dir)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let listen = listener.local_addr()?;
    let store = store::Store::open(&settings.data_dir)?;

    let server = Arc::new(Server::new(settings, store, identity, webhook_secret));
    follow::restore(&server, &mut source);
    let view = Arc::new(web::View::new(Arc::clone(&server), view_access)?);

    let shutdown = CancellationToken::new();
    let mut tasks = vec![
        tokio::spawn(follow::follow(
            Arc::clone(&server),
            source,
            changes,
            shutdown.clone(),
        )),
        tokio::spawn(follow::rebuild_schedules(
            Arc::clone(&server),
            shutdown.clone(),
        )),
        tokio::spawn(dispatch::schedule(Arc::clone(&server), shutdown.clone())),
    ];
    let http = warp::serve(http::routes(Arc::clone(&server), view))
        .incoming(listener)
        .graceful({
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        })
        .run();
    tasks.push(tokio::spawn(http));
    info!(%listen, source = %source_text(&server.settings), "restic-manager serve listening");
    Ok(Running {
        server,
        listen,
        shutdown,
        tasks,
        _watch: watch,
    })
}

/// Starts the server and runs it until Ctrl-C or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let running = start(settings).await?;
    shutdown_signal().await;
    info!("shutting down");
    running.stop().await;
    Ok(())
}

/// The error for an identity that cannot be loaded: a missing one says how to create it, any
/// other problem is said as it is (advising `keygen` for a directory or a damaged file would
/// send the operator the wrong way).
fn identity_error(path: &std::path::Path, error: crate::secrets::SecretsError) -> anyhow::Error {
    use crate::secrets::SecretsError;

    match &error {
        SecretsError::ReadIdentity { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            anyhow::anyhow!(
                "there is no server identity at {}; create one with `restic-manager keygen \
                 --identity {}`, or pass --identity the existing one",
                path.display(),
                path.display()
            )
        }
        _ => anyhow::Error::new(error).context("cannot load the server identity"),
    }
}

fn source_text(settings: &Settings) -> String {
    match &settings.source {
        Source::Local(path) => format!("{} ({})", path.display(), settings.branch),
        Source::Remote(url) => format!("{} ({})", source::redact_url(url), settings.branch),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
