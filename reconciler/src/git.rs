//! Reading config repositories from git with gix: the config files of a revision, the commit a
//! revision names, merge bases, and the branch a change is planned against.
//!
//! [`read_revision`] produces the same [`ConfigFiles`] as
//! [`read_dir`](crate::config::source::read_dir) does for a checkout of that revision, with the
//! same rules and messages: only `.toml` files directly in the four object directories, nothing
//! over [`MAX_FILE_BYTES`] read (the size comes from the object header), and symlinks followed
//! only while they stay inside the config repository. Everything is read from the object
//! database; the work tree is never looked at.
//!
//! gix is blocking: async callers run these functions on `spawn_blocking`.

use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice as _;
use gix::objs::tree::EntryKind;

use crate::config::source::{
    ConfigFile, ConfigFiles, KIND_DIRS, MAX_FILE_BYTES, resolve_link, too_big, unknown_dir,
};

/// The longest symlink target read from a tree; real targets are paths, far shorter.
const MAX_LINK_BYTES: u64 = 4096;

/// The branches tried, in order, when `refs/remotes/origin/HEAD` does not name the default
/// branch.
const DEFAULT_BRANCH_CANDIDATES: [&str; 4] = [
    "refs/remotes/origin/main",
    "refs/remotes/origin/master",
    "refs/heads/main",
    "refs/heads/master",
];

/// Reading from git failed. `path` is always the path the caller passed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No git repository at or above the path.
    #[error("cannot open git repository at {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// The path could not be placed inside the repository's work tree.
    #[error(
        "cannot locate {} inside the work tree of its git repository {}: {message}",
        path.display(),
        workdir.display()
    )]
    Locate {
        path: PathBuf,
        workdir: PathBuf,
        message: String,
    },
    /// The revision names nothing in the repository.
    #[error(
        "revision `{rev}` not found in {}; check the commit id, branch or tag name \
         (`git log --oneline` lists commits)",
        path.display()
    )]
    NotFound {
        rev: String,
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// The revision could not be parsed or is ambiguous.
    #[error("cannot resolve revision `{rev}` in {}", path.display())]
    BadRevision {
        rev: String,
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// The revision names a range of commits.
    #[error(
        "revision `{rev}` names a range in {}, not one commit; name a single commit",
        path.display()
    )]
    Range { rev: String, path: PathBuf },
    /// The revision names a tree or a blob, not a commit.
    #[error(
        "revision `{rev}` is not a commit in {} but a {kind}; name a commit, branch or tag",
        path.display()
    )]
    NotACommit {
        rev: String,
        path: PathBuf,
        kind: String,
    },
    /// The config directory does not exist at the revision.
    #[error(
        "{} is not a directory at revision `{rev}` (looked for `{prefix}` in its tree)",
        path.display()
    )]
    NoConfigDir {
        rev: String,
        path: PathBuf,
        prefix: String,
    },
    /// Reading objects or references of a resolved revision failed.
    #[error("cannot read {what} of revision `{rev}` in {}", path.display())]
    Read {
        what: &'static str,
        rev: String,
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// Two commits share no history.
    #[error(
        "`{a}` and `{b}` have no common ancestor in {}; they cannot be compared",
        path.display()
    )]
    NoMergeBase { a: String, b: String, path: PathBuf },
    /// Reading references failed.
    #[error("cannot read the references of the git repository at {}", path.display())]
    Refs {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// None of the usual default branches exists.
    #[error(
        "cannot tell the default branch of the git repository at {}: none of \
         refs/remotes/origin/HEAD, origin/main, origin/master, main or master exists; pass \
         --base to name the revision to compare against",
        path.display()
    )]
    NoDefaultBranch { path: PathBuf },
}

/// A commit, as shown to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The full hex object id.
    pub id: String,
    /// The shortest unambiguous prefix of `id` (at least 7 characters, or `core.abbrev`).
    pub short: String,
    /// The first line of the commit message.
    pub summary: String,
    /// The author as `Name <email>`.
    pub author: String,
    /// When the commit was authored, RFC 3339 with the author's UTC offset.
    pub time: String,
}

/// Reads the config files of `rev` in the repository at `repo`.
///
/// `repo` may be a work tree, a bare repository, or a directory inside a work tree; in the
/// last case the config repository is that directory's tree at `rev`, as a checkout would have
/// it, and symlinks must stay inside it.
pub fn read_revision(repo: &Path, rev: &str) -> Result<ConfigFiles, GitError> {
    let (git, prefix) = open(repo)?;
    let commit = find_commit(&git, repo, rev)?;
    let read = |what| {
        move |source| GitError::Read {
            what,
            rev: rev.to_owned(),
            path: repo.to_owned(),
            source,
        }
    };

    let mut root = commit.tree().map_err(read("the tree"))?;
    if !prefix.is_empty() {
        let entry = root
            .lookup_entry_by_path(&prefix)
            .map_err(read("the tree"))?;
        let Some(entry) = entry.filter(|e| e.mode().is_tree()) else {
            return Err(GitError::NoConfigDir {
                rev: rev.to_owned(),
                path: repo.to_owned(),
                prefix,
            });
        };
        root = git.find_tree(entry.object_id()).map_err(read("the tree"))?;
    }
    tracing::debug!(revision = rev, id = %commit.id, prefix, "reading config files from git");

    let mut found = ConfigFiles::default();
    for kind in KIND_DIRS {
        let Some(entry) = root.find_entry(kind).map(|e| e.to_owned()) else {
            continue;
        };
        let dir = match entry.mode().kind() {
            EntryKind::Tree => entry.object_id(),
            EntryKind::Link => match follow_link(&root, kind, entry.object_id()) {
                Ok((_, target)) if target.mode().is_tree() => target.object_id(),
                Ok(_) => {
                    found
                        .refused
                        .push((kind.to_owned(), "is not a directory".to_owned()));
                    continue;
                }
                Err(LinkError::Outside) => {
                    found.refused.push((
                        kind.to_owned(),
                        "is a symlink to a place outside the repository; refused".to_owned(),
                    ));
                    continue;
                }
                Err(e) => {
                    found.refused.push((kind.to_owned(), e.to_string()));
                    continue;
                }
            },
            EntryKind::Commit => {
                found.refused.push((
                    kind.to_owned(),
                    "is a git submodule, not a directory of this repository".to_owned(),
                ));
                continue;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                found
                    .refused
                    .push((kind.to_owned(), "is not a directory".to_owned()));
                continue;
            }
        };
        found.dirs_found += 1;

        let tree = git.find_tree(dir).map_err(read("a directory"))?;
        let mut entries = tree
            .iter()
            .map(|e| e.map(|e| e.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read("a directory"))?;
        // Byte order of names, as `read_dir` sorts; git orders trees as if they ended in `/`.
        entries.sort_by(|a, b| a.filename().cmp(b.filename()));
        for entry in entries {
            let Ok(name) = entry.filename().to_str() else {
                found.skipped.push((
                    format!("{kind}/{}", entry.filename().to_str_lossy()),
                    "has a file name that is not UTF-8; skipped".to_owned(),
                ));
                continue;
            };
            let rel = format!("{kind}/{name}");
            if let Some(file) = read_entry(&root, &entry, rel, &mut found) {
                found.files.push(file);
            }
        }
    }
    for name in other_dirs_with_toml(&git, &root).map_err(read("a directory"))? {
        found.skipped.push((name.clone(), unknown_dir(&name)));
    }
    Ok(found)
}

/// The top-level trees besides the four kinds that hold `.toml` entries directly, sorted as
/// [`read_dir`](crate::config::source::read_dir) sorts them. Hidden ones are left out.
fn other_dirs_with_toml(
    git: &gix::Repository,
    root: &gix::Tree<'_>,
) -> Result<Vec<String>, gix::Error> {
    let mut names = Vec::new();
    for entry in root.iter().flatten() {
        let Ok(name) = entry.filename().to_str() else {
            continue;
        };
        if !entry.mode().is_tree() || name.starts_with('.') || KIND_DIRS.contains(&name) {
            continue;
        }
        let tree = git.find_tree(entry.object_id())?;
        let holds_toml = tree.iter().flatten().any(|file| {
            !file.mode().is_tree()
                && !file.mode().is_commit()
                && file.filename().ends_with(b".toml")
        });
        if holds_toml {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads one tree entry of a kind directory, or records why it was skipped.
fn read_entry(
    root: &gix::Tree<'_>,
    entry: &gix::object::tree::Entry<'_>,
    rel: String,
    found: &mut ConfigFiles,
) -> Option<ConfigFile> {
    let is_toml = Path::new(&rel).extension().is_some_and(|e| e == "toml");
    match entry.mode().kind() {
        EntryKind::Tree => {
            found.skipped.push((
                rel,
                "is a directory; config objects are files directly in their kind's directory"
                    .to_owned(),
            ));
            return None;
        }
        EntryKind::Commit => {
            found.skipped.push((
                rel,
                "is a git submodule; config objects are files directly in their kind's directory"
                    .to_owned(),
            ));
            return None;
        }
        EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link => {}
    }
    if !is_toml {
        found
            .skipped
            .push((rel, "is not a .toml file; skipped".to_owned()));
        return None;
    }

    let content = if entry.mode().is_link() {
        match follow_link(root, &rel, entry.object_id()) {
            Ok((_, target)) if target.mode().is_blob() => {
                read_blob(entry.repo(), target.object_id())
            }
            Ok((path, target)) => Err(format!(
                "is a symlink to `{path}`, which is {}, not a file",
                describe_kind(target.mode().kind())
            )),
            Err(e @ LinkError::Top) => Err(format!("{e}, which is a directory, not a file")),
            Err(e) => Err(e.to_string()),
        }
    } else {
        read_blob(entry.repo(), entry.object_id())
    };
    Some(ConfigFile { path: rel, content })
}

/// How a non-file tree entry is named in messages.
fn describe_kind(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Tree => "a directory",
        EntryKind::Link => "another symlink (only one level is followed)",
        EntryKind::Commit => "a git submodule",
        EntryKind::Blob | EntryKind::BlobExecutable => "a file",
    }
}

/// Why a symlink could not be followed. The messages complete "`path` …".
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("is a symlink pointing outside the repository; refused")]
    Outside,
    #[error("is a symlink to `{0}`, which does not exist at this revision")]
    Missing(String),
    #[error("is a symlink to the repository's top directory")]
    Top,
    #[error("is a symlink whose target cannot be read: {0}")]
    Unreadable(String),
}

/// Follows the symlink at `link` (relative to the config root, blob `id` holding its target)
/// one level, to the entry it names in `root` and that entry's path.
fn follow_link<'repo>(
    root: &gix::Tree<'repo>,
    link: &str,
    id: gix::ObjectId,
) -> Result<(String, gix::object::tree::Entry<'repo>), LinkError> {
    let repo = root.repo();
    let size = repo
        .find_header(id)
        .map_err(|e| LinkError::Unreadable(e.to_string()))?
        .size();
    if size > MAX_LINK_BYTES {
        return Err(LinkError::Unreadable(format!(
            "the target is {size} bytes long, more than a path can be"
        )));
    }
    let mut blob = repo
        .find_blob(id)
        .map_err(|e| LinkError::Unreadable(e.to_string()))?;
    let target = String::from_utf8(blob.take_data())
        .map_err(|_| LinkError::Unreadable("the target is not UTF-8".to_owned()))?;

    let resolved = resolve_link(link, &target).ok_or(LinkError::Outside)?;
    if resolved.is_empty() {
        return Err(LinkError::Top);
    }
    match root.lookup_entry_by_path(&resolved) {
        Ok(Some(entry)) => Ok((resolved, entry)),
        Ok(None) => Err(LinkError::Missing(resolved)),
        Err(e) => Err(LinkError::Unreadable(e.to_string())),
    }
}

/// Reads a blob, refusing it unread when its header says it is over [`MAX_FILE_BYTES`].
fn read_blob(repo: &gix::Repository, id: gix::ObjectId) -> Result<Vec<u8>, String> {
    let header = repo
        .find_header(id)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if header.kind() != gix::objs::Kind::Blob {
        return Err(format!(
            "cannot be read: its object {id} is a {}, not a blob",
            header.kind()
        ));
    }
    if header.size() > MAX_FILE_BYTES {
        return Err(too_big(header.size()));
    }
    let mut blob = repo
        .find_blob(id)
        .map_err(|e| format!("cannot be read: {e}"))?;
    Ok(blob.take_data())
}

/// Resolves `rev` to a commit and describes it.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<CommitInfo, GitError> {
    let (git, _) = open(repo)?;
    let commit = find_commit(&git, repo, rev)?;
    let read = |source| GitError::Read {
        what: "the commit",
        rev: rev.to_owned(),
        path: repo.to_owned(),
        source,
    };

    let message = commit.message().map_err(read)?;
    let summary = message.summary().to_str_lossy().into_owned();
    let author = commit.author().map_err(read)?.trim();
    let time = author.time().map_err(read)?;
    Ok(CommitInfo {
        id: commit.id.to_string(),
        short: commit.id().shorten_or_id().to_string(),
        summary,
        author: format!("{} <{}>", author.name, author.email),
        time: rfc3339(time.seconds, time.offset),
    })
}

/// Formats a git timestamp as RFC 3339 in its own offset, e.g. `2026-12-01T09:30:00+01:00`.
fn rfc3339(seconds: i64, offset: i32) -> String {
    let Ok(timestamp) = jiff::Timestamp::from_second(seconds) else {
        return format!("@{seconds}");
    };
    let offset = jiff::tz::Offset::from_seconds(offset).unwrap_or(jiff::tz::Offset::UTC);
    timestamp
        .to_zoned(offset.to_time_zone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// The best common ancestor of revisions `a` and `b`, as a full hex id.
pub fn merge_base(repo: &Path, a: &str, b: &str) -> Result<String, GitError> {
    let (git, _) = open(repo)?;
    merge_base_in(&git, repo, a, b)
}

fn merge_base_in(git: &gix::Repository, repo: &Path, a: &str, b: &str) -> Result<String, GitError> {
    let one = find_commit(git, repo, a)?.id;
    let two = find_commit(git, repo, b)?.id;

    let base = git.merge_base(one, two).map_err(|source| GitError::Read {
        what: "the history",
        rev: format!("{a}...{b}"),
        path: repo.to_owned(),
        source,
    })?;
    let Some(base) = base else {
        return Err(GitError::NoMergeBase {
            a: a.to_owned(),
            b: b.to_owned(),
            path: repo.to_owned(),
        });
    };
    Ok(base.to_string())
}

/// The full name of the reference a change is compared against: the branch
/// `refs/remotes/origin/HEAD` points to, else the first of `origin/main`, `origin/master`,
/// `main` and `master` that exists (e.g. `refs/remotes/origin/main`).
pub fn default_branch(repo: &Path) -> Result<String, GitError> {
    let (git, _) = open(repo)?;
    default_branch_in(&git, repo)
}

fn default_branch_in(git: &gix::Repository, repo: &Path) -> Result<String, GitError> {
    let refs = |source| GitError::Refs {
        path: repo.to_owned(),
        source,
    };

    let origin_head = git
        .try_find_reference("refs/remotes/origin/HEAD")
        .map_err(refs)?;
    if let Some(origin_head) = origin_head
        && let gix::refs::TargetRef::Symbolic(target) = origin_head.target()
    {
        let target = target.as_bstr().to_str_lossy().into_owned();
        if git
            .try_find_reference(target.as_str())
            .map_err(refs)?
            .is_some()
        {
            tracing::debug!(
                branch = target,
                "default branch from refs/remotes/origin/HEAD"
            );
            return Ok(target);
        }
        tracing::debug!(
            branch = target,
            "refs/remotes/origin/HEAD points to a missing ref"
        );
    }
    for candidate in DEFAULT_BRANCH_CANDIDATES {
        if git.try_find_reference(candidate).map_err(refs)?.is_some() {
            tracing::debug!(branch = candidate, "default branch found");
            return Ok(candidate.to_owned());
        }
        tracing::debug!(branch = candidate, "no such branch");
    }
    Err(GitError::NoDefaultBranch {
        path: repo.to_owned(),
    })
}

/// The commit a plan of `head` starts from: the merge base of `head` and the default branch,
/// as a full hex id.
pub fn plan_base(repo: &Path, head: &str) -> Result<String, GitError> {
    let (git, _) = open(repo)?;
    let base = default_branch_in(&git, repo)?;
    merge_base_in(&git, repo, head, &base)
}

/// Opens the repository at or above `path`, and returns it with the path of `path` inside its
/// work tree (`/`-separated, empty at the top or in a bare repository).
fn open(path: &Path) -> Result<(gix::Repository, String), GitError> {
    let git = gix::discover(path).map_err(|source| GitError::Open {
        path: path.to_owned(),
        source,
    })?;
    let Some(workdir) = git.workdir() else {
        return Ok((git, String::new()));
    };

    let locate = |message: String| GitError::Locate {
        path: path.to_owned(),
        workdir: workdir.to_owned(),
        message,
    };
    let canonical = path.canonicalize().map_err(|e| locate(e.to_string()))?;
    let canonical_workdir = workdir.canonicalize().map_err(|e| locate(e.to_string()))?;
    // Inside the `.git` directory there is no work tree path; read from the top.
    let git_dir = git.git_dir().canonicalize().ok();
    if git_dir.is_some_and(|git_dir| canonical.starts_with(git_dir)) {
        return Ok((git, String::new()));
    }
    let relative = canonical
        .strip_prefix(&canonical_workdir)
        .map_err(|_| locate("it is outside the work tree".to_owned()))?;
    let mut parts = Vec::new();
    for part in relative.components() {
        let Some(part) = part.as_os_str().to_str() else {
            return Err(locate("its path is not UTF-8".to_owned()));
        };
        parts.push(part);
    }
    let prefix = parts.join("/");
    tracing::debug!(
        path = %path.display(),
        workdir = %workdir.display(),
        prefix,
        "opened git repository"
    );
    Ok((git, prefix))
}

/// Resolves `rev` to a commit, following tags.
fn find_commit<'repo>(
    git: &'repo gix::Repository,
    repo: &Path,
    rev: &str,
) -> Result<gix::Commit<'repo>, GitError> {
    let spec = git.rev_parse(rev).map_err(|source| {
        if source.is_not_found() {
            GitError::NotFound {
                rev: rev.to_owned(),
                path: repo.to_owned(),
                source,
            }
        } else {
            GitError::BadRevision {
                rev: rev.to_owned(),
                path: repo.to_owned(),
                source,
            }
        }
    })?;
    let Some(id) = spec.single() else {
        return Err(GitError::Range {
            rev: rev.to_owned(),
            path: repo.to_owned(),
        });
    };

    let read = |source| GitError::Read {
        what: "the object",
        rev: rev.to_owned(),
        path: repo.to_owned(),
        source,
    };
    // Peel tags by their headers, so a revision naming a large blob is refused unread.
    let mut id = id.detach();
    loop {
        match git.find_header(id).map_err(read)?.kind() {
            gix::objs::Kind::Commit => return git.find_commit(id).map_err(read),
            gix::objs::Kind::Tag => {
                id = git
                    .find_tag(id)
                    .and_then(|tag| tag.target_id())
                    .map_err(read)?
                    .detach();
            }
            kind @ (gix::objs::Kind::Tree | gix::objs::Kind::Blob) => {
                return Err(GitError::NotACommit {
                    rev: rev.to_owned(),
                    path: repo.to_owned(),
                    kind: kind.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::read_dir;

    /// Runs git in `dir` with a fixed identity and branch name, returning trimmed stdout.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(["-c", "tag.gpgsign=false", "-c", "core.symlinks=true"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a file under `root`, creating its parent directories.
    fn write(root: &Path, path: &str, content: &[u8]) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
    }

    /// Creates a symlink at `path` under `root` pointing to `target`.
    fn symlink(root: &Path, path: &str, target: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, full).expect("symlink");
    }

    /// A new repository with `files` committed as its first commit.
    fn repo_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        git(dir.path(), &["init", "-q"]);
        for (path, content) in files {
            write(dir.path(), path, content.as_bytes());
        }
        commit_all(dir.path(), "first");
        dir
    }

    /// Commits everything in the work tree and returns the new commit's id.
    fn commit_all(dir: &Path, message: &str) -> String {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn paths(files: &ConfigFiles) -> Vec<&str> {
        files.files.iter().map(|f| f.path.as_str()).collect()
    }

    fn content<'a>(files: &'a ConfigFiles, path: &str) -> &'a Result<Vec<u8>, String> {
        &files
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not among {:?}", paths(files)))
            .content
    }

    #[test]
    fn head_and_an_older_commit_give_their_own_files() {
        let repo = repo_with(&[("hosts/a.toml", "old = 1\n")]);
        write(repo.path(), "hosts/a.toml", b"new = 2\n");
        write(repo.path(), "hosts/b.toml", b"");
        commit_all(repo.path(), "second");

        let old = read_revision(repo.path(), "HEAD~1").expect("HEAD~1 reads");
        let new = read_revision(repo.path(), "HEAD").expect("HEAD reads");

        assert_eq!(paths(&old), ["hosts/a.toml"]);
        assert_eq!(
            content(&old, "hosts/a.toml").as_deref(),
            Ok(&b"old = 1\n"[..])
        );
        assert_eq!(paths(&new), ["hosts/a.toml", "hosts/b.toml"]);
        assert_eq!(
            content(&new, "hosts/a.toml").as_deref(),
            Ok(&b"new = 2\n"[..])
        );
        assert_eq!(old.dirs_found, 1);
    }

    #[test]
    fn branches_tags_and_short_ids_resolve() {
        let repo = repo_with(&[("hosts/first.toml", "")]);
        let first = git(repo.path(), &["rev-parse", "HEAD"]);
        git(repo.path(), &["tag", "light"]);
        git(repo.path(), &["tag", "-a", "annotated", "-m", "a tag"]);
        git(repo.path(), &["branch", "old"]);
        write(repo.path(), "hosts/second.toml", b"");
        commit_all(repo.path(), "second");

        for rev in [
            "light",
            "annotated",
            "old",
            "refs/heads/old",
            &first[..8],
            &first,
        ] {
            let files = read_revision(repo.path(), rev).expect(rev);
            assert_eq!(paths(&files), ["hosts/first.toml"], "at {rev}");
            assert_eq!(
                resolve_commit(repo.path(), rev).expect(rev).id,
                first,
                "at {rev}"
            );
        }
        let head = read_revision(repo.path(), "main").expect("main reads");
        assert_eq!(paths(&head), ["hosts/first.toml", "hosts/second.toml"]);
    }

    #[test]
    fn resolve_commit_describes_the_commit() {
        let repo = repo_with(&[]);
        git(
            repo.path(),
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "Add web-1\n\nWith a body.",
                "--date=2026-12-01T09:30:00+01:00",
            ],
        );
        let id = git(repo.path(), &["rev-parse", "HEAD"]);
        let short = git(repo.path(), &["rev-parse", "--short", "HEAD"]);

        let info = resolve_commit(repo.path(), "HEAD").expect("HEAD resolves");

        assert_eq!(
            info,
            CommitInfo {
                id,
                short,
                summary: "Add web-1".to_owned(),
                author: "T <t@example.invalid>".to_owned(),
                time: "2026-12-01T09:30:00+01:00".to_owned(),
            }
        );
    }

    #[test]
    fn an_unknown_revision_is_reported_as_not_found() {
        let repo = repo_with(&[("hosts/a.toml", "")]);

        let err = read_revision(repo.path(), "nope").expect_err("nope does not exist");

        assert!(matches!(err, GitError::NotFound { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "revision `nope` not found in {}",
                repo.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_revision_cannot_be_resolved() {
        let repo = repo_with(&[("hosts/a.toml", "")]);

        let err = resolve_commit(repo.path(), "HEAD@{").expect_err("malformed");

        assert_eq!(
            err.to_string(),
            format!(
                "cannot resolve revision `HEAD@{{` in {}",
                repo.path().display()
            )
        );
        let err = resolve_commit(repo.path(), "HEAD~1").expect_err("the first commit");
        assert!(matches!(err, GitError::BadRevision { .. }), "{err:?}");
    }

    #[test]
    fn a_range_is_not_one_commit() {
        let repo = repo_with(&[("hosts/a.toml", "")]);

        let err = read_revision(repo.path(), "main..main").expect_err("a range");

        assert_eq!(
            err.to_string(),
            format!(
                "revision `main..main` names a range in {}, not one commit; name a single commit",
                repo.path().display()
            )
        );
    }

    #[test]
    fn a_tree_or_a_tagged_blob_is_not_a_commit() {
        let repo = repo_with(&[("hosts/a.toml", "")]);

        let blob = git(repo.path(), &["rev-parse", "HEAD:hosts/a.toml"]);
        git(
            repo.path(),
            &["tag", "-a", "on-a-blob", "-m", "a tag of a blob", &blob],
        );

        let err = read_revision(repo.path(), "HEAD:hosts").expect_err("a tree");
        let tagged = resolve_commit(repo.path(), "on-a-blob").expect_err("a tagged blob");

        assert_eq!(
            err.to_string(),
            format!(
                "revision `HEAD:hosts` is not a commit in {} but a tree; name a commit, branch \
                 or tag",
                repo.path().display()
            )
        );
        assert!(
            matches!(&tagged, GitError::NotACommit { kind, .. } if kind == "blob"),
            "{tagged:?}"
        );
    }

    #[test]
    fn a_path_outside_any_repository_cannot_be_opened() {
        let dir = tempfile::tempdir().expect("temp dir");

        let err = read_revision(dir.path(), "HEAD").expect_err("not a repository");

        assert!(matches!(err, GitError::Open { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot open git repository at {}", dir.path().display())
        );
        let missing = dir.path().join("missing");
        let err = merge_base(&missing, "a", "b").expect_err("no such directory");
        assert_eq!(
            err.to_string(),
            format!("cannot open git repository at {}", missing.display())
        );
    }

    #[test]
    fn a_symlink_inside_the_repository_is_followed() {
        let repo = tempfile::tempdir().expect("temp dir");
        git(repo.path(), &["init", "-q"]);
        write(repo.path(), "shared/common.toml", b"shared = true\n");
        write(repo.path(), "hosts/web-1.toml", b"web = 1\n");
        symlink(repo.path(), "hosts/web-2.toml", "../shared/common.toml");
        symlink(repo.path(), "hosts/web-3.toml", "web-1.toml");
        commit_all(repo.path(), "links");

        let files = read_revision(repo.path(), "HEAD").expect("HEAD reads");

        assert_eq!(
            content(&files, "hosts/web-2.toml").as_deref(),
            Ok(&b"shared = true\n"[..])
        );
        assert_eq!(
            content(&files, "hosts/web-3.toml").as_deref(),
            Ok(&b"web = 1\n"[..])
        );
    }

    #[test]
    fn a_symlink_leaving_the_repository_is_refused() {
        let repo = tempfile::tempdir().expect("temp dir");
        git(repo.path(), &["init", "-q"]);
        symlink(repo.path(), "hosts/relative.toml", "../../etc/passwd");
        symlink(repo.path(), "hosts/absolute.toml", "/etc/passwd");
        commit_all(repo.path(), "escaping links");

        let files = read_revision(repo.path(), "HEAD").expect("HEAD reads");

        for path in ["hosts/absolute.toml", "hosts/relative.toml"] {
            assert_eq!(
                content(&files, path),
                &Err("is a symlink pointing outside the repository; refused".to_owned()),
                "{path}"
            );
        }
    }

    #[test]
    fn a_symlink_to_nothing_a_directory_or_another_symlink_is_not_read() {
        let repo = tempfile::tempdir().expect("temp dir");
        git(repo.path(), &["init", "-q"]);
        write(repo.path(), "hosts/real.toml", b"");
        write(repo.path(), "shared/dir/x", b"");
        symlink(repo.path(), "hosts/dangling.toml", "gone.toml");
        symlink(repo.path(), "hosts/dir.toml", "../shared/dir");
        symlink(repo.path(), "hosts/hop1.toml", "hop2.toml");
        symlink(repo.path(), "hosts/hop2.toml", "real.toml");
        symlink(repo.path(), "hosts/top.toml", "..");
        commit_all(repo.path(), "odd links");

        let files = read_revision(repo.path(), "HEAD").expect("HEAD reads");

        assert_eq!(
            content(&files, "hosts/dangling.toml"),
            &Err("is a symlink to `hosts/gone.toml`, which does not exist at this revision".into())
        );
        assert_eq!(
            content(&files, "hosts/dir.toml"),
            &Err("is a symlink to `shared/dir`, which is a directory, not a file".into())
        );
        assert_eq!(
            content(&files, "hosts/hop1.toml"),
            &Err(
                "is a symlink to `hosts/hop2.toml`, which is another symlink (only one level is \
                 followed), not a file"
                    .into()
            )
        );
        assert_eq!(content(&files, "hosts/hop2.toml").as_deref(), Ok(&b""[..]));
        assert_eq!(
            content(&files, "hosts/top.toml"),
            &Err(
                "is a symlink to the repository's top directory, which is a directory, not a file"
                    .into()
            )
        );
    }

    #[test]
    fn a_blob_over_the_limit_is_refused_unread() {
        let big = "#".repeat(usize::try_from(MAX_FILE_BYTES).expect("fits") + 1);
        let repo = repo_with(&[("hosts/big.toml", &big), ("hosts/small.toml", "")]);

        let files = read_revision(repo.path(), "HEAD").expect("HEAD reads");

        assert_eq!(
            content(&files, "hosts/big.toml"),
            &Err(too_big(MAX_FILE_BYTES + 1))
        );
        assert_eq!(content(&files, "hosts/small.toml").as_deref(), Ok(&b""[..]));
    }

    #[test]
    fn other_entries_are_skipped_with_the_reason() {
        let repo = repo_with(&[
            ("hosts/README.md", "notes"),
            ("hosts/nested/deep.toml", ""),
            ("hosts/web-1.toml", ""),
            ("policies", "a file where a directory belongs"),
            ("repositories/local.toml", ""),
        ]);
        // A submodule entry, without needing a second repository.
        let head = git(repo.path(), &["rev-parse", "HEAD"]);
        git(
            repo.path(),
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{head},hosts/sub.toml"),
            ],
        );
        git(repo.path(), &["commit", "-q", "-m", "submodule"]);

        let files = read_revision(repo.path(), "HEAD").expect("HEAD reads");

        assert_eq!(
            paths(&files),
            ["hosts/web-1.toml", "repositories/local.toml"]
        );
        assert_eq!(files.dirs_found, 2);
        assert_eq!(
            files.skipped,
            [
                (
                    "hosts/README.md".to_owned(),
                    "is not a .toml file; skipped".to_owned()
                ),
                (
                    "hosts/nested".to_owned(),
                    "is a directory; config objects are files directly in their kind's directory"
                        .to_owned()
                ),
                (
                    "hosts/sub.toml".to_owned(),
                    "is a git submodule; config objects are files directly in their kind's \
                     directory"
                        .to_owned()
                ),
            ]
        );
        assert_eq!(
            files.refused,
            [("policies".to_owned(), "is not a directory".to_owned())]
        );
    }

    #[test]
    fn a_checkout_and_its_revision_read_the_same() {
        let repo = tempfile::tempdir().expect("temp dir");
        git(repo.path(), &["init", "-q"]);
        write(repo.path(), "hosts/web-1.toml", b"a = 1\n");
        write(repo.path(), "hosts/notes.txt", b"");
        write(repo.path(), "hosts/sub/x.toml", b"");
        write(repo.path(), "policies/p.toml", b"p = 2\n");
        write(repo.path(), "notifications", b"");
        write(repo.path(), "hots/typo.toml", b"");
        write(repo.path(), "docs/notes.md", b"");
        write(repo.path(), ".config/x.toml", b"");
        write(repo.path(), "nested/deeper/y.toml", b"");
        symlink(repo.path(), "hosts/escape.toml", "../../outside.toml");
        symlink(repo.path(), "hosts/web-2.toml", "web-1.toml");
        commit_all(repo.path(), "mixed");

        let from_git = read_revision(repo.path(), "HEAD").expect("HEAD reads");
        let from_disk = read_dir(repo.path()).expect("directory reads");

        assert_eq!(format!("{from_git:?}"), format!("{from_disk:?}"));
        let unknown: Vec<&str> = from_git
            .skipped
            .iter()
            .filter(|(_, why)| why.starts_with("holds .toml files"))
            .map(|(path, _)| path.as_str())
            .collect();
        assert_eq!(unknown, ["hots"]);
    }

    #[test]
    fn a_subdirectory_of_a_work_tree_reads_that_directory_at_the_revision() {
        let repo = repo_with(&[
            ("config/hosts/a.toml", "in config\n"),
            ("hosts/top.toml", ""),
        ]);
        write(repo.path(), "config/hosts/b.toml", b"");
        write(repo.path(), "later/hosts/c.toml", b"");
        commit_all(repo.path(), "second");
        let later = repo.path().join("later");

        let config = read_revision(&repo.path().join("config"), "HEAD~1").expect("config reads");
        let hosts = read_revision(&repo.path().join("hosts"), "HEAD").expect("hosts reads");
        let err = read_revision(&later, "HEAD~1").expect_err("later/ is not in HEAD~1");

        assert_eq!(paths(&config), ["hosts/a.toml"]);
        assert_eq!(hosts.dirs_found, 0);
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a directory at revision `HEAD~1` (looked for `later` in its tree)",
                later.display()
            )
        );
    }

    #[test]
    fn a_bare_repository_reads_like_its_work_tree() {
        let repo = repo_with(&[("hosts/a.toml", "a = 1\n")]);
        let bare = tempfile::tempdir().expect("temp dir");
        let bare_path = bare.path().join("config.git");
        git(
            bare.path(),
            &[
                "clone",
                "-q",
                "--bare",
                &repo.path().display().to_string(),
                "config.git",
            ],
        );

        let files = read_revision(&bare_path, "main").expect("main reads");

        assert_eq!(
            content(&files, "hosts/a.toml").as_deref(),
            Ok(&b"a = 1\n"[..])
        );
    }

    #[test]
    fn merge_base_of_two_branches_is_where_they_forked() {
        let repo = repo_with(&[("hosts/a.toml", "")]);
        let fork = git(repo.path(), &["rev-parse", "HEAD"]);
        git(repo.path(), &["checkout", "-q", "-b", "feature"]);
        commit_all(repo.path(), "on feature");
        git(repo.path(), &["checkout", "-q", "main"]);
        commit_all(repo.path(), "on main");

        assert_eq!(
            merge_base(repo.path(), "main", "feature").expect("a base"),
            fork
        );
        assert_eq!(
            merge_base(repo.path(), "feature", "main").expect("a base"),
            fork
        );
    }

    #[test]
    fn unrelated_histories_have_no_merge_base() {
        let repo = repo_with(&[("hosts/a.toml", "")]);
        git(repo.path(), &["checkout", "-q", "--orphan", "other"]);
        commit_all(repo.path(), "unrelated");

        let err = merge_base(repo.path(), "main", "other").expect_err("no common ancestor");

        assert_eq!(
            err.to_string(),
            format!(
                "`main` and `other` have no common ancestor in {}; they cannot be compared",
                repo.path().display()
            )
        );
    }

    #[test]
    fn default_branch_falls_back_to_main() {
        let repo = repo_with(&[("hosts/a.toml", "")]);

        assert_eq!(
            default_branch(repo.path()).expect("main"),
            "refs/heads/main"
        );
    }

    #[test]
    fn default_branch_prefers_what_origin_head_names() {
        let upstream = repo_with(&[("hosts/a.toml", "")]);
        git(upstream.path(), &["branch", "-m", "main", "trunk"]);
        let clone = tempfile::tempdir().expect("temp dir");
        git(
            clone.path(),
            &[
                "clone",
                "-q",
                &upstream.path().display().to_string(),
                "work",
            ],
        );
        let work = clone.path().join("work");
        git(&work, &["branch", "main"]);

        assert_eq!(
            default_branch(&work).expect("origin/HEAD"),
            "refs/remotes/origin/trunk"
        );
    }

    #[test]
    fn no_default_branch_asks_for_base() {
        let repo = repo_with(&[("hosts/a.toml", "")]);
        git(repo.path(), &["branch", "-m", "main", "trunk"]);

        let err = default_branch(repo.path()).expect_err("no usual branch");

        assert!(
            err.to_string()
                .ends_with("pass --base to name the revision to compare against")
        );
        assert!(matches!(err, GitError::NoDefaultBranch { .. }), "{err:?}");
    }

    #[test]
    fn plan_base_is_the_fork_point_from_the_default_branch() {
        let repo = repo_with(&[("hosts/a.toml", "")]);
        let fork = git(repo.path(), &["rev-parse", "HEAD"]);
        git(repo.path(), &["checkout", "-q", "-b", "change"]);
        write(repo.path(), "hosts/b.toml", b"");
        commit_all(repo.path(), "change");
        git(repo.path(), &["checkout", "-q", "main"]);
        commit_all(repo.path(), "main moves on");

        assert_eq!(plan_base(repo.path(), "change").expect("a base"), fork);
        assert_eq!(
            plan_base(repo.path(), "main").expect("a base"),
            git(repo.path(), &["rev-parse", "main"])
        );
    }
}
