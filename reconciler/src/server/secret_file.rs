//! One-line secret files the server reads at start: the webhook's shared secret and the view's
//! token. Each is the whole file less one trailing newline (`\n` or `\r\n`), bounded in size,
//! and a file that group or others may read is accepted with a warning.

use std::io::Read as _;
use std::path::Path;

/// Why a secret file could not be read; the caller's error names the file and its purpose.
#[derive(Debug)]
pub enum Problem {
    Io(std::io::Error),
    /// Longer than the bound given.
    TooLong,
}

/// Reads `path`: at most `max` bytes, less one trailing newline. `what` names the file in the
/// warning about its mode ("the webhook secret file").
pub fn read(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, Problem> {
    let file = std::fs::File::open(path).map_err(Problem::Io)?;
    warn_if_shared(path, &file, what);
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
    Ok(content)
}

fn warn_if_shared(path: &Path, file: &std::fs::File, what: &str) {
    use std::os::unix::fs::PermissionsExt as _;

    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
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
        std::fs::write(&path, "abc\r\n\n").unwrap();
        assert_eq!(read(&path, 10, "the file").unwrap(), b"abc\r\n");
        std::fs::write(&path, "abc\r\n").unwrap();
        assert_eq!(read(&path, 10, "the file").unwrap(), b"abc");
        std::fs::write(&path, "x".repeat(11)).unwrap();
        assert!(matches!(read(&path, 10, "the file"), Err(Problem::TooLong)));
        assert!(matches!(
            read(&dir.path().join("missing"), 10, "the file"),
            Err(Problem::Io(_))
        ));
    }
}
