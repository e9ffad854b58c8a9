//! The server's own settings: where it listens, where it keeps its state, which git
//! repository it follows and with which secrets. They live outside the config repository, in
//! a small TOML file, and every key can also be given as a flag or an `RM_*` environment
//! variable. A flag wins over the environment, the environment over the file, the file over
//! the defaults (made for one machine: data in `./data`, listening on 127.0.0.1, the status
//! view readable from loopback only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

/// The settings file as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SettingsFile {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub git: Option<GitFile>,
    pub view: Option<ViewFile>,
}

/// The `[git]` table of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GitFile {
    /// A local path or an `https://` / `ssh://` URL.
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub poll_interval: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
}

/// The `[view]` table of the settings file: who may read the status view, the JSON API and
/// `/metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ViewFile {
    /// Client networks (CIDRs, or single addresses) allowed to read the view.
    pub allow: Option<Vec<String>>,
    /// A file holding the bearer token every view request must carry.
    pub token_file: Option<PathBuf>,
}

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
    #[error("settings file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(
        "no config repository given: pass --repository (or RM_REPOSITORY, or `repository` in \
         the [git] table of the settings file) with a local path or a git URL"
    )]
    NoRepository,
}

impl Settings {
    /// Reads the settings file when there is one and applies flags and environment on top.
    pub fn resolve(file: Option<&Path>, over: Overrides) -> Result<Self, SettingsError> {
        let parsed = match file {
            Some(path) => read_file(path)?,
            None => SettingsFile::default(),
        };
        let git = parsed.git.unwrap_or_default();
        let view_file = parsed.view.unwrap_or_default();

        let listen_text = over
            .listen
            .or(parsed.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|e| SettingsError::Invalid {
                key: "listen",
                message: format!(
                    "`{listen_text}` is not an address and port such as 127.0.0.1:8080 ({e})"
                ),
            })?;

        let data_dir = over
            .data_dir
            .or(parsed.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let identity = over
            .identity
            .or(parsed.identity)
            .unwrap_or_else(|| data_dir.join("identity.txt"));

        let repository = over
            .repository
            .or(git.repository)
            .filter(|r| !r.trim().is_empty())
            .ok_or(SettingsError::NoRepository)?;
        let source = parse_source(&repository)?;

        let branch = over
            .branch
            .or(git.branch)
            .unwrap_or_else(|| DEFAULT_BRANCH.to_owned());
        if branch.is_empty() || branch.starts_with('-') || branch.contains(char::is_whitespace) {
            return Err(SettingsError::Invalid {
                key: "branch",
                message: format!("`{branch}` is not a branch name"),
            });
        }

        let poll_interval = match over.poll_interval.or(git.poll_interval) {
            None => DEFAULT_POLL_INTERVAL,
            Some(text) => {
                let duration = parse_duration(&text).map_err(|message| SettingsError::Invalid {
                    key: "poll-interval",
                    message,
                })?;
                let secs = u64::try_from(duration.as_secs()).unwrap_or(0);
                if secs < 1 {
                    return Err(SettingsError::Invalid {
                        key: "poll-interval",
                        message: format!("`{text}` is shorter than one second"),
                    });
                }
                Duration::from_secs(secs)
            }
        };

        let view = ViewSettings {
            allow: match over.view_allow.or(view_file.allow) {
                None => ViewSettings::default().allow,
                Some(list) => parse_networks(&list)?,
            },
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

fn read_file(path: &Path) -> Result<SettingsFile, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim_end().to_owned();
        SettingsError::Parse {
            path: path.to_owned(),
            message: match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            },
        }
    })
}

/// A URL is remote (cloned into the data directory); anything else is a path read in place.
fn parse_source(text: &str) -> Result<Source, SettingsError> {
    let remote = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|scheme| text.starts_with(scheme))
        // scp-like `git@host:org/repo.git`
        || (text.contains('@') && text.contains(':') && !text.starts_with('/'));
    if remote {
        url_check(text)?;
        return Ok(Source::Remote(text.to_owned()));
    }
    Ok(Source::Local(PathBuf::from(text)))
}

/// Reads `view.allow`: CIDRs such as `10.0.0.0/8`, or single addresses (a `/32` or `/128`).
fn parse_networks(list: &[String]) -> Result<Vec<ipnet::IpNet>, SettingsError> {
    list.iter()
        .map(|text| {
            let text = text.trim();
            if let Ok(net) = text.parse::<ipnet::IpNet>() {
                // `10.1.2.3/8` is read as the network it lies in, 10.0.0.0/8.
                return Ok(net.trunc());
            }
            text.parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| SettingsError::Invalid {
                    key: "view.allow",
                    message: format!(
                        "`{text}` is not a network such as 192.0.2.0/24 or ::1/128, nor an \
                         address"
                    ),
                })
        })
        .collect()
}

fn url_check(text: &str) -> Result<(), SettingsError> {
    if text.contains(char::is_whitespace) {
        return Err(SettingsError::Invalid {
            key: "repository",
            message: "a repository URL cannot contain whitespace".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn with_repo() -> Overrides {
        Overrides {
            repository: Some("/srv/config".into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn defaults_suit_one_machine() {
        let s = Settings::resolve(None, with_repo()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("data"));
        assert_eq!(s.identity, PathBuf::from("data/identity.txt"));
        assert_eq!(s.source, Source::Local("/srv/config".into()));
        assert_eq!(s.branch, "main");
        assert_eq!(s.poll_interval, Duration::from_mins(1));
        let allow: Vec<String> = s.view.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(s.view.token_file, None);
    }

    #[test]
    fn the_view_table_sets_networks_and_a_token_file_and_flags_win() {
        let file = write(
            "[git]\nrepository = \"/srv/config\"\n[view]\n\
             allow = [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n\
             token-file = \"/etc/restic-manager/view-token\"\n",
        );
        let s = Settings::resolve(Some(file.path()), Overrides::default()).unwrap();
        let allow: Vec<String> = s.view.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert_eq!(
            s.view.token_file,
            Some(PathBuf::from("/etc/restic-manager/view-token"))
        );

        let over = Overrides {
            view_allow: Some(vec!["127.0.0.1".into()]),
            ..Overrides::default()
        };
        let s = Settings::resolve(Some(file.path()), over).unwrap();
        let allow: Vec<String> = s.view.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["127.0.0.1/32"]);
    }

    #[test]
    fn a_bad_network_or_view_key_is_named() {
        let over = Overrides {
            view_allow: Some(vec!["127.0.0.1".into(), "office".into()]),
            ..with_repo()
        };
        let err = Settings::resolve(None, over).unwrap_err().to_string();
        assert_eq!(
            err,
            "view.allow: `office` is not a network such as 192.0.2.0/24 or ::1/128, nor an \
             address"
        );

        let file = write("[view]\nallow-from = [\"127.0.0.1\"]\n");
        let err = Settings::resolve(Some(file.path()), with_repo())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("allow-from") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = write(
            "listen = \"127.0.0.1:9000\"\ndata-dir = \"/var/lib/rm\"\n[git]\n\
             repository = \"https://git.example.net/fleet.git\"\nbranch = \"prod\"\n\
             poll-interval = \"5m\"\n",
        );
        let s = Settings::resolve(Some(file.path()), Overrides::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.identity, PathBuf::from("/var/lib/rm/identity.txt"));
        assert_eq!(
            s.source,
            Source::Remote("https://git.example.net/fleet.git".into())
        );
        assert_eq!(s.poll_interval, Duration::from_mins(5));

        let over = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            branch: Some("staging".into()),
            ..Overrides::default()
        };
        let s = Settings::resolve(Some(file.path()), over).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(s.branch, "staging");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/rm"));
    }

    #[test]
    fn an_unknown_key_names_the_file_and_line() {
        let file = write("listen = \"127.0.0.1:1\"\nlisten-port = 8080\n");
        let err = Settings::resolve(Some(file.path()), with_repo()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&file.path().display().to_string()), "{text}");
        assert!(text.contains("listen-port"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn bad_values_say_which_key() {
        let over = Overrides {
            listen: Some("localhost".into()),
            ..with_repo()
        };
        let err = Settings::resolve(None, over).unwrap_err().to_string();
        assert!(
            err.starts_with("listen: `localhost` is not an address"),
            "{err}"
        );

        let over = Overrides {
            poll_interval: Some("soon".into()),
            ..with_repo()
        };
        let err = Settings::resolve(None, over).unwrap_err().to_string();
        assert!(err.starts_with("poll-interval:"), "{err}");

        let err = Settings::resolve(None, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--repository"), "{err}");
    }

    #[test]
    fn a_missing_settings_file_is_named() {
        let err = Settings::resolve(Some(Path::new("/nonexistent/rm.toml")), with_repo())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/rm.toml"), "{err}");
    }

    #[test]
    fn the_shipped_example_settings_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/server.toml");
        let s = Settings::resolve(Some(&path), Overrides::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/restic-manager"));
        assert!(matches!(s.source, Source::Remote(_)));
        assert!(s.webhook_secret_file.is_some());
        assert_eq!(s.view, ViewSettings::default());
    }

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(
            parse_source("git@github.com:org/fleet.git").unwrap(),
            Source::Remote("git@github.com:org/fleet.git".into())
        );
        // An explicit URL is cloned, even on this machine; a path is read in place.
        assert_eq!(
            parse_source("file:///srv/fleet.git").unwrap(),
            Source::Remote("file:///srv/fleet.git".into())
        );
        assert_eq!(
            parse_source("./fleet").unwrap(),
            Source::Local("./fleet".into())
        );
    }
}
