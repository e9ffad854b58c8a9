//! The runner's errors. [`super::Restic::detect`] returns them; inside a job they become the
//! plain-words message of an [`protocol::Outcome::Failed`] result, never a panic.

use std::path::PathBuf;

/// What to do when restic cannot be used, for the messages that report it.
pub const INSTALL_HINT: &str = "The agent needs restic 0.14.0 or newer: install it (Debian and \
    Ubuntu: `apt-get install restic`; elsewhere a release binary from \
    https://github.com/restic/restic/releases), or point the agent's `restic` setting (--restic, \
    RM_AGENT_RESTIC, or `restic` in its settings file) at the binary";

/// Why restic could not be detected, or why a job could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot run `{} version`: {source}", binary.display())]
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
        "`{bin} version` printed {output:?}, not restic's version line (`restic 0.18.0 compiled \
         with …`), so {bin} does not look like restic",
        bin = binary.display()
    )]
    UnrecognisedVersion { binary: PathBuf, output: String },
    #[error(
        "{} is restic {found}, older than the oldest supported restic 0.14.0",
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
