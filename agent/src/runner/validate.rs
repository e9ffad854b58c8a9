//! Checking a job against the agent's own limits and against what can be turned into a safe
//! restic command, before anything runs.
//!
//! A job is data from the server. The agent refuses one that would step outside its local
//! file (hooks when hooks are off, paths outside `allowed-paths`) and one whose values could
//! widen what restic touches: an empty `--host` or a `policy:` tag would let a forget reach
//! other hosts' or policies' snapshots, an unknown keep flag could be any restic flag, a
//! backend variable could replace the password command.

use std::path::{Component, Path, PathBuf};

use protocol::{HookSpec, JobKind, JobSpec};

use super::Limits;
use super::env::check_backend_env;

/// restic forget's keep flags (without `--`), the only ones a job may carry.
const KEEP_FLAGS: [&str; 13] = [
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
    "keep-within",
    "keep-within-hourly",
    "keep-within-daily",
    "keep-within-weekly",
    "keep-within-monthly",
    "keep-within-yearly",
    "keep-tag",
];

/// Checks everything about `job` that does not need restic. The error is the message of a
/// [`protocol::Outcome::Refused`] result.
pub(crate) fn check(job: &JobSpec, limits: &Limits) -> Result<(), String> {
    check_scope(job)?;
    check_backend_env(&job.repository.env)?;
    check_hooks(&job.hooks, limits)?;
    if job.max_duration_secs == 0 {
        return Err("the job's maximum duration is 0 seconds, so it cannot run".to_owned());
    }
    match job.kind {
        JobKind::Backup => {
            let Some(backup) = &job.backup else {
                return Err("the backup job carries no backup settings (paths)".to_owned());
            };
            if backup.paths.is_empty() {
                return Err("the backup job names no paths to back up".to_owned());
            }
            for path in &backup.paths {
                check_path(path, &limits.allowed_paths)?;
            }
            for pattern in backup.exclude.iter().chain(&backup.exclude_if_present) {
                value("an exclude pattern", pattern)?;
            }
            for tag in &backup.tags {
                check_tag(tag)?;
            }
        }
        JobKind::Forget => {
            let Some(forget) = &job.forget else {
                return Err("the forget job carries no retention rules".to_owned());
            };
            for (flag, keep) in &forget.keep {
                if !KEEP_FLAGS.contains(&flag.as_str()) {
                    return Err(format!(
                        "the forget job asks for `--{flag}`, which is not one of restic's keep \
                         rules ({})",
                        KEEP_FLAGS.join(", ")
                    ));
                }
                value(&format!("the value of `{flag}`"), keep)?;
            }
            let parts_ok = forget.group_by.is_empty()
                || forget
                    .group_by
                    .split(',')
                    .all(|part| matches!(part, "host" | "paths" | "tags"));
            if !parts_ok {
                return Err(format!(
                    "the forget job's group-by {:?} is not a comma-separated list of `host`, \
                     `paths` and `tags`",
                    forget.group_by
                ));
            }
        }
        JobKind::Check => {
            if let Some(subset) = job.check.as_ref().and_then(|c| c.read_data_subset.as_ref()) {
                value("read-data-subset", subset)?;
            }
        }
        JobKind::Prune => {
            if let Some(max) = job.prune.as_ref().and_then(|p| p.max_unused.as_ref()) {
                value("max-unused", max)?;
            }
        }
        JobKind::Init | JobKind::Unlock | JobKind::Snapshots => {}
    }
    Ok(())
}

/// `--host` and the `policy:` tag bound what backups, forgets and inventories touch.
fn check_scope(job: &JobSpec) -> Result<(), String> {
    let host = &job.hostname;
    if host.is_empty() || host.trim() != host || host.chars().any(char::is_control) {
        return Err(format!(
            "the job's hostname {host:?} is empty or malformed; restic would not scope \
             snapshots to this host with it"
        ));
    }
    let policy = &job.policy;
    let policy_ok = !policy.is_empty()
        && policy
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !policy_ok {
        return Err(format!(
            "the job's policy name {policy:?} is not a valid policy name (a-z, 0-9 and `-`)"
        ));
    }
    if job.repository.url.is_empty() || job.repository.url.contains('\0') {
        return Err(format!(
            "the URL of repository `{}` is empty or contains a NUL byte",
            job.repository.name
        ));
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    value("a tag", tag)?;
    if tag.contains(',') {
        return Err(format!(
            "the tag {tag:?} contains a comma, which restic would read as two tags"
        ));
    }
    if tag.starts_with("policy:") {
        return Err(format!(
            "the tag {tag:?} uses the `policy:` prefix the agent reserves for the job's own \
             policy"
        ));
    }
    Ok(())
}

/// A value that goes into one argv word: not empty, no control characters.
fn value(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err(format!(
            "{what} {text:?} is empty or contains control characters"
        ));
    }
    Ok(())
}

fn check_hooks(hooks: &HookSpec, limits: &Limits) -> Result<(), String> {
    let all = [
        ("before", &hooks.before),
        ("after", &hooks.after),
        ("on-failure", &hooks.on_failure),
    ];
    let Some((when, first)) = all
        .iter()
        .find_map(|(when, list)| list.first().map(|hook| (*when, hook)))
    else {
        return Ok(());
    };
    if !limits.allow_hooks {
        return Err(format!(
            "the job carries hooks, starting with the {when} hook {}, and this agent does not \
             run hooks; to allow them, set `allow-hooks = true` in the agent's local settings \
             file and restart the agent",
            super::hooks::describe(first)
        ));
    }
    for (when, list) in all {
        for hook in list {
            let program_ok = hook.first().is_some_and(|p| !p.is_empty());
            if !program_ok || hook.iter().any(|arg| arg.contains('\0')) {
                return Err(format!(
                    "the {when} hook {} has no program or contains a NUL byte",
                    super::hooks::describe(hook)
                ));
            }
        }
    }
    if hooks.timeout_secs == 0 {
        return Err("the job's hook timeout is 0 seconds, so no hook could run".to_owned());
    }
    Ok(())
}

/// A backup path must be absolute, free of `..`, and inside the allowed prefixes both as
/// written and, when it exists, with its symlinks resolved.
///
/// NOTE: symlinks are resolved once, when the job starts (docs/src/limitations.md).
fn check_path(path: &str, allowed: &[PathBuf]) -> Result<(), String> {
    if path.contains('\0') {
        return Err(format!("backup path {path:?} contains a NUL byte"));
    }
    let raw = Path::new(path);
    if !raw.is_absolute() {
        return Err(format!(
            "backup path {path:?} is relative; the agent backs up absolute paths only"
        ));
    }
    if raw.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "backup path {path:?} contains `..`; write the path without it"
        ));
    }
    if allowed.is_empty() {
        return Ok(());
    }
    let lexical: PathBuf = raw.components().collect();
    let prefixes: Vec<PathBuf> = allowed
        .iter()
        .filter(|p| p.is_absolute() && !p.components().any(|c| c == Component::ParentDir))
        .map(|p| p.components().collect())
        .collect();
    let list = allowed
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    if !prefixes.iter().any(|prefix| lexical.starts_with(prefix)) {
        return Err(format!(
            "backup path `{path}` is outside the paths this agent allows ({list}); change the \
             policy, or add the path to `allowed-paths` in the agent's local settings file"
        ));
    }
    // A symlink below an allowed prefix must not lead restic outside it.
    if let Ok(real) = std::fs::canonicalize(&lexical) {
        let inside = prefixes.iter().any(|prefix| {
            let real_prefix = std::fs::canonicalize(prefix).unwrap_or_else(|_| prefix.clone());
            real.starts_with(&real_prefix) || real.starts_with(prefix)
        });
        if !inside {
            return Err(format!(
                "backup path `{path}` resolves through a symlink to `{}`, which is outside the \
                 paths this agent allows ({list})",
                real.display()
            ));
        }
    }
    Ok(())
}

/// The backup paths that do not exist (checked after the before hooks, which may create
/// them). restic may exit 0 when a source is missing, so the agent checks itself.
pub(crate) fn missing_paths(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_err())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use protocol::{BackupSpec, ForgetSpec, RepositoryAccess, Secret};

    use super::*;

    fn job(kind: JobKind) -> JobSpec {
        JobSpec {
            id: "j1".into(),
            kind,
            host: "web-1".into(),
            hostname: "web-1.example.net".into(),
            policy: "system".into(),
            repository: RepositoryAccess {
                name: "local".into(),
                url: "/srv/repo".into(),
                password: Secret::new("pw".into()),
                env: BTreeMap::new(),
            },
            max_duration_secs: 60,
            init_if_missing: false,
            backup: Some(BackupSpec {
                paths: vec!["/etc".into()],
                ..BackupSpec::default()
            }),
            forget: Some(ForgetSpec {
                keep: vec![("keep-daily".into(), "7".into())],
                group_by: "host,paths".into(),
                prune: false,
            }),
            check: None,
            prune: None,
            hooks: HookSpec::default(),
        }
    }

    #[test]
    fn a_plain_job_passes() {
        for kind in JobKind::ALL {
            check(&job(kind), &Limits::default()).unwrap();
        }
    }

    #[test]
    fn paths_outside_the_allowed_prefixes_are_refused_by_name() {
        let err = check_path(
            "/etc/passwd",
            &[PathBuf::from("/srv"), PathBuf::from("/home")],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "backup path `/etc/passwd` is outside the paths this agent allows (`/srv`, \
             `/home`); change the policy, or add the path to `allowed-paths` in the agent's \
             local settings file"
        );
        check_path("/srv/data/./x//y", &[PathBuf::from("/srv/")]).unwrap();
        check_path("/srv", &[PathBuf::from("/srv")]).unwrap();
        // Compared by components, not by text.
        assert!(check_path("/srvx/data", &[PathBuf::from("/srv")]).is_err());
        // A relative prefix in the local file never matches.
        assert!(check_path("/etc", &[PathBuf::from("")]).is_err());
    }

    #[test]
    fn relative_paths_and_parent_components_are_refused() {
        assert_eq!(
            check_path("etc", &[]).unwrap_err(),
            "backup path \"etc\" is relative; the agent backs up absolute paths only"
        );
        assert_eq!(
            check_path("/srv/../etc", &[PathBuf::from("/srv")]).unwrap_err(),
            "backup path \"/srv/../etc\" contains `..`; write the path without it"
        );
        assert!(check_path("/srv/..", &[]).is_err());
    }

    #[test]
    fn a_symlink_out_of_an_allowed_prefix_is_refused() {
        let allowed = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let link = allowed.path().join("link");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let err = check_path(
            link.join("x").to_str().unwrap(),
            &[allowed.path().to_owned()],
        );
        // `link/x` does not exist, so only the lexical check applies to it.
        err.unwrap();
        let err = check_path(link.to_str().unwrap(), &[allowed.path().to_owned()]).unwrap_err();
        assert!(err.contains("resolves through a symlink"), "{err}");
    }

    #[test]
    fn scope_values_that_would_widen_a_forget_are_refused() {
        let mut j = job(JobKind::Forget);
        j.hostname = String::new();
        assert!(
            check(&j, &Limits::default())
                .unwrap_err()
                .contains("hostname \"\"")
        );
        let mut j = job(JobKind::Forget);
        j.policy = "a,b".into();
        assert!(
            check(&j, &Limits::default())
                .unwrap_err()
                .contains("policy name")
        );
        let mut j = job(JobKind::Backup);
        j.backup.as_mut().unwrap().tags = vec!["policy:other".into()];
        assert!(
            check(&j, &Limits::default())
                .unwrap_err()
                .contains("reserves")
        );
        let mut j = job(JobKind::Backup);
        j.backup.as_mut().unwrap().tags = vec!["a,b".into()];
        assert!(check(&j, &Limits::default()).unwrap_err().contains("comma"));
    }

    #[test]
    fn unknown_keep_flags_and_group_by_parts_are_refused() {
        let mut j = job(JobKind::Forget);
        j.forget.as_mut().unwrap().keep = vec![("unsafe-allow-remove-all".into(), "x".into())];
        assert!(
            check(&j, &Limits::default())
                .unwrap_err()
                .starts_with("the forget job asks for `--unsafe-allow-remove-all`")
        );
        let mut j = job(JobKind::Forget);
        j.forget.as_mut().unwrap().group_by = "host,label".into();
        assert!(
            check(&j, &Limits::default())
                .unwrap_err()
                .contains("group-by")
        );
        let mut j = job(JobKind::Forget);
        j.forget.as_mut().unwrap().group_by = String::new();
        check(&j, &Limits::default()).unwrap();
    }

    #[test]
    fn hooks_are_refused_unless_allowed_naming_the_first() {
        let mut j = job(JobKind::Backup);
        j.hooks = HookSpec {
            before: vec![],
            after: vec![vec![
                "systemctl".into(),
                "start".into(),
                "postgresql".into(),
            ]],
            on_failure: vec![vec!["logger".into(), "failed".into()]],
            timeout_secs: 60,
        };
        assert_eq!(
            check(&j, &Limits::default()).unwrap_err(),
            "the job carries hooks, starting with the after hook `systemctl start postgresql`, \
             and this agent does not run hooks; to allow them, set `allow-hooks = true` in the \
             agent's local settings file and restart the agent"
        );
        let allowed = Limits {
            allow_hooks: true,
            ..Limits::default()
        };
        check(&j, &allowed).unwrap();
        j.hooks.before = vec![vec![String::new()]];
        assert!(check(&j, &allowed).unwrap_err().contains("has no program"));
    }

    #[test]
    fn missing_paths_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().to_str().unwrap().to_owned();
        let absent = dir.path().join("nope").to_str().unwrap().to_owned();
        assert_eq!(missing_paths(&[present, absent.clone()]), [absent]);
    }
}
