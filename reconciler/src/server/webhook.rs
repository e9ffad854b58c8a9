//! Checking that a `POST /hooks/git` request comes from the git host: the shared secret, read
//! from a file, and the signature schemes of GitHub, Gitea and GitLab, all compared in constant
//! time.
//!
//! GitHub signs the body with HMAC-SHA256 in `X-Hub-Signature-256: sha256=<hex>`, Gitea in
//! `X-Gitea-Signature: <hex>`; GitLab sends the secret itself in `X-Gitlab-Token`. A signature
//! covers the exact body, so a recorded signature replayed with a different body fails. The
//! errors are safe to log and to answer with: they never contain the secret or the expected
//! signature.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// GitHub's signature header (Gitea sends it too).
pub const GITHUB_HEADER: &str = "X-Hub-Signature-256";
/// Gitea's signature header.
pub const GITEA_HEADER: &str = "X-Gitea-Signature";
/// GitLab's secret token header.
pub const GITLAB_HEADER: &str = "X-Gitlab-Token";

/// The longest secret file read; secrets are one short line.
const MAX_SECRET_BYTES: u64 = 4096;

/// The git host whose scheme a request passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `X-Hub-Signature-256` (GitHub, and Gitea or Forgejo, which send it as well).
    GitHub,
    /// `X-Gitea-Signature`.
    Gitea,
    /// `X-Gitlab-Token`.
    GitLab,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::GitHub => "github",
            Self::Gitea => "gitea",
            Self::GitLab => "gitlab",
        })
    }
}

/// A webhook request was refused. The message names the header, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// None of the known signature headers is present.
    #[error(
        "the webhook request carries no signature: expected one of {GITHUB_HEADER}, \
         {GITEA_HEADER} or {GITLAB_HEADER}; configure the webhook's secret on the git host"
    )]
    MissingSignature,
    /// A signature header is present but not in its scheme's form.
    #[error("the webhook request's {header} header is malformed: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    /// The signature does not match the body and the shared secret.
    #[error(
        "the webhook request's {header} does not match the request body and the shared \
         secret; check that the git host and the server use the same secret"
    )]
    WrongSignature { header: &'static str },
    /// GitLab's token, which is the secret itself and covers no body, is not the secret.
    #[error(
        "the webhook request's {GITLAB_HEADER} is not the shared secret; check that the git \
         host and the server use the same secret"
    )]
    WrongToken,
}

/// Reading the webhook secret file failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error("cannot read the webhook secret file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds no secret.
    #[error(
        "the webhook secret file {} is empty; write the secret configured on the git host \
         into it (e.g. `openssl rand -hex 32`)",
        path.display()
    )]
    Empty { path: PathBuf },
    /// The file is too long to be a secret.
    #[error(
        "the webhook secret file {} is longer than {MAX_SECRET_BYTES} bytes; it should hold \
         one line, the secret",
        path.display()
    )]
    TooLong { path: PathBuf },
    /// The path is a directory or something else that is not a regular file.
    #[error(
        "the webhook secret file {} is {kind}, not a file; point webhook-secret-file at a \
         file holding the secret",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The file holds more than one line.
    #[error(
        "the webhook secret file {} holds more than one line; it should hold one line, the \
         secret configured on the git host (one trailing newline is fine)",
        path.display()
    )]
    SeveralLines { path: PathBuf },
}

/// The shared webhook secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// A secret from its bytes; `None` when empty.
    #[must_use]
    pub fn new(secret: impl Into<Vec<u8>>) -> Option<Self> {
        let secret = secret.into();
        (!secret.is_empty()).then_some(Self(secret))
    }

    /// Reads the secret from `path`: the whole file, less one trailing newline (`\n` or
    /// `\r\n`); a file of several lines is refused. A file that group or others may read is
    /// accepted with a warning.
    pub fn from_file(path: &Path) -> Result<Self, SecretFileError> {
        use super::secret_file::Problem;

        let path_buf = || path.to_owned();
        let content = super::secret_file::read(path, MAX_SECRET_BYTES, "the webhook secret file")
            .map_err(|problem| match problem {
            Problem::Io(source) => SecretFileError::Read {
                path: path_buf(),
                source,
            },
            Problem::NotAFile(kind) => SecretFileError::NotAFile {
                path: path_buf(),
                kind,
            },
            Problem::TooLong => SecretFileError::TooLong { path: path_buf() },
            Problem::SeveralLines => SecretFileError::SeveralLines { path: path_buf() },
        })?;
        Self::new(content).ok_or_else(|| SecretFileError::Empty {
            path: path.to_owned(),
        })
    }
}

/// Checks a webhook request: `header` looks a header up by name (case-insensitively, as HTTP
/// header maps do), `body` is the raw request body.
///
/// The first present header of `X-Gitea-Signature`, `X-Hub-Signature-256` and
/// `X-Gitlab-Token` decides the scheme (Gitea sends GitHub's header as well, GitHub never
/// sends Gitea's); a request failing it is refused even when it carries another header too.
pub fn verify<'h>(
    header: impl Fn(&str) -> Option<&'h [u8]>,
    body: &[u8],
    secret: &WebhookSecret,
) -> Result<Provider, WebhookError> {
    if let Some(value) = header(GITEA_HEADER) {
        check_mac(GITEA_HEADER, value, body, secret)?;
        return Ok(Provider::Gitea);
    }
    if let Some(value) = header(GITHUB_HEADER) {
        let Some(hex) = value.strip_prefix(b"sha256=") else {
            return Err(WebhookError::Malformed {
                header: GITHUB_HEADER,
                reason: "it does not start with `sha256=`",
            });
        };
        check_mac(GITHUB_HEADER, hex, body, secret)?;
        return Ok(Provider::GitHub);
    }
    if let Some(token) = header(GITLAB_HEADER) {
        // Hashing both sides first makes the comparison take the same time whatever the
        // lengths, so the secret's length does not leak either.
        let given = Sha256::digest(token);
        let expected = Sha256::digest(&secret.0);
        if !bool::from(given.ct_eq(&expected)) {
            return Err(WebhookError::WrongToken);
        }
        return Ok(Provider::GitLab);
    }
    Err(WebhookError::MissingSignature)
}

/// Checks a hex HMAC-SHA256 of `body` in constant time.
fn check_mac(
    header: &'static str,
    hex: &[u8],
    body: &[u8],
    secret: &WebhookSecret,
) -> Result<(), WebhookError> {
    let hex = hex.trim_ascii();
    if hex.len() != 64 {
        return Err(WebhookError::Malformed {
            header,
            reason: "the signature is not 64 hex digits (an HMAC-SHA256)",
        });
    }
    let given = hex::decode(hex).map_err(|_| WebhookError::Malformed {
        header,
        reason: "the signature is not hexadecimal",
    })?;

    let mut mac = <Hmac<Sha256>>::new_from_slice(&secret.0).expect("HMAC takes keys of any size");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| WebhookError::WrongSignature { header })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"0123abcd"}"#;

    fn secret() -> WebhookSecret {
        WebhookSecret::new("It's a Secret to Everybody").expect("not empty")
    }

    /// HMAC-SHA256 in hex, computed independently of `check_mac`'s verify path.
    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(headers: &[(&str, &str)], body: &[u8]) -> Result<Provider, WebhookError> {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        };
        verify(lookup, body, &secret())
    }

    #[test]
    fn github_sample_from_its_documentation_verifies() {
        // GitHub's documented test vector for this secret and the body "Hello, World!".
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

        assert_eq!(
            check(&[("x-hub-signature-256", signature)], b"Hello, World!"),
            Ok(Provider::GitHub)
        );
    }

    #[test]
    fn each_provider_with_a_valid_signature_is_accepted() {
        let mac = sign("It's a Secret to Everybody", BODY);

        assert_eq!(
            check(&[(GITHUB_HEADER, &format!("sha256={mac}"))], BODY),
            Ok(Provider::GitHub)
        );
        assert_eq!(check(&[(GITEA_HEADER, &mac)], BODY), Ok(Provider::Gitea));
        assert_eq!(
            check(&[(GITEA_HEADER, &mac.to_uppercase())], BODY),
            Ok(Provider::Gitea)
        );
        assert_eq!(
            check(&[(GITLAB_HEADER, "It's a Secret to Everybody")], BODY),
            Ok(Provider::GitLab)
        );
    }

    #[test]
    fn a_signature_of_another_body_is_refused() {
        let replayed = sign("It's a Secret to Everybody", br#"{"ref":"refs/heads/old"}"#);

        assert_eq!(
            check(&[(GITHUB_HEADER, &format!("sha256={replayed}"))], BODY),
            Err(WebhookError::WrongSignature {
                header: GITHUB_HEADER
            })
        );
        assert_eq!(
            check(&[(GITEA_HEADER, &replayed)], BODY),
            Err(WebhookError::WrongSignature {
                header: GITEA_HEADER
            })
        );
    }

    #[test]
    fn a_signature_made_with_another_secret_is_refused() {
        let mac = sign("a guess", BODY);

        let github = check(&[(GITHUB_HEADER, &format!("sha256={mac}"))], BODY);
        let gitlab = check(&[(GITLAB_HEADER, "a guess")], BODY);
        let gitlab_prefix = check(&[(GITLAB_HEADER, "It's a Secret")], BODY);

        assert_eq!(
            github,
            Err(WebhookError::WrongSignature {
                header: GITHUB_HEADER
            })
        );
        assert_eq!(gitlab, Err(WebhookError::WrongToken));
        assert_eq!(gitlab, gitlab_prefix);
        // The token is the secret itself and covers no body: the message does not say it does.
        assert_eq!(
            gitlab.expect_err("refused").to_string(),
            "the webhook request's X-Gitlab-Token is not the shared secret; check that the git \
             host and the server use the same secret"
        );
        assert_eq!(
            github.expect_err("refused").to_string(),
            "the webhook request's X-Hub-Signature-256 does not match the request body and the \
             shared secret; check that the git host and the server use the same secret"
        );
    }

    #[test]
    fn a_request_without_signature_is_refused() {
        let err = check(&[("X-GitHub-Event", "push")], BODY).expect_err("no signature");

        assert_eq!(err, WebhookError::MissingSignature);
        assert_eq!(
            err.to_string(),
            "the webhook request carries no signature: expected one of X-Hub-Signature-256, \
             X-Gitea-Signature or X-Gitlab-Token; configure the webhook's secret on the git host"
        );
    }

    #[test]
    fn malformed_signatures_are_refused_with_the_reason() {
        let mac = sign("It's a Secret to Everybody", BODY);
        let malformed = |header, reason| Err(WebhookError::Malformed { header, reason });

        assert_eq!(
            check(&[(GITHUB_HEADER, &mac)], BODY),
            malformed(GITHUB_HEADER, "it does not start with `sha256=`")
        );
        assert_eq!(
            check(&[(GITHUB_HEADER, "sha1=abc")], BODY),
            malformed(GITHUB_HEADER, "it does not start with `sha256=`")
        );
        assert_eq!(
            check(&[(GITHUB_HEADER, "sha256=abc")], BODY),
            malformed(
                GITHUB_HEADER,
                "the signature is not 64 hex digits (an HMAC-SHA256)"
            )
        );
        assert_eq!(
            check(&[(GITEA_HEADER, &"zz".repeat(32))], BODY),
            malformed(GITEA_HEADER, "the signature is not hexadecimal")
        );
        assert_eq!(
            check(&[(GITEA_HEADER, "")], BODY),
            malformed(
                GITEA_HEADER,
                "the signature is not 64 hex digits (an HMAC-SHA256)"
            )
        );
    }

    #[test]
    fn a_gitea_request_with_both_headers_is_gitea_and_a_failing_one_is_not_rescued() {
        let mac = sign("It's a Secret to Everybody", BODY);
        let github = format!("sha256={mac}");

        let both = check(&[(GITHUB_HEADER, &github), (GITEA_HEADER, &mac)], BODY);
        let failing = check(
            &[(GITHUB_HEADER, &github), (GITEA_HEADER, &"0".repeat(64))],
            BODY,
        );

        assert_eq!(both, Ok(Provider::Gitea));
        assert_eq!(
            failing,
            Err(WebhookError::WrongSignature {
                header: GITEA_HEADER
            })
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_secret_or_the_expected_mac() {
        let mac = sign("It's a Secret to Everybody", BODY);
        let errors = [
            check(
                &[(GITHUB_HEADER, &format!("sha256={}", "0".repeat(64)))],
                BODY,
            ),
            check(&[(GITEA_HEADER, "0")], BODY),
            check(&[(GITLAB_HEADER, "x")], BODY),
        ];

        for err in errors {
            let err = err.expect_err("refused");
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(&mac), "{text}");
                assert!(!text.contains("Secret to Everybody"), "{text}");
            }
        }
        assert_eq!(format!("{:?}", secret()), "WebhookSecret(..)");
    }

    #[test]
    fn the_secret_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("plain");
        let crlf = dir.path().join("crlf");
        std::fs::write(&plain, "It's a Secret to Everybody\n").expect("write");
        std::fs::write(&crlf, "It's a Secret to Everybody\r\n").expect("write");
        let mac = sign("It's a Secret to Everybody", BODY);
        let accepts = |path: &Path| {
            let secret = WebhookSecret::from_file(path).expect("a secret");
            verify(
                |name| (name == GITEA_HEADER).then_some(mac.as_bytes()),
                BODY,
                &secret,
            )
            .is_ok()
        };

        assert!(accepts(&plain));
        assert!(accepts(&crlf));
    }

    #[test]
    fn a_secret_file_of_two_lines_or_a_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let two = dir.path().join("two");
        let blank = dir.path().join("blank-second-line");
        std::fs::write(&two, "a\nb\n").expect("write");
        std::fs::write(&blank, "It's a Secret to Everybody\n\n").expect("write");

        for path in [&two, &blank] {
            let err = WebhookSecret::from_file(path).expect_err("two lines");
            assert_eq!(
                err.to_string(),
                format!(
                    "the webhook secret file {} holds more than one line; it should hold one \
                     line, the secret configured on the git host (one trailing newline is fine)",
                    path.display()
                )
            );
        }
        let err = WebhookSecret::from_file(dir.path()).expect_err("a directory");
        assert_eq!(
            err.to_string(),
            format!(
                "the webhook secret file {} is a directory, not a file; point \
                 webhook-secret-file at a file holding the secret",
                dir.path().display()
            )
        );
    }

    #[test]
    fn an_empty_or_missing_or_huge_secret_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty");
        let newline = dir.path().join("newline");
        let huge = dir.path().join("huge");
        let missing = dir.path().join("missing");
        std::fs::write(&empty, "").expect("write");
        std::fs::write(&newline, "\n").expect("write");
        std::fs::write(&huge, "x".repeat(5000)).expect("write");

        for path in [&empty, &newline] {
            let err = WebhookSecret::from_file(path).expect_err("empty");
            assert_eq!(
                err.to_string(),
                format!(
                    "the webhook secret file {} is empty; write the secret configured on the \
                     git host into it (e.g. `openssl rand -hex 32`)",
                    path.display()
                )
            );
        }
        let err = WebhookSecret::from_file(&huge).expect_err("too long");
        assert!(matches!(err, SecretFileError::TooLong { .. }), "{err:?}");
        let err = WebhookSecret::from_file(&missing).expect_err("missing");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read the webhook secret file {}: ",
                missing.display()
            )),
            "{err}"
        );
        assert!(WebhookSecret::new("").is_none());
    }
}
