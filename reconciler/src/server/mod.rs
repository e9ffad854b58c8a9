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
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.hub.close_all();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the server: opens the state, loads the identity, binds the address and starts
/// following the config repository, scheduling and serving HTTP. Everything that can be wrong
/// with the settings, the data directory or the identity is reported before anything listens.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let store = store::Store::open(&settings.data_dir)?;
    let identity = crate::secrets::load_identity(&settings.identity).with_context(|| {
        format!(
            "cannot load the server identity {}; create one with `restic-manager keygen \
             --identity {}`",
            settings.identity.display(),
            settings.identity.display()
        )
    })?;
    let webhook_secret = settings
        .webhook_secret_file
        .as_deref()
        .map(webhook::WebhookSecret::from_file)
        .transpose()?;
    let view_access = web::access::ViewAccess::load(&settings.view)?;
    let mut source = follow::open_source(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let listen = listener.local_addr()?;

    let server = Arc::new(Server::new(settings, store, identity, webhook_secret));
    follow::restore(&server, &mut source);
    let view = Arc::new(web::View::new(Arc::clone(&server), view_access)?);

    // A local repository is watched so a commit is picked up at once; polling covers both.
    let (changes_tx, changes) = mpsc::channel(1);
    let watch = match &server.settings.source {
        Source::Local(path) => Some(watch::watch_repository(
            path,
            watch::DEFAULT_DEBOUNCE,
            changes_tx,
        )?),
        Source::Remote(_) => None,
    };

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
