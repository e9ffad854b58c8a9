//! The documentation's links: every relative link in the book, the README and the other
//! top-level documents points at a file that exists, and at a heading that exists when it
//! names one; every chapter, in `docs/src/` or a directory below it, is in the book's table of
//! contents and every entry there exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::workspace;

/// Markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let root = workspace();
    let mut files: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "SECURITY.md"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    files.push(root.join("examples/config-repo/README.md"));
    let mut chapters = Vec::new();
    markdown_below(&root.join("docs/src"), &mut chapters);
    chapters.sort();
    files.extend(chapters);
    files
}

/// Every `.md` file in `dir` and the directories below it.
fn markdown_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a docs directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            markdown_below(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// The `(target)` of every `[text](target)` outside code blocks and inline code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop inline code spans so `[x](y)` shown as code is not taken for a link.
        let mut plain = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                plain.push(c);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    out
}

/// The anchors mdBook gives a chapter's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let anchor: String = title
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    Some(c.to_lowercase().next().unwrap_or(c))
                } else if c == ' ' {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        out.insert(anchor);
    }
    out
}

fn resolve(from: &Path, target: &str) -> PathBuf {
    from.parent().expect("parent").join(target)
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read doc");
        for link in links(&text) {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
                || link.is_empty()
            {
                continue;
            }
            let (file, anchor) = match link.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                doc.clone()
            } else {
                resolve(&doc, file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", doc.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && target.extension().is_some_and(|e| e == "md")
            {
                let heads = anchors(&std::fs::read_to_string(&target).expect("read target"));
                if !heads.contains(anchor) {
                    broken.push(format!("{}: {link} (no such heading)", doc.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_is_in_the_table_of_contents_and_every_entry_exists() {
    let src = workspace().join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).expect("SUMMARY.md");
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for entry in &listed {
        assert!(
            src.join(entry).is_file(),
            "SUMMARY.md lists {entry}, which does not exist"
        );
    }
    for doc in documents() {
        let Ok(relative) = doc.strip_prefix(&src) else {
            continue;
        };
        let name = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if name != "SUMMARY.md" {
            assert!(
                listed.contains(&name),
                "{name} is not in docs/src/SUMMARY.md"
            );
        }
    }
}

#[test]
fn the_link_reader_skips_code_and_reads_anchors_like_mdbook() {
    let text = "See [a](a.md#x-y) and `[b](b.md)`.\n```\n[c](c.md)\n```\n## The `x` y, z!\n";
    assert_eq!(links(text), ["a.md#x-y"]);
    assert!(anchors(text).contains("the-x-y-z"), "{:?}", anchors(text));
}
