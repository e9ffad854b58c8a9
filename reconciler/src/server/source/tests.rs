use std::path::Path;

use super::*;
use crate::server::testutil::{commit_file, git, work_tree};

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Removes every object of a repository, packed or loose.
fn delete_objects(git_dir: &Path) {
    let objects = git_dir.join("objects");
    for entry in std::fs::read_dir(&objects).expect("objects dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name == "pack" {
            for pack in std::fs::read_dir(&path).expect("pack dir") {
                std::fs::remove_file(pack.expect("entry").path()).expect("remove pack");
            }
        } else if name.len() == 2 {
            std::fs::remove_dir_all(&path).expect("remove loose objects");
        }
    }
}

#[test]
fn a_local_repository_is_followed_in_place() {
    let repo = work_tree();
    let mut source = GitSource::local(repo.path(), "main").expect("valid source");

    let first = source.fetch().expect("first fetch");
    let second_id = commit_file(repo.path(), "hosts/b.toml", "b = 2\n", "add b");
    let second = source.fetch().expect("second fetch");

    assert_eq!(first.commit, git(repo.path(), &["rev-parse", "HEAD~1"]));
    assert_eq!(first.info.summary, "first");
    assert_eq!(first.repo_path, repo.path());
    assert_eq!(first.rewritten_from, None);
    assert_eq!(second.commit, second_id);
    assert_eq!(second.info.id, second_id);
    assert_eq!(second.info.summary, "add b");
    assert_eq!(second.info.author, "T <t@example.invalid>");
    assert_eq!(second.rewritten_from, None);
    assert_eq!(source.last_seen(), Some(second_id));
    let files = crate::git::read_revision(&second.repo_path, &second.commit).expect("readable");
    assert_eq!(files.files.len(), 2);
}

#[test]
fn a_reset_local_branch_is_reported_as_rewritten() {
    let repo = work_tree();
    let mut source = GitSource::local(repo.path(), "main").expect("valid source");
    let old = commit_file(repo.path(), "hosts/b.toml", "", "to be dropped");
    source.fetch().expect("first fetch");

    git(repo.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    let new = commit_file(repo.path(), "hosts/c.toml", "", "instead");
    let fetched = source.fetch().expect("fetch after reset");

    assert_eq!(fetched.commit, new);
    assert_eq!(fetched.rewritten_from, Some(old));
}

#[test]
fn the_last_applied_commit_from_the_store_detects_a_rewrite_after_a_restart() {
    let repo = work_tree();
    let old = commit_file(
        repo.path(),
        "hosts/b.toml",
        "",
        "applied before the restart",
    );
    git(repo.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    let new = commit_file(repo.path(), "hosts/c.toml", "", "force-pushed while down");

    let mut source = GitSource::local(repo.path(), "main").expect("valid source");
    source.set_last_seen(Some(&old)).expect("a commit id");
    let fetched = source.fetch().expect("fetch");

    assert_eq!(fetched.commit, new);
    assert_eq!(fetched.rewritten_from, Some(old));
}

#[test]
fn a_previous_tip_unknown_to_the_repository_counts_as_rewritten() {
    let repo = work_tree();
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let mut source = GitSource::local(repo.path(), "main").expect("valid source");
    source.set_last_seen(Some(unknown)).expect("a commit id");

    let fetched = source.fetch().expect("fetch");

    assert_eq!(fetched.rewritten_from.as_deref(), Some(unknown));
}

#[test]
fn a_malformed_last_seen_commit_is_refused() {
    let repo = work_tree();
    let mut source = GitSource::local(repo.path(), "main").expect("valid source");

    let err = source.set_last_seen(Some("abc123")).expect_err("too short");

    assert_eq!(
        err.to_string(),
        "`abc123` is not a full hex commit id; pass the id the last fetch returned"
    );
    assert_eq!(source.last_seen(), None);
}

#[test]
fn a_missing_local_branch_is_named_and_a_recreated_one_is_followed() {
    let repo = work_tree();
    let mut source = GitSource::local(repo.path(), "config").expect("valid source");

    let err = source.fetch().expect_err("no such branch");
    git(repo.path(), &["branch", "config"]);
    let fetched = source.fetch().expect("the branch exists now");

    assert!(matches!(err, SourceError::BranchNotFound { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "branch `config` not found in {}; it may have been deleted or renamed",
            repo.path().display()
        )),
        "{err}"
    );
    assert_eq!(fetched.commit, git(repo.path(), &["rev-parse", "config"]));
}

#[test]
fn a_directory_that_is_no_repository_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut source = GitSource::local(dir.path(), "main").expect("valid source");

    let err = source.fetch().expect_err("not a repository");

    assert!(matches!(err, SourceError::NotARepository { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "{} is not a git repository the server can open: ",
            dir.path().display()
        )),
        "{err}"
    );
}

#[test]
fn a_local_repository_with_missing_objects_is_reported_and_left_alone() {
    let repo = work_tree();
    let mut source = GitSource::local(repo.path(), "main").expect("valid source");
    delete_objects(&repo.path().join(".git"));

    let err = source.fetch().expect_err("objects are gone");

    assert!(
        matches!(&err, SourceError::CorruptRepository { path, .. } if path == repo.path()),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("is corrupt: cannot resolve `refs/heads/main`"),
        "{err}"
    );
    assert!(repo.path().join(".git").is_dir());
}

#[test]
fn a_remote_is_cloned_bare_into_the_data_dir_and_followed() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let mut source =
        GitSource::remote(&file_url(upstream.path()), "main", data.path()).expect("valid source");

    let first = source.fetch().expect("clone");
    let second_id = commit_file(upstream.path(), "hosts/b.toml", "b = 2\n", "add b");
    let second = source.fetch().expect("fetch");

    let clone = data.path().join("git/config-repo.git");
    assert_eq!(first.commit, git(upstream.path(), &["rev-parse", "HEAD~1"]));
    assert_eq!(first.repo_path, clone);
    assert_eq!(second.commit, second_id);
    assert_eq!(second.info.summary, "add b");
    assert_eq!(second.rewritten_from, None);
    assert_eq!(git(&clone, &["rev-parse", "--is-bare-repository"]), "true");
    assert_eq!(
        git(&clone, &["rev-parse", "refs/remotes/origin/main"]),
        second_id
    );
    assert!(!data.path().join("git/config-repo.git.partial").exists());
    let files = crate::git::read_revision(&second.repo_path, &second.commit).expect("readable");
    assert_eq!(files.files.len(), 2);
}

#[test]
fn a_force_push_is_followed_and_reports_the_old_tip() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let mut source =
        GitSource::remote(&file_url(upstream.path()), "main", data.path()).expect("valid source");
    let old = commit_file(upstream.path(), "hosts/b.toml", "", "to be dropped");
    source.fetch().expect("clone");

    git(upstream.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    let new = commit_file(upstream.path(), "hosts/c.toml", "", "force-pushed");
    let fetched = source.fetch().expect("fetch after the force-push");
    let again = source.fetch().expect("fetch without change");

    assert_eq!(fetched.commit, new);
    assert_eq!(fetched.rewritten_from, Some(old));
    assert_eq!(again.commit, new);
    assert_eq!(again.rewritten_from, None);
}

#[test]
fn a_deleted_remote_branch_is_named_and_a_recreated_one_is_followed() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let url = file_url(upstream.path());
    let mut source = GitSource::remote(&url, "main", data.path()).expect("valid source");
    let first = source.fetch().expect("clone");

    git(upstream.path(), &["checkout", "-q", "-b", "elsewhere"]);
    git(upstream.path(), &["branch", "-q", "-D", "main"]);
    let err = source.fetch().expect_err("the branch is gone");
    git(upstream.path(), &["checkout", "-q", "-b", "main"]);
    let new = commit_file(upstream.path(), "hosts/b.toml", "", "main is back");
    let fetched = source.fetch().expect("the branch is back");

    assert!(matches!(err, SourceError::BranchNotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("branch `main` not found in the remote {url};")),
        "{err}"
    );
    assert_eq!(source.last_seen(), Some(new.clone()));
    assert_eq!(fetched.commit, new);
    assert_eq!(fetched.rewritten_from, None);
    assert_ne!(first.commit, new);
}

#[test]
fn a_missing_branch_on_the_first_clone_leaves_no_clone_behind() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let mut source =
        GitSource::remote(&file_url(upstream.path()), "nope", data.path()).expect("valid source");

    let err = source.fetch().expect_err("no such branch");

    assert!(matches!(err, SourceError::BranchNotFound { .. }), "{err:?}");
    assert!(!data.path().join("git/config-repo.git").exists());
    assert!(!data.path().join("git/config-repo.git.partial").exists());
}

#[test]
fn an_unreachable_remote_is_named_without_its_credentials() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    // Over http gix refuses to send the credentials at all; over https the connection fails.
    for scheme in ["https", "http"] {
        let data = tempfile::tempdir().expect("temp dir");
        let url = format!("{scheme}://deploy:s3cr3t-token@127.0.0.1:{port}/config.git");
        let mut source = GitSource::remote(&url, "main", data.path()).expect("valid source");

        let err = source.fetch().expect_err("nothing listens");

        let text = err.to_string();
        let redacted = format!("{scheme}://***@127.0.0.1:{port}/config.git");
        assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
        assert!(
            text.starts_with(&format!("cannot reach the git remote {redacted}: ")),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
        assert_eq!(source.describe(), redacted);
        assert!(!data.path().join("git/config-repo.git").exists());
        assert!(!data.path().join("git/config-repo.git.partial").exists());
    }
}

#[test]
fn an_unreachable_https_remote_fails_cleanly_with_the_ring_provider() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let data = tempfile::tempdir().expect("temp dir");
    let url = format!("https://127.0.0.1:{port}/config.git");
    let mut source = GitSource::remote(&url, "main", data.path()).expect("valid source");

    let err = source.fetch().expect_err("nothing listens");

    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}

#[test]
fn a_restarted_source_reuses_the_clone_in_the_data_dir() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let url = file_url(upstream.path());
    let first = GitSource::remote(&url, "main", data.path())
        .expect("valid source")
        .fetch()
        .expect("clone");
    let marker = data.path().join("git/config-repo.git/kept");
    std::fs::write(&marker, "").expect("write");
    let new = commit_file(upstream.path(), "hosts/b.toml", "", "while down");

    let mut restarted = GitSource::remote(&url, "main", data.path()).expect("valid source");
    restarted
        .set_last_seen(Some(&first.commit))
        .expect("a commit id");
    let fetched = restarted.fetch().expect("fetch");

    assert!(marker.exists(), "the clone was replaced");
    assert_eq!(fetched.commit, new);
    assert_eq!(fetched.rewritten_from, None);
}

#[test]
fn a_corrupt_clone_is_moved_aside_and_cloned_again() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let url = file_url(upstream.path());
    let mut source = GitSource::remote(&url, "main", data.path()).expect("valid source");
    source.fetch().expect("clone");
    let clone = data.path().join("git/config-repo.git");
    delete_objects(&clone);
    let tip = commit_file(upstream.path(), "hosts/b.toml", "", "after the damage");

    let err = source.fetch().expect_err("the clone lost its objects");
    let recovered = source.fetch().expect("cloned again");

    let moved = data.path().join("git/config-repo.git.corrupt");
    assert!(
        matches!(&err, SourceError::CorruptClone { path, moved_to, .. }
            if path == &clone && moved_to == &moved),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "the clone of {url} at {} is corrupt: cannot resolve `refs/remotes/origin/main`",
            clone.display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "it was moved to {} and is cloned again on the next fetch",
            moved.display()
        )),
        "{text}"
    );
    assert!(moved.is_dir());
    assert_eq!(recovered.commit, tip);
    assert_eq!(recovered.rewritten_from, None);
    assert_eq!(git(&clone, &["rev-parse", "refs/remotes/origin/main"]), tip);
}

#[test]
fn a_clone_that_is_no_repository_any_more_is_cloned_again() {
    let upstream = work_tree();
    let data = tempfile::tempdir().expect("temp dir");
    let mut source =
        GitSource::remote(&file_url(upstream.path()), "main", data.path()).expect("valid source");
    let clone = data.path().join("git/config-repo.git");
    std::fs::create_dir_all(&clone).expect("mkdir");
    std::fs::write(clone.join("junk"), "not a repository").expect("write");

    let err = source.fetch().expect_err("the clone dir is junk");
    let fetched = source.fetch().expect("cloned again");

    assert!(matches!(err, SourceError::CorruptClone { .. }), "{err:?}");
    assert_eq!(fetched.commit, git(upstream.path(), &["rev-parse", "main"]));
}

#[test]
fn branch_names_are_checked() {
    let dir = tempfile::tempdir().expect("temp dir");

    let full = GitSource::local(dir.path(), "refs/heads/main").expect_err("a full ref");
    let bad = GitSource::local(dir.path(), "a..b").expect_err("not a ref name");

    assert_eq!(
        full.to_string(),
        "`refs/heads/main` is not a valid git branch name: name the branch without \
         `refs/heads/`, e.g. `main`"
    );
    assert!(
        bad.to_string()
            .starts_with("`a..b` is not a valid git branch name: "),
        "{bad}"
    );
}

#[test]
fn a_spec_is_a_url_or_a_path() {
    let data = Path::new("/var/lib/rm");
    let local = |spec: &str| {
        matches!(
            GitSource::from_spec(spec, "main", data)
                .expect("valid")
                .location(),
            Location::Local(_)
        )
    };

    assert!(local("/srv/config"));
    assert!(local("config"));
    assert!(local("./a:b"));
    assert!(!local("https://git.example.com/ops/config.git"));
    assert!(!local("ssh://git@git.example.com/ops/config.git"));
    assert!(!local("git@git.example.com:ops/config.git"));
    let Location::Remote { clone_dir, .. } = GitSource::from_spec("https://h/c.git", "main", data)
        .expect("valid")
        .location()
        .clone()
    else {
        panic!("a remote");
    };
    assert_eq!(clone_dir, data.join("git/config-repo.git"));
}

#[test]
fn credentials_are_redacted_from_urls() {
    assert_eq!(
        redact_url("https://user:pw@h.example/x.git"),
        "https://***@h.example/x.git"
    );
    assert_eq!(
        redact_url("https://ghp_token@h.example/x.git"),
        "https://***@h.example/x.git"
    );
    assert_eq!(
        redact_url("ssh://git:pw@h.example/x.git"),
        "ssh://git:***@h.example/x.git"
    );
    assert_eq!(
        redact_url("ssh://git@h.example/x.git"),
        "ssh://git@h.example/x.git"
    );
    assert_eq!(redact_url("git@h.example:x.git"), "git@h.example:x.git");
    assert_eq!(redact_url("https://h.example/a@b"), "https://h.example/a@b");
    assert_eq!(
        redact_text("failed for user:pw@h and pw@h", "https://user:pw@h/x"),
        "failed for ***@h and ***@h"
    );
}

#[test]
fn a_missing_blob_of_the_tip_is_found_before_the_tip_is_handed_out() {
    let repo = work_tree();
    let blob = git(repo.path(), &["rev-parse", "HEAD:hosts/a.toml"]);
    let (dir, file) = blob.split_at(2);
    std::fs::remove_file(repo.path().join(".git/objects").join(dir).join(file))
        .expect("the blob is a loose object");
    let mut source = GitSource::local(repo.path(), "main").expect("valid source");

    let err = source.fetch().expect_err("a blob is gone");

    assert!(
        matches!(err, SourceError::CorruptRepository { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("is corrupt: cannot read object {blob} of commit ")),
        "{err}"
    );
    assert_eq!(source.last_seen(), None);
}
