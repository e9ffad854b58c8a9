//! `restic-manager show`: what each host will run, after selection and defaults.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::validate::load_source;
use super::{Format, print_err, print_out, report_error, use_color};
use crate::config::effective::{Assignment, HostView, effective};

/// Flags of `show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config repository (a directory; with --rev, a git repository).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Show this git revision instead of the files on disk.
    #[arg(long)]
    pub rev: Option<String>,
    /// Only this host (its file name in hosts/).
    #[arg(long)]
    pub host: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `show`: 0 when shown, 1 when the config is invalid, 2 on usage or I/O errors.
pub fn run(args: &Args) -> u8 {
    let loaded = match load_source(&args.dir, args.rev.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            report_error(&e);
            return 2;
        }
    };
    let Some(config) = &loaded.config else {
        print_err(
            &loaded
                .diagnostics
                .render_text(use_color(&std::io::stderr())),
        );
        print_err("the config is invalid; fix the errors above, then run show again\n");
        return 1;
    };

    let mut hosts = effective(config);
    if let Some(wanted) = &args.host {
        hosts.retain(|h| &h.name == wanted);
        if hosts.is_empty() {
            let known: Vec<&str> = config.hosts.keys().map(String::as_str).collect();
            let hint = crate::config::load::suggest(wanted, known.iter().copied())
                .map_or(String::new(), |s| format!(" (did you mean `{s}`?)"));
            report_error(&anyhow::anyhow!("there is no host `{wanted}`{hint}"));
            return 2;
        }
    }
    match args.format {
        Format::Json => print_out(&format!("{:#}\n", serde_json::json!({ "hosts": hosts }))),
        Format::Text => print_out(&render(&hosts)),
    }
    0
}

/// The text form: one block per host, one sub-block per assignment.
#[must_use]
pub fn render(hosts: &[HostView]) -> String {
    let mut out = String::new();
    for host in hosts {
        let mut notes = vec![format!("hostname {}", host.hostname), host.timezone.clone()];
        if host.paused {
            notes.push("PAUSED: runs nothing".to_owned());
        }
        if !host.enrolled {
            notes.push("not enrolled: no agent-key".to_owned());
        }
        let _ = writeln!(out, "host {} ({})", host.name, notes.join(", "));
        if host.assignments.is_empty() {
            let _ = writeln!(out, "  no policy selects this host: nothing is backed up");
        }
        for a in &host.assignments {
            render_assignment(&mut out, a);
        }
        out.push('\n');
    }
    out
}

fn render_assignment(out: &mut String, a: &Assignment) {
    use crate::config::schedule::format_duration;

    let append = if a.append_only { ", append-only" } else { "" };
    let _ = writeln!(
        out,
        "  policy {} -> repository {} ({}{append})",
        a.policy, a.repository, a.repository_url
    );
    let _ = writeln!(out, "    paths:     {}", a.paths.join(", "));
    if !a.exclude.is_empty() {
        let _ = writeln!(out, "    exclude:   {}", a.exclude.join(", "));
    }
    let mut skips = Vec::new();
    if !a.exclude_if_present.is_empty() {
        skips.push(format!(
            "directories containing {}",
            a.exclude_if_present.join(" or ")
        ));
    }
    if a.exclude_caches {
        skips.push("cache directories (CACHEDIR.TAG)".to_owned());
    }
    if a.one_file_system {
        skips.push("other file systems mounted below the paths".to_owned());
    }
    if !skips.is_empty() {
        let _ = writeln!(out, "    skips:     {}", skips.join("; "));
    }
    let _ = writeln!(out, "    tags:      {}", a.tags.join(", "));
    let missed = match a.missed_run {
        crate::config::model::MissedRun::RunOnce => "run once",
        crate::config::model::MissedRun::Skip => "skip",
    };
    let _ = writeln!(
        out,
        "    backup:    {}; missed runs: {missed}; stopped after {}{}",
        a.schedule,
        format_duration(a.max_duration),
        if a.partial_is_success {
            "; partial counts as success"
        } else {
            ""
        }
    );
    match (&a.retention, &a.forget) {
        (Some(retention), Some(forget)) => {
            let _ = writeln!(out, "    retention: {retention}; forget: {forget}");
        }
        _ => {
            let _ = writeln!(out, "    retention: none (snapshots are never forgotten)");
        }
    }
    if let Some(prune) = &a.prune {
        let unused = prune
            .max_unused
            .as_ref()
            .map_or(String::new(), |m| format!(", max-unused {m}"));
        let _ = writeln!(out, "    prune:     {}{unused}", prune.schedule);
    }
    match &a.check {
        Some(check) => {
            let subset = check
                .read_data_subset
                .as_ref()
                .map_or(String::new(), |s| format!(", reading {s} of the data"));
            let _ = writeln!(out, "    check:     {}{subset}", check.schedule);
        }
        None => {
            let _ = writeln!(out, "    check:     never");
        }
    }
    for (what, commands) in [
        ("before", &a.hooks.before),
        ("after", &a.hooks.after),
        ("on-failure", &a.hooks.on_failure),
    ] {
        for argv in commands {
            let _ = writeln!(out, "    hook {what}: {argv:?}");
        }
    }
    if !a.hooks.is_empty() {
        let _ = writeln!(
            out,
            "    hooks stop after {} each",
            format_duration(a.hooks.timeout)
        );
    }
}
