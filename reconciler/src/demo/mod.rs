//! `restic-manager demo`: the whole system on one machine, from one command. It sets up a
//! working area ([`area`]), starts the server and an agent for this machine in this process,
//! and runs a real backup with the real restic, then the forget and check the example policy
//! asks for, printing each job's progress and outcome ([`report`]). Then it keeps running and
//! schedules as the config says, until Ctrl-C; with `--once` it stops after that first cycle.
//!
//! Nothing here is a shortcut around the product: the config repository is a real git
//! repository the server follows, the agent dials the server over a WebSocket and proves its
//! key, and the jobs are the jobs the server builds for any host. The one thing only the demo
//! does is ask for the first runs now instead of at the policy's next instant.

pub mod area;
pub mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use protocol::JobKind;
use tokio_util::sync::CancellationToken;

use crate::server::settings::{Settings, Source};
use area::Area;
use report::Report;

/// The oldest restic the agent supports.
const MIN_RESTIC: (u32, u32, u32) = (0, 14, 0);

/// How long the demo waits for the server to apply its config and the agent to connect.
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// How long one job of the first cycle may take before the demo gives up on it.
const JOB_TIMEOUT: Duration = Duration::from_mins(10);

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep the working area here (and reuse it on the next run); `None`: a temporary one.
    pub dir: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Stop after the first cycle.
    pub once: bool,
    /// The restic binary; `restic` on PATH by default.
    pub restic: PathBuf,
}

/// How the first cycle went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    AllSucceeded,
    SomethingFailed,
}

/// Runs the demo. Returns how the first cycle went (after Ctrl-C unless `once`).
pub async fn run(options: Options, out: &mut Report) -> anyhow::Result<Cycle> {
    let restic = check_restic(&options.restic).await?;
    let _temp;
    let root = if let Some(dir) = &options.dir {
        area::check_root(dir)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        dir.canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?
    } else {
        let temp = tempfile::Builder::new()
            .prefix("restic-manager-demo-")
            .tempdir()
            .context("cannot create a temporary directory for the demo")?;
        let path = temp.path().to_owned();
        _temp = temp;
        path
    };
    let system = agent::settings::system_host_name().ok();
    let area = Area {
        root,
        host: area::host_name(system.as_deref()),
    };
    out.intro(
        &area,
        options.dir.is_some(),
        restic.version_line(),
        &options.restic,
    );

    let fresh = !area.exists();
    if fresh {
        set_up(&area)?;
    }
    out.step(&format!(
        "config repository {} (git log shows the example, the demo's changes, and the enrolment \
         of {})",
        area.config().display(),
        area.host
    ));

    let running = crate::server::start(server_settings(&area, options.listen)).await?;
    let server = Arc::clone(&running.server);
    out.step(&format!(
        "server listening on {} (identity {}); status page http://{}/",
        running.listen, server.server_id, running.listen
    ));
    area::write_agent_settings(&area, &format!("ws://{}", running.listen), &options.restic)?;
    // The agent starts once its key is in force: before that, the server would record it as
    // pending and tell it to come back in 30 s.
    let enrolled = wait_until(START_TIMEOUT, || {
        server.applied().is_some_and(|applied| {
            applied
                .config
                .hosts
                .get(&area.host)
                .is_some_and(|host| host.agent_key.is_some())
        })
    })
    .await;
    if !enrolled {
        running.stop().await;
        bail!(
            "the server did not apply the demo's enrolment commit within {START_TIMEOUT:?}; \
             run with RUST_LOG=info to see why"
        );
    }
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(run_agent(area.clone(), agent_stop.clone()));

    let started = wait_until(START_TIMEOUT, || {
        server.applied().is_some() && server.hub.is_connected(&area.host)
    })
    .await;
    if !started {
        agent_stop.cancel();
        let agent_error = agent.await.ok().and_then(Result::err);
        running.stop().await;
        return Err(match agent_error {
            Some(e) => e.context("the demo's agent stopped"),
            None => anyhow::anyhow!(
                "the server did not apply the demo's config or the agent did not connect \
                 within {START_TIMEOUT:?}; run with RUST_LOG=info to see why"
            ),
        });
    }
    out.step(&format!("agent for host `{}` connected", area.host));

    let cycle = first_cycle(&server, &area, out).await;
    out.look_around(&area);

    let outcome = match cycle {
        Ok(cycle) if options.once => cycle,
        Ok(cycle) => {
            out.keeps_running(&server, &area);
            report::follow_jobs(&server, &area.host, out, shutdown_signal()).await;
            cycle
        }
        Err(e) => {
            agent_stop.cancel();
            let _ = agent.await;
            running.stop().await;
            return Err(e);
        }
    };
    agent_stop.cancel();
    match agent.await {
        Ok(Err(e)) => out.warn(&format!("the agent stopped with an error: {e:#}")),
        Err(e) => out.warn(&format!("the agent task failed: {e}")),
        Ok(Ok(())) => {}
    }
    running.stop().await;
    if options.dir.is_none() {
        out.note(&format!(
            "removing the working area {}",
            area.root.display()
        ));
    }
    Ok(outcome)
}

/// Finds restic and checks its version, or says how to install it.
async fn check_restic(binary: &Path) -> anyhow::Result<agent::runner::Restic> {
    let install = "install restic 0.14 or newer: `sudo apt install restic` (Debian, Ubuntu), \
                   `sudo dnf install restic` (Fedora), `brew install restic` (macOS), or a \
                   binary from https://github.com/restic/restic/releases; or pass --restic PATH";
    let restic = agent::runner::Restic::detect(binary)
        .await
        .map_err(|e| anyhow::anyhow!("cannot use restic ({}): {e}; {install}", binary.display()))?;
    if restic.version() < MIN_RESTIC {
        bail!(
            "{} is too old for restic-manager; {install}",
            restic.version_line()
        );
    }
    Ok(restic)
}

/// Creates the working area's contents.
fn set_up(area: &Area) -> anyhow::Result<()> {
    // Private, like the directories of a real server and agent: they hold an identity, a
    // key and a password file.
    for dir in [area.server(), area.agent(), area.sample()] {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let recipient = crate::secrets::write_identity(&area.identity())?;
    let password = random_password();
    write_private(&area.password_file(), &format!("{password}\n"))?;
    area::write_sample(&area.sample())?;
    let key = agent::key::generate(&area.agent_key())?;
    let agent_key = protocol::public_key_text(&key.verifying_key());
    area::create_config_repo(area, &recipient, &password, &agent_key)
}

fn random_password() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn server_settings(area: &Area, listen: SocketAddr) -> Settings {
    Settings {
        listen,
        data_dir: area.server(),
        identity: area.identity(),
        source: Source::Local(area.config()),
        branch: "main".to_owned(),
        poll_interval: Duration::from_mins(1),
        webhook_secret_file: None,
        view: crate::server::settings::ViewSettings::default(),
    }
}

/// The demo's agent, configured by its settings file like any agent.
async fn run_agent(area: Area, stop: CancellationToken) -> anyhow::Result<()> {
    let settings = agent::settings::Settings::resolve(agent::settings::RunArgs {
        config: Some(area.agent_settings()),
        ..agent::settings::RunArgs::default()
    })?;
    let key = agent::key::load(&settings.key)?;
    let executor = Arc::new(agent::executor::ResticExecutor::new(&settings));
    agent::service::run(settings, key, executor, stop).await?;
    Ok(())
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// A backup now (the server runs the repository's init before it), then the policy's forget
/// and check, each watched to its end.
async fn first_cycle(
    server: &Arc<crate::server::Server>,
    area: &Area,
    out: &mut Report,
) -> anyhow::Result<Cycle> {
    let mut all_ok = true;
    for kind in [JobKind::Backup, JobKind::Forget, JobKind::Check] {
        let id = server.run_now(&area.host, area::POLICY, kind).await?;
        let ok = report::watch_job(server, &area.host, &id, JOB_TIMEOUT, out).await?;
        all_ok &= ok;
        if kind == JobKind::Backup {
            if !ok {
                // Without a snapshot there is nothing to forget or check.
                break;
            }
            // The server refreshes the host's snapshot inventory after every backup.
            if let Some(id) = inventory_after(server, &area.host, &id).await? {
                all_ok &= report::watch_job(server, &area.host, &id, JOB_TIMEOUT, out).await?;
            }
        }
    }
    Ok(if all_ok {
        Cycle::AllSucceeded
    } else {
        Cycle::SomethingFailed
    })
}

/// The inventory job the server queued after the backup `backup_id`.
async fn inventory_after(
    server: &Arc<crate::server::Server>,
    host: &str,
    backup_id: &str,
) -> anyhow::Result<Option<String>> {
    let (host, backup_id) = (host.to_owned(), backup_id.to_owned());
    let key = crate::server::model::AssignmentKey::new(&host, area::POLICY, JobKind::Snapshots);
    let found = server
        .with_store(move |store| {
            let Some(backup) = store.job(&backup_id)? else {
                return Ok(None);
            };
            Ok::<_, crate::server::store::StoreError>(
                store
                    .last_job(&key)?
                    .filter(|job| job.created_at >= backup.created_at)
                    .map(|job| job.id),
            )
        })
        .await?;
    Ok(found)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
