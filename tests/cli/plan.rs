//! `plan` on real git repositories made from the example: what a change does, and its risks.

use std::path::Path;

use crate::common::{copy_tree, example_repo, git, restic_manager, run, write};

/// A git repository holding a copy of the example config repository, one commit on `main`.
fn example_git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_tree(&example_repo(), dir.path());
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "the example fleet"]);
    dir
}

/// Rewrites a file of the repository with `edit` and commits it.
fn commit_edit(dir: &Path, path: &str, message: &str, edit: impl Fn(&str) -> String) {
    let full = dir.join(path);
    let before = std::fs::read_to_string(&full).expect("read");
    let after = edit(&before);
    assert_ne!(before, after, "the edit of {path} changed nothing");
    write(dir, path, after.as_bytes());
    git(dir, &["commit", "-q", "-am", message]);
}

fn plan(dir: &Path, extra: &[&str]) -> crate::common::Run {
    run(restic_manager()
        .args(["plan", "--repo"])
        .arg(dir)
        .args(["--base", "HEAD~1", "--head", "HEAD"])
        .args(extra))
}

/// The acceptance case: lowering keep-daily and dropping a path are both risky.
fn lower_retention_and_drop_path(dir: &Path) {
    commit_edit(
        dir,
        "policies/system.toml",
        "keep fewer dailies, stop /root",
        |text| {
            text.replace("keep-daily = 7", "keep-daily = 3")
                .replace("\"/root\", ", "")
        },
    );
}

#[test]
fn lowered_retention_and_dropped_path_are_risky() {
    let repo = example_git_repo();
    lower_retention_and_drop_path(repo.path());

    let out = plan(repo.path(), &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    for expected in [
        "2 risky changes, 0 other changes, 3 hosts affected",
        "RISKY\n",
        "  ! policy system on db-1, web-1, web-2: `/root` no longer backed up\n",
        "  ! policy system on db-1, web-1, web-2: keep-daily lowered from 7 to 3\n",
    ] {
        assert!(
            out.stdout.contains(expected),
            "expected {expected:?} in:\n{}",
            out.stdout
        );
    }

    let out = plan(repo.path(), &["--fail-on-risky"]);
    assert_eq!(out.code, 3, "{}", out.stdout);
}

#[test]
fn markdown_and_json_forms() {
    let repo = example_git_repo();
    lower_retention_and_drop_path(repo.path());

    let out = plan(repo.path(), &["--format", "markdown"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.starts_with("### restic-manager plan\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(
        "- policy `system` on `db-1`, `web-1`, `web-2`: keep-daily lowered from 7 to 3\n"
    ));

    let out = plan(repo.path(), &["--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(json["risky"], true);
    assert_eq!(json["changes"].as_array().expect("changes").len(), 2);
    assert_eq!(json["changes"][0]["kind"], "path-removed");
    assert_eq!(
        json["changes"][0]["hosts"],
        serde_json::json!(["db-1", "web-1", "web-2"])
    );
    assert_eq!(json["head"]["summary"], "keep fewer dailies, stop /root");
}

#[test]
fn a_change_that_only_adds_is_not_risky() {
    let repo = example_git_repo();
    commit_edit(
        repo.path(),
        "policies/system.toml",
        "keep more dailies",
        |text| text.replace("keep-daily = 7", "keep-daily = 14"),
    );
    let out = plan(repo.path(), &["--fail-on-risky"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("0 risky changes, 1 other change, 3 hosts affected")
    );
    assert!(
        out.stdout
            .contains("  ~ policy system on db-1, web-1, web-2: keep-daily raised")
    );
}

#[test]
fn no_change_exits_zero() {
    let repo = example_git_repo();
    write(repo.path(), "README.md", b"only docs changed\n");
    git(repo.path(), &["add", "README.md"]);
    git(repo.path(), &["commit", "-q", "-m", "docs"]);
    let out = plan(repo.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("no changes to the fleet"));
}

#[test]
fn a_removed_host_is_risky() {
    let repo = example_git_repo();
    git(repo.path(), &["rm", "-q", "hosts/web-2.toml"]);
    git(repo.path(), &["commit", "-q", "-m", "retire web-2"]);
    let out = plan(repo.path(), &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("  ! host web-2: host removed: it is no longer backed up"),
        "{}",
        out.stdout
    );
}

#[test]
fn an_invalid_head_fails_with_its_validation_errors() {
    let repo = example_git_repo();
    commit_edit(repo.path(), "policies/web.toml", "typo", |text| {
        text.replacen("repository = ", "repositroy = ", 1)
    });
    let out = plan(repo.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("policies/web.toml:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown key `repositroy`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("error: the head revision `HEAD` does not validate (1 error"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_fix_to_a_broken_branch_is_planned_against_the_newest_valid_commit_before_it() {
    let repo = example_git_repo();
    commit_edit(repo.path(), "policies/web.toml", "typo", |text| {
        text.replacen("repository = ", "repositroy = ", 1)
    });
    // The fix repairs the typo and, in the same change, lowers retention.
    commit_edit(repo.path(), "policies/web.toml", "fix the typo", |text| {
        text.replacen("repositroy = ", "repository = ", 1)
    });
    lower_retention_and_drop_path(repo.path());

    let out = run(restic_manager()
        .args(["plan", "--repo"])
        .arg(repo.path())
        .args(["--base", "HEAD~2", "--head", "HEAD", "--format", "json"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "note: the base revision `HEAD~2` does not validate (1 error); a server following \
             it keeps the newest valid revision in force, so the plan compares with "
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("(the example fleet)"), "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(plan["base"]["summary"], "the example fleet", "{plan:#}");
    assert_eq!(plan["invalid-base"]["summary"], "typo", "{plan:#}");
    assert_eq!(plan["risky"], true, "{plan:#}");

    let text = run(restic_manager()
        .args(["plan", "--repo"])
        .arg(repo.path())
        .args(["--base", "HEAD~2"]));
    assert!(
        text.stdout
            .contains("the newest valid commit before the invalid"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_base_with_no_valid_commit_behind_it_fails_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "hosts/a.toml", b"hostname = ");
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "broken from the start"]);
    copy_tree(&example_repo(), dir.path());
    std::fs::remove_file(dir.path().join("hosts/a.toml")).expect("rm");
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "the example fleet"]);

    let out = plan(dir.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "the base revision `HEAD~1` does not validate (1 error above); no valid commit was \
             found in its recent history either"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn base_defaults_to_the_merge_base_with_main() {
    let repo = example_git_repo();
    git(repo.path(), &["checkout", "-q", "-b", "change"]);
    lower_retention_and_drop_path(repo.path());
    commit_edit(
        repo.path(),
        "policies/web.toml",
        "second commit on the branch",
        |text| text.replace("every = \"6h\"", "every = \"12h\""),
    );
    let out = run(restic_manager().args(["plan", "--repo"]).arg(repo.path()));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    // Both commits of the branch are in the plan: the base is where it left main.
    assert!(
        out.stdout.contains("keep-daily lowered from 7 to 3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("backups run less often: every 6h"),
        "{}",
        out.stdout
    );
}

#[test]
fn an_unknown_base_is_an_error() {
    let repo = example_git_repo();
    let out = run(restic_manager()
        .args(["plan", "--repo"])
        .arg(repo.path())
        .args(["--base", "no-such-branch"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no-such-branch"), "{}", out.stderr);
}

#[test]
fn a_misspelt_directory_in_the_head_revision_is_warned_about() {
    let repo = example_git_repo();
    write(
        repo.path(),
        "hots/web-9.toml",
        b"labels = { role = \"web\" }\n",
    );
    git(repo.path(), &["add", "-A"]);
    git(
        repo.path(),
        &["commit", "-q", "-m", "a new host, in the wrong place"],
    );

    let out = plan(repo.path(), &[]);

    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "hots: warning: `hots` holds .toml files but is not one of the object directories \
             (hosts/, policies/, repositories/, notifications/), so none of them is read; did \
             you mean `hosts/`?"
        ),
        "{}",
        out.stderr
    );
}
