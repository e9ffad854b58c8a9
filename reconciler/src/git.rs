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
