//! Who may read the status view, the JSON API and `/metrics`: client addresses in the allowed
//! networks, and, when a token file is set, only requests carrying its token as
//! `Authorization: Bearer <token>`, compared in constant time.
//!
//! The client address is the TCP peer's. Behind a reverse proxy that is the proxy, so `allow`
//! should then name the proxy and the proxy should do the access control;
//! `X-Forwarded-For` is never read, since any client can send it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::error::WebError;
use crate::server::settings::ViewSettings;

/// The longest token file read; a token is one short line.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Reading the view's token file failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the view token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the view token file {} is empty; write a token into it (e.g. `openssl rand -hex 32`)",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error(
        "the view token file {} is longer than {MAX_TOKEN_BYTES} bytes; it should hold one \
         line, the token",
        path.display()
    )]
    TooLong { path: PathBuf },
    #[error(
        "the view token file {} holds more than one line or characters that cannot appear in \
         an HTTP header; it should hold one line of printable characters, the token",
        path.display()
    )]
    NotOneLine { path: PathBuf },
    #[error(
        "the view token file {} is {kind}, not a file; point token-file at a file holding the \
         token",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
}

/// The view's access rules, ready to check requests.
pub struct ViewAccess {
    allow: Vec<ipnet::IpNet>,
    /// SHA-256 of the token: comparing digests takes the same time whatever the lengths.
    token: Option<[u8; 32]>,
}

impl std::fmt::Debug for ViewAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewAccess")
            .field("allow", &self.allow)
            .field("token", &self.token.map(|_| ".."))
            .finish()
    }
}

impl ViewAccess {
    /// The rules of the settings, reading the token file when one is set.
    pub fn load(settings: &ViewSettings) -> Result<Self, TokenFileError> {
        let token = settings.token_file.as_deref().map(read_token).transpose()?;
        Ok(Self::new(settings.allow.clone(), token.as_deref()))
    }

    /// Rules from their parts; `token` is the token itself.
    #[must_use]
    pub fn new(allow: Vec<ipnet::IpNet>, token: Option<&[u8]>) -> Self {
        Self {
            allow,
            token: token.map(|t| Sha256::digest(t).into()),
        }
    }

    /// Whether a request from `remote` with this `Authorization` header may read the view.
    pub fn check(
        &self,
        remote: Option<SocketAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<(), WebError> {
        let Some(remote) = remote else {
            return Err(WebError::Forbidden {
                client: "an unknown address".to_owned(),
            });
        };
        // An IPv4 client of a server listening on `[::]` shows up as ::ffff:a.b.c.d.
        let ip = remote.ip().to_canonical();
        if !self.allows(ip) {
            return Err(WebError::Forbidden {
                client: ip.to_string(),
            });
        }

        let Some(expected) = &self.token else {
            return Ok(());
        };
        let Some(header) = authorization else {
            return Err(WebError::Unauthorized {
                reason: "this request carries no Authorization header",
            });
        };
        let Some(given) = bearer(header) else {
            return Err(WebError::Unauthorized {
                reason: "the Authorization header is not of the form `Bearer <token>`",
            });
        };
        let given: [u8; 32] = Sha256::digest(given).into();
        if !bool::from(given.ct_eq(expected)) {
            return Err(WebError::Unauthorized {
                reason: "the bearer token is not the one in the server's token file",
            });
        }
        Ok(())
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's case does not matter.
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Reads the token: the whole file less one trailing newline. A file that group or others
/// may read is accepted with a warning.
fn read_token(path: &Path) -> Result<Vec<u8>, TokenFileError> {
    use crate::server::secret_file::Problem;

    let path_buf = || path.to_owned();
    let content = crate::server::secret_file::read(path, MAX_TOKEN_BYTES, "the view token file")
        .map_err(|problem| match problem {
            Problem::Io(source) => TokenFileError::Read {
                path: path_buf(),
                source,
            },
            Problem::NotAFile(kind) => TokenFileError::NotAFile {
                path: path_buf(),
                kind,
            },
            Problem::TooLong => TokenFileError::TooLong { path: path_buf() },
            Problem::SeveralLines => TokenFileError::NotOneLine { path: path_buf() },
        })?;
    let token = content.trim_ascii();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    if token.iter().any(|b| !b.is_ascii_graphic() && *b != b' ') {
        return Err(TokenFileError::NotOneLine {
            path: path.to_owned(),
        });
    }
    Ok(token.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn addr(text: &str) -> Option<SocketAddr> {
        text.parse().ok()
    }

    #[test]
    fn only_allowed_networks_may_read_including_mapped_ipv4() {
        let access = ViewAccess::new(nets(&["127.0.0.0/8", "::1/128", "192.0.2.0/24"]), None);
        assert!(access.check(addr("127.0.0.1:5000"), None).is_ok());
        assert!(access.check(addr("[::1]:5000"), None).is_ok());
        assert!(access.check(addr("192.0.2.200:1"), None).is_ok());
        assert!(access.check(addr("[::ffff:127.0.0.1]:1"), None).is_ok());

        let err = access.check(addr("198.51.100.4:1"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the status view does not answer 198.51.100.4: the address is not in the \
             server's view allow list (setting `allow` in [view], --view-allow or \
             RM_VIEW_ALLOW)"
        );
        assert!(access.check(None, None).is_err());
        assert!(
            ViewAccess::new(Vec::new(), None)
                .check(addr("127.0.0.1:1"), None)
                .is_err()
        );
    }

    #[test]
    fn a_token_must_come_as_a_bearer_header_and_match() {
        let access = ViewAccess::new(nets(&["127.0.0.0/8"]), Some(b"s3cret-token"));
        let from = addr("127.0.0.1:1");
        assert!(access.check(from, Some(b"Bearer s3cret-token")).is_ok());
        assert!(access.check(from, Some(b"bearer s3cret-token")).is_ok());
        for (header, reason) in [
            (None, "no Authorization header"),
            (Some(&b"Basic czNjcmV0"[..]), "not of the form"),
            (Some(&b"Bearer "[..]), "not of the form"),
            (Some(&b"Bearer s3cret-tokeN"[..]), "not the one"),
            (Some(&b"Bearer s3cret-token-and-more"[..]), "not the one"),
        ] {
            let err = access.check(from, header).unwrap_err().to_string();
            assert!(err.contains(reason), "{header:?}: {err}");
        }
        // The address is checked first: a token does not open the view to other networks.
        let err = access
            .check(addr("203.0.113.9:1"), Some(b"Bearer s3cret-token"))
            .unwrap_err();
        assert!(matches!(err, WebError::Forbidden { .. }), "{err}");
    }

    #[test]
    fn token_files_are_read_as_one_line_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        assert_eq!(read_token(&file("ok", b"abc123\n")).unwrap(), b"abc123");
        assert_eq!(read_token(&file("crlf", b"abc123\r\n")).unwrap(), b"abc123");

        let empty = file("empty", b"\n");
        let err = read_token(&empty).unwrap_err().to_string();
        assert!(
            err.contains("is empty") && err.contains(&empty.display().to_string()),
            "{err}"
        );
        let two = file("two", b"abc\ndef\n");
        assert!(matches!(
            read_token(&two),
            Err(TokenFileError::NotOneLine { .. })
        ));
        let long = file("long", &[b'a'; 5000]);
        assert!(matches!(
            read_token(&long),
            Err(TokenFileError::TooLong { .. })
        ));
        let missing = dir.path().join("missing");
        let err = read_token(&missing).unwrap_err().to_string();
        assert!(err.starts_with("cannot read the view token file"), "{err}");
        let err = read_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory, not a file"), "{err}");
    }
}
