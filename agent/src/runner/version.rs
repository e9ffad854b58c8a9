//! Which restic the agent runs, and what that version can do.
//!
//! The agent supports restic 0.14.0 (Debian bookworm) and newer, and uses newer features when
//! the detected version has them. Where each one first appeared, from restic's changelog and
//! checked against restic 0.14.0 and 0.18.0:
//!
//! | Feature | First release | Without it, the agent |
//! | --- | --- | --- |
//! | global `--retry-lock <duration>` (changelog 0.16.0, #719) | 0.16.0 | retries a locked command itself, with backoff |
//! | `RESTIC_REST_USERNAME` / `RESTIC_REST_PASSWORD` (0.16.1, #4480) | 0.16.1 | puts them, percent-encoded, into the `rest:` URL in `RESTIC_REPOSITORY` |
//! | exit code 10 (no repository) and 11 (locked) (0.17.0, #956) | 0.17.0 | recognises restic's messages on stderr |
//! | exit code 12 (wrong password) (0.17.1, #4959) | 0.17.1 | recognises `wrong password or no key found` |
//! | `exit_error` JSON on stderr with `--json` (0.18.0, #4948) | 0.18.0 | reads the plain `Fatal: …` lines |
//! | `check --json` (0.18.0, #1378) | 0.18.0 | runs `check` without `--json` and reads its text |
//!
//! Present in every supported version: exit code 3 for a backup that could not read some
//! files, `backup --json` `error` messages on stderr carrying the unreadable `item`, and
//! `--json` for `backup`, `forget` and `snapshots`. `prune` and `unlock` print text only.
//! The user-facing version of this table is `docs/src/restic-versions.md`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::RunnerError;
use super::env::ambient_base;

/// The oldest restic the agent runs.
pub(crate) const OLDEST: (u32, u32, u32) = (0, 14, 0);

/// How long `restic version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// A relative path with a directory in it (`bin/restic`) made absolute, since restic runs in
/// a job's own directory; a bare name (`restic`) is left for the `PATH` lookup.
fn resolve(binary: &Path) -> PathBuf {
    if binary.is_relative() && binary.components().count() > 1 {
        std::path::absolute(binary).unwrap_or_else(|_| binary.to_owned())
    } else {
        binary.to_owned()
    }
}

/// A detected restic binary.
#[derive(Debug, Clone)]
pub struct Restic {
    binary: PathBuf,
    version_line: String,
    version: (u32, u32, u32),
}

impl Restic {
    /// Runs `<binary> version` and parses it. Fails (typed error naming the binary and what it
    /// printed) when it cannot run, or when the version is older than 0.14.0.
    pub async fn detect(binary: &Path) -> Result<Restic, RunnerError> {
        let binary = &resolve(binary);
        let mut command = Command::new(binary);
        command
            .arg("version")
            .env_clear()
            .envs(ambient_base())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(VERSION_TIMEOUT, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(RunnerError::Spawn {
                    binary: binary.to_owned(),
                    source,
                });
            }
            Err(_) => {
                return Err(RunnerError::VersionTimeout {
                    binary: binary.to_owned(),
                    secs: VERSION_TIMEOUT.as_secs(),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().next().unwrap_or("").trim().to_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(RunnerError::VersionFailed {
                binary: binary.to_owned(),
                status: output.status.to_string(),
                output: super::lines::cut(format!("{stdout}{stderr}").trim(), 500).to_owned(),
            });
        }
        let Some(version) = parse_version(&line) else {
            return Err(RunnerError::UnrecognisedVersion {
                binary: binary.to_owned(),
                output: super::lines::cut(&line, 500).to_owned(),
            });
        };
        if version < OLDEST {
            return Err(RunnerError::TooOld {
                binary: binary.to_owned(),
                found: format!("{}.{}.{}", version.0, version.1, version.2),
            });
        }
        Ok(Restic {
            binary: binary.to_owned(),
            version_line: line,
            version,
        })
    }

    /// e.g. "restic 0.18.0 compiled with go1.24.4 on linux/amd64" (for the Hello message).
    #[must_use]
    pub fn version_line(&self) -> &str {
        &self.version_line
    }

    /// (major, minor, patch)
    #[must_use]
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    pub(crate) fn binary(&self) -> &Path {
        &self.binary
    }

    pub(crate) fn features(&self) -> Features {
        Features::of(self.version)
    }
}

/// What a restic version can do that 0.14.0 cannot; see the table at the top of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Features {
    pub retry_lock: bool,
    pub rest_env: bool,
    pub exit_codes_missing_locked: bool,
    pub exit_code_wrong_password: bool,
    pub json_exit_errors: bool,
    pub check_json: bool,
}

impl Features {
    pub(crate) fn of(version: (u32, u32, u32)) -> Self {
        Self {
            retry_lock: version >= (0, 16, 0),
            rest_env: version >= (0, 16, 1),
            exit_codes_missing_locked: version >= (0, 17, 0),
            exit_code_wrong_password: version >= (0, 17, 1),
            json_exit_errors: version >= (0, 18, 0),
            check_json: version >= (0, 18, 0),
        }
    }
}

/// Reads the version out of `restic version`'s first line: `restic 0.18.0 compiled with …`,
/// also `restic 0.16.0-dev (compiled manually) compiled with …`. A missing patch is 0.
fn parse_version(line: &str) -> Option<(u32, u32, u32)> {
    let mut words = line.split_whitespace();
    if words.next()? != "restic" {
        return None;
    }
    let word = words.next()?;
    let word = word.strip_prefix('v').unwrap_or(word);
    let numeric = word.split(['-', '+']).next()?;
    let mut parts = numeric.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_binary_path_is_made_absolute_and_a_bare_name_is_left_to_path() {
        let resolved = resolve(Path::new("tools/bin/restic"));
        assert!(resolved.is_absolute(), "{}", resolved.display());
        assert!(resolved.ends_with("tools/bin/restic"));
        assert_eq!(resolve(Path::new("restic")), Path::new("restic"));
        assert_eq!(
            resolve(Path::new("/usr/bin/restic")),
            Path::new("/usr/bin/restic")
        );
    }

    #[test]
    fn parses_release_and_development_versions() {
        assert_eq!(
            parse_version("restic 0.18.0 compiled with go1.24.4 on linux/amd64"),
            Some((0, 18, 0))
        );
        assert_eq!(
            parse_version("restic 0.16.0-dev (compiled manually) compiled with go1.20 on linux"),
            Some((0, 16, 0))
        );
        assert_eq!(parse_version("restic v0.17 compiled"), Some((0, 17, 0)));
        assert_eq!(parse_version("rustic 0.18.0"), None);
        assert_eq!(parse_version("restic"), None);
        assert_eq!(parse_version("restic 0.x.1"), None);
        assert_eq!(parse_version("restic 0.1.2.3"), None);
    }

    #[test]
    fn features_follow_the_changelog() {
        let old = Features::of((0, 14, 0));
        assert!(!old.retry_lock && !old.rest_env && !old.exit_codes_missing_locked);
        assert!(!old.exit_code_wrong_password && !old.json_exit_errors && !old.check_json);

        let v16_0 = Features::of((0, 16, 0));
        assert!(v16_0.retry_lock && !v16_0.rest_env);
        assert!(Features::of((0, 16, 1)).rest_env);

        let v17_0 = Features::of((0, 17, 0));
        assert!(v17_0.exit_codes_missing_locked && !v17_0.exit_code_wrong_password);
        assert!(Features::of((0, 17, 1)).exit_code_wrong_password);

        let new = Features::of((0, 18, 0));
        assert!(new.json_exit_errors && new.check_json && new.exit_code_wrong_password);
    }
}
