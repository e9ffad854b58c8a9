//! The text and markdown forms of a plan: risky changes first, hosts listed compactly.

use serde::Serialize;

use super::{Change, Plan};

/// The two revisions a plan compares, as shown in its header.
#[derive(Debug, Clone, Serialize)]
pub struct Revisions {
    pub base: String,
    pub head: String,
}

/// How many host names a text or markdown line lists before "and N more".
const HOSTS_SHOWN: usize = 10;

fn host_list(hosts: &[String], code: bool) -> String {
    let shown: Vec<String> = hosts
        .iter()
        .take(HOSTS_SHOWN)
        .map(|h| if code { format!("`{h}`") } else { h.clone() })
        .collect();
    let mut out = shown.join(", ");
    if hosts.len() > HOSTS_SHOWN {
        out.push_str(&format!(" and {} more", hosts.len() - HOSTS_SHOWN));
    }
    out
}

fn counts(plan: &Plan) -> String {
    let risky = plan.changes.iter().filter(|c| c.risky).count();
    let other = plan.changes.len() - risky;
    format!(
        "{risky} risky change{}, {other} other change{}, {} host{} affected",
        if risky == 1 { "" } else { "s" },
        if other == 1 { "" } else { "s" },
        plan.hosts_affected(),
        if plan.hosts_affected() == 1 { "" } else { "s" },
    )
}

/// Where a change applies, as a prefix: `policy web on web-1, web-2: `.
fn subject(change: &Change, code: bool) -> String {
    let q = |s: &str| if code { format!("`{s}`") } else { s.to_owned() };
    match (&change.policy, change.hosts.is_empty()) {
        (Some(p), false) => format!("policy {} on {}", q(p), host_list(&change.hosts, code)),
        (Some(p), true) => format!("policy {}", q(p)),
        (None, false) => {
            let noun = if change.hosts.len() == 1 {
                "host"
            } else {
                "hosts"
            };
            format!("{noun} {}", host_list(&change.hosts, code))
        }
        (None, true) => "config".to_owned(),
    }
}

impl Plan {
    /// The plain-text form for terminals.
    #[must_use]
    pub fn render_text(&self, revisions: &Revisions) -> String {
        let mut out = format!("plan {} -> {}\n", revisions.base, revisions.head);
        if self.is_empty() {
            out.push_str("no changes to the fleet\n");
            return out;
        }
        out.push_str(&counts(self));
        out.push('\n');
        for (title, risky) in [("RISKY", true), ("CHANGES", false)] {
            let lines: Vec<&Change> = self.changes.iter().filter(|c| c.risky == risky).collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("\n{title}\n"));
            for change in lines {
                let mark = if risky { '!' } else { '~' };
                out.push_str(&format!(
                    "  {mark} {}: {}\n",
                    subject(change, false),
                    change.summary
                ));
            }
        }
        out
    }

    /// The markdown form, fit for a pull-request comment.
    #[must_use]
    pub fn render_markdown(&self, revisions: &Revisions) -> String {
        let mut out = format!(
            "### restic-manager plan\n\n`{}` → `{}`\n\n",
            revisions.base, revisions.head
        );
        if self.is_empty() {
            out.push_str("No changes to the fleet.\n");
            return out;
        }
        out.push_str(&format!("**{}**\n", counts(self)));
        for (title, risky) in [("⚠️ Risky changes", true), ("Other changes", false)] {
            let lines: Vec<&Change> = self.changes.iter().filter(|c| c.risky == risky).collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("\n#### {title}\n\n"));
            for change in lines {
                let line = format!("{}: {}", subject(change, true), change.summary);
                out.push_str(&format!("- {}\n", markdown_inert(&line)));
            }
        }
        out
    }
}

/// Makes config values harmless in a pull-request comment: no HTML (a `<!--` would hide the
/// lines after it), no @-mentions, no line breaks that could start a heading of their own.
fn markdown_inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push_str("&#64;"),
            '|' => out.push_str("\\|"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
