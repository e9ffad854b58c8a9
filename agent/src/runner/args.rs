//! restic's argv for each kind of job, built from the job's data.
//!
//! Values always travel as `--flag=value`, so a value can never be read as another flag, and
//! backup paths follow `--`. The repository and the password never appear here: they travel
//! in the environment (see `env.rs`). Backups are tagged `policy:<name>` and recorded under
//! `--host <hostname>`; forget and the snapshot inventory are scoped by the same two, so they
//! can only ever see this host's snapshots of this policy.

use std::ffi::OsString;
use std::time::Duration;

use protocol::{BackupSpec, CheckSpec, ForgetSpec, JobSpec, PruneSpec};

use super::version::Features;

/// The restic subcommands the runner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Init,
    CatConfig,
    Backup,
    Forget,
    Prune,
    Check,
    Unlock,
    Snapshots,
}

impl Command {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Command::Init => "init",
            Command::CatConfig => "cat config",
            Command::Backup => "backup",
            Command::Forget => "forget",
            Command::Prune => "prune",
            Command::Check => "check",
            Command::Unlock => "unlock",
            Command::Snapshots => "snapshots",
        }
    }
}

fn flag(name: &str, value: &str) -> OsString {
    format!("--{name}={value}").into()
}

fn scope(job: &JobSpec) -> [OsString; 2] {
    [
        flag("host", &job.hostname),
        flag("tag", &format!("policy:{}", job.policy)),
    ]
}

/// `--retry-lock=<d>` for restic 0.16+, placed before the subcommand (it is a global flag).
pub(crate) fn with_retry_lock(mut args: Vec<OsString>, wait: Duration) -> Vec<OsString> {
    args.insert(
        0,
        flag("retry-lock", &format!("{}s", wait.as_secs().max(1))),
    );
    args
}

pub(crate) fn init() -> Vec<OsString> {
    // 0.14 ignores --json for init and prints text; newer versions print one JSON message.
    // Neither is relied on: an init counts once `cat config` reads the repository back.
    vec!["init".into(), "--json".into()]
}

pub(crate) fn cat_config() -> Vec<OsString> {
    vec!["cat".into(), "config".into()]
}

pub(crate) fn backup(job: &JobSpec, spec: &BackupSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
    args.extend(scope(job));
    for tag in &spec.tags {
        args.push(flag("tag", tag));
    }
    for pattern in &spec.exclude {
        args.push(flag("exclude", pattern));
    }
    for name in &spec.exclude_if_present {
        args.push(flag("exclude-if-present", name));
    }
    if spec.exclude_caches {
        args.push("--exclude-caches".into());
    }
    if spec.one_file_system {
        args.push("--one-file-system".into());
    }
    args.push("--".into());
    args.extend(spec.paths.iter().map(OsString::from));
    args
}

pub(crate) fn forget(job: &JobSpec, spec: &ForgetSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["forget".into(), "--json".into()];
    args.extend(scope(job));
    args.push(flag("group-by", &spec.group_by));
    for (name, value) in &spec.keep {
        args.push(flag(name, value));
    }
    if spec.prune {
        args.push("--prune".into());
    }
    args
}

pub(crate) fn prune(spec: Option<&PruneSpec>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["prune".into()];
    if let Some(max) = spec.and_then(|p| p.max_unused.as_deref()) {
        args.push(flag("max-unused", max));
    }
    args
}

pub(crate) fn check(spec: Option<&CheckSpec>, features: Features) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["check".into()];
    if features.check_json {
        args.push("--json".into());
    }
    if let Some(subset) = spec.and_then(|c| c.read_data_subset.as_deref()) {
        args.push(flag("read-data-subset", subset));
    }
    args
}

/// Removes stale locks only: never `--remove-all`, which would break a running backup.
pub(crate) fn unlock() -> Vec<OsString> {
    vec!["unlock".into()]
}

/// This host's snapshots of this policy. `--no-lock`: a listing changes nothing, and it
/// saves writing and removing a lock file after every backup.
pub(crate) fn snapshots(job: &JobSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["snapshots".into(), "--json".into(), "--no-lock".into()];
    args.extend(scope(job));
    args
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use protocol::{HookSpec, JobKind, RepositoryAccess, Secret};

    use super::*;

    fn job() -> JobSpec {
        JobSpec {
            id: "j1".into(),
            kind: JobKind::Backup,
            host: "web-1".into(),
            hostname: "web-1.example.net".into(),
            policy: "system".into(),
            repository: RepositoryAccess {
                name: "offsite".into(),
                url: "rest:https://u:secret@backup.example.net/fleet".into(),
                password: Secret::new("hunter2".into()),
                env: BTreeMap::from([("AWS_SECRET_ACCESS_KEY".into(), Secret::new("k".into()))]),
            },
            max_duration_secs: 60,
            init_if_missing: false,
            backup: None,
            forget: None,
            check: None,
            prune: None,
            hooks: HookSpec::default(),
        }
    }

    fn words(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn a_backup_is_tagged_scoped_and_ends_with_its_paths() {
        let spec = BackupSpec {
            paths: vec!["/etc".into(), "/var/lib/app".into()],
            exclude: vec!["*.tmp".into()],
            exclude_if_present: vec![".nobackup".into()],
            exclude_caches: true,
            one_file_system: true,
            tags: vec!["db".into()],
        };
        assert_eq!(
            words(&backup(&job(), &spec)),
            [
                "backup",
                "--json",
                "--host=web-1.example.net",
                "--tag=policy:system",
                "--tag=db",
                "--exclude=*.tmp",
                "--exclude-if-present=.nobackup",
                "--exclude-caches",
                "--one-file-system",
                "--",
                "/etc",
                "/var/lib/app"
            ]
        );
    }

    #[test]
    fn forget_is_always_scoped_to_host_and_policy() {
        let spec = ForgetSpec {
            keep: vec![
                ("keep-daily".into(), "7".into()),
                ("keep-tag".into(), "keep".into()),
            ],
            group_by: "host,paths".into(),
            prune: true,
        };
        assert_eq!(
            words(&forget(&job(), &spec)),
            [
                "forget",
                "--json",
                "--host=web-1.example.net",
                "--tag=policy:system",
                "--group-by=host,paths",
                "--keep-daily=7",
                "--keep-tag=keep",
                "--prune"
            ]
        );
    }

    #[test]
    fn no_secret_ever_appears_in_any_argv() {
        let j = job();
        let all = [
            init(),
            cat_config(),
            backup(&j, &BackupSpec::default()),
            forget(&j, &ForgetSpec::default()),
            prune(Some(&PruneSpec {
                max_unused: Some("5%".into()),
            })),
            check(None, Features::of((0, 18, 0))),
            unlock(),
            snapshots(&j),
        ];
        for args in &all {
            let line = words(args).join(" ");
            for secret in ["hunter2", "secret", "backup.example.net", "rest:"] {
                assert!(!line.contains(secret), "{line}");
            }
            assert!(
                !words(args).contains(&"-r") && !line.contains("--repo"),
                "{line}"
            );
        }
        assert!(!words(&unlock()).contains(&"--remove-all"));
    }

    #[test]
    fn check_uses_json_only_where_restic_has_it() {
        let spec = CheckSpec {
            read_data_subset: Some("5%".into()),
        };
        assert_eq!(
            words(&check(Some(&spec), Features::of((0, 14, 0)))),
            ["check", "--read-data-subset=5%"]
        );
        assert_eq!(
            words(&check(Some(&spec), Features::of((0, 18, 0)))),
            ["check", "--json", "--read-data-subset=5%"]
        );
        assert_eq!(
            words(&with_retry_lock(unlock(), Duration::from_mins(2))),
            ["--retry-lock=120s", "unlock"]
        );
    }
}
