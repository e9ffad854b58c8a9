//! The `restic-manager-agent` binary: `keygen` and `pubkey` for the agent's key, `run` for the
//! agent itself.
//!
//! stdout carries only data (the `agent-key` line); hints, logs and errors go to stderr. Exit
//! codes: 0 done (or stopped by a signal), 1 the agent failed while running, 2 bad settings,
//! key, CA file or restic, or another agent on the same state directory (all found before
//! connecting), 3 the server rejected the agent and said not to retry (an operator must act;
//! the systemd unit does not restart on it).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agent::executor::ResticExecutor;
use agent::key::{self, DEFAULT_KEY_FILE};
use agent::runner::{INSTALL_HINT, Restic};
use agent::service::{self, AgentError};
use agent::settings::{self, RunArgs, Settings};
use agent::state::StateError;
use agent::tls;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Exit code when the server rejects the agent for good.
const EXIT_REJECTED: u8 = 3;

#[derive(Debug, clap::Parser)]
#[command(name = "restic-manager-agent", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create this agent's key and print the `agent-key` line to commit to its host file.
    Keygen(KeygenArgs),
    /// Print the `agent-key` line of an existing key again.
    Pubkey(PubkeyArgs),
    /// Connect to the server and run the jobs it sends for this host.
    Run(Box<RunArgs>),
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Where to write the key; the file must not exist. Its directory is created 0700 when
    /// missing.
    #[arg(long, env = "RM_AGENT_KEY", value_name = "FILE", default_value = DEFAULT_KEY_FILE)]
    key: PathBuf,
    /// The host name for the hint (the host's file is hosts/NAME.toml); lowercase letters,
    /// digits and `-`, as for `run --host`. [default: the system's short hostname]
    #[arg(long, env = "RM_AGENT_HOST", value_name = "NAME")]
    host: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PubkeyArgs {
    /// The key file.
    #[arg(long, env = "RM_AGENT_KEY", value_name = "FILE", default_value = DEFAULT_KEY_FILE)]
    key: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let code = match cli.command {
        Command::Keygen(args) => keygen(&args),
        Command::Pubkey(args) => pubkey(&args),
        Command::Run(args) => run(*args),
    };
    ExitCode::from(code)
}

/// Logs go to stderr, filtered by `RUST_LOG`; info and above by default.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[expect(clippy::print_stdout, reason = "the key line is the command's output")]
fn print_out(text: &str) {
    println!("{text}");
}

#[expect(clippy::print_stderr, reason = "hints and errors for the operator")]
fn print_err(text: &str) {
    eprintln!("{text}");
}

fn keygen(args: &KeygenArgs) -> u8 {
    // The same names `run` accepts, checked before a key is written for a name it would refuse.
    if let Some(host) = &args.host
        && let Err(message) = settings::check_host_name(host)
    {
        print_err(&format!(
            "error: `host` from --host (or RM_AGENT_HOST): {message}"
        ));
        return 2;
    }
    let host = args
        .host
        .clone()
        .or_else(|| settings::system_host_name().ok());
    let key = match key::generate(&args.key) {
        Ok(key) => key,
        Err(e) => {
            print_err(&format!("error: {e}"));
            return 2;
        }
    };
    print_out(&key::agent_key_line(&key));
    let file = host.map_or_else(
        || "hosts/<host>.toml".to_owned(),
        |h| format!("hosts/{h}.toml"),
    );
    print_err(&format!(
        "wrote the agent key to {}; commit the line above to {file} in the config repository",
        args.key.display()
    ));
    0
}

fn pubkey(args: &PubkeyArgs) -> u8 {
    match key::load(&args.key) {
        Ok(key) => {
            print_out(&key::agent_key_line(&key));
            0
        }
        Err(e) => {
            print_err(&format!("error: {e}"));
            2
        }
    }
}

fn run(args: RunArgs) -> u8 {
    let settings = match Settings::resolve(args) {
        Ok(settings) => settings,
        Err(e) => {
            print_err(&format!("error: {e}"));
            return 2;
        }
    };
    let key = match key::load(&settings.key) {
        Ok(key) => key,
        Err(e) => {
            print_err(&format!("error: {e}"));
            return 2;
        }
    };
    tls::install_provider();
    info!(
        host = %settings.host,
        server = %settings.server,
        state_dir = %settings.state_dir.display(),
        config = %settings.config_file.as_ref().map_or("none".into(), |p| p.display().to_string()),
        "restic-manager-agent {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let executor = Arc::new(ResticExecutor::new(&settings));
    let restic = settings.restic.clone();

    // The lock comes before anything else touches the state directory; a second agent on it,
    // or a CA file that cannot be used, is refused before dialling.
    let prepared = match service::prepare(settings) {
        Ok(prepared) => prepared,
        Err(e) => {
            print_err(&format!("error: {e}"));
            return match e {
                AgentError::State(StateError::Locked { .. }) | AgentError::Tls(_) => 2,
                _ => 1,
            };
        }
    };

    // One thread is plenty: the agent waits on a socket and on restic, and a small runtime
    // keeps its idle memory low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print_err(&format!("error: cannot start the async runtime: {e}"));
            return 1;
        }
    };
    runtime.block_on(async {
        // Checked now rather than at the first job, which may be hours away.
        match Restic::detect(&restic).await {
            Ok(found) => info!(restic = found.version_line(), "restic found"),
            Err(e) => {
                print_err(&format!("error: {e}. {INSTALL_HINT}"));
                return 2;
            }
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match service::serve(prepared, key, executor, shutdown).await {
            Ok(()) => {
                info!("stopped");
                0
            }
            Err(e @ AgentError::Connection(_)) => {
                error!("{e}; not retrying until an operator restarts the agent");
                EXIT_REJECTED
            }
            Err(e) => {
                error!("{e}");
                1
            }
        }
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot listen for SIGTERM and SIGINT; stop the agent with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    shutdown.cancel();
}
