//! `restic-manager validate`: check a config repository and report every problem at once.

use std::path::PathBuf;

use super::{Format, print_err, print_out, report_error, use_color};
use crate::config::{self, Loaded};

/// Flags of `validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config repository (a directory; with --rev, a git repository).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Validate this git revision (commit, branch or tag) instead of the files on disk.
    #[arg(long)]
    pub rev: Option<String>,
    /// The server's age identity file: also check that every sealed value opens with it. An
    /// empty RM_IDENTITY counts as unset. [env: RM_IDENTITY]
    // Not clap's `env`: it would treat an empty variable as a missing flag value.
    #[expect(
        clippy::doc_markdown,
        reason = "clap prints this comment as --help, where backticks would show"
    )]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Loads a config repository from a directory, or from a revision of the git repository
/// there.
pub fn load_source(dir: &std::path::Path, rev: Option<&str>) -> anyhow::Result<Loaded> {
    let files = match rev {
        Some(rev) => crate::git::read_revision(dir, rev)?,
        None => config::source::read_dir(dir)?,
    };
    Ok(config::load(&files))
}

/// Runs `validate`: 0 valid, 1 invalid, 2 usage or I/O error.
pub fn run(args: &Args) -> u8 {
    let mut loaded = match load_source(&args.dir, args.rev.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            report_error(&e);
            return 2;
        }
    };
    if let Some(identity) = crate::secrets::identity_path(args.identity.as_deref())
        && let Err(e) = crate::secrets::check_openable(&identity, &mut loaded)
    {
        report_error(&e);
        return 2;
    }

    let diagnostics = &loaded.diagnostics;
    let valid = !diagnostics.has_errors();
    match args.format {
        Format::Json => {
            let report = serde_json::json!({
                "valid": valid,
                "errors": diagnostics.errors().count(),
                "warnings": diagnostics.items().len() - diagnostics.errors().count(),
                "diagnostics": diagnostics.items(),
            });
            print_out(&format!("{report:#}\n"));
        }
        Format::Text => {
            let text = diagnostics.render_text(use_color(&std::io::stderr()));
            let errors = diagnostics.errors().count();
            let warnings = diagnostics.items().len() - errors;
            let summary = if valid {
                let counts = loaded.config.as_ref().map_or(String::new(), |c| {
                    format!(
                        ": {}, {}, {}, {}",
                        plural(c.hosts.len(), "host"),
                        plural_irregular(c.policies.len(), "policy", "policies"),
                        plural_irregular(c.repositories.len(), "repository", "repositories"),
                        plural(c.notifications.len(), "notification")
                    )
                });
                format!("valid{counts} ({})\n", plural(warnings, "warning"))
            } else {
                format!(
                    "invalid: {}, {}\n",
                    plural(errors, "error"),
                    plural(warnings, "warning")
                )
            };
            print_err(&text);
            print_out(&summary);
        }
    }
    u8::from(!valid)
}

/// `1 error`, `2 errors`.
fn plural(n: usize, noun: &str) -> String {
    plural_irregular(n, noun, &format!("{noun}s"))
}

/// `1 policy`, `2 policies`.
fn plural_irregular(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
