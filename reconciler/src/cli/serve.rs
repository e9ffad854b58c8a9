//! `restic-manager serve`: flags and environment for the server, then the server itself.

use std::path::PathBuf;

use clap::parser::ValueSource;

use crate::server::settings::{Key, Overrides, Settings, keys};

/// Every option can also be set in the settings file (`--config`) and by its environment
/// variable; a flag wins over the environment, which wins over the file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Settings file (TOML) with any of the options below.
    #[arg(long, env = "RM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "RM_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the state database and the clone of a remote repository.
    /// [default: ./data]
    #[arg(long, env = "RM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's age identity, which opens sealed values. [default: `DATA_DIR/identity.txt`]
    #[arg(long, env = "RM_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// The config repository: a local path, or an https:// or ssh:// URL.
    #[arg(long, env = "RM_REPOSITORY")]
    pub repository: Option<String>,
    /// Branch to follow. [default: main]
    #[arg(long, env = "RM_BRANCH")]
    pub branch: Option<String>,
    /// Time between two fetches, such as 30s or 5m. [default: 1m]
    #[arg(long, env = "RM_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// File holding the shared secret of POST /hooks/git.
    #[arg(long, env = "RM_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Client networks allowed to read the status view, the JSON API and /metrics, as CIDRs
    /// separated by commas. [default: `127.0.0.0/8,::1/128`]
    #[arg(long, env = "RM_VIEW_ALLOW", value_delimiter = ',')]
    pub view_allow: Vec<String>,
    /// File holding the bearer token every request to the view, the API and /metrics must
    /// carry (`Authorization: Bearer <token>`).
    #[arg(long, env = "RM_VIEW_TOKEN_FILE")]
    pub view_token_file: Option<PathBuf>,
}

/// How long the runtime waits at exit for blocking threads that are still running.
const RUNTIME_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Each setting's clap argument id (the field of [`Args`]) and its names.
const ARGS: [(&str, Key); 9] = [
    ("listen", keys::LISTEN),
    ("data_dir", keys::DATA_DIR),
    ("identity", keys::IDENTITY),
    ("repository", keys::REPOSITORY),
    ("branch", keys::BRANCH),
    ("poll_interval", keys::POLL_INTERVAL),
    ("webhook_secret_file", keys::WEBHOOK_SECRET_FILE),
    ("view_allow", keys::VIEW_ALLOW),
    ("view_token_file", keys::VIEW_TOKEN_FILE),
];

/// The settings whose value clap took from their environment variable.
fn from_env(matches: Option<&clap::ArgMatches>) -> Vec<&'static str> {
    let Some(matches) = matches else {
        return Vec::new();
    };
    ARGS.iter()
        .filter(|(id, _)| matches.value_source(id) == Some(ValueSource::EnvVariable))
        .map(|(_, key)| key.name)
        .collect()
}

/// Runs the server; 0 after a clean shutdown, 2 when it could not start. `matches` are the
/// subcommand's, to tell a flag from its environment variable in errors.
pub fn run(args: Args, matches: Option<&clap::ArgMatches>) -> u8 {
    let empty_as_none = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let over = Overrides {
        listen: args.listen,
        data_dir: empty_as_none(args.data_dir),
        identity: empty_as_none(args.identity),
        repository: args.repository,
        branch: args.branch,
        poll_interval: args.poll_interval,
        webhook_secret_file: empty_as_none(args.webhook_secret_file),
        view_allow: (!args.view_allow.is_empty()).then_some(args.view_allow),
        view_token_file: empty_as_none(args.view_token_file),
        from_env: from_env(matches),
    };
    let settings = match Settings::resolve(empty_as_none(args.config).as_deref(), over) {
        Ok(settings) => settings,
        Err(e) => {
            super::report_error(&anyhow::Error::new(e));
            return 2;
        }
    };
    let Some(runtime) = super::runtime() else {
        return 2;
    };
    let code = match runtime.block_on(crate::server::serve(settings)) {
        Ok(()) => 0,
        Err(e) => {
            super::report_error(&e);
            2
        }
    };
    // What had to finish was awaited by the shutdown; a blocking thread still running is a
    // fetch abandoned after its grace, which dropping the runtime would wait for.
    runtime.shutdown_timeout(RUNTIME_GRACE);
    code
}
