//! The server's own settings: where it listens, where it keeps its state, which git
//! repository it follows and with which secrets. They live outside the config repository, in
//! a small TOML file, and every key can also be given as a flag or an `RM_*` environment
//! variable. A flag wins over the environment, the environment over the file, the file over
//! the defaults (made for one machine: data in `./data`, listening on 127.0.0.1, the status
//! view readable from loopback only).
//!
//! An error about a value names where the value came from: the settings file with line and
//! column ([`file`]), the flag, or the environment variable.

mod file;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

pub use file::{GitFile, SettingsFile, ViewFile};

use crate::config::schedule::parse_duration;

/// Default address: loopback only, so a fresh server is never reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default data directory, relative to where the server starts.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Default branch followed.
pub const DEFAULT_BRANCH: &str = "main";

/// Default time between two fetches of a remote repository.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_mins(1);

/// Default client networks allowed to read the status view, the JSON API and `/metrics`:
/// loopback only.
pub const DEFAULT_VIEW_ALLOW: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The URL schemes the server fetches from; anything else with `://` is refused at start.
const REMOTE_SCHEMES: [&str; 5] = ["https", "http", "ssh", "git", "file"];

/// What the command line and environment gave; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub poll_interval: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    pub view_allow: Option<Vec<String>>,
    pub view_token_file: Option<PathBuf>,
    /// The settings (by [`Key::name`]) whose override came from their `RM_*` variable rather
    /// than their flag, so an error names the one the operator set.
    pub from_env: Vec<&'static str>,
}

/// One setting's names: in the settings file, as a flag and as an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The settings file key, with its table when it has one (`view.allow`).
    pub name: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
}

/// Every setting of the server that a flag can set.
pub mod keys {
    use super::Key;

    pub const LISTEN: Key = key("listen", "--listen", "RM_LISTEN");
    pub const DATA_DIR: Key = key("data-dir", "--data-dir", "RM_DATA_DIR");
    pub const IDENTITY: Key = key("identity", "--identity", "RM_IDENTITY");
    pub const REPOSITORY: Key = key("repository", "--repository", "RM_REPOSITORY");
    pub const BRANCH: Key = key("branch", "--branch", "RM_BRANCH");
    pub const POLL_INTERVAL: Key = key("poll-interval", "--poll-interval", "RM_POLL_INTERVAL");
    pub const WEBHOOK_SECRET_FILE: Key = key(
        "webhook-secret-file",
        "--webhook-secret-file",
        "RM_WEBHOOK_SECRET_FILE",
    );
    pub const VIEW_ALLOW: Key = key("view.allow", "--view-allow", "RM_VIEW_ALLOW");
    pub const VIEW_TOKEN_FILE: Key =
        key("view.token-file", "--view-token-file", "RM_VIEW_TOKEN_FILE");

    const fn key(name: &'static str, flag: &'static str, env: &'static str) -> Key {
        Key { name, flag, env }
    }
}

/// The server's settings, complete and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The age identity that opens sealed values.
    pub identity: PathBuf,
    pub source: Source,
    pub branch: String,
    pub poll_interval: Duration,
    pub webhook_secret_file: Option<PathBuf>,
    pub view: ViewSettings,
}

/// Who may read the status view, the JSON API and `/metrics`. The agents' WebSocket and the
/// webhook are not governed by this: they authenticate on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSettings {
    /// Client networks allowed; a request from any other address is answered 403. Empty: the
    /// view answers nobody.
    pub allow: Vec<ipnet::IpNet>,
    /// When set, every view request must carry `Authorization: Bearer <the file's token>`.
    pub token_file: Option<PathBuf>,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            allow: DEFAULT_VIEW_ALLOW
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
            token_file: None,
        }
    }
}

/// Where the config repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A repository on this machine, read in place and watched for commits.
    Local(PathBuf),
    /// A remote repository, cloned into the data directory and fetched.
    Remote(String),
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML, or a value has the wrong type; `at` is `line L, column C`.
    #[error("settings file {path}, {at}: {message}")]
    Parse {
        path: PathBuf,
        at: String,
        message: String,
    },
    /// Keys the settings file does not have, every one, in file order.
    #[error("settings file {path} has {}:\n{}", count(.keys.len()), .keys.join("\n"))]
    UnknownKeys { path: PathBuf, keys: Vec<String> },
    /// A value that cannot be used; `place` names where it came from: the settings file with
    /// line and column, the flag, or the environment variable.
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
    #[error(
        "no config repository given: pass --repository (or RM_REPOSITORY, or `repository` in \
         the [git] table of the settings file) with a local path or a git URL"
    )]
    NoRepository,
}

fn count(n: usize) -> String {
    if n == 1 {
        "an unknown key".to_owned()
    } else {
        format!("{n} unknown keys")
    }
}

/// Where a value came from, for its error.
#[derive(Clone)]
enum Origin {
    Flag,
    Env,
    /// The byte range of the value in the settings file.
    File(Range<usize>),
    Default,
}

/// The settings file (its path and text) and which overrides came from the environment:
/// enough to say where a bad value came from.
struct Places<'a> {
    file: Option<(&'a Path, &'a str)>,
    from_env: &'a [&'static str],
}

impl Places<'_> {
    /// The value of `key`: the override (flag or environment) when given, else the file's.
    fn pick<T>(&self, key: Key, over: Option<T>, file: Option<Spanned<T>>) -> Option<(T, Origin)> {
        if let Some(value) = over {
            return Some((value, self.override_origin(key)));
        }
        file.map(|spanned| {
            let span = spanned.span();
            (spanned.into_inner(), Origin::File(span))
        })
    }

    /// Whether the override of `key` came from its flag or its environment variable.
    fn override_origin(&self, key: Key) -> Origin {
        if self.from_env.contains(&key.name) {
            Origin::Env
        } else {
            Origin::Flag
        }
    }

    fn invalid(&self, key: Key, origin: &Origin, message: String) -> SettingsError {
        let place = match (origin, self.file) {
            (Origin::Flag, _) => key.flag.to_owned(),
            (Origin::Env, _) => key.env.to_owned(),
            (Origin::File(span), Some((path, text))) => format!(
                "settings file {}, {}, {}",
                path.display(),
                line_col(text, span.start),
                key.name
            ),
            (Origin::File(_) | Origin::Default, _) => key.name.to_owned(),
        };
        SettingsError::Invalid { place, message }
    }
}

fn line_col(text: &str, at: usize) -> String {
    let (line, column) = crate::config::diag::line_col(text, at);
    format!("line {line}, column {column}")
}

impl Settings {
    /// Reads the settings file when there is one and applies flags and environment on top.
    pub fn resolve(file: Option<&Path>, over: Overrides) -> Result<Self, SettingsError> {
        let (parsed, text) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (file::parse_file(path, &text)?, text)
            }
            None => (SettingsFile::default(), String::new()),
        };
        let places = Places {
            file: file.map(|path| (path, text.as_str())),
            from_env: &over.from_env,
        };
        let git = parsed.git.unwrap_or_default();
        let view_file = parsed.view.unwrap_or_default();

        let listen = match places.pick(keys::LISTEN, over.listen, parsed.listen) {
            None => DEFAULT_LISTEN.parse().expect("the default address parses"),
            Some((text, origin)) => text.parse::<SocketAddr>().map_err(|e| {
                places.invalid(
                    keys::LISTEN,
                    &origin,
                    format!("`{text}` is not an address and port such as 127.0.0.1:8080 ({e})"),
                )
            })?,
        };

        let data_dir = over
            .data_dir
            .or(parsed.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let identity = over
            .identity
            .or(parsed.identity)
            .unwrap_or_else(|| data_dir.join("identity.txt"));

        let Some((repository, origin)) = places
            .pick(keys::REPOSITORY, over.repository, git.repository)
            .filter(|(r, _)| !r.trim().is_empty())
        else {
            return Err(SettingsError::NoRepository);
        };
        let source = parse_source(&repository)
            .map_err(|message| places.invalid(keys::REPOSITORY, &origin, message))?;

        let (branch, origin) = places
            .pick(keys::BRANCH, over.branch, git.branch)
            .unwrap_or_else(|| (DEFAULT_BRANCH.to_owned(), Origin::Default));
        if branch.is_empty() || branch.starts_with('-') || branch.contains(char::is_whitespace) {
            return Err(places.invalid(
                keys::BRANCH,
                &origin,
                format!("`{branch}` is not a branch name"),
            ));
        }

        let poll_interval =
            match places.pick(keys::POLL_INTERVAL, over.poll_interval, git.poll_interval) {
                None => DEFAULT_POLL_INTERVAL,
                Some((text, origin)) => parse_poll_interval(&text)
                    .map_err(|message| places.invalid(keys::POLL_INTERVAL, &origin, message))?,
            };

        let allow = match (over.view_allow, view_file.allow) {
            (Some(list), _) => {
                let origin = places.override_origin(keys::VIEW_ALLOW);
                let list = list.into_iter().map(|t| (t, origin.clone())).collect();
                parse_networks(&places, list)?
            }
            (None, Some(list)) => {
                let list = list
                    .into_iter()
                    .map(|spanned| {
                        let span = spanned.span();
                        (spanned.into_inner(), Origin::File(span))
                    })
                    .collect();
                parse_networks(&places, list)?
            }
            (None, None) => ViewSettings::default().allow,
        };
        let view = ViewSettings {
            allow,
            token_file: over.view_token_file.or(view_file.token_file),
        };

        Ok(Settings {
            listen,
            data_dir,
            identity,
            source,
            branch,
            poll_interval,
            webhook_secret_file: over.webhook_secret_file.or(git.webhook_secret_file),
            view,
        })
    }
}

fn parse_poll_interval(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    let secs = u64::try_from(duration.as_secs()).unwrap_or(0);
    if secs < 1 {
        return Err(format!("`{text}` is shorter than one second"));
    }
    Ok(Duration::from_secs(secs))
}

/// A URL is remote (cloned into the data directory); anything else is a path read in place.
/// A URL with a scheme the server cannot fetch from is refused, not taken for a path.
fn parse_source(text: &str) -> Result<Source, String> {
    if let Some(scheme) = url_scheme(text) {
        if !REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{text}` uses the URL scheme `{scheme}`, which the server cannot fetch from; \
                 use an https://, http://, ssh://, git:// or file:// URL, an scp-like \
                 user@host:path, or a local path"
            ));
        }
        url_check(text)?;
        return Ok(Source::Remote(text.to_owned()));
    }
    // scp-like `git@host:org/repo.git`
    if text.contains('@') && text.contains(':') && !text.starts_with('/') {
        url_check(text)?;
        return Ok(Source::Remote(text.to_owned()));
    }
    Ok(Source::Local(PathBuf::from(text)))
}

/// The scheme of `scheme://…`, as RFC 3986 spells one; `None` for anything else.
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Reads `view.allow`: CIDRs such as `10.0.0.0/8`, or single addresses (a `/32` or `/128`).
fn parse_networks(
    places: &Places<'_>,
    list: Vec<(String, Origin)>,
) -> Result<Vec<ipnet::IpNet>, SettingsError> {
    list.into_iter()
        .map(|(text, origin)| {
            let text = text.trim();
            if let Ok(net) = text.parse::<ipnet::IpNet>() {
                // `10.1.2.3/8` is read as the network it lies in, 10.0.0.0/8.
                return Ok(net.trunc());
            }
            text.parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| {
                    places.invalid(
                        keys::VIEW_ALLOW,
                        &origin,
                        format!(
                            "`{text}` is not a network such as 192.0.2.0/24 or ::1/128, nor an \
                             address"
                        ),
                    )
                })
        })
        .collect()
}

fn url_check(text: &str) -> Result<(), String> {
    if text.contains(char::is_whitespace) {
        return Err("a repository URL cannot contain whitespace".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
