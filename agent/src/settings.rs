//! The agent's own settings: which server it dials, with which key, where it keeps its state,
//! and the local limits no server can lift.
//!
//! Every connection setting can be given as a flag, as an `RM_AGENT_*` environment variable or
//! as a key of the agent's TOML file (`--config`, by default `/etc/restic-manager/agent.toml`
//! when that file exists). A flag wins over the environment, the environment over the file,
//! the file over the defaults. One struct, [`RunOptions`], is both the flags and the file's
//! keys, so the two cannot drift apart. The limits (`allow-hooks`, `allowed-paths`,
//! `max-duration`) are read from the file only: they are the host's own policy, kept in one
//! file an administrator can audit.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connection::Timing;
use crate::key::DEFAULT_KEY_FILE;

/// The settings file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/restic-manager/agent.toml";

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/restic-manager-agent";

/// Default restic binary: looked up on `PATH`.
pub const DEFAULT_RESTIC: &str = "restic";

/// What the agent's own local file allows: the runner's limits, read from the `[limits]` keys
/// of the file.
pub use crate::runner::Limits;

/// The flags of `run`, and the agent file's keys. `None` means "not given here".
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunOptions {
    /// The server's agent endpoint, `wss://host[:port][/path]` (or `ws://` on a network you
    /// trust). Without a path, /agent/v1 is used.
    #[arg(long, env = "RM_AGENT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The agent's key file, made by `keygen`. [default: /etc/restic-manager/agent.key]
    #[arg(long, env = "RM_AGENT_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for wss://, besides the public web roots.
    #[arg(long, env = "RM_AGENT_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Where results wait for the server and job ids are remembered (created 0700).
    /// [default: /var/lib/restic-manager-agent]
    #[arg(long, env = "RM_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The host this agent acts for: the name of its file in the config repository.
    /// [default: the system's short hostname, lowercased]
    #[arg(long, env = "RM_AGENT_HOST", value_name = "NAME")]
    pub host: Option<String>,
    /// The restic binary. [default: `restic` on PATH]
    #[arg(long, env = "RM_AGENT_RESTIC", value_name = "PATH")]
    pub restic: Option<PathBuf>,
    /// The server's identity (its age recipient, `age1...`). When set, a server presenting
    /// another identity is refused.
    #[arg(long, env = "RM_AGENT_SERVER_ID", value_name = "AGE1...")]
    pub server_id: Option<String>,
    /// File only: run the hooks a job asks for. Default: false.
    #[arg(skip)]
    pub allow_hooks: Option<bool>,
    /// File only: the paths a backup may read; empty or absent means any absolute path.
    #[arg(skip)]
    pub allowed_paths: Option<Vec<PathBuf>>,
    /// File only: the longest any job may run, such as "6h" or "1h30m". Default: no bound
    /// beyond the job's own.
    #[arg(skip)]
    pub max_duration: Option<String>,
}

/// Shorter timings for tests; hidden from `--help`. The defaults are the protocol's.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TimingArgs {
    #[arg(long, hide = true, value_name = "MS")]
    pub test_ping_interval_ms: Option<u64>,
    #[arg(long, hide = true, value_name = "MS")]
    pub test_dead_peer_ms: Option<u64>,
    #[arg(long, hide = true, value_name = "MS")]
    pub test_backoff_base_ms: Option<u64>,
    #[arg(long, hide = true, value_name = "MS")]
    pub test_backoff_cap_ms: Option<u64>,
}

/// Everything `run` is given on the command line and in the environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// The agent's settings file. [default: /etc/restic-manager/agent.toml, when it exists]
    #[arg(long, env = "RM_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: RunOptions,
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// The agent's settings, complete and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The settings file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub server: ServerUrl,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub host: String,
    pub restic: PathBuf,
    pub server_id: Option<String>,
    pub limits: Limits,
    pub timing: Timing,
}

/// A checked `ws://` or `wss://` URL without credentials, with the agent path filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(url::Url);

impl ServerUrl {
    /// Checks a `ws://` or `wss://` URL; without a path, the agent path is used.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_server_url(text)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "wss"
    }

    /// `host:port` (the scheme's default port when the URL names none), for messages.
    #[must_use]
    pub fn authority(&self) -> String {
        let port = self.0.port_or_known_default().unwrap_or_default();
        format!("{}:{port}", self.host())
    }

    /// The URL's path, such as `/agent/v1`.
    #[must_use]
    pub fn path(&self) -> &str {
        self.0.path()
    }

    /// The host part, for TLS server names and messages.
    #[must_use]
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials are refused when parsing, so the whole URL is safe to show.
        f.write_str(self.0.as_str())
    }
}

/// Where a setting came from, so an error points at the place to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Cli {
        flag: &'static str,
        env: &'static str,
    },
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cli { flag, env } => write!(f, "{flag} (or {env})"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why the settings cannot be used. Each message names the setting, where it came from and
/// what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the agent settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    ParseNoLine { path: PathBuf, message: String },
    #[error("`{key}` from {origin}: {message}")]
    Invalid {
        key: &'static str,
        origin: String,
        message: String,
    },
    #[error(
        "no server given: pass --server wss://… (or set RM_AGENT_SERVER, or `server` in the \
         agent settings file {DEFAULT_CONFIG_FILE})"
    )]
    NoServer,
    #[error("cannot read the system's hostname ({0}); pass --host NAME")]
    Hostname(String),
}

impl Settings {
    /// Reads the settings file when there is one and applies environment and flags on top.
    pub fn resolve(args: RunArgs) -> Result<Self, SettingsError> {
        let (config_file, file) = read_config(args.config.as_deref())?;
        let cli = args.options;
        let file_origin = || Origin::File(config_file.clone().unwrap_or_default());
        let limits = limits_from_file(&file, &file_origin())?;
        let pick = |cli: Option<String>, file: Option<String>, flag, env| {
            cli.map(|v| (v, Origin::Cli { flag, env }))
                .or_else(|| file.map(|v| (v, file_origin())))
        };
        let pick_path = |cli: Option<PathBuf>, file: Option<PathBuf>| cli.or(file);

        let (server_text, origin) = pick(cli.server, file.server, "--server", "RM_AGENT_SERVER")
            .ok_or(SettingsError::NoServer)?;
        let server = parse_server_url(&server_text).map_err(|message| SettingsError::Invalid {
            key: "server",
            origin: origin.to_string(),
            message,
        })?;

        let ca_origin = match (&cli.ca, &file.ca) {
            (Some(_), _) => Origin::Cli {
                flag: "--ca",
                env: "RM_AGENT_CA",
            },
            _ => file_origin(),
        };
        let ca = pick_path(cli.ca, file.ca);
        if ca.is_some() && !server.is_tls() {
            return Err(SettingsError::Invalid {
                key: "ca",
                origin: ca_origin.to_string(),
                message: format!(
                    "a CA file is given but `server` from {origin} is `{server}`, a ws:// URL, \
                     which does not use TLS; use wss://, or remove `ca`"
                ),
            });
        }

        let host = match pick(cli.host, file.host, "--host", "RM_AGENT_HOST") {
            Some((host, origin)) => {
                check_host_name(&host).map_err(|message| SettingsError::Invalid {
                    key: "host",
                    origin: origin.to_string(),
                    message,
                })?;
                host
            }
            None => system_host_name()?,
        };

        let server_id = match pick(
            cli.server_id,
            file.server_id,
            "--server-id",
            "RM_AGENT_SERVER_ID",
        ) {
            Some((id, origin)) => {
                Some(
                    check_server_id(&id).map_err(|message| SettingsError::Invalid {
                        key: "server-id",
                        origin: origin.to_string(),
                        message,
                    })?,
                )
            }
            None => None,
        };

        Ok(Settings {
            server,
            key: pick_path(cli.key, file.key).unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_FILE)),
            ca,
            state_dir: pick_path(cli.state_dir, file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            host,
            restic: pick_path(cli.restic, file.restic)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RESTIC)),
            server_id,
            limits,
            timing: timing(&args.timing),
            config_file,
        })
    }
}

/// The file named by `--config`, or the default one when it exists, parsed.
fn read_config(explicit: Option<&Path>) -> Result<(Option<PathBuf>, RunOptions), SettingsError> {
    let path = if let Some(path) = explicit {
        path.to_owned()
    } else {
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        if !default.exists() {
            tracing::debug!(path = %default.display(), "no agent settings file");
            return Ok((None, RunOptions::default()));
        }
        default
    };
    tracing::debug!(path = %path.display(), "reading the agent settings file");
    let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    let options = parse_config(&path, &text)?;
    Ok((Some(path), options))
}

/// Parses the settings file; unknown keys and wrong types are errors with file and line.
fn parse_config(path: &Path, text: &str) -> Result<RunOptions, SettingsError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        match e.span() {
            Some(span) => SettingsError::Parse {
                path: path.to_owned(),
                line: text[..span.start.min(text.len())].matches('\n').count() + 1,
                message,
            },
            None => SettingsError::ParseNoLine {
                path: path.to_owned(),
                message,
            },
        }
    })
}

/// The local limits, from the file only.
fn limits_from_file(file: &RunOptions, origin: &Origin) -> Result<Limits, SettingsError> {
    let invalid = |key, message| SettingsError::Invalid {
        key,
        origin: origin.to_string(),
        message,
    };
    let mut allowed_paths = Vec::new();
    for path in file.allowed_paths.iter().flatten() {
        allowed_paths.push(normalise_allowed_path(path).map_err(|m| invalid("allowed-paths", m))?);
    }
    let max_duration = match &file.max_duration {
        Some(text) => Some(parse_duration(text).map_err(|m| invalid("max-duration", m))?),
        None => None,
    };
    Ok(Limits {
        allow_hooks: file.allow_hooks.unwrap_or(false),
        allowed_paths,
        max_duration,
    })
}

fn timing(args: &TimingArgs) -> Timing {
    let defaults = Timing::default();
    let ms = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
    Timing {
        ping_interval: ms(args.test_ping_interval_ms, defaults.ping_interval),
        dead_peer: ms(args.test_dead_peer_ms, defaults.dead_peer),
        backoff_base: ms(args.test_backoff_base_ms, defaults.backoff_base),
        backoff_cap: ms(args.test_backoff_cap_ms, defaults.backoff_cap),
        ..defaults
    }
}

/// Checks the server URL and fills in the agent path when it has none.
fn parse_server_url(text: &str) -> Result<ServerUrl, String> {
    let mut url = url::Url::parse(text.trim()).map_err(|e| {
        format!("not a URL ({e}); write it as wss://backup.example.net or ws://10.0.0.5:8080")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // The agent proves itself with its key; a password in the URL would only end up in
        // logs and process listings.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(format!(
            "the URL carries a user name or password (shown here without them: {url}); remove \
             them, the agent authenticates with its key"
        ));
    }
    if url.scheme() != "ws" && url.scheme() != "wss" {
        return Err(format!(
            "the scheme is `{}:`; the agent speaks WebSocket, so use wss:// (or ws:// on a \
             network you trust)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if url.fragment().is_some() {
        return Err("the URL has a #fragment, which a WebSocket URL cannot carry".to_owned());
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(protocol::AGENT_PATH);
    }
    Ok(ServerUrl(url))
}

/// A host name as the config repository spells a file stem.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a host name of the config repository (lowercase letters, digits \
             and `-`, not starting with `-`, at most 63 characters); pass the name of the \
             host's file, hosts/<name>.toml"
        ))
    }
}

/// The system's short hostname, lowercased, checked as a host name.
pub fn system_host_name() -> Result<String, SettingsError> {
    let raw = nix::unistd::gethostname().map_err(|e| SettingsError::Hostname(e.to_string()))?;
    let raw = raw.to_string_lossy();
    let short = raw
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    check_host_name(&short).map_err(|_| {
        SettingsError::Hostname(format!(
            "the system's hostname `{raw}` does not make a valid host name (lowercase letters, \
             digits and `-`)"
        ))
    })?;
    Ok(short)
}

/// An age recipient: `age1` and lowercase bech32 characters.
fn check_server_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    let body_ok = id.strip_prefix("age1").is_some_and(|body| {
        body.len() >= 10
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if body_ok {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "`{id}` is not an age recipient (`age1…`); copy the server's recipient, which \
             `restic-manager keygen` printed"
        ))
    }
}

/// An allowed path: absolute, without `..`, normalised (no `.`, no doubled or trailing `/`).
fn normalise_allowed_path(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!("`{}` is not an absolute path", path.display()));
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir => clean.push("/"),
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "`{}` contains `..`; write the directory it means",
                    path.display()
                ));
            }
            Component::Prefix(_) => return Err(format!("`{}` is not a Unix path", path.display())),
        }
    }
    Ok(clean)
}

/// Parses durations such as `90s`, `45m`, `6h`, `2d` or `1h30m`; at least one second.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "write a duration such as \"90s\", \"45m\", \"6h\", \"1d\" or \"1h30m\"";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("the duration is empty; {hint}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in trimmed.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("`{text}` has `{ch}`, which is not a unit; {hint}")),
        };
        if digits.is_empty() {
            return Err(format!(
                "`{text}` has a unit without a number before it; {hint}"
            ));
        }
        total = digits
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(unit))
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("`{text}` ends in a number without a unit; {hint}"));
    }
    if total == 0 {
        return Err(format!("`{text}` is shorter than one second"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["agent"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).unwrap().run
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let (_dir, path) = write_config(
            "server = \"wss://file.example.net\"\nhost = \"from-file\"\n\
             state-dir = \"/srv/state\"\nallow-hooks = true\n\
             allowed-paths = [\"/etc/\", \"/var//lib/./x\"]\nmax-duration = \"1h30m\"\n",
        );
        let path_text = path.to_str().unwrap();
        let settings = Settings::resolve(args(&[
            "--config",
            path_text,
            "--host",
            "from-flag",
            "--key",
            "/k",
        ]))
        .unwrap();
        assert_eq!(settings.server.as_str(), "wss://file.example.net/agent/v1");
        assert_eq!(settings.host, "from-flag");
        assert_eq!(settings.state_dir, PathBuf::from("/srv/state"));
        assert_eq!(settings.key, PathBuf::from("/k"));
        assert_eq!(settings.restic, PathBuf::from(DEFAULT_RESTIC));
        assert_eq!(
            settings.limits,
            Limits {
                allow_hooks: true,
                allowed_paths: vec![PathBuf::from("/etc"), PathBuf::from("/var/lib/x")],
                max_duration: Some(Duration::from_mins(90)),
            }
        );
        assert_eq!(settings.config_file.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn limits_default_to_no_hooks_any_path_no_bound() {
        let (_dir, path) = write_config("server = \"ws://127.0.0.1:9\"\nhost = \"h\"\n");
        let settings = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(settings.limits, Limits::default());
        assert_eq!(settings.timing, Timing::default());
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_file_and_line() {
        let (_dir, path) = write_config("server = \"ws://h\"\n\nallow-hook = true\n");
        let err = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:3: ", path.display())),
            "{text}"
        );
        assert!(text.contains("unknown field `allow-hook`"), "{text}");

        let (_dir, path) = write_config("server = \"ws://h\"\nallow-hooks = \"yes\"\n");
        let err = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains(":2: "), "{err}");
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error() {
        let err = Settings::resolve(args(&["--config", "/nonexistent/agent.toml"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the agent settings file /nonexistent/agent.toml"),
            "{err}"
        );
    }

    #[test]
    fn server_urls_are_checked_and_get_the_agent_path() {
        let ok = |text: &str| parse_server_url(text).unwrap().as_str().to_owned();
        assert_eq!(
            ok("wss://backup.example.net"),
            "wss://backup.example.net/agent/v1"
        );
        assert_eq!(ok("ws://10.0.0.5:8080/"), "ws://10.0.0.5:8080/agent/v1");
        assert_eq!(
            ok("wss://proxy.example.net/rm/agent"),
            "wss://proxy.example.net/rm/agent"
        );

        let err = parse_server_url("https://backup.example.net").unwrap_err();
        assert!(err.contains("scheme is `https:`"), "{err}");
        let err = parse_server_url("wss://agent:hunter2@backup.example.net").unwrap_err();
        assert!(err.contains("user name or password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_server_url("backup.example.net").unwrap_err();
        assert!(err.contains("not a URL"), "{err}");
    }

    #[test]
    fn a_ca_with_plain_ws_is_refused() {
        let err = Settings::resolve(args(&[
            "--config",
            "/dev/null",
            "--server",
            "ws://h",
            "--ca",
            "/ca.pem",
            "--host",
            "h",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ca` from --ca (or RM_AGENT_CA): a CA file is given but `server` from --server (or \
             RM_AGENT_SERVER) is `ws://h/agent/v1`, a ws:// URL, which does not use TLS; use \
             wss://, or remove `ca`"
        );

        let (_dir, path) = write_config("server = \"ws://h\"\nhost = \"h\"\nca = \"/ca.pem\"\n");
        let err = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        let file = path.display();
        assert!(
            err.to_string().starts_with(&format!(
                "`ca` from {file}: a CA file is given but `server` from {file} is `ws://h/agent/v1`"
            )),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_setting_and_where_it_came_from() {
        let err = Settings::resolve(args(&[
            "--config",
            "/dev/null",
            "--server",
            "ws://h",
            "--host",
            "Web_1",
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`host` from --host (or RM_AGENT_HOST): `Web_1` is not a host name"),
            "{err}"
        );

        let (_dir, path) =
            write_config("server = \"ws://h\"\nhost = \"h\"\nserver-id = \"ssh-ed25519 AAAA\"\n");
        let err = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("`server-id` from {}: ", path.display())),
            "{err}"
        );

        let (_dir, path) =
            write_config("server = \"ws://h\"\nhost = \"h\"\nallowed-paths = [\"/srv/../etc\"]\n");
        let err = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("contains `..`"), "{err}");

        let (_dir, path) =
            write_config("server = \"ws://h\"\nhost = \"h\"\nallowed-paths = [\"srv\"]\n");
        let err = Settings::resolve(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err}");
    }

    #[test]
    fn no_server_says_how_to_give_one() {
        let err = Settings::resolve(args(&["--config", "/dev/null", "--host", "h"])).unwrap_err();
        assert!(matches!(err, SettingsError::NoServer), "{err}");
    }

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_mins(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_hours(48));
        for (text, expected) in [
            ("", "empty"),
            ("6", "without a unit"),
            ("h", "without a number"),
            ("5w", "not a unit"),
            ("0s", "shorter than one second"),
            ("99999999999999999999d", "too long"),
            ("999999999999999d", "too long"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_default_host_is_the_short_hostname_lowercased() {
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let expected = raw.trim().split('.').next().unwrap().to_ascii_lowercase();
        match system_host_name() {
            Ok(host) => assert_eq!(host, expected),
            Err(e) => {
                assert!(check_host_name(&expected).is_err(), "{e}");
                assert!(e.to_string().contains("pass --host NAME"), "{e}");
            }
        }
    }

    #[test]
    fn host_names_follow_the_config_repository() {
        assert!(check_host_name("web-1").is_ok());
        for bad in ["", "-web", "Web", "web_1", "web.example", &"a".repeat(64)] {
            assert!(check_host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_settings_file_is_valid_and_uses_the_defaults_it_names() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/agent.toml");
        let settings = Settings::resolve(args(&["--config", example.to_str().unwrap()])).unwrap();
        assert_eq!(settings.key, PathBuf::from(DEFAULT_KEY_FILE));
        assert_eq!(settings.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(settings.server_id.is_some());
        assert_eq!(settings.limits.max_duration, Some(Duration::from_hours(12)));
        assert!(!settings.limits.allow_hooks);
    }

    #[test]
    fn the_systemd_unit_keeps_the_state_dir_writable_and_stops_on_a_rejection() {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/restic-manager-agent.service"),
        )
        .unwrap();
        let lines: Vec<&str> = unit.lines().collect();
        for expected in [
            "ProtectSystem=strict".to_owned(),
            format!("ReadWritePaths={DEFAULT_STATE_DIR}"),
            format!(
                "StateDirectory={}",
                DEFAULT_STATE_DIR.trim_start_matches("/var/lib/")
            ),
            "StateDirectoryMode=0700".to_owned(),
            "NoNewPrivileges=yes".to_owned(),
            "RestartPreventExitStatus=3".to_owned(),
        ] {
            assert!(lines.contains(&expected.as_str()), "missing {expected}");
        }
    }

    #[test]
    fn hidden_timing_flags_shorten_the_intervals() {
        let (_dir, path) = write_config("server = \"ws://h\"\nhost = \"h\"\n");
        let settings = Settings::resolve(args(&[
            "--config",
            path.to_str().unwrap(),
            "--test-ping-interval-ms",
            "100",
            "--test-dead-peer-ms",
            "300",
        ]))
        .unwrap();
        assert_eq!(settings.timing.ping_interval, Duration::from_millis(100));
        assert_eq!(settings.timing.dead_peer, Duration::from_millis(300));
    }
}
