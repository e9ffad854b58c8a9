//! The environment restic and hooks run in, and the private per-job directory holding the
//! repository password.
//!
//! Children start from an empty environment: the agent's own variables (a stray
//! `RESTIC_PASSWORD` or `RESTIC_REPOSITORY` of the service manager, for instance) never reach
//! them. restic gets `PATH`, `HOME`, `LANG=C.UTF-8`, a cache under the agent's work directory,
//! a `TMPDIR` inside the job's directory, `RESTIC_PROGRESS_FPS=1`, the repository as
//! `RESTIC_REPOSITORY` (never `-r`, so the location never shows in `/proc/*/cmdline`), the
//! password through `RESTIC_PASSWORD_FILE` (a 0600 file in a 0700 directory removed after the
//! job) and the job's backend variables. Hooks get the first four only: no credentials.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use protocol::RepositoryAccess;

use super::RunnerError;
use super::version::Features;

/// `PATH` for children when the agent itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The backend variables restic reads for the REST server's HTTP credentials (0.16.1+).
const REST_USERNAME: &str = "RESTIC_REST_USERNAME";
const REST_PASSWORD: &str = "RESTIC_REST_PASSWORD";

/// `PATH`, `HOME` and `LANG` for a child, taken from the agent's own environment where it
/// has them.
pub(crate) fn ambient_base() -> Vec<(&'static str, OsString)> {
    base_from(|name| std::env::var_os(name))
}

fn base_from(ambient: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, OsString)> {
    let path = ambient("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let home = ambient("HOME")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    vec![("PATH", path), ("HOME", home), ("LANG", "C.UTF-8".into())]
}

/// Why a job's backend variables cannot be used; the job is refused with this text.
pub(crate) fn check_backend_env(env: &BTreeMap<String, protocol::Secret>) -> Result<(), String> {
    for (name, value) in env {
        let well_formed = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(format!(
                "the repository's environment variable {name:?} is not a valid name (A-Z, 0-9 \
                 and `_`, not starting with a digit)"
            ));
        }
        if let Some(why) = reserved(name) {
            return Err(format!(
                "the repository's environment sets `{name}`, which {why}; remove it from the \
                 repository's `env`"
            ));
        }
        if value.expose().contains('\0') {
            return Err(format!(
                "the value of the repository's environment variable `{name}` contains a NUL \
                 byte, which no environment can carry"
            ));
        }
    }
    Ok(())
}

/// Variables a job may not set: the ones the runner sets itself, and ones that would let
/// whoever controls the job run code or read files on the host.
fn reserved(name: &str) -> Option<&'static str> {
    const OWN: [&str; 7] = [
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "RESTIC_CACHE_DIR",
        "RESTIC_HOST",
        "RESTIC_PROGRESS_FPS",
    ];
    if OWN.contains(&name) || name.starts_with("LC_") {
        return Some("the agent sets itself");
    }
    if name.starts_with("RESTIC_PASSWORD")
        || name.starts_with("RESTIC_REPOSITORY")
        || name.starts_with("RESTIC_FROM_")
    {
        return Some("the agent sets itself from the repository's `url` and `password`");
    }
    if name.starts_with("LD_") || ["GCONV_PATH", "BASH_ENV", "ENV", "SHELL", "IFS"].contains(&name)
    {
        return Some("could change which code runs on the host");
    }
    None
}

/// The job's private directory: the password file and restic's `TMPDIR`. Removed when the
/// job ends (or when this value is dropped).
pub(crate) struct JobDir {
    dir: tempfile::TempDir,
}

impl JobDir {
    /// Creates `<work_dir>/job-XXXX` (0700) with the password file (0600) and `tmp/` inside,
    /// and `<work_dir>/cache` (0700) when it is missing.
    ///
    /// NOTE: restic strips leading and trailing whitespace from a password it reads from a
    /// file, so a password that really has some does not work (docs/src/limitations.md).
    pub(crate) fn create(
        work_dir: &Path,
        password: &protocol::Secret,
    ) -> Result<Self, RunnerError> {
        let work_err = |source| RunnerError::WorkDir {
            dir: work_dir.to_owned(),
            source,
        };
        let mut private = fs::DirBuilder::new();
        private.recursive(true).mode(0o700);
        private.create(work_dir).map_err(work_err)?;
        private.create(cache_dir(work_dir)).map_err(work_err)?;

        let dir = tempfile::Builder::new()
            .prefix(crate::state::JOB_DIR_PREFIX)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(work_dir)
            .map_err(work_err)?;
        let password_err = |source| RunnerError::PasswordFile {
            dir: dir.path().to_owned(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("password"))
            .map_err(password_err)?;
        file.write_all(password.expose().as_bytes())
            .map_err(password_err)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.path().join("tmp"))
            .map_err(work_err)?;
        Ok(Self { dir })
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Removes the directory, saying so when it cannot.
    pub(crate) fn remove(self) {
        let path = self.dir.path().to_owned();
        if let Err(err) = self.dir.close() {
            tracing::error!(dir = %path.display(), %err, "cannot remove the job's private directory, which holds the repository password; remove it by hand");
        }
    }
}

pub(crate) fn cache_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("cache")
}

/// The environment for one restic run of a job.
pub(crate) fn restic_env(
    work_dir: &Path,
    job_dir: &JobDir,
    repository: &RepositoryAccess,
    features: Features,
) -> Vec<(String, OsString)> {
    restic_env_from(
        |name| std::env::var_os(name),
        work_dir,
        job_dir,
        repository,
        features,
    )
}

fn restic_env_from(
    ambient: impl Fn(&str) -> Option<OsString>,
    work_dir: &Path,
    job_dir: &JobDir,
    repository: &RepositoryAccess,
    features: Features,
) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = base_from(ambient)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    env.push(("RESTIC_CACHE_DIR".into(), cache_dir(work_dir).into()));
    env.push(("TMPDIR".into(), job_dir.tmp().into()));
    // The agent passes progress on once a second; restic's default of 60 status lines a
    // second would only cost CPU beside the backup.
    env.push(("RESTIC_PROGRESS_FPS".into(), "1".into()));
    env.push((
        "RESTIC_PASSWORD_FILE".into(),
        job_dir.password_file().into(),
    ));

    // Before 0.16.1 restic reads REST credentials only from the URL; they go there, inside
    // the environment, never onto the command line.
    let embed = !features.rest_env && repository.url.starts_with("rest:");
    let url = if embed {
        let user = repository
            .env
            .get(REST_USERNAME)
            .map(protocol::Secret::expose);
        let pass = repository
            .env
            .get(REST_PASSWORD)
            .map(protocol::Secret::expose);
        rest_url_with_credentials(&repository.url, user, pass)
    } else {
        repository.url.clone()
    };
    env.push(("RESTIC_REPOSITORY".into(), url.into()));
    for (name, value) in &repository.env {
        if embed && (name == REST_USERNAME || name == REST_PASSWORD) {
            continue;
        }
        env.push((name.clone(), value.expose().into()));
    }
    env
}

/// The environment of a hook: nothing of the repository.
pub(crate) fn hook_env(job_dir: &JobDir) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = ambient_base()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    env.push(("TMPDIR".into(), job_dir.tmp().into()));
    env
}

/// `rest:http://host/path` with `user:pass@` (percent-encoded) in its authority, replacing
/// any credentials already there. Unchanged when neither is given.
fn rest_url_with_credentials(url: &str, user: Option<&str>, pass: Option<&str>) -> String {
    if user.is_none() && pass.is_none() {
        return url.to_owned();
    }
    let Some(rest) = url.strip_prefix("rest:") else {
        return url.to_owned();
    };
    let Some(scheme_end) = rest.find("://") else {
        return url.to_owned();
    };
    let (scheme, after) = rest.split_at(scheme_end + 3);
    let authority_end = after.find('/').unwrap_or(after.len());
    let (authority, path) = after.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut userinfo = percent_encode(user.unwrap_or(""));
    if let Some(pass) = pass {
        userinfo.push(':');
        userinfo.push_str(&percent_encode(pass));
    }
    format!("rest:{scheme}{userinfo}@{host}{path}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use protocol::Secret;

    use super::*;

    fn repository(url: &str, env: &[(&str, &str)]) -> RepositoryAccess {
        RepositoryAccess {
            name: "offsite".into(),
            url: url.into(),
            password: Secret::new("pw".into()),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
                .collect(),
        }
    }

    #[test]
    fn ambient_restic_variables_never_reach_restic() {
        let work = tempfile::tempdir().unwrap();
        let job_dir = JobDir::create(work.path(), &Secret::new("pw".into())).unwrap();
        let ambient: HashMap<&str, &str> = [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("RESTIC_PASSWORD", "ambient"),
            ("RESTIC_REPOSITORY", "/ambient"),
            ("AWS_SECRET_ACCESS_KEY", "ambient"),
            ("LD_PRELOAD", "/tmp/evil.so"),
        ]
        .into();
        let env = restic_env_from(
            |name| ambient.get(name).map(OsString::from),
            work.path(),
            &job_dir,
            &repository("/srv/repo", &[("AWS_ACCESS_KEY_ID", "id")]),
            Features::of((0, 18, 0)),
        );
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "LANG",
                "RESTIC_CACHE_DIR",
                "TMPDIR",
                "RESTIC_PROGRESS_FPS",
                "RESTIC_PASSWORD_FILE",
                "RESTIC_REPOSITORY",
                "AWS_ACCESS_KEY_ID"
            ]
        );
        let value = |name: &str| env.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(value("RESTIC_REPOSITORY"), "/srv/repo");
        assert_eq!(value("PATH"), "/usr/bin");
        assert_eq!(value("LANG"), "C.UTF-8");
        assert!(!env.iter().any(|(_, v)| v == "ambient"));
    }

    #[test]
    fn the_job_directory_is_private_and_removed() {
        let work = tempfile::tempdir().unwrap();
        let job_dir = JobDir::create(work.path(), &Secret::new("s3cr3t\n".into())).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(job_dir.path()), 0o700);
        assert_eq!(mode(&job_dir.password_file()), 0o600);
        assert_eq!(mode(&cache_dir(work.path())), 0o700);
        assert_eq!(
            fs::read_to_string(job_dir.password_file()).unwrap(),
            "s3cr3t\n"
        );
        let path = job_dir.path().to_owned();
        job_dir.remove();
        assert!(!path.exists());
    }

    #[test]
    fn rest_credentials_go_into_the_url_for_old_restic_only() {
        let work = tempfile::tempdir().unwrap();
        let job_dir = JobDir::create(work.path(), &Secret::new("pw".into())).unwrap();
        let repo = repository(
            "rest:https://backup.example.net:8000/fleet/",
            &[
                ("RESTIC_REST_USERNAME", "fleet"),
                ("RESTIC_REST_PASSWORD", "p@ss:w/rd %ü"),
            ],
        );
        let old = restic_env_from(
            |_| None,
            work.path(),
            &job_dir,
            &repo,
            Features::of((0, 14, 0)),
        );
        let value = |env: &[(String, OsString)], name: &str| {
            env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        };
        assert_eq!(
            value(&old, "RESTIC_REPOSITORY").unwrap(),
            "rest:https://fleet:p%40ss%3Aw%2Frd%20%25%C3%BC@backup.example.net:8000/fleet/"
        );
        assert_eq!(value(&old, "RESTIC_REST_PASSWORD"), None);
        assert_eq!(value(&old, "RESTIC_REST_USERNAME"), None);

        let new = restic_env_from(
            |_| None,
            work.path(),
            &job_dir,
            &repo,
            Features::of((0, 18, 0)),
        );
        assert_eq!(
            value(&new, "RESTIC_REPOSITORY").unwrap(),
            "rest:https://backup.example.net:8000/fleet/"
        );
        assert_eq!(value(&new, "RESTIC_REST_PASSWORD").unwrap(), "p@ss:w/rd %ü");
    }

    #[test]
    fn rest_url_credentials_replace_existing_ones_and_keep_the_rest() {
        assert_eq!(
            rest_url_with_credentials("rest:http://old:x@h:1/p", Some("u"), None),
            "rest:http://u@h:1/p"
        );
        assert_eq!(
            rest_url_with_credentials("rest:http://h", None, Some("p")),
            "rest:http://:p@h"
        );
        assert_eq!(
            rest_url_with_credentials("rest:http://h/", None, None),
            "rest:http://h/"
        );
    }

    #[test]
    fn reserved_and_malformed_backend_variables_are_refused() {
        let env = |name: &str, value: &str| {
            BTreeMap::from([(name.to_owned(), Secret::new(value.to_owned()))])
        };
        assert_eq!(
            check_backend_env(&env("RESTIC_PASSWORD_COMMAND", "sh -c evil")).unwrap_err(),
            "the repository's environment sets `RESTIC_PASSWORD_COMMAND`, which the agent sets \
             itself from the repository's `url` and `password`; remove it from the \
             repository's `env`"
        );
        assert_eq!(
            check_backend_env(&env("LD_PRELOAD", "/tmp/x.so")).unwrap_err(),
            "the repository's environment sets `LD_PRELOAD`, which could change which code \
             runs on the host; remove it from the repository's `env`"
        );
        assert!(
            check_backend_env(&env("PATH", "/tmp"))
                .unwrap_err()
                .contains("the agent sets itself")
        );
        assert_eq!(
            check_backend_env(&env("aws_key", "x")).unwrap_err(),
            "the repository's environment variable \"aws_key\" is not a valid name (A-Z, 0-9 \
             and `_`, not starting with a digit)"
        );
        assert!(
            check_backend_env(&env("AWS_SECRET_ACCESS_KEY", "a\0b"))
                .unwrap_err()
                .contains("NUL byte")
        );
        check_backend_env(&env("AWS_SECRET_ACCESS_KEY", "ok")).unwrap();
        check_backend_env(&env("RESTIC_REST_PASSWORD", "ok")).unwrap();
    }
}
