//! The agent's ed25519 key: creating it, reading it back, and the public line an operator
//! commits to the host's file in the config repository.
//!
//! The key file is a small text file, readable by its owner only (mode 0600):
//!
//! ```text
//! restic-manager-agent-key-v1
//! <base64 of the 32-byte ed25519 seed>
//! ```
//!
//! The first line names the format so a wrong file is recognised as such; the second is the
//! secret itself. The public key is derived from it, never stored. A file that other users can
//! read or change is refused: a copied key lets anyone act as this host towards the server.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;

/// The first line of every key file.
pub const KEY_FILE_HEADER: &str = "restic-manager-agent-key-v1";

/// Default place of the key file.
pub const DEFAULT_KEY_FILE: &str = "/etc/restic-manager/agent.key";

/// Why a key could not be created or read. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} already exists; refusing to overwrite an agent key. To keep this host's \
         identity, use it as it is (`restic-manager-agent pubkey --key {path}` prints its \
         public line); to replace it, remove the file first and commit the new agent-key"
    )]
    Exists { path: PathBuf },
    #[error(
        "{path} is a directory; --key takes the path of the key file to create, such as \
         {path}/agent.key"
    )]
    ExistsAsDirectory { path: PathBuf },
    #[error(
        "the agent key {path} is a directory, not a key file; pass the path of the key file \
         (`keygen` writes {DEFAULT_KEY_FILE} unless told otherwise)"
    )]
    IsDirectory { path: PathBuf },
    #[error("cannot create the directory {path} for the agent key: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the agent key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read the agent key {path}: {source}; create one with \
         `restic-manager-agent keygen --key {path}`"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the agent key {path} can be read or changed by users other than its owner (mode \
         {mode:04o}); run `chmod 600 {path}`, and if others may have copied it, make a new key"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path} is not a restic-manager agent key: {reason}. A key file is the line \
         `{KEY_FILE_HEADER}` followed by the base64 of a 32-byte seed; create one with \
         `restic-manager-agent keygen --key FILE`"
    )]
    Malformed { path: PathBuf, reason: String },
}

/// Creates a new key at `path` (mode 0600, its directory 0700 when missing) and returns it.
/// An existing file is never overwritten.
pub fn generate(path: &Path) -> Result<SigningKey, KeyError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| KeyError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
    }

    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut seed);
    let key = SigningKey::from_bytes(&seed);
    let text = format!("{KEY_FILE_HEADER}\n{}\n", BASE64.encode(seed));

    // `create_new` makes the existence check and the creation one step, so a key that appears
    // in between is not overwritten either.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists if path.is_dir() => KeyError::ExistsAsDirectory {
                path: path.to_owned(),
            },
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => KeyError::Write {
                path: path.to_owned(),
                source,
            },
        })?;
    let write = |file: &mut std::fs::File| -> std::io::Result<()> {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    if let Err(source) = write(&mut file) {
        // A half-written key must not stay behind looking like a key.
        let _ = std::fs::remove_file(path);
        return Err(KeyError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(key)
}

/// Reads the key at `path`, refusing a file that others can read or change.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.is_dir() {
        return Err(KeyError::IsDirectory {
            path: path.to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::InvalidData {
            KeyError::Malformed {
                path: path.to_owned(),
                reason: "it is not text".to_owned(),
            }
        } else {
            read_error(source)
        }
    })?;
    parse(&text).map_err(|reason| KeyError::Malformed {
        path: path.to_owned(),
        reason,
    })
}

/// The line an operator commits to `hosts/<host>.toml` for this key.
#[must_use]
pub fn agent_key_line(key: &SigningKey) -> String {
    format!(
        "agent-key = \"{}\"",
        protocol::public_key_text(&key.verifying_key())
    )
}

/// Parses the text of a key file; the error says what is wrong without quoting the secret.
fn parse(text: &str) -> Result<SigningKey, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(KEY_FILE_HEADER) => {}
        Some(_) => return Err(format!("its first line is not `{KEY_FILE_HEADER}`")),
        None => return Err("it is empty".to_owned()),
    }
    let Some(encoded) = lines.next() else {
        return Err("the seed line after the header is missing".to_owned());
    };
    if lines.any(|line| !line.trim().is_empty()) {
        return Err("it has lines after the seed".to_owned());
    }
    let bytes = BASE64
        .decode(encoded.trim())
        .map_err(|_| "the seed line is not base64".to_owned())?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("the seed is {} bytes, not 32", bytes.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("agent.key");
        let key = generate(&path).unwrap();
        assert_eq!(load(&path).unwrap().to_bytes(), key.to_bytes());
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn malformed_key_texts_say_what_is_wrong() {
        let seed = BASE64.encode([1u8; 32]);
        let cases = [
            ("", "it is empty"),
            ("ssh-ed25519 AAAA\n", "first line is not"),
            (
                &format!("{KEY_FILE_HEADER}\n"),
                "seed line after the header is missing",
            ),
            (&format!("{KEY_FILE_HEADER}\n!!!\n"), "not base64"),
            (&format!("{KEY_FILE_HEADER}\nAAAA\n"), "3 bytes, not 32"),
            (
                &format!("{KEY_FILE_HEADER}\n{seed}\nmore\n"),
                "lines after the seed",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!(parse(&format!("{KEY_FILE_HEADER}\n{seed}\n\n")).is_ok());
    }

    #[test]
    fn the_public_line_is_the_protocol_text_form() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let line = agent_key_line(&key);
        let text = line
            .strip_prefix("agent-key = \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap();
        assert_eq!(
            protocol::parse_public_key(text).unwrap(),
            key.verifying_key().to_bytes()
        );
    }
}
