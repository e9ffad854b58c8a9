//! `restic-manager keygen` and `restic-manager seal`: the server identity and sealed values.
//!
//! Both exit 0 on success and 2 on any usage or I/O error. stdout carries only the result (the
//! recipient, or the sealed TOML value), so either can be piped or captured; hints and
//! warnings go to stderr. Neither ever prints a secret.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use anyhow::anyhow;

use super::{print_err, print_out, report_error};
use crate::secrets::{self, ExposeSecret as _, SecretSlice, Whitespace};

/// The largest secret `seal` accepts (64 KiB): far above any password or key, small enough
/// that its armor fits comfortably in a config file.
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Flags of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the new identity; the file must not exist yet. Its directory is created
    /// with mode 0700 when missing. An empty RM_IDENTITY counts as unset.
    /// [default: ./data/identity.txt] [env: RM_IDENTITY]
    // Not clap's `env`: it would treat an empty variable as a missing flag value.
    #[expect(
        clippy::doc_markdown,
        reason = "clap prints this comment as --help, where backticks would show"
    )]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// Flags of `seal`.
#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// Seal for this age recipient (`age1...`). Repeat to seal for several; each of their
    /// identities can then open the value. Default: the recipient of --identity.
    #[arg(long = "recipient", short = 'r', value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// An identity file whose recipient to seal for, when no --recipient is given. An empty
    /// RM_IDENTITY counts as unset. [env: RM_IDENTITY]
    // Not clap's `env`: it would treat an empty variable as a missing flag value.
    #[expect(
        clippy::doc_markdown,
        reason = "clap prints this comment as --help, where backticks would show"
    )]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Keep a final newline of the input. By default one trailing `\n` or `\r\n` (what `echo`
    /// and most editors add) is dropped.
    #[arg(long)]
    pub keep_newline: bool,
}

/// Runs `keygen`: 0 when the identity was written, 2 otherwise.
pub fn keygen(args: &KeygenArgs) -> u8 {
    let path = secrets::identity_path(args.identity.as_deref())
        .unwrap_or_else(|| PathBuf::from(secrets::DEFAULT_IDENTITY_FILE));
    let recipient = match secrets::write_identity(&path) {
        Ok(recipient) => recipient,
        Err(e) => {
            report_error(&e.into());
            return 2;
        }
    };

    print_out(&format!("{recipient}\n"));
    print_err(&format!(
        "wrote the server's identity to {} (mode 0600): keep it on the server and out of git.\n\
         The recipient printed above is public; commit only values sealed for it with\n  \
         restic-manager seal --recipient {recipient}\n",
        path.display()
    ));
    0
}

/// Runs `seal`: 0 with the sealed TOML value on stdout, 2 otherwise.
pub fn seal(args: &SealArgs) -> u8 {
    match seal_stdin(args) {
        Ok(value) => {
            print_out(&value);
            0
        }
        Err(e) => {
            report_error(&e);
            2
        }
    }
}

/// Reads, checks and seals the secret on stdin; returns the TOML value to print.
fn seal_stdin(args: &SealArgs) -> anyhow::Result<String> {
    // Recipients first, so a typo is reported before anything is typed or piped in.
    let recipients = recipients(args)?;

    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        print_err(
            "type the secret, then Enter and Ctrl-D (the final newline is dropped); it is shown \
             while typed, so prefer piping it in\n",
        );
    }
    let secret = read_secret(stdin.lock())?;
    let Ok(text) = std::str::from_utf8(secret.expose_secret()) else {
        return Err(anyhow!(
            "the secret on stdin is not UTF-8 text; restic and its backends take text, so \
             convert it (for example with iconv) before sealing"
        ));
    };
    let text = if args.keep_newline {
        text
    } else {
        text.strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text)
    };
    if text.is_empty() {
        return Err(anyhow!(
            "the secret on stdin is empty: pipe it in, e.g. `printf '%s' \"$SECRET\" | \
             restic-manager seal --recipient age1...`"
        ));
    }
    if secrets::contains_nul(text) {
        return Err(anyhow!(
            "the secret on stdin contains a NUL byte, which cannot be passed to restic through \
             the environment: check that only the secret was piped in, not a binary file"
        ));
    }
    if secrets::contains_control(text) {
        print_err(
            "warning: the secret contains a control character (sealed anyway); a password or \
             credential almost never has one — check that only the secret was piped in, \
             without terminal colour codes or other escape sequences\n",
        );
    }
    for found in Whitespace::find(text) {
        let consequence = match found {
            Whitespace::LineBreak => {
                "a password or credential almost never has one — check that only the secret \
                 was piped in"
            }
            _ => {
                "as a repository password restic uses it as-is from the environment but strips \
                 it from a password file, and a backend credential with it will not match — \
                 seal again without it unless it really is part of the secret"
            }
        };
        print_err(&format!(
            "warning: the secret {} (sealed anyway); {consequence}\n",
            found.describe()
        ));
    }

    let armor = secrets::seal(&recipients, text.as_bytes())?;
    Ok(format!("{{ sealed = \"\"\"\n{armor}\"\"\" }}\n"))
}

/// The recipients to seal for: every --recipient, or else the one of --identity.
fn recipients(args: &SealArgs) -> anyhow::Result<Vec<secrets::Recipient>> {
    if !args.recipients.is_empty() {
        return args
            .recipients
            .iter()
            .map(|r| secrets::parse_recipient(r).map_err(|e| anyhow!("--recipient: {e}")))
            .collect();
    }
    let Some(identity) = secrets::identity_path(args.identity.as_deref()) else {
        return Err(anyhow!(
            "no recipient to seal for: pass --recipient age1... (the server's recipient, as \
             printed by `restic-manager keygen`), or --identity FILE (or RM_IDENTITY) to seal for \
             that identity"
        ));
    };
    Ok(vec![secrets::load_identity(&identity)?.to_public()])
}

/// Reads all of stdin into a buffer that is zeroed when dropped. The buffer is allocated at
/// its final size first, so no reallocation leaves a copy of the secret behind.
fn read_secret(input: impl std::io::Read) -> anyhow::Result<SecretSlice<u8>> {
    let mut buffer = Vec::with_capacity(MAX_SECRET_BYTES + 1);
    let limit = u64::try_from(MAX_SECRET_BYTES + 1).unwrap_or(u64::MAX);
    let read = input.take(limit).read_to_end(&mut buffer);
    let too_long = buffer.len() > MAX_SECRET_BYTES;
    let secret = SecretSlice::from(buffer);
    if let Err(e) = read {
        return Err(anyhow!("cannot read the secret from stdin: {e}"));
    }
    if too_long {
        return Err(anyhow!(
            "the secret on stdin is longer than {} KiB; seal a password or key, not a file",
            MAX_SECRET_BYTES / 1024
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_secret_refuses_more_than_the_limit() {
        let big = vec![b'a'; MAX_SECRET_BYTES + 1];
        let err = read_secret(big.as_slice()).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "the secret on stdin is longer than 64 KiB; seal a password or key, not a file"
        );
        let exact = vec![b'a'; MAX_SECRET_BYTES];
        let secret = read_secret(exact.as_slice()).expect("fits");
        assert_eq!(secret.expose_secret().len(), MAX_SECRET_BYTES);
    }
}
