//! `restic-manager plan`: describe what a change between two revisions does to the fleet.

use std::path::PathBuf;

use super::{print_err, print_out, report_error, use_color};
use crate::config::{self, Config};
use crate::plan::{Revisions, diff};

/// Output formats of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

/// Flags of `plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The git repository holding the config. Default: the current directory.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The revision before the change. Default: the merge base of --head with the default
    /// branch: what origin/HEAD names, else the first of origin/main, origin/master, main and
    /// master that exists.
    #[arg(long)]
    pub base: Option<String>,
    /// The revision after the change.
    #[arg(long, default_value = "HEAD")]
    pub head: String,
    /// Output format; markdown is meant for pull-request comments.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit with 3 when a risky change is present.
    #[arg(long)]
    pub fail_on_risky: bool,
}

/// Runs `plan`: 0 no change, 1 changes, 2 error, 3 risky change with --fail-on-risky.
pub fn run(args: &Args) -> u8 {
    match plan(args) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            2
        }
    }
}

fn plan(args: &Args) -> anyhow::Result<u8> {
    let base_rev = match &args.base {
        Some(base) => base.clone(),
        None => crate::git::plan_base(&args.repo, &args.head)?,
    };
    let head_commit = crate::git::resolve_commit(&args.repo, &args.head)?;
    let (base_rev, base, invalid_base) = valid_base(args, base_rev)?;
    let base_commit = crate::git::resolve_commit(&args.repo, &base_rev)?;
    let head = load_valid(args, &args.head, "head")?;

    let plan = diff(&base, &head);
    let revisions = Revisions {
        base: match &invalid_base {
            None => format!("{} ({})", base_commit.short, base_commit.summary),
            Some(invalid) => format!(
                "{} ({}), the newest valid commit before the invalid {} ({})",
                base_commit.short, base_commit.summary, invalid.short, invalid.summary
            ),
        },
        head: format!("{} ({})", head_commit.short, head_commit.summary),
    };
    let text = match args.format {
        PlanFormat::Text => plan.render_text(&revisions),
        PlanFormat::Markdown => plan.render_markdown(&revisions),
        PlanFormat::Json => format!(
            "{:#}\n",
            serde_json::json!({
                "base": { "rev": base_rev, "commit": base_commit.id, "summary": base_commit.summary },
                "invalid-base": invalid_base.as_ref().map(|c| serde_json::json!({ "commit": c.id, "summary": c.summary })),
                "head": { "rev": args.head, "commit": head_commit.id, "summary": head_commit.summary },
                "changed": !plan.is_empty(),
                "risky": plan.has_risky(),
                "hosts-affected": plan.hosts_affected(),
                "changes": plan.changes,
            })
        ),
    };
    print_out(&text);

    Ok(if args.fail_on_risky && plan.has_risky() {
        3
    } else {
        u8::from(!plan.is_empty())
    })
}

/// How far back `plan` looks for a valid commit when the base does not validate.
const VALID_BASE_SEARCH: usize = 100;

/// Loads the base revision. One that does not validate (a pull request that repairs a broken
/// branch) is replaced by the newest valid commit in its first-parent history: a server
/// following that branch keeps the newest valid revision it saw in force, so that is what the
/// change is measured against. Returns the revision used, its config, and the invalid base
/// when it was replaced.
fn valid_base(
    args: &Args,
    base_rev: String,
) -> anyhow::Result<(String, Config, Option<crate::git::CommitInfo>)> {
    let loaded = config::load(&crate::git::read_revision(&args.repo, &base_rev)?);
    if let Some(config) = loaded.config {
        return Ok((base_rev, config, None));
    }
    let invalid = crate::git::resolve_commit(&args.repo, &base_rev)?;
    for back in 1..=VALID_BASE_SEARCH {
        let rev = format!("{}~{back}", invalid.id);
        let Ok(files) = crate::git::read_revision(&args.repo, &rev) else {
            break;
        };
        if let Some(config) = config::load(&files).config {
            let commit = crate::git::resolve_commit(&args.repo, &rev)?;
            let errors = loaded.diagnostics.errors().count();
            print_err(&format!(
                "note: the base revision `{base_rev}` does not validate ({errors} error{}); a \
                 server following it keeps the newest valid revision in force, so the plan \
                 compares with {} ({}), the newest valid commit before it\n",
                if errors == 1 { "" } else { "s" },
                commit.short,
                commit.summary
            ));
            return Ok((commit.id, config, Some(invalid)));
        }
    }
    load_valid(args, &base_rev, "base").map(|config| (base_rev, config, None))
}

/// Loads a revision; a revision that does not validate makes plan fail with its errors. The
/// head revision's warnings (a misspelt directory whose files are not read, a host without
/// a key) go to stderr, one line each: they are the change under review.
fn load_valid(args: &Args, rev: &str, which: &str) -> anyhow::Result<Config> {
    let files = crate::git::read_revision(&args.repo, rev)?;
    let loaded = config::load(&files);
    if let Some(config) = loaded.config {
        if which == "head" {
            for item in loaded.diagnostics.items() {
                print_err(&format!("{}\n", item.headline()));
            }
        }
        Ok(config)
    } else {
        print_err(
            &loaded
                .diagnostics
                .render_text(use_color(&std::io::stderr())),
        );
        let errors = loaded.diagnostics.errors().count();
        anyhow::bail!(
            "the {which} revision `{rev}` does not validate ({errors} error{} above); {}",
            if errors == 1 { "" } else { "s" },
            if which == "base" {
                "no valid commit was found in its recent history either, so pass a valid one \
                 with --base"
            } else {
                "fix them, then plan again"
            }
        )
    }
}
