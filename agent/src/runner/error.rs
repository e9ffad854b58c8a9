//! The runner's errors. [`super::Restic::detect`] returns them; inside a job they become the
//! plain-words message of an [`protocol::Outcome::Failed`] result, never a panic.

use std::path::PathBuf;

/// Why restic could not be detected, or why a job could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(
        "cannot run `{} version`: {source}; install restic 0.14.0 or newer, or point the agent \
         at its binary",
        binary.display()
    )]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{} version` did not finish within {secs} s", binary.display())]
    VersionTimeout { binary: PathBuf, secs: u64 },
    #[error("`{} version` exited with {status} and printed {output:?}", binary.display())]
    VersionFailed {
        binary: PathBuf,
        status: String,
        output: String,
    },
    #[error(
        "cannot read a restic version in the output of `{} version`: {output:?}; is it restic?",
        binary.display()
    )]
    UnrecognisedVersion { binary: PathBuf, output: String },
    #[error(
        "{} is restic {found}, older than the oldest supported restic 0.14.0; install restic \
         0.14.0 or newer",
        binary.display()
    )]
    TooOld { binary: PathBuf, found: String },
    #[error("cannot prepare the agent's work directory {}: {source}", dir.display())]
    WorkDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the job's password file in {}: {source}", dir.display())]
    PasswordFile {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for {program} to finish: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}
