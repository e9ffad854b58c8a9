//! Repository locations: every form restic accepts, checked per backend.
//!
//! The rule that matters most here: credentials never live in a URL. A `user:password@` part
//! is refused with a pointer to the sealed `env` keys that carry the same value safely.

use std::fmt;

use serde::Serialize;

/// The storage backend of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    Rest,
    S3,
    Sftp,
    B2,
    Azure,
    Gs,
    Rclone,
}

impl Backend {
    /// Environment variables restic reads for this backend's credentials, and whether each
    /// is a secret (must be sealed).
    #[must_use]
    pub fn credential_env(self) -> &'static [(&'static str, bool)] {
        match self {
            Backend::Local | Backend::Sftp | Backend::Rclone => &[],
            Backend::Rest => &[
                ("RESTIC_REST_USERNAME", false),
                ("RESTIC_REST_PASSWORD", true),
            ],
            Backend::S3 => &[
                ("AWS_ACCESS_KEY_ID", false),
                ("AWS_SECRET_ACCESS_KEY", true),
                ("AWS_SESSION_TOKEN", true),
            ],
            Backend::B2 => &[("B2_ACCOUNT_ID", false), ("B2_ACCOUNT_KEY", true)],
            Backend::Azure => &[
                ("AZURE_ACCOUNT_NAME", false),
                ("AZURE_ACCOUNT_KEY", true),
                ("AZURE_ACCOUNT_SAS", true),
            ],
            Backend::Gs => &[
                ("GOOGLE_PROJECT_ID", false),
                ("GOOGLE_APPLICATION_CREDENTIALS", false),
                ("GOOGLE_ACCESS_TOKEN", true),
            ],
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Backend::Local => "local",
            Backend::Rest => "rest",
            Backend::S3 => "s3",
            Backend::Sftp => "sftp",
            Backend::B2 => "b2",
            Backend::Azure => "azure",
            Backend::Gs => "gs",
            Backend::Rclone => "rclone",
        };
        f.write_str(name)
    }
}

/// A checked repository location, kept as written (restic gets exactly this string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoUrl {
    pub backend: Backend,
    pub text: String,
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a URL was refused, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    pub message: String,
    pub help: Option<String>,
}

impl UrlError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl RepoUrl {
    /// Parses and checks a repository location.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text.is_empty() {
            return Err(UrlError::new("url is empty"));
        }
        if text != text.trim() {
            return Err(UrlError::new("url has leading or trailing whitespace"));
        }
        if text.chars().any(char::is_control) {
            return Err(UrlError::new("url contains a control character"));
        }

        let (backend, rest) = match text.split_once(':') {
            _ if text.starts_with('/') => (Backend::Local, text),
            Some(("local", rest)) => (Backend::Local, rest),
            Some(("rest", rest)) => (Backend::Rest, rest),
            Some(("s3", rest)) => (Backend::S3, rest),
            Some(("sftp", rest)) => (Backend::Sftp, rest),
            Some(("b2", rest)) => (Backend::B2, rest),
            Some(("azure", rest)) => (Backend::Azure, rest),
            Some(("gs", rest)) => (Backend::Gs, rest),
            Some(("rclone", rest)) => (Backend::Rclone, rest),
            _ => {
                return Err(
                    UrlError::new(format!("`{text}` is not a restic repository location")).help(
                        "use an absolute local path, or a location starting with `rest:`, \
                         `s3:`, `sftp:`, `b2:`, `azure:`, `gs:` or `rclone:`",
                    ),
                );
            }
        };

        match backend {
            Backend::Local => check_local(rest)?,
            Backend::Rest => check_http(backend, rest)?,
            Backend::S3 => check_s3(rest)?,
            Backend::Sftp => check_sftp(rest)?,
            Backend::B2 | Backend::Azure | Backend::Gs => check_bucket(backend, rest)?,
            Backend::Rclone => check_rclone(rest)?,
        }
        Ok(Self {
            backend,
            text: text.to_owned(),
        })
    }
}

fn credential_help(backend: Backend) -> String {
    let names: Vec<&str> = backend.credential_env().iter().map(|(n, _)| *n).collect();
    if names.is_empty() {
        format!(
            "remove the credentials from the url; {backend} authenticates outside restic \
             (keys or its own config on the host)"
        )
    } else {
        format!(
            "remove the credentials from the url and set them in `env` ({}), sealing the \
             secret ones with `restic-manager seal`",
            names.join(", ")
        )
    }
}

fn check_local(path: &str) -> Result<(), UrlError> {
    if !path.starts_with('/') {
        return Err(
            UrlError::new(format!("local repository path `{path}` is not absolute"))
                .help("write the full path, e.g. `/srv/restic/main`"),
        );
    }
    Ok(())
}

fn check_http(backend: Backend, rest: &str) -> Result<(), UrlError> {
    let parsed = url::Url::parse(rest).map_err(|e| {
        UrlError::new(format!(
            "{backend} url `{rest}` is not a valid http(s) URL: {e}"
        ))
        .help(format!("write it as `{backend}:https://host:port/path`"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::new(format!(
            "{backend} url must use http or https, not `{}`",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::new(format!("{backend} url contains credentials"))
            .help(credential_help(backend)));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::new(format!("{backend} url `{rest}` has no host")));
    }
    Ok(())
}

fn check_s3(rest: &str) -> Result<(), UrlError> {
    // restic accepts `s3:https://host/bucket/prefix` and `s3:host/bucket/prefix`.
    let without_scheme = if rest.starts_with("http://") || rest.starts_with("https://") {
        check_http(Backend::S3, rest)?;
        rest.split_once("://").map_or(rest, |(_, r)| r)
    } else {
        if rest.contains('@') {
            return Err(
                UrlError::new("s3 url contains credentials").help(credential_help(Backend::S3))
            );
        }
        rest
    };
    let mut parts = without_scheme.splitn(3, '/');
    let host = parts.next().unwrap_or_default();
    let bucket = parts.next().unwrap_or_default();
    if host.is_empty() || bucket.is_empty() {
        return Err(UrlError::new(format!("s3 url `s3:{rest}` names no bucket"))
            .help("write it as `s3:https://s3.example.com/bucket/path`"));
    }
    Ok(())
}

fn check_sftp(rest: &str) -> Result<(), UrlError> {
    // Either `sftp:user@host:/path` or `sftp://user@host:port//path`.
    if let Some(url_rest) = rest.strip_prefix("//") {
        let parsed = url::Url::parse(&format!("sftp://{url_rest}")).map_err(|e| {
            UrlError::new(format!("sftp url `sftp:{rest}` is not valid: {e}"))
                .help("write it as `sftp:user@host:/path` or `sftp://user@host:22//path`")
        })?;
        if parsed.password().is_some() {
            return Err(
                UrlError::new("sftp url contains a password").help(credential_help(Backend::Sftp))
            );
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::new(format!("sftp url `sftp:{rest}` has no host")));
        }
        return Ok(());
    }
    let host_path = match rest.split_once('@') {
        Some((user, _)) if user.contains(':') => {
            return Err(
                UrlError::new("sftp url contains a password").help(credential_help(Backend::Sftp))
            );
        }
        Some((_, host_path)) => host_path,
        None => rest,
    };
    let Some((host, path)) = host_path.split_once(':') else {
        return Err(UrlError::new(format!("sftp url `sftp:{rest}` has no path"))
            .help("write it as `sftp:user@host:/path`"));
    };
    if host.is_empty() || path.is_empty() {
        return Err(
            UrlError::new(format!("sftp url `sftp:{rest}` needs a host and a path"))
                .help("write it as `sftp:user@host:/path`"),
        );
    }
    Ok(())
}

fn check_bucket(backend: Backend, rest: &str) -> Result<(), UrlError> {
    // `b2:bucket:path`, `azure:container:/path`, `gs:bucket:/path`.
    if rest.contains('@') {
        return Err(UrlError::new(format!("{backend} url contains credentials"))
            .help(credential_help(backend)));
    }
    let bucket_word = if backend == Backend::Azure {
        "container"
    } else {
        "bucket"
    };
    let Some((bucket, path)) = rest.split_once(':') else {
        return Err(
            UrlError::new(format!("{backend} url `{backend}:{rest}` has no path"))
                .help(format!("write it as `{backend}:{bucket_word}:/path`")),
        );
    };
    if bucket.is_empty() || path.is_empty() {
        return Err(UrlError::new(format!(
            "{backend} url `{backend}:{rest}` needs a {bucket_word} and a path"
        ))
        .help(format!("write it as `{backend}:{bucket_word}:/path`")));
    }
    Ok(())
}

fn check_rclone(rest: &str) -> Result<(), UrlError> {
    let Some((remote, _path)) = rest.split_once(':') else {
        return Err(
            UrlError::new(format!("rclone url `rclone:{rest}` names no remote"))
                .help("write it as `rclone:remote:path`, with the remote configured on the host"),
        );
    };
    if remote.is_empty() {
        return Err(UrlError::new(format!(
            "rclone url `rclone:{rest}` names no remote"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_form_is_accepted() {
        for (text, backend) in [
            ("/srv/restic/main", Backend::Local),
            ("local:/srv/restic/main", Backend::Local),
            ("rest:https://backup.example.net:8000/web-1", Backend::Rest),
            (
                "s3:https://s3.eu-central-1.amazonaws.com/bucket/restic",
                Backend::S3,
            ),
            ("s3:s3.amazonaws.com/bucket", Backend::S3),
            ("sftp:backup@nas.example.net:/srv/restic", Backend::Sftp),
            (
                "sftp://backup@nas.example.net:2222//srv/restic",
                Backend::Sftp,
            ),
            ("b2:my-bucket:restic/web", Backend::B2),
            ("azure:container:/restic", Backend::Azure),
            ("gs:my-bucket:/restic", Backend::Gs),
            ("rclone:offsite:restic/web", Backend::Rclone),
        ] {
            assert_eq!(
                RepoUrl::parse(text).map(|u| u.backend),
                Ok(backend),
                "{text}"
            );
        }
    }

    #[test]
    fn inline_credentials_point_to_env() {
        let err = RepoUrl::parse("rest:https://alice:secret@backup.example.net/").unwrap_err();
        assert_eq!(err.message, "rest url contains credentials");
        assert!(err.help.unwrap().contains("RESTIC_REST_PASSWORD"));
        let err = RepoUrl::parse("sftp:alice:secret@nas:/srv").unwrap_err();
        assert_eq!(err.message, "sftp url contains a password");
        let err = RepoUrl::parse("s3:https://KEY:SECRET@s3.example.com/bucket").unwrap_err();
        assert!(err.help.unwrap().contains("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn malformed_locations_say_what_is_missing() {
        assert!(
            RepoUrl::parse("srv/restic")
                .unwrap_err()
                .message
                .contains("not a restic")
        );
        assert!(
            RepoUrl::parse("local:srv")
                .unwrap_err()
                .message
                .contains("not absolute")
        );
        assert!(
            RepoUrl::parse("s3:https://s3.example.com")
                .unwrap_err()
                .message
                .contains("bucket")
        );
        assert!(
            RepoUrl::parse("b2:bucket")
                .unwrap_err()
                .message
                .contains("no path")
        );
        assert!(
            RepoUrl::parse("rest:ftp://x/")
                .unwrap_err()
                .message
                .contains("http or https")
        );
        assert!(RepoUrl::parse("").unwrap_err().message.contains("empty"));
    }
}
