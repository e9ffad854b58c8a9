//! Helpers shared by the CLI tests: running the binary, building config repositories.
#![allow(
    dead_code,
    reason = "each test module uses a different subset of the helpers"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's top directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace dir")
        .to_owned()
}

/// The example config repository shipped with the project.
pub fn example_repo() -> PathBuf {
    workspace().join("examples/config-repo")
}

/// A command running the `restic-manager` binary under test, with a clean environment for
/// the variables it reads.
pub fn restic_manager() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restic-manager"));
    cmd.env_remove("RM_IDENTITY")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs a command and returns its output, with stdout and stderr as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the binary runs");
    Run {
        code: status.code().expect("exited normally, not by a signal"),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Writes `files` (`(relative path, content)`) under a new temporary directory.
pub fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, content) in files {
        write(dir.path(), path, content.as_bytes());
    }
    dir
}

/// Writes one file, creating its parent directories.
pub fn write(root: &Path, path: &str, content: &[u8]) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(full, content).expect("write");
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Runs git in `dir` with a fixed identity, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
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

/// Age armor of `plaintext` for a throwaway recipient: a well-formed sealed value.
pub fn sealed_armor(plaintext: &str) -> String {
    let recipient = age::x25519::Identity::generate().to_public();
    reconciler::secrets::seal(&[recipient], plaintext.as_bytes()).expect("sealing works")
}

/// A small valid config repository: one host, one local repository, one policy.
pub fn minimal_repo() -> Vec<(String, String)> {
    vec![
        (
            "hosts/web-1.toml".to_owned(),
            "labels = { role = \"web\" }\n".to_owned(),
        ),
        (
            "repositories/local.toml".to_owned(),
            format!(
                "url = \"/srv/restic/local\"\npassword = {{ sealed = \"\"\"\n{}\"\"\" }}\n",
                sealed_armor("pw")
            ),
        ),
        (
            "policies/system.toml".to_owned(),
            "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
             schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n"
                .to_owned(),
        ),
    ]
}

/// The minimal repository with some files replaced or added, written to a temp dir.
pub fn minimal_with(changes: &[(&str, &str)]) -> tempfile::TempDir {
    let mut files = minimal_repo();
    for (path, content) in changes {
        files.retain(|(p, _)| p != path);
        files.push(((*path).to_owned(), (*content).to_owned()));
    }
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    config_dir(&borrowed)
}
