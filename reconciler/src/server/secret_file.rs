//! One-line secret files the server reads at start: the webhook's shared secret and the view's
//! token. Each is the whole file less one trailing newline (`\n` or `\r\n`), bounded in size,
//! and must be one line: a second line is refused rather than made part of the secret. A path
//! that is not a regular file is refused before anything else is said about it; a file that
//! group or others may read is accepted with a warning.

use std::io::Read as _;
use std::path::Path;

/// Why a secret file could not be read; the caller's error names the file and its purpose.
#[derive(Debug)]
pub enum Problem {
    Io(std::io::Error),
    /// A directory, a device or anything else that is not a regular file (symlinks are
    /// followed); the text says which.
    NotAFile(&'static str),
    /// Longer than the bound given.
    TooLong,
    /// More than one line, after the one trailing newline that is allowed.
    SeveralLines,
}

/// Reads `path`: at most `max` bytes, less one trailing newline. `what` names the file in the
/// warning about its mode ("the webhook secret file").
pub fn read(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, Problem> {
    let file = std::fs::File::open(path).map_err(Problem::Io)?;
    let meta = file.metadata().map_err(Problem::Io)?;
    if !meta.is_file() {
        return Err(Problem::NotAFile(kind_of(&meta)));
    }
    warn_if_shared(path, &meta, what);

    let mut content = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut content)
        .map_err(Problem::Io)?;
    if content.len() as u64 > max {
        return Err(Problem::TooLong);
    }
    if content.last() == Some(&b'\n') {
        content.pop();
        if content.last() == Some(&b'\r') {
            content.pop();
        }
    }
    // `a\nb` would otherwise become a secret no git host is configured with.
    if content.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return Err(Problem::SeveralLines);
    }
    Ok(content)
}

/// What a path that is not a regular file is, for the error.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;

    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

fn warn_if_shared(path: &Path, meta: &std::fs::Metadata, what: &str) {
    use std::os::unix::fs::PermissionsExt as _;

    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "{what} may be read by other users; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_goes_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "abc\r\n").unwrap();
        assert_eq!(read(&path, 10, "the file").unwrap(), b"abc");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(read(&path, 10, "the file").unwrap(), b"abc");
        std::fs::write(&path, "x".repeat(11)).unwrap();
        assert!(matches!(read(&path, 10, "the file"), Err(Problem::TooLong)));
        assert!(matches!(
            read(&dir.path().join("missing"), 10, "the file"),
            Err(Problem::Io(_))
        ));
    }

    #[test]
    fn a_second_line_is_refused_even_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        for content in ["a\nb\n", "a\nb", "abc\r\n\n", "abc\n\n", "a\rb"] {
            std::fs::write(&path, content).unwrap();
            assert!(
                matches!(read(&path, 100, "the file"), Err(Problem::SeveralLines)),
                "{content:?}"
            );
        }
    }

    #[test]
    fn a_directory_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(dir.path(), 10, "the file"),
            Err(Problem::NotAFile("a directory"))
        ));
    }
}
