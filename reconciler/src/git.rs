//! Reading config repositories from git with gix: files at a revision, and merge bases.

use std::path::Path;

use crate::config::source::ConfigFiles;

/// Reading from git failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Other(String),
}

/// Reads the config files of `rev` in the repository at `repo`.
pub fn read_revision(_repo: &Path, _rev: &str) -> Result<ConfigFiles, GitError> {
    Err(GitError::Other(
        "reading git revisions is not implemented yet".to_owned(),
    ))
}

/// A commit as shown to users.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: String,
    pub short: String,
    pub summary: String,
    pub author: String,
    pub time: String,
}

/// Resolves a revision to its commit.
pub fn resolve_commit(_repo: &Path, _rev: &str) -> Result<CommitInfo, GitError> {
    Err(GitError::Other("not implemented yet".to_owned()))
}

/// The merge base of `head` with the default branch.
pub fn plan_base(_repo: &Path, _head: &str) -> Result<String, GitError> {
    Err(GitError::Other("not implemented yet".to_owned()))
}
