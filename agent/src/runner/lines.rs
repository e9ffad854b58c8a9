//! Splitting a child's output into lines without a small line limit.
//!
//! restic writes one JSON object per line, and some of them are large: a status line lists the
//! files in flight, a `snapshots` answer is one array of every snapshot. A line may therefore be
//! megabytes long. The reader accepts lines up to a cap (64 MiB for restic's stdout) so that a
//! broken or hostile child cannot make the agent hold unbounded memory; a longer line is
//! skipped up to its newline and reported as [`Line::TooLong`], and reading goes on.

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

/// The longest line kept from restic's stdout or stderr.
/// NOTE: a longer line is skipped, whatever it held (docs/src/limitations.md).
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// How much is read from the pipe at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// One line of output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// The line, decoded as UTF-8 (invalid bytes replaced).
    Text(String),
    /// A line longer than the cap; it was dropped. `bytes` is its length.
    TooLong { bytes: usize },
}

/// Reads lines from a pipe, up to `cap` bytes each.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    cap: usize,
    line: Vec<u8>,
    /// Bytes of an over-long line seen so far, while skipping to its end.
    skipped: Option<usize>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, cap: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER_BYTES, inner),
            cap,
            line: Vec::new(),
            skipped: None,
        }
    }

    /// The next line, or `None` at the end of the stream. A last line without a newline is
    /// still returned.
    ///
    /// Cancel-safe: bytes are moved out of the buffer only when they are kept or skipped, so
    /// a call dropped in a `select!` loses nothing.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(self.finish());
            }
            let (part, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], true),
                None => (chunk, false),
            };
            let used = part.len() + usize::from(ends_line);
            if let Some(skipped) = self.skipped.as_mut() {
                *skipped += part.len();
            } else if self.line.len() + part.len() > self.cap {
                // Free what was gathered: the line will not be used.
                self.skipped = Some(self.line.len() + part.len());
                self.line = Vec::new();
            } else {
                self.line.extend_from_slice(part);
            }
            self.inner.consume(used);
            if ends_line {
                return Ok(Some(self.take()));
            }
        }
    }

    /// What is left at the end of the stream.
    fn finish(&mut self) -> Option<Line> {
        if self.skipped.is_none() && self.line.is_empty() {
            return None;
        }
        Some(self.take())
    }

    fn take(&mut self) -> Line {
        if let Some(bytes) = self.skipped.take() {
            return Line::TooLong { bytes };
        }
        let mut bytes = std::mem::take(&mut self.line);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Line::Text(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        })
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Removes terminal control sequences (restic clears the line before some messages) and
/// other control characters, so a logged line reads as plain text.
pub(crate) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for next in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&next) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], cap: usize) -> Vec<Line> {
        let mut reader = LineReader::new(input, cap);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_last_line_without_newline() {
        assert_eq!(
            lines(b"a\r\nbb\n\nccc", 100).await,
            [text("a"), text("bb"), text(""), text("ccc")]
        );
        assert_eq!(lines(b"", 100).await, []);
    }

    #[tokio::test]
    async fn a_line_of_several_megabytes_is_read_whole() {
        let long = "x".repeat(5 * 1024 * 1024);
        let input = format!("{long}\nafter\n");
        let got = lines(input.as_bytes(), MAX_LINE_BYTES).await;
        assert_eq!(got, [text(&long), text("after")]);
    }

    #[tokio::test]
    async fn a_line_over_the_cap_is_skipped_and_reading_goes_on() {
        let input = format!(
            "short\n{}\nnext\n{}",
            "y".repeat(300_000),
            "z".repeat(200_001)
        );
        let got = lines(input.as_bytes(), 200_000).await;
        assert_eq!(
            got,
            [
                text("short"),
                Line::TooLong { bytes: 300_000 },
                text("next"),
                Line::TooLong { bytes: 200_001 }
            ]
        );
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(lines(b"a\xffb\n", 10).await, [text("a\u{fffd}b")]);
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn plain_drops_terminal_sequences() {
        assert_eq!(
            plain("\u{1b}[2Ksignal interrupt received, cleaning up"),
            "signal interrupt received, cleaning up"
        );
        assert_eq!(plain("a\u{7}b\tc"), "ab\tc");
    }
}
