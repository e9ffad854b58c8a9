//! `validate --rev`: validating a revision of a git repository instead of the files on disk.

use std::path::Path;

use crate::common::{config_dir, git, restic_manager, run, sealed_armor, write};

/// The policy of a valid config repository; its cron hour is what the broken commit changes.
const POLICY: &str = r#"hosts = { names = ["web-1"] }
repository = "local"
paths = ["/etc"]
schedule = { cron = "0 2 * * *" }
retention = { keep-daily = 7 }
"#;

/// A git repository whose HEAD~1 is a valid config and whose HEAD gives the policy an hour
/// that does not exist (line 4, column 21 of `policies/system.toml`).
fn repo_with_broken_head() -> tempfile::TempDir {
    let repository = format!(
        "url = \"/srv/restic/local\"\npassword = {{ sealed = \"\"\"\n{}\"\"\" }}\n",
        sealed_armor("correct horse battery staple")
    );
    let dir = config_dir(&[
        ("hosts/web-1.toml", ""),
        ("repositories/local.toml", &repository),
        ("policies/system.toml", POLICY),
    ]);
    git(dir.path(), &["init", "-q"]);
    commit_all(dir.path(), "a valid config");

    let broken = POLICY.replace("0 2 * * *", "0 25 * * *");
    write(dir.path(), "policies/system.toml", broken.as_bytes());
    commit_all(dir.path(), "an hour that does not exist");
    dir
}

fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
}

#[test]
fn the_previous_valid_revision_passes() {
    let repo = repo_with_broken_head();

    let out = run(restic_manager()
        .args(["validate", "--rev", "HEAD~1"])
        .arg(repo.path()));

    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "valid: 1 host, 1 policy, 1 repository, 0 notifications (1 warning)\n"
    );
}

#[test]
fn the_broken_head_fails_with_the_file_position() {
    let repo = repo_with_broken_head();

    let out = run(restic_manager()
        .args(["validate", "--rev", "HEAD"])
        .arg(repo.path()));

    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, "invalid: 1 error, 1 warning\n");
    assert!(
        out.stderr
            .contains("policies/system.toml:4:21: error: invalid cron expression `0 25 * * *`"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn an_unknown_revision_exits_2_naming_it() {
    let repo = repo_with_broken_head();

    let out = run(restic_manager()
        .args(["validate", "--rev", "nope"])
        .arg(repo.path()));

    assert_eq!(
        out.code, 2,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, "");
    let expected = format!("revision `nope` not found in {}", repo.path().display());
    assert!(out.stderr.contains(&expected), "stderr: {}", out.stderr);
}

#[test]
fn a_directory_outside_git_exits_2_naming_it() {
    let dir = config_dir(&[("hosts/web-1.toml", "")]);

    let out = run(restic_manager()
        .args(["validate", "--rev", "HEAD"])
        .arg(dir.path()));

    assert_eq!(
        out.code, 2,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let expected = format!("cannot open git repository at {}", dir.path().display());
    assert!(out.stderr.contains(&expected), "stderr: {}", out.stderr);
}
