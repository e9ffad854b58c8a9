//! Sealed values: the server's age identity, sealing secrets for it, and opening them.
//!
//! Secrets are committed only as age ASCII armor addressed to the server's X25519 recipient,
//! so `restic-manager seal` and `age -r RECIPIENT -a` produce interchangeable values. The
//! identity that opens them lives in a file only the server's user may read (mode 0600). An
//! opened secret is held in a [`SecretSlice`], which zeroes its memory when dropped; nothing in
//! this module logs, prints or puts a secret into an error message.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
pub use age::secrecy::{ExposeSecret, SecretSlice};
pub use age::x25519::{Identity, Recipient};

use crate::config::Loaded;
use crate::config::model::Sealed;

/// The first line of age ASCII armor.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// The last line of age ASCII armor.
pub const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";

/// Where `keygen` writes the identity when no path is given.
pub const DEFAULT_IDENTITY_FILE: &str = "./data/identity.txt";

/// The environment variable that names the identity file when `--identity` is not given.
pub const IDENTITY_ENV: &str = "RM_IDENTITY";

/// How an X25519 secret key line starts in an identity file.
const SECRET_KEY_PREFIX: &str = "AGE-SECRET-KEY-1";

/// The largest identity file read. A real one is about 190 bytes; anything far bigger is the
/// wrong file, and reading it whole would only waste memory.
const MAX_IDENTITY_BYTES: u64 = 64 * 1024;

/// What can go wrong with identities, recipients and sealed values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read identity file {}: {source}", path.display())]
    ReadIdentity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "identity file {} is larger than {MAX_IDENTITY_BYTES} bytes; it is not an age identity",
        path.display()
    )]
    IdentityTooLarge { path: PathBuf },
    #[error("identity file {} is not UTF-8 text", path.display())]
    IdentityNotText { path: PathBuf },
    #[error(
        "{} is {kind}, not an identity file; pass the file `restic-manager keygen` wrote \
         (e.g. {DEFAULT_IDENTITY_FILE})",
        path.display()
    )]
    IdentityNotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "identity file {} holds no age secret key: expected a line starting with \
         `{SECRET_KEY_PREFIX}` as written by `restic-manager keygen` or `age-keygen`",
        path.display()
    )]
    NoIdentity { path: PathBuf },
    #[error(
        "identity file {}: line {line} is not an age X25519 secret key ({reason})",
        path.display()
    )]
    BadIdentity {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error(
        "identity file {} holds {count} secret keys; restic-manager uses exactly one, so keep \
         one key per file",
        path.display()
    )]
    SeveralIdentities { path: PathBuf, count: usize },
    #[error(
        "{} already exists; refusing to overwrite an identity, since values sealed to it could \
         no longer be opened: move it away first, or pass another path with --identity",
        path.display()
    )]
    IdentityExists { path: PathBuf },
    #[error("cannot write identity file {}: {source}", path.display())]
    WriteIdentity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{recipient}` is not an age X25519 recipient ({reason}): expected `age1...` as printed \
         by `restic-manager keygen` or `age-keygen -y`"
    )]
    BadRecipient {
        recipient: String,
        reason: &'static str,
    },
    /// Carries no text on purpose: the value is a secret key and must not be echoed.
    #[error(
        "this is an age secret key, not a recipient; pass the public key (age1…) printed by \
         `restic-manager keygen` — and treat this secret key as exposed if it was typed where \
         others can see it"
    )]
    SecretKeyAsRecipient,
    #[error("there is no recipient to seal for")]
    NoRecipients,
    #[error("cannot seal the secret: {0}")]
    Seal(String),
    #[error("it was sealed to another recipient, not to this identity's {recipient}")]
    WrongRecipient { recipient: String },
    #[error("the sealed value is damaged ({reason})")]
    Damaged { reason: String },
}

/// The identity file named by the `--identity` flag, or else by `RM_IDENTITY`.
///
/// An empty `RM_IDENTITY` counts as unset: CI systems set a variable to the empty string when
/// the secret behind it is missing, and that should not read as a path.
#[must_use]
pub fn identity_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_owned).or_else(|| {
        std::env::var_os(IDENTITY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Reads the server's identity: one `AGE-SECRET-KEY-1...` line, with `#` comment lines and
/// blank lines allowed around it (the format `age-keygen` writes).
///
/// A file that other users may read is accepted with a warning: git cannot record mode 0600,
/// so a checked-out demo identity is always wider, but a real one should never be.
pub fn load_identity(path: &Path) -> Result<Identity, SecretsError> {
    let read_error = |source| SecretsError::ReadIdentity {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    // A directory opens fine on Unix and only fails at the first read; say what it is, and
    // say nothing about its mode.
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(SecretsError::IdentityNotAFile {
            path: path.to_owned(),
            kind,
        });
    }
    warn_if_shared(path, &meta);

    // Read into a buffer sized up front so the secret is never copied by a reallocation, and
    // keep it in a zeroing wrapper from then on.
    let mut bytes = Vec::with_capacity(usize::try_from(MAX_IDENTITY_BYTES).unwrap_or(0) + 1);
    file.take(MAX_IDENTITY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_IDENTITY_BYTES {
        return Err(SecretsError::IdentityTooLarge {
            path: path.to_owned(),
        });
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => SecretString::from(text),
        Err(e) => {
            drop(SecretSlice::from(e.into_bytes()));
            return Err(SecretsError::IdentityNotText {
                path: path.to_owned(),
            });
        }
    };

    parse_identity(path, text.expose_secret())
}

/// Parses the text of an identity file; `path` only names it in errors.
fn parse_identity(path: &Path, text: &str) -> Result<Identity, SecretsError> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason| SecretsError::BadIdentity {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        if !line.starts_with(SECRET_KEY_PREFIX) {
            return Err(bad(
                "only X25519 keys starting with `AGE-SECRET-KEY-1` are supported",
            ));
        }
        found.push(line.parse::<Identity>().map_err(bad)?);
    }
    match found.len() {
        0 => Err(SecretsError::NoIdentity {
            path: path.to_owned(),
        }),
        1 => Ok(found.remove(0)),
        count => Err(SecretsError::SeveralIdentities {
            path: path.to_owned(),
            count,
        }),
    }
}

/// Warns when group or others have any access to the identity file.
fn warn_if_shared(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;

    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "the identity file is accessible to other users: anyone who can read it can open \
             every sealed secret; restrict it with `chmod 600`"
        );
    }
}

/// Creates a new identity at `path` and returns its recipient.
///
/// The file is created with mode 0600 in one step (never a moment with wider permissions) and
/// an existing file is never replaced. A missing parent directory is created with mode 0700.
pub fn write_identity(path: &Path) -> Result<Recipient, SecretsError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    let write_error = |source| SecretsError::WriteIdentity {
        path: path.to_owned(),
        source,
    };
    let identity = Identity::generate();
    let recipient = identity.to_public();
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let text = SecretString::from(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    ));

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(write_error)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                SecretsError::IdentityExists {
                    path: path.to_owned(),
                }
            } else {
                write_error(source)
            }
        })?;

    // A half-written identity would be worse than none: remove it on failure.
    let written = file
        .write_all(text.expose_secret().as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(write_error(source));
    }
    Ok(recipient)
}

/// Parses a recipient as given on the command line or in a file (`age1...`).
///
/// A secret key given by mistake is refused without repeating it, unlike other bad values.
pub fn parse_recipient(text: &str) -> Result<Recipient, SecretsError> {
    // Any secret key type, in any case (Bech32 accepts all-lowercase too).
    const ANY_SECRET_KEY: &str = "AGE-SECRET-KEY-";

    let trimmed = text.trim();
    let looks_secret = trimmed
        .get(..ANY_SECRET_KEY.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(ANY_SECRET_KEY));
    if looks_secret {
        return Err(SecretsError::SecretKeyAsRecipient);
    }
    trimmed
        .parse::<Recipient>()
        .map_err(|reason| SecretsError::BadRecipient {
            recipient: trimmed.to_owned(),
            reason,
        })
}

/// Seals `plaintext` for every recipient and returns the age ASCII armor, ending in a newline.
pub fn seal(recipients: &[Recipient], plaintext: &[u8]) -> Result<String, SecretsError> {
    use age::armor::{ArmoredWriter, Format};

    if recipients.is_empty() {
        return Err(SecretsError::NoRecipients);
    }
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| SecretsError::Seal(lowercase_first(&e.to_string())))?;

    // Writing into a Vec cannot fail; the errors are mapped only to avoid a panic path.
    let io = |e: std::io::Error| SecretsError::Seal(e.to_string());
    let mut armor = Vec::new();
    let mut writer = encryptor
        .wrap_output(ArmoredWriter::wrap_output(&mut armor, Format::AsciiArmor).map_err(io)?)
        .map_err(io)?;
    writer.write_all(plaintext).map_err(io)?;
    writer
        .finish()
        .and_then(ArmoredWriter::finish)
        .map_err(io)?;

    String::from_utf8(armor).map_err(|_| SecretsError::Seal("armor is not text".to_owned()))
}

/// Opens a sealed value with the server's identity.
pub fn open(identity: &Identity, sealed: &Sealed) -> Result<SecretSlice<u8>, SecretsError> {
    open_armor(identity, &sealed.0)
}

/// Opens armor that [`check_sealed`] has normalised.
fn open_armor(identity: &Identity, armor: &str) -> Result<SecretSlice<u8>, SecretsError> {
    match age::decrypt(identity, armor.as_bytes()) {
        Ok(plaintext) => Ok(SecretSlice::from(plaintext)),
        Err(age::DecryptError::NoMatchingKeys) => Err(SecretsError::WrongRecipient {
            recipient: identity.to_public().to_string(),
        }),
        Err(e) => Err(SecretsError::Damaged {
            reason: lowercase_first(&e.to_string()),
        }),
    }
}

/// age's messages start with a capital; ours are lowercase throughout.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

/// Normalises armor as written in TOML (indented multi-line strings are common) and checks
/// that all of it is well-formed: the BEGIN line, a base64 body in age's 64-column lines, the
/// END line with nothing after it, and an age header at the start of the body. Does not need
/// the identity, so it cannot tell whether the encrypted payload itself is intact.
///
/// The error says why, in lowercase, to be shown in parentheses after what was checked.
pub fn check_sealed(text: &str) -> Result<Sealed, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let normalized = lines.join("\n") + "\n";
    if lines.first() != Some(&ARMOR_BEGIN) {
        return Err(format!("it does not start with `{ARMOR_BEGIN}`"));
    }

    // Checked before decoding: age reports a missing END line as a badly wrapped line, which
    // would send the reader looking in the wrong place.
    match lines.iter().position(|l| *l == ARMOR_END) {
        None => return Err(format!("the END line `{ARMOR_END}` is missing")),
        Some(end) if end + 1 < lines.len() => {
            return Err("there is text after the END line".to_owned());
        }
        Some(_) => {}
    }

    // Decode the whole body, not only the header, so that a damaged line anywhere is found.
    let mut body = Vec::new();
    age::armor::ArmoredReader::new(normalized.as_bytes())
        .read_to_end(&mut body)
        .map_err(|e| armor_error(&e))?;
    if body.is_empty() {
        return Err("the armor body is empty".to_owned());
    }
    age::Decryptor::new(body.as_slice()).map_err(|e| {
        format!(
            "the age header is damaged: {}",
            lowercase_first(&e.to_string())
        )
    })?;
    Ok(Sealed(normalized))
}

/// Why age's armor reader refused normalised armor, in our words.
fn armor_error(error: &std::io::Error) -> String {
    use age::armor::ArmoredReadError as E;

    match error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::Base64(_) | E::InvalidUtf8) => "the armor body is not valid base64".to_owned(),
        Some(E::MissingPadding | E::NotWrappedAt64Chars | E::ShortLineInMiddle) => {
            "the armor body is not in the 64-character lines age writes: a character or a \
             line was probably lost, added or joined while copying"
                .to_owned()
        }
        Some(E::LineContainsCr) => "a line of the armor contains a carriage return".to_owned(),
        Some(E::TrailingGarbage) => "there is text after the END line".to_owned(),
        _ => lowercase_first(&error.to_string()),
    }
}

/// Whitespace in a secret that is probably not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whitespace {
    /// Spaces, tabs or line breaks before the secret.
    Leading,
    /// A final `\n` or `\r\n`, as `echo` and editors add.
    TrailingNewline,
    /// Spaces or tabs after the secret.
    Trailing,
    /// A line break inside the secret.
    LineBreak,
}

impl Whitespace {
    /// Finds every kind of suspicious whitespace in `secret`.
    #[must_use]
    pub fn find(secret: &str) -> Vec<Self> {
        let mut found = Vec::new();
        if secret.starts_with(char::is_whitespace) {
            found.push(Self::Leading);
        }
        if secret.ends_with('\n') || secret.ends_with('\r') {
            found.push(Self::TrailingNewline);
        } else if secret.ends_with(char::is_whitespace) {
            found.push(Self::Trailing);
        }
        if secret.trim().contains(['\n', '\r']) {
            found.push(Self::LineBreak);
        }
        found
    }

    /// How the secret looks, as the end of "the secret ...".
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::Leading => "starts with whitespace",
            Self::TrailingNewline => "ends with a newline",
            Self::Trailing => "ends with whitespace",
            Self::LineBreak => "contains a line break",
        }
    }

    /// What to leave out when sealing again.
    fn unwanted(self) -> &'static str {
        match self {
            Self::TrailingNewline => "the newline",
            Self::Leading | Self::Trailing => "the whitespace",
            Self::LineBreak => "the line break",
        }
    }
}

/// Whether `secret` holds a NUL byte. No environment variable can carry one (the C strings of
/// `execve` end at it), so such a secret can never reach restic whole.
#[must_use]
pub fn contains_nul(secret: &str) -> bool {
    secret.contains('\0')
}

/// Whether `secret` holds a control character (ESC, BEL, DEL, a tab inside, …) other than NUL
/// and the whitespace [`Whitespace::find`] reports: surrounding whitespace and line breaks.
/// Such a character is almost never part of a password; a terminal escape sequence copied
/// with it is the usual cause.
#[must_use]
pub fn contains_control(secret: &str) -> bool {
    secret
        .trim()
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\0' | '\n' | '\r'))
}

/// The warning for suspicious whitespace in the secret at `what` (`password`, `env NAME`, …).
fn whitespace_warning(what: &str, found: Whitespace) -> String {
    let looks = found.describe();
    let unwanted = found.unwanted();
    match (what, found) {
        (_, Whitespace::LineBreak) => format!(
            "{what}: the secret {looks}, which a password or credential almost never has; check \
             that only the secret was sealed and re-seal it without {unwanted}"
        ),
        ("password", _) => format!(
            "{what}: the secret {looks}; restic uses an environment value as-is but strips it \
             from a password file, so the same secret behaves differently per delivery method \
             — re-seal it without {unwanted}"
        ),
        _ => format!(
            "{what}: the secret {looks}, which is passed on as part of the value and will not \
             match the real credential — re-seal it without {unwanted}"
        ),
    }
}

/// Opens every sealed value of a load with the identity in `identity_file`, adding an error
/// for each that does not open and a warning for each whose secret has surrounding
/// whitespace. A load that gains an error loses its config, as if the error had been found
/// while loading.
///
/// Fails only when the identity itself cannot be read.
pub fn check_openable(identity_file: &Path, loaded: &mut Loaded) -> anyhow::Result<()> {
    let identity = load_identity(identity_file)?;
    check_openable_with(&identity, identity_file, loaded);
    Ok(())
}

/// [`check_openable`] with an identity already loaded (the server's, read once at start);
/// `identity_file` only names it in the errors.
pub fn check_openable_with(identity: &Identity, identity_file: &Path, loaded: &mut Loaded) {
    let shown = identity_file.display();
    let recipient = identity.to_public();
    let d = &mut loaded.diagnostics;

    for sealed in &loaded.sealed {
        let (file, span, what) = (
            sealed.file.as_str(),
            Some(sealed.span.clone()),
            &sealed.what,
        );
        let secret = match open_armor(identity, &sealed.armor) {
            Ok(secret) => secret,
            Err(e) => {
                let help = match e {
                    SecretsError::WrongRecipient { .. } => format!(
                        "was it sealed for another server or an old identity? re-seal it with \
                         `restic-manager seal --recipient {recipient}`"
                    ),
                    _ => "paste the whole output of `restic-manager seal` again, from the BEGIN \
                          line to the END line; if it was edited, re-seal the secret"
                        .to_owned(),
                };
                d.error_help(
                    file,
                    span,
                    format!("{what}: cannot be opened with identity {shown}: {e}"),
                    help,
                );
                continue;
            }
        };

        let Ok(text) = std::str::from_utf8(secret.expose_secret()) else {
            d.error_help(
                file,
                span,
                format!("{what}: the sealed secret is not UTF-8 text"),
                "restic and its backends take text: re-seal the secret from UTF-8 text with \
                 `restic-manager seal`",
            );
            continue;
        };
        if text.is_empty() {
            d.error_help(
                file,
                span,
                format!("{what}: the sealed secret is empty"),
                "seal the real secret with `restic-manager seal`",
            );
            continue;
        }
        if contains_nul(text) {
            d.error_help(
                file,
                span,
                format!(
                    "{what}: the secret contains a NUL byte, which cannot be passed to restic \
                     through the environment"
                ),
                "check that only the secret was sealed, and re-seal it without the NUL byte \
                 with `restic-manager seal`, which refuses one",
            );
            continue;
        }

        let help = format!(
            "pipe in only the secret, e.g. `printf '%s' \"$SECRET\" | restic-manager seal \
             --recipient {recipient}`; seal drops the one newline `echo` adds by itself"
        );
        if contains_control(text) {
            d.warning_help(
                file,
                span.clone(),
                format!(
                    "{what}: the secret contains a control character, which a password or \
                     credential almost never has; check that only the secret was sealed and \
                     re-seal it without the control character"
                ),
                help.clone(),
            );
        }
        for found in Whitespace::find(text) {
            d.warning_help(
                file,
                span.clone(),
                whitespace_warning(what, found),
                help.clone(),
            );
        }
    }

    if loaded.diagnostics.has_errors() {
        loaded.config = None;
    }
    loaded.diagnostics.sort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::SealedRef;
    use crate::config::{Config, Severity};

    fn loaded_with(file: &str, text: &str, sealed: Vec<SealedRef>) -> Loaded {
        let mut loaded = Loaded {
            config: Some(Config::default()),
            sealed,
            ..Loaded::default()
        };
        loaded
            .diagnostics
            .add_source(file, std::sync::Arc::from(text));
        loaded
    }

    fn sealed_ref(file: &str, span: std::ops::Range<usize>, what: &str, armor: &str) -> SealedRef {
        SealedRef {
            file: file.to_owned(),
            span,
            what: what.to_owned(),
            armor: check_sealed(armor).expect("armor").0,
        }
    }

    /// The error of a result whose value has no Debug (identities do not, on purpose).
    fn failure<T>(result: Result<T, SecretsError>) -> SecretsError {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    fn identity_file(dir: &Path, identity: &Identity) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;

        let path = dir.join("identity.txt");
        std::fs::write(
            &path,
            format!(
                "# DEMO ONLY\n# public key: {}\n\n{}\n",
                identity.to_public(),
                identity.to_string().expose_secret()
            ),
        )
        .expect("write identity");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    #[test]
    fn seal_then_open_returns_the_same_bytes() {
        let identity = Identity::generate();
        let secret = "pa\"ss'w$rd `x` \\ # ünïcödé".as_bytes();
        let armor = seal(&[identity.to_public()], secret).expect("seal");
        assert!(armor.starts_with(ARMOR_BEGIN), "{armor}");
        assert!(
            armor.ends_with("-----END AGE ENCRYPTED FILE-----\n"),
            "{armor}"
        );

        let sealed = check_sealed(&armor).expect("well-formed");
        let opened = open(&identity, &sealed).expect("opens");
        assert_eq!(opened.expose_secret(), secret);
    }

    #[test]
    fn indented_armor_opens_after_normalising() {
        let identity = Identity::generate();
        let armor = seal(&[identity.to_public()], b"secret").expect("seal");
        let indented: String = armor.lines().flat_map(|l| ["    ", l, "\n"]).collect();
        let sealed = check_sealed(&indented).expect("normalised");
        assert_eq!(
            open(&identity, &sealed).expect("opens").expose_secret(),
            b"secret"
        );
    }

    /// Armor for a throwaway recipient, split into its lines.
    fn armor_lines() -> Vec<String> {
        let armor = seal(&[Identity::generate().to_public()], b"secret").expect("seal");
        armor.lines().map(str::to_owned).collect()
    }

    #[test]
    fn armor_without_its_end_line_is_refused() {
        let mut lines = armor_lines();
        lines.pop();
        assert_eq!(
            check_sealed(&lines.join("\n")).expect_err("truncated"),
            "the END line `-----END AGE ENCRYPTED FILE-----` is missing"
        );
    }

    #[test]
    fn text_after_the_end_line_is_refused() {
        let armor = armor_lines().join("\n") + "\nleft over\n";
        assert_eq!(
            check_sealed(&armor).expect_err("junk"),
            "there is text after the END line"
        );

        // Blank lines and indentation after it are only layout.
        let spaced = armor_lines().join("\n") + "\n\n   \n";
        check_sealed(&spaced).expect("blank lines are fine");
    }

    #[test]
    fn a_body_that_is_not_base64_is_refused() {
        let mut lines = armor_lines();
        lines[1].replace_range(10..11, "!");
        assert_eq!(
            check_sealed(&lines.join("\n")).expect_err("not base64"),
            "the armor body is not valid base64"
        );
    }

    #[test]
    fn a_body_line_with_a_lost_character_is_refused() {
        let mut lines = armor_lines();
        lines[2].remove(5);
        assert_eq!(
            check_sealed(&lines.join("\n")).expect_err("short line"),
            "the armor body is not in the 64-character lines age writes: a character or a line \
             was probably lost, added or joined while copying"
        );
    }

    #[test]
    fn an_empty_body_is_refused() {
        let armor = format!("{ARMOR_BEGIN}\n{ARMOR_END}\n");
        assert_eq!(
            check_sealed(&armor).expect_err("empty"),
            "the armor body is empty"
        );
    }

    #[test]
    fn a_body_that_is_not_an_age_file_is_refused() {
        // Well-formed armor around "hello world!": the armor is fine, the header is not.
        let armor = format!("{ARMOR_BEGIN}\naGVsbG8gd29ybGQh\n{ARMOR_END}\n");
        let err = check_sealed(&armor).expect_err("no header");
        assert!(err.starts_with("the age header is damaged: "), "{err}");
    }

    #[test]
    fn every_recipient_can_open() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let armor = seal(&[a.to_public(), b.to_public()], b"shared").expect("seal");
        let sealed = check_sealed(&armor).expect("armor");
        assert_eq!(open(&a, &sealed).expect("a").expose_secret(), b"shared");
        assert_eq!(open(&b, &sealed).expect("b").expose_secret(), b"shared");
    }

    #[test]
    fn opening_with_another_identity_names_the_recipient() {
        let (sealer, other) = (Identity::generate(), Identity::generate());
        let armor = seal(&[sealer.to_public()], b"secret").expect("seal");
        let err = open(&other, &check_sealed(&armor).expect("armor")).expect_err("wrong key");
        assert_eq!(
            err.to_string(),
            format!(
                "it was sealed to another recipient, not to this identity's {}",
                other.to_public()
            )
        );
    }

    #[test]
    fn sealing_for_nobody_is_refused() {
        assert!(matches!(seal(&[], b"x"), Err(SecretsError::NoRecipients)));
    }

    #[test]
    fn a_bad_recipient_is_named() {
        let err = parse_recipient("age1nope").expect_err("invalid");
        assert!(
            err.to_string()
                .starts_with("`age1nope` is not an age X25519 recipient ("),
            "{err}"
        );
        let identity = Identity::generate();
        let text = format!("  {}\n", identity.to_public());
        assert_eq!(parse_recipient(&text).expect("valid"), identity.to_public());
    }

    #[test]
    fn a_secret_key_given_as_recipient_is_not_repeated() {
        let identity = Identity::generate();
        let key = identity.to_string().expose_secret().to_owned();
        for text in [key.clone(), key.to_lowercase(), format!(" {key}\n")] {
            let err = parse_recipient(&text).expect_err("a secret key");
            assert!(matches!(err, SecretsError::SecretKeyAsRecipient), "{err}");
            let shown = err.to_string();
            assert!(
                !shown.to_lowercase().contains(&key.to_lowercase()[16..]),
                "the key leaked: {shown}"
            );
        }
    }

    #[test]
    fn identity_files_accept_comments_and_reject_anything_else() {
        let identity = Identity::generate();
        let key = identity.to_string().expose_secret().to_owned();
        let path = Path::new("id.txt");

        let with_comments = format!("# DEMO ONLY\n# created: now\n\n{key}\n");
        let parsed = parse_identity(path, &with_comments).expect("parses");
        assert_eq!(parsed.to_public(), identity.to_public());

        let err = failure(parse_identity(path, "# nothing here\n"));
        assert!(matches!(err, SecretsError::NoIdentity { .. }), "{err}");

        let err = failure(parse_identity(path, &format!("{key}\n{key}\n")));
        assert_eq!(
            err.to_string(),
            "identity file id.txt holds 2 secret keys; restic-manager uses exactly one, so keep \
             one key per file"
        );

        let err = failure(parse_identity(path, "# c\nsomething else\n"));
        assert_eq!(
            err.to_string(),
            "identity file id.txt: line 2 is not an age X25519 secret key (only X25519 keys \
             starting with `AGE-SECRET-KEY-1` are supported)"
        );

        let broken = format!("{}x", &key[..key.len() - 1]);
        let err = failure(parse_identity(path, &broken));
        assert!(!err.to_string().contains(&broken), "the key leaked: {err}");
    }

    #[test]
    fn write_identity_creates_a_private_file_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data/identity.txt");
        let recipient = write_identity(&path).expect("written");

        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let parent = std::fs::metadata(dir.path().join("data")).expect("meta");
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# created: "), "{text}");
        assert!(
            text.contains(&format!("# public key: {recipient}\n")),
            "{text}"
        );
        assert_eq!(load_identity(&path).expect("loads").to_public(), recipient);

        let before = std::fs::read(&path).expect("read");
        let err = write_identity(&path).expect_err("exists");
        assert!(matches!(err, SecretsError::IdentityExists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }

    #[test]
    fn whitespace_is_found_by_kind() {
        assert_eq!(Whitespace::find("plain"), vec![]);
        assert_eq!(Whitespace::find("inner space"), vec![]);
        assert_eq!(Whitespace::find("x\n"), vec![Whitespace::TrailingNewline]);
        assert_eq!(Whitespace::find("x\r\n"), vec![Whitespace::TrailingNewline]);
        assert_eq!(Whitespace::find("x "), vec![Whitespace::Trailing]);
        assert_eq!(Whitespace::find("\tx"), vec![Whitespace::Leading]);
        assert_eq!(Whitespace::find("a\nb"), vec![Whitespace::LineBreak]);
        assert_eq!(
            Whitespace::find(" a\nb\n"),
            vec![
                Whitespace::Leading,
                Whitespace::TrailingNewline,
                Whitespace::LineBreak
            ]
        );
    }

    #[test]
    fn nul_and_other_control_characters_are_found_apart_from_whitespace() {
        assert!(contains_nul("a\0b"));
        assert!(!contains_nul("a\x1bb"));

        assert!(contains_control("a\x1b[0mb"));
        assert!(contains_control("a\tb"));
        assert!(contains_control("a\x7f"));
        assert!(!contains_control("plain"));
        assert!(!contains_control("a\0b"), "NUL is reported on its own");
        assert!(
            !contains_control("\tkey\r\n"),
            "surrounding whitespace is reported apart"
        );
        assert!(!contains_control("a\nb"), "a line break is reported apart");
    }

    #[test]
    fn check_openable_refuses_a_nul_and_warns_about_control_characters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::generate();
        let path = identity_file(dir.path(), &identity);
        let me = [identity.to_public()];
        let nul = seal(&me, b"s3cr3t\0value").expect("seal");
        let escape = seal(&me, b"s3cr3t\x1b[0m").expect("seal");
        let file = "repositories/r.toml";
        let mut loaded = loaded_with(
            file,
            "a\nb\n",
            vec![
                sealed_ref(file, 0..1, "password", &nul),
                sealed_ref(file, 2..3, "env AWS_SECRET_ACCESS_KEY", &escape),
            ],
        );
        check_openable(&path, &mut loaded).expect("identity loads");

        let items: Vec<_> = loaded
            .diagnostics
            .items()
            .iter()
            .map(|d| (d.severity, d.message.as_str()))
            .collect();
        assert_eq!(
            items,
            [
                (
                    Severity::Error,
                    "password: the secret contains a NUL byte, which cannot be passed to restic \
                     through the environment"
                ),
                (
                    Severity::Warning,
                    "env AWS_SECRET_ACCESS_KEY: the secret contains a control character, which a \
                     password or credential almost never has; check that only the secret was \
                     sealed and re-seal it without the control character"
                ),
            ]
        );
        assert!(loaded.config.is_none(), "a NUL must drop the config");
        let all = format!("{:?}", loaded.diagnostics.items());
        assert!(!all.contains("s3cr3t"), "a secret leaked: {all}");
    }

    #[test]
    fn check_openable_reports_each_value_at_its_span() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::generate();
        let path = identity_file(dir.path(), &identity);
        let me = [identity.to_public()];
        let stranger = Identity::generate().to_public();

        let good = seal(&me, b"s3cr3t-value").expect("seal");
        let newline = seal(&me, b"s3cr3t-value\n").expect("seal");
        let foreign = seal(&[stranger], b"s3cr3t-value").expect("seal");
        let binary = seal(&me, &[0xff, 0xfe]).expect("seal");
        let empty = seal(&me, b"").expect("seal");
        let file = "repositories/r.toml";
        let text = "a\nb\nc\nd\ne\n";
        let mut loaded = loaded_with(
            file,
            text,
            vec![
                sealed_ref(file, 0..1, "password", &good),
                sealed_ref(file, 2..3, "password", &newline),
                sealed_ref(file, 4..5, "env RESTIC_REST_PASSWORD", &foreign),
                sealed_ref(file, 6..7, "env B2_ACCOUNT_KEY", &binary),
                sealed_ref(file, 8..9, "webhook url", &empty),
            ],
        );
        check_openable(&path, &mut loaded).expect("identity loads");

        let items: Vec<_> = loaded
            .diagnostics
            .items()
            .iter()
            .map(|d| (d.severity, d.line, d.message.clone()))
            .collect();
        let shown = path.display();
        assert_eq!(
            items,
            vec![
                (
                    Severity::Warning,
                    Some(2),
                    "password: the secret ends with a newline; restic uses an environment value \
                     as-is but strips it from a password file, so the same secret behaves \
                     differently per delivery method — re-seal it without the newline"
                        .to_owned()
                ),
                (
                    Severity::Error,
                    Some(3),
                    format!(
                        "env RESTIC_REST_PASSWORD: cannot be opened with identity {shown}: it was \
                         sealed to another recipient, not to this identity's {}",
                        identity.to_public()
                    )
                ),
                (
                    Severity::Error,
                    Some(4),
                    "env B2_ACCOUNT_KEY: the sealed secret is not UTF-8 text".to_owned()
                ),
                (
                    Severity::Error,
                    Some(5),
                    "webhook url: the sealed secret is empty".to_owned()
                ),
            ]
        );
        assert!(loaded.config.is_none(), "errors must drop the config");
        let all = format!("{:?}", loaded.diagnostics.items());
        assert!(!all.contains("s3cr3t"), "a secret leaked: {all}");
    }

    #[test]
    fn check_openable_keeps_the_config_when_only_warnings_are_added() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::generate();
        let path = identity_file(dir.path(), &identity);
        let spaced = seal(&[identity.to_public()], b" key ").expect("seal");
        let file = "repositories/r.toml";
        let mut loaded = loaded_with(
            file,
            "x\n",
            vec![sealed_ref(file, 0..1, "env AWS_SECRET_ACCESS_KEY", &spaced)],
        );
        check_openable(&path, &mut loaded).expect("identity loads");

        let messages: Vec<_> = loaded
            .diagnostics
            .items()
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "env AWS_SECRET_ACCESS_KEY: the secret starts with whitespace, which is passed on \
                 as part of the value and will not match the real credential — re-seal it \
                 without the whitespace",
                "env AWS_SECRET_ACCESS_KEY: the secret ends with whitespace, which is passed on \
                 as part of the value and will not match the real credential — re-seal it \
                 without the whitespace",
            ]
        );
        assert!(loaded.config.is_some());
    }

    #[test]
    fn a_directory_as_identity_is_named_as_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Err(err) = load_identity(dir.path()) else {
            panic!("a directory must be refused");
        };
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a directory, not an identity file; pass the file `restic-manager keygen` \
                 wrote (e.g. ./data/identity.txt)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn check_openable_fails_without_a_readable_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.txt");
        let err = check_openable(&missing, &mut Loaded::default()).expect_err("no identity");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read identity file {}: ",
                missing.display()
            )),
            "{err}"
        );
    }
}
