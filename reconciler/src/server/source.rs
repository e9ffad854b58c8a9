//! The config repository the server follows: one branch of either a local git repository, read
//! in place, or a remote one (https, ssh), kept as a bare clone in the data directory.
//!
//! [`GitSource::fetch`] brings the branch up to date and answers with its tip, or with an error
//! and nothing else: the caller keeps applying its last good revision until a fetch succeeds.
//! The tip is checked before it is handed out (its commit and every object of its tree are
//! readable), so [`read_revision`](crate::git::read_revision) of a returned commit does not
//! meet a half-fetched repository. A branch that moved to a commit that does not contain the
//! previous tip (a force-push) is reported in [`Fetched::rewritten_from`] for the audit log.
//!
//! A clone that cannot be read any more is moved aside to `config-repo.git.corrupt` and cloned
//! afresh on the next fetch; a local repository is never modified.
//!
//! gix is blocking: async callers run [`GitSource::fetch`] on `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice as _;

use crate::git::CommitInfo;

/// The clone of a remote repository, under the data directory.
const CLONE_DIR: &str = "git/config-repo.git";

/// Fetching the config repository failed. The caller says what stays in force: the last good
/// revision, or nothing when none was ever applied.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The branch name cannot name a git branch.
    #[error("`{branch}` is not a valid git branch name: {reason}")]
    BadBranch { branch: String, reason: String },
    /// The remote URL cannot be parsed.
    #[error("`{url}` is not a git URL the server can fetch from: {reason}")]
    BadUrl { url: String, reason: String },
    /// A commit id passed as the last seen tip is not one.
    #[error("`{commit}` is not a full hex commit id; pass the id the last fetch returned")]
    BadCommitId { commit: String },
    /// The branch does not exist where it was looked for.
    #[error(
        "branch `{branch}` not found in {location}; it may have been deleted or renamed: \
         recreate it or point the server at an existing branch"
    )]
    BranchNotFound { branch: String, location: String },
    /// Connecting to the remote or listing its branches failed.
    #[error(
        "cannot reach the git remote {url}: {reason}; check the URL, the network and the \
         credentials (the fetch is retried)"
    )]
    Unreachable { url: String, reason: String },
    /// The remote answered, but receiving the branch failed.
    #[error("fetching branch `{branch}` from {url} failed: {reason} (the fetch is retried)")]
    Fetch {
        branch: String,
        url: String,
        reason: String,
    },
    /// The clone in the data directory cannot be read; it was moved aside.
    #[error(
        "the clone of {url} at {} is corrupt: {reason}; it was moved to {} and is cloned \
         again on the next fetch",
        path.display(),
        moved_to.display()
    )]
    CorruptClone {
        url: String,
        path: PathBuf,
        moved_to: PathBuf,
        reason: String,
    },
    /// A local repository cannot be read; it is left as it is.
    #[error(
        "the git repository at {} is corrupt: {reason}; repair it (`git fsck` names the \
         damage) — the server never modifies a local repository",
        path.display()
    )]
    CorruptRepository { path: PathBuf, reason: String },
    /// The local path is not a git repository.
    #[error(
        "{} is not a git repository the server can open: {reason}; point the git source at a \
         work tree or a bare repository",
        path.display()
    )]
    NotARepository { path: PathBuf, reason: String },
    /// Preparing the clone directory failed.
    #[error("cannot {action} {}: {source}; check the data directory's permissions", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The tip of the followed branch after a successful fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The full hex id of the tip commit.
    pub commit: String,
    /// The tip commit, as shown to a user.
    pub info: CommitInfo,
    /// The repository to read the revision from (with [`read_revision`](crate::git::read_revision)
    /// and `commit`): the local repository itself, or the clone in the data directory.
    pub repo_path: PathBuf,
    /// The previous tip, when the new tip does not contain it: history was rewritten (a
    /// force-push, a reset). `None` when the branch moved forward, did not move, or there was
    /// no previous tip.
    pub rewritten_from: Option<String>,
}

/// Where the config repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A repository on this machine, opened in place and never written to.
    Local(PathBuf),
    /// A remote repository, cloned bare into the data directory.
    Remote {
        /// The URL as configured, credentials included; never logged or shown.
        url: String,
        /// The URL with credentials replaced by `***`, for messages and logs.
        redacted: String,
        /// The bare clone, `<data_dir>/git/config-repo.git`.
        clone_dir: PathBuf,
    },
}

/// One branch of a config repository, followed by repeated [`fetch`](Self::fetch)es.
#[derive(Debug)]
pub struct GitSource {
    location: Location,
    branch: String,
    last_seen: Option<gix::ObjectId>,
    interrupt: Arc<AtomicBool>,
}

impl GitSource {
    /// Follows `branch` of the repository at `path` (a work tree or a bare repository).
    pub fn local(path: impl Into<PathBuf>, branch: &str) -> Result<Self, SourceError> {
        Ok(Self {
            location: Location::Local(path.into()),
            branch: check_branch(branch)?,
            last_seen: None,
            interrupt: Arc::default(),
        })
    }

    /// Follows `branch` of the repository at `url` (https, http, ssh, `user@host:path` or
    /// file), cloned into `<data_dir>/git/config-repo.git` on the first fetch.
    ///
    /// NOTE: https connects within 20 s (gix's reqwest transport); ssh runs the `ssh` binary
    /// with no time limit of its own, so a hung ssh connection holds the fetch until the
    /// interrupt flag is set or ssh gives up (set `ServerAliveInterval` in the ssh config).
    /// Credentials come from the URL or git's credential helpers; a server without a terminal
    /// is never prompted for them.
    pub fn remote(url: &str, branch: &str, data_dir: &Path) -> Result<Self, SourceError> {
        let redacted = redact_url(url);
        if let Err(e) = gix::url::parse(url.as_bytes().as_bstr()) {
            return Err(SourceError::BadUrl {
                url: redacted,
                reason: redact_text(&e.to_string(), url),
            });
        }
        install_crypto_provider();
        Ok(Self {
            location: Location::Remote {
                url: url.to_owned(),
                redacted,
                clone_dir: data_dir.join(CLONE_DIR),
            },
            branch: check_branch(branch)?,
            last_seen: None,
            interrupt: Arc::default(),
        })
    }

    /// A local source when `spec` is a path, a remote one when it is a URL (it has a scheme
    /// such as `https://`, or is scp-like `user@host:path`).
    pub fn from_spec(spec: &str, branch: &str, data_dir: &Path) -> Result<Self, SourceError> {
        if is_url(spec) {
            Self::remote(spec, branch, data_dir)
        } else {
            Self::local(spec, branch)
        }
    }

    /// Where the repository lives.
    #[must_use]
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The followed branch, without `refs/heads/`.
    #[must_use]
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The repository for messages and logs: the local path, or the URL without credentials.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.location {
            Location::Local(path) => path.display().to_string(),
            Location::Remote { redacted, .. } => redacted.clone(),
        }
    }

    /// The tip a force-push is detected against: the tip of the last successful fetch, or
    /// what [`set_last_seen`](Self::set_last_seen) was given.
    #[must_use]
    pub fn last_seen(&self) -> Option<String> {
        self.last_seen.map(|id| id.to_string())
    }

    /// Sets the tip the next fetch compares against, e.g. the last applied commit read from
    /// the store after a restart. `None` forgets it: the next fetch reports no rewrite.
    pub fn set_last_seen(&mut self, commit: Option<&str>) -> Result<(), SourceError> {
        self.last_seen = match commit {
            None => None,
            Some(hex) => Some(parse_commit_id(hex)?),
        };
        Ok(())
    }

    /// A flag that aborts a running remote fetch when set (e.g. at shutdown); the fetch then
    /// fails and the next one starts over. Reset it before fetching again.
    #[must_use]
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupt)
    }

    /// Brings the branch up to date and returns its tip. Blocking.
    ///
    /// On success the tip becomes the last seen one. On error nothing changes, except that a
    /// corrupt clone is moved aside so the next fetch clones afresh.
    pub fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let span = tracing::debug_span!("fetch", source = %self.describe(), branch = %self.branch);
        let _entered = span.enter();

        let (tip, repo_path) = match &self.location {
            Location::Local(path) => (self.tip_of_local(path)?, path.clone()),
            Location::Remote {
                url,
                redacted,
                clone_dir,
            } => {
                let remote = Remote {
                    url,
                    redacted,
                    clone_dir,
                    branch: &self.branch,
                    interrupt: &self.interrupt,
                };
                (remote.fetch()?, clone_dir.clone())
            }
        };

        let rewritten_from = self.rewritten_from(&repo_path, tip)?;
        let info = crate::git::resolve_commit(&repo_path, &tip.to_string())
            .map_err(|e| self.corrupt(&repo_path, &e.to_string()))?;
        if let Some(old) = &rewritten_from {
            tracing::warn!(
                branch = %self.branch,
                old,
                new = %tip,
                "the branch was rewritten: its new tip does not contain the previous one"
            );
        } else if self.last_seen != Some(tip) {
            tracing::info!(branch = %self.branch, revision = %tip, "new tip fetched");
        }
        self.last_seen = Some(tip);
        Ok(Fetched {
            commit: tip.to_string(),
            info,
            repo_path,
            rewritten_from,
        })
    }

    /// The checked tip of the branch in a local repository.
    fn tip_of_local(&self, path: &Path) -> Result<gix::ObjectId, SourceError> {
        let repo = gix::open(path).map_err(|e| SourceError::NotARepository {
            path: path.to_owned(),
            reason: describe(&e),
        })?;
        let corrupt = |reason: String| SourceError::CorruptRepository {
            path: path.to_owned(),
            reason,
        };

        let name = format!("refs/heads/{}", self.branch);
        let reference = repo
            .try_find_reference(name.as_str())
            .map_err(|e| corrupt(format!("cannot read `{name}`: {}", describe(&e))))?;
        let Some(mut reference) = reference else {
            return Err(SourceError::BranchNotFound {
                branch: self.branch.clone(),
                location: path.display().to_string(),
            });
        };
        let tip = reference
            .peel_to_id()
            .map_err(|e| corrupt(format!("cannot resolve `{name}`: {}", describe(&e))))?
            .detach();
        check_commit(&repo, tip).map_err(corrupt)?;
        Ok(tip)
    }

    /// The previous tip when `tip` does not contain it.
    fn rewritten_from(
        &self,
        repo_path: &Path,
        tip: gix::ObjectId,
    ) -> Result<Option<String>, SourceError> {
        let Some(previous) = self.last_seen else {
            return Ok(None);
        };
        if previous == tip {
            return Ok(None);
        }
        let repo = gix::open(repo_path).map_err(|e| self.corrupt(repo_path, &describe(&e)))?;
        // A fetch brings in the whole history of the tip, so a previous tip that is not in the
        // repository at all is not part of that history either.
        if !repo.has_object(previous) {
            return Ok(Some(previous.to_string()));
        }
        let base = repo.merge_base(previous, tip).map_err(|e| {
            self.corrupt(
                repo_path,
                &format!("cannot walk the history of {tip}: {}", describe(&e)),
            )
        })?;
        let contains = base.is_some_and(|base| base.detach() == previous);
        Ok((!contains).then(|| previous.to_string()))
    }

    /// The error for an unreadable repository after the tip was fetched; a clone is moved
    /// aside.
    fn corrupt(&self, repo_path: &Path, reason: &str) -> SourceError {
        match &self.location {
            Location::Local(_) => SourceError::CorruptRepository {
                path: repo_path.to_owned(),
                reason: reason.to_owned(),
            },
            Location::Remote {
                url,
                redacted,
                clone_dir,
            } => move_aside(clone_dir, redacted, &redact_text(reason, url)),
        }
    }
}

/// One fetch from a remote into the clone.
struct Remote<'a> {
    url: &'a str,
    redacted: &'a str,
    clone_dir: &'a Path,
    branch: &'a str,
    interrupt: &'a AtomicBool,
}

impl Remote<'_> {
    /// Fetches the branch into the clone (creating it first when missing) and returns its
    /// checked tip.
    fn fetch(&self) -> Result<gix::ObjectId, SourceError> {
        let existing = self.clone_dir.exists();
        let target = if existing {
            self.clone_dir.to_owned()
        } else {
            self.fresh_dir()?
        };
        let result = self.fetch_into(&target, existing);
        if existing {
            return result;
        }

        // A first clone only takes the clone's place once it holds a good tip.
        let Ok(tip) = result else {
            remove_quietly(&target);
            return result;
        };
        std::fs::rename(&target, self.clone_dir).map_err(|source| {
            remove_quietly(&target);
            SourceError::Io {
                action: "move the new clone into place at",
                path: self.clone_dir.to_owned(),
                source,
            }
        })?;
        tracing::info!(url = self.redacted, path = %self.clone_dir.display(), "cloned");
        Ok(tip)
    }

    /// An empty bare repository next to where the clone belongs.
    fn fresh_dir(&self) -> Result<PathBuf, SourceError> {
        let mut partial = self.clone_dir.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        remove_quietly(&partial);
        if let Some(parent) = partial.parent() {
            std::fs::create_dir_all(parent).map_err(|source| SourceError::Io {
                action: "create the clone directory",
                path: parent.to_owned(),
                source,
            })?;
        }
        gix::init_bare(&partial).map_err(|e| SourceError::Io {
            action: "create a bare repository at",
            path: partial.clone(),
            source: std::io::Error::other(describe(&e)),
        })?;
        Ok(partial)
    }

    fn fetch_into(&self, dir: &Path, existing: bool) -> Result<gix::ObjectId, SourceError> {
        let mut repo = match gix::open(dir) {
            Ok(repo) => repo,
            Err(e) if existing => return Err(self.corrupt(&describe(&e))),
            Err(e) => {
                return Err(SourceError::Io {
                    action: "open the new clone at",
                    path: dir.to_owned(),
                    source: std::io::Error::other(describe(&e)),
                });
            }
        };
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        if existing && let Err(reason) = check_ref(&repo, &tracking) {
            return Err(self.corrupt(&reason));
        }
        repo.committer_or_set_generic_fallback()
            .map_err(|e| self.fetch_failed(&e))?;

        let unreachable = |e: &gix::Error| SourceError::Unreachable {
            url: self.redacted.to_owned(),
            reason: redact_text(&describe(e), self.url),
        };
        let refspec = format!("+refs/heads/{}:{tracking}", self.branch);
        let remote = repo
            .remote_at(self.url)
            .and_then(|r| r.with_refspecs([refspec.as_str()], gix::remote::Direction::Fetch))
            .map_err(|e| SourceError::BadUrl {
                url: self.redacted.to_owned(),
                reason: redact_text(&describe(&e), self.url),
            })?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| unreachable(&e))?;
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|e| unreachable(&e))?;

        let wanted = format!("refs/heads/{}", self.branch);
        let advertised = prepare.ref_map().mappings.iter().find_map(|m| {
            (m.remote.as_name() == Some(wanted.as_bytes().as_bstr()))
                .then(|| m.remote.as_id().map(ToOwned::to_owned))
                .flatten()
        });
        let Some(tip) = advertised else {
            return Err(SourceError::BranchNotFound {
                branch: self.branch.to_owned(),
                location: format!("the remote {}", self.redacted),
            });
        };
        prepare
            .receive(gix::progress::Discard, self.interrupt)
            .map_err(|e| self.fetch_failed(&e))?;
        tracing::debug!(revision = %tip, "branch received");

        // Objects written by this fetch are seen by a fresh handle.
        let repo = gix::open(dir).map_err(|e| self.fetch_failed(&e))?;
        if let Err(reason) = check_commit(&repo, tip) {
            if existing {
                return Err(self.corrupt(&reason));
            }
            return Err(SourceError::Fetch {
                branch: self.branch.to_owned(),
                url: self.redacted.to_owned(),
                reason: redact_text(&reason, self.url),
            });
        }
        Ok(tip)
    }

    fn fetch_failed(&self, e: &gix::Error) -> SourceError {
        SourceError::Fetch {
            branch: self.branch.to_owned(),
            url: self.redacted.to_owned(),
            reason: redact_text(&describe(e), self.url),
        }
    }

    fn corrupt(&self, reason: &str) -> SourceError {
        move_aside(
            self.clone_dir,
            self.redacted,
            &redact_text(reason, self.url),
        )
    }
}

/// Moves a corrupt clone to `<clone>.corrupt` (replacing an older one) so the next fetch
/// clones afresh, and says so.
fn move_aside(clone_dir: &Path, redacted: &str, reason: &str) -> SourceError {
    let mut moved_to = clone_dir.as_os_str().to_owned();
    moved_to.push(".corrupt");
    let moved_to = PathBuf::from(moved_to);
    remove_quietly(&moved_to);
    if let Err(e) = std::fs::rename(clone_dir, &moved_to) {
        tracing::warn!(
            path = %clone_dir.display(),
            error = %e,
            "cannot move the corrupt clone aside; removing it"
        );
        remove_quietly(clone_dir);
    }
    tracing::error!(
        url = redacted,
        path = %clone_dir.display(),
        moved_to = %moved_to.display(),
        reason,
        "the clone is corrupt; it is cloned again on the next fetch"
    );
    SourceError::CorruptClone {
        url: redacted.to_owned(),
        path: clone_dir.to_owned(),
        moved_to,
        reason: reason.to_owned(),
    }
}

fn remove_quietly(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove"),
    }
}

/// Checks the commit a reference points to, when the reference exists.
fn check_ref(repo: &gix::Repository, name: &str) -> Result<(), String> {
    let reference = repo
        .try_find_reference(name)
        .map_err(|e| format!("cannot read `{name}`: {}", describe(&e)))?;
    let Some(mut reference) = reference else {
        return Ok(());
    };
    let id = reference
        .peel_to_id()
        .map_err(|e| format!("cannot resolve `{name}`: {}", describe(&e)))?;
    check_commit(repo, id.detach())
}

/// Checks that `id` is a readable commit whose whole tree is readable.
fn check_commit(repo: &gix::Repository, id: gix::ObjectId) -> Result<(), String> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| format!("cannot read commit {id}: {}", describe(&e)))?;
    let tree = commit
        .tree_id()
        .map_err(|e| format!("cannot read commit {id}: {}", describe(&e)))?
        .detach();

    let mut trees = vec![tree];
    while let Some(tree_id) = trees.pop() {
        let tree = repo.find_tree(tree_id).map_err(|e| {
            format!(
                "cannot read tree {tree_id} of commit {id}: {}",
                describe(&e)
            )
        })?;
        for entry in tree.iter() {
            let entry =
                entry.map_err(|e| format!("cannot decode tree {tree_id} of commit {id}: {e}"))?;
            let oid = entry.object_id();
            if entry.mode().is_tree() {
                trees.push(oid);
            } else if !entry.mode().is_commit() {
                repo.find_header(oid).map_err(|e| {
                    format!("cannot read object {oid} of commit {id}: {}", describe(&e))
                })?;
            }
        }
    }
    Ok(())
}

fn check_branch(branch: &str) -> Result<String, SourceError> {
    let bad = |reason: String| SourceError::BadBranch {
        branch: branch.to_owned(),
        reason,
    };
    if branch.starts_with("refs/") {
        return Err(bad(
            "name the branch without `refs/heads/`, e.g. `main`".to_owned()
        ));
    }
    gix::refs::FullName::try_from(format!("refs/heads/{branch}"))
        .map_err(|e| bad(describe_std(&e)))?;
    Ok(branch.to_owned())
}

fn parse_commit_id(hex: &str) -> Result<gix::ObjectId, SourceError> {
    let bad = || SourceError::BadCommitId {
        commit: hex.to_owned(),
    };
    if hex.len() != 40 {
        return Err(bad());
    }
    gix::ObjectId::from_hex(hex.as_bytes()).map_err(|_| bad())
}

/// Whether a git source names a remote rather than a local path.
fn is_url(spec: &str) -> bool {
    if spec.contains("://") {
        return true;
    }
    // scp-like `user@host:path`; a local path with a colon has a slash before it.
    spec.split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

/// Makes the process-wide TLS crypto provider rustls's ring, the one the rest of the server
/// uses, before the https transport builds its client.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `url` with its credentials replaced by `***`: all user information of an http(s) URL (a
/// token is often the user name), the password of any other URL.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = (&rest[..at], &rest[at..]);
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    let kept = if http {
        "***".to_owned()
    } else {
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => userinfo.to_owned(),
        }
    };
    format!("{scheme}://{kept}{host}")
}

/// `text` with any credential of `url` in it replaced by `***`.
fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    let Some((_, rest)) = url.split_once("://") else {
        return out;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return out;
    };
    let userinfo = &rest[..at];
    for secret in [Some(userinfo), userinfo.split_once(':').map(|(_, p)| p)]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    {
        out = out.replace(&format!("{secret}@"), "***@");
    }
    out
}

/// A gix error with its causes, `: `-separated.
fn describe(e: &gix::Error) -> String {
    describe_std(e)
}

fn describe_std(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
