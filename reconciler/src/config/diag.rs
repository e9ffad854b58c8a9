//! Diagnostics: every error and warning found in a config repository, with where it is.
//!
//! Loading never stops at the first problem. Each check pushes a [`Diagnostic`] into a
//! [`Diagnostics`] collection, which keeps the text of every file it has seen so that a
//! diagnostic can be shown as `file:line:col` with the offending span underlined (through
//! miette), or as JSON for machines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The revision is invalid and is never applied.
    Error,
    /// The revision is valid but probably not what was meant.
    Warning,
}

/// One finding, located in a file when it concerns one.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Path relative to the repository root, with `/` separators.
    pub file: Option<String>,
    /// 1-based line and column of the start of the span (columns count characters).
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Byte range of the offending text in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Range<usize>>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// `file:line:col: severity: message`, the first line of the text form.
    #[must_use]
    pub fn headline(&self) -> String {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(col)) => {
                format!("{file}:{line}:{col}: {severity}: {}", self.message)
            }
            (Some(file), _, _) => format!("{file}: {severity}: {}", self.message),
            _ => format!("{severity}: {}", self.message),
        }
    }
}

/// A source file the diagnostics refer to.
#[derive(Debug, Clone)]
struct SourceFile {
    path: String,
    text: Arc<str>,
}

/// The findings of one load, in the order they were found.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    files: Vec<SourceFile>,
    /// Position of each file in `files`, by path: repositories have thousands of files.
    by_path: HashMap<String, usize>,
}

impl Diagnostics {
    /// Remembers a file's text so diagnostics in it can show line, column and snippet.
    pub fn add_source(&mut self, path: &str, text: Arc<str>) {
        if !self.by_path.contains_key(path) {
            self.by_path.insert(path.to_owned(), self.files.len());
            // Snippets echo the file, so it is cleaned like every other printed text; the
            // cleaning keeps byte lengths, so spans stay valid.
            let text = if text.chars().any(is_unsafe_control) {
                Arc::from(printable(&text))
            } else {
                text
            };
            self.files.push(SourceFile {
                path: path.to_owned(),
                text,
            });
        }
    }

    fn source(&self, path: &str) -> Option<&SourceFile> {
        self.by_path.get(path).map(|&i| &self.files[i])
    }

    /// Records an error at `span` of `file`.
    pub fn error(&mut self, file: &str, span: Option<Range<usize>>, message: impl Into<String>) {
        self.push(Severity::Error, Some(file), span, message.into(), None);
    }

    /// Records an error with a hint on what to do.
    pub fn error_help(
        &mut self,
        file: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            Some(file),
            span,
            message.into(),
            Some(help.into()),
        );
    }

    /// Records a warning at `span` of `file`.
    pub fn warning(&mut self, file: &str, span: Option<Range<usize>>, message: impl Into<String>) {
        self.push(Severity::Warning, Some(file), span, message.into(), None);
    }

    /// Records a warning with a hint on what to do.
    pub fn warning_help(
        &mut self,
        file: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            Some(file),
            span,
            message.into(),
            Some(help.into()),
        );
    }

    /// Records an error about the repository as a whole.
    pub fn global_error(&mut self, message: impl Into<String>, help: Option<String>) {
        self.push(Severity::Error, None, None, message.into(), help);
    }

    /// Records a warning about the repository as a whole.
    pub fn global_warning(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, None, None, message.into(), None);
    }

    fn push(
        &mut self,
        severity: Severity,
        file: Option<&str>,
        span: Option<Range<usize>>,
        message: String,
        help: Option<String>,
    ) {
        // A message is one line of `file:line:col: severity: message`; causes from other
        // libraries sometimes carry newlines.
        let message = printable(&if message.contains('\n') {
            one_line(&message)
        } else {
            message
        });
        let help = help.map(|h| printable(&one_line(&h)));
        let position = file.zip(span.as_ref()).and_then(|(file, span)| {
            let source = self.source(file)?;
            Some(line_col(&source.text, span.start))
        });
        self.items.push(Diagnostic {
            severity,
            file: file.map(printable),
            line: position.map(|(l, _)| l),
            column: position.map(|(_, c)| c),
            span,
            message,
            help,
        });
    }

    /// All findings.
    #[must_use]
    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Whether any error was found.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Sorts findings by file and position so output is stable whatever the load order.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            (
                a.file.is_some(),
                &a.file,
                a.span.as_ref().map(|s| s.start),
                a.severity,
            )
                .cmp(&(
                    b.file.is_some(),
                    &b.file,
                    b.span.as_ref().map(|s| s.start),
                    b.severity,
                ))
        });
    }

    /// The text form: a `file:line:col: severity: message` line per finding, each followed by
    /// the offending span underlined in context.
    #[must_use]
    pub fn render_text(&self, color: bool) -> String {
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for item in &self.items {
            out.push_str(&item.headline());
            out.push('\n');
            let source = item.file.as_deref().and_then(|path| self.source(path));
            match (source, &item.span) {
                (Some(source), Some(span)) if !too_wide(&source.text, span) => {
                    let report = SnippetReport {
                        message: item.message.clone(),
                        help: item.help.clone(),
                        severity: item.severity,
                        span: span.clone(),
                        source: miette::NamedSource::new(&source.path, source.text.to_string()),
                    };
                    let mut rendered = String::new();
                    if handler.render_report(&mut rendered, &report).is_ok() {
                        out.push_str(&rendered);
                    }
                }
                (Some(_), Some(_)) => {
                    let _ = writeln!(out, "  (the line is too long to show)");
                    if let Some(help) = &item.help {
                        let _ = writeln!(out, "  help: {help}");
                    }
                }
                _ => {
                    if let Some(help) = &item.help {
                        let _ = writeln!(out, "  help: {help}");
                    }
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The widest line shown in a snippet. Longer lines (a config file may hold a megabyte on
/// one line) are not printed, and miette cannot render columns past 65,535 anyway.
const MAX_SNIPPET_LINE: usize = 400;

/// Whether a line around `span` is too long to show.
fn too_wide(text: &str, span: &Range<usize>) -> bool {
    let start = text.get(..span.start.min(text.len())).map_or(0, |before| {
        // One line of context above the span.
        let mut lines = before.rmatch_indices('\n');
        lines.nth(1).map_or(0, |(i, _)| i + 1)
    });
    let end = span.end.min(text.len());
    let end = text
        .get(end..)
        .and_then(|after| after.match_indices('\n').nth(1))
        .map_or(text.len(), |(i, _)| end + i);
    text.get(start..end)
        .is_none_or(|window| window.split('\n').any(|line| line.len() > MAX_SNIPPET_LINE))
}

/// Replaces control characters, which could move the cursor or forge output lines on a
/// terminal or in a CI log, by one `?` per byte, so spans into text cleaned this way stay
/// valid. Line breaks and tabs are kept.
#[must_use]
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe_control(c) {
            out.extend(std::iter::repeat_n('?', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_unsafe_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\t' | '\r')
}

/// Joins the lines of a message into one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1-based line and character column of byte offset `at` in `text`.
#[must_use]
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = floor_char_boundary(text, at.min(text.len()));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A single diagnostic in the shape miette renders.
#[derive(Debug)]
struct SnippetReport {
    message: String,
    help: Option<String>,
    severity: Severity,
    span: Range<usize>,
    source: miette::NamedSource<String>,
}

impl std::fmt::Display for SnippetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SnippetReport {}

impl miette::Diagnostic for SnippetReport {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let len = self.span.end.saturating_sub(self.span.start);
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_with_span(Some("here".to_owned()), (self.span.start, len)),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_replaced_byte_for_byte() {
        let text = "a\u{1b}[2J\u{9b}b\tc\n";
        let clean = printable(text);
        assert_eq!(clean, "a?[2J??b\tc\n");
        assert_eq!(clean.len(), text.len());
    }

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let text = "a = 1\nname = \"Jürgen\" x\n";
        let at = text.find('x').unwrap();
        assert_eq!(line_col(text, at), (2, 17));
    }

    #[test]
    fn rendered_text_names_file_line_and_column() {
        let mut diags = Diagnostics::default();
        diags.add_source("hosts/web-1.toml", Arc::from("paused = 1\n"));
        diags.error("hosts/web-1.toml", Some(9..10), "wrong type");
        let text = diags.render_text(false);
        assert!(
            text.starts_with("hosts/web-1.toml:1:10: error: wrong type\n"),
            "{text}"
        );
        assert!(text.contains("paused = 1"), "{text}");
    }
}
