//! `restic-manager serve` refusing to start: each bad input is named for what it is, and is
//! found before the data directory or `state.db` is created.

use std::path::Path;

use crate::common::{restic_manager, run, workspace};
use crate::serve::{ServerProcess, free_port};

/// Runs `serve` with `args` after the usual `--listen 127.0.0.1:0`, expecting it to refuse to
/// start; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = restic_manager();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    out.stderr
}

fn demo_identity() -> String {
    workspace()
        .join("examples/demo-identity.txt")
        .display()
        .to_string()
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn an_unsupported_url_scheme_is_named_with_the_supported_ones_and_nothing_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");

    let stderr = refused(
        &[
            "--repository",
            "ftp://x/y",
            "--data-dir",
            text(&data),
            "--identity",
            &demo_identity(),
        ],
        &[],
    );

    assert_eq!(
        stderr,
        "error: --repository: `ftp://x/y` uses the URL scheme `ftp`, which the server cannot \
         fetch from; use an https://, http://, ssh://, git:// or file:// URL, an scp-like \
         user@host:path, or a local path\n"
    );
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = refused(
        &["--data-dir", text(&dir.path().join("data"))],
        &[("RM_REPOSITORY", "/srv/config"), ("RM_POLL_INTERVAL", "0s")],
    );
    assert_eq!(
        stderr,
        "error: RM_POLL_INTERVAL: `0s` is shorter than one second\n"
    );

    let stderr = refused(
        &[
            "--data-dir",
            text(&dir.path().join("data")),
            "--poll-interval",
            "0s",
        ],
        &[("RM_REPOSITORY", "/srv/config")],
    );
    assert_eq!(
        stderr,
        "error: --poll-interval: `0s` is shorter than one second\n"
    );
}

#[test]
fn a_settings_file_reports_every_unknown_key_and_value_errors_at_their_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = dir.path().join("server.toml");
    std::fs::write(
        &settings,
        "listen = \"127.0.0.1:1\"\nlisten-addr = \"127.0.0.1:2\"\n[git]\n\
         repository = \"/srv/config\"\nbrnach = \"main\"\n",
    )
    .expect("write");

    let stderr = refused(&["--config", text(&settings)], &[]);

    let first = stderr.find("`listen-addr`").expect("listen-addr reported");
    let second = stderr.find("`brnach`").expect("brnach reported");
    assert!(first < second, "{stderr}");
    assert!(
        stderr.contains("line 2, column 1: unknown key `listen-addr`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5, column 1: unknown key `brnach`"),
        "{stderr}"
    );

    std::fs::write(
        &settings,
        "[git]\nrepository = \"/srv/config\"\npoll-interval = \"0s\"\n",
    )
    .expect("write");
    let stderr = refused(&["--config", text(&settings)], &[]);
    assert_eq!(
        stderr,
        format!(
            "error: settings file {}, line 3, column 17, poll-interval: `0s` is shorter than \
             one second\n",
            settings.display()
        )
    );
}

#[test]
fn a_state_database_that_is_a_directory_is_named_as_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = crate::serve::example_work_tree(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("state.db")).expect("mkdir");

    let stderr = refused(
        &[
            "--repository",
            text(&repo),
            "--data-dir",
            text(&data),
            "--identity",
            &demo_identity(),
        ],
        &[],
    );

    assert!(
        stderr.contains(&format!(
            "the state database {} is a directory, not a file",
            data.join("state.db").display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("writable"), "{stderr}");
}

#[test]
fn a_directory_as_identity_is_named_as_one_and_no_keygen_is_advised() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = crate::serve::example_work_tree(dir.path());
    let data = dir.path().join("data");
    let not_a_file = dir.path().join("keys");
    std::fs::create_dir(&not_a_file).expect("mkdir");

    let stderr = refused(
        &[
            "--repository",
            text(&repo),
            "--data-dir",
            text(&data),
            "--identity",
            text(&not_a_file),
        ],
        &[],
    );

    assert_eq!(
        stderr,
        format!(
            "error: cannot load the server identity: {} is a directory, not an identity file; \
             pass the file `restic-manager keygen` wrote (e.g. ./data/identity.txt)\n",
            not_a_file.display()
        )
    );
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn a_missing_identity_is_reported_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = crate::serve::example_work_tree(dir.path());
    let data = dir.path().join("data");

    let stderr = refused(
        &["--repository", text(&repo), "--data-dir", text(&data)],
        &[],
    );

    let identity = data.join("identity.txt");
    assert_eq!(
        stderr,
        format!(
            "error: there is no server identity at {}; create one with `restic-manager keygen \
             --identity {}`, or pass --identity the existing one\n",
            identity.display(),
            identity.display()
        )
    );
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn a_directory_or_a_two_line_file_as_webhook_secret_is_an_error_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = crate::serve::example_work_tree(dir.path());
    let data = dir.path().join("data");
    let secret_dir = dir.path().join("secret-dir");
    std::fs::create_dir(&secret_dir).expect("mkdir");
    std::fs::set_permissions(
        &secret_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let two_lines = dir.path().join("two-lines");
    std::fs::write(&two_lines, "a\nb\n").expect("write");
    std::fs::set_permissions(
        &two_lines,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let args = |secret: &Path| {
        vec![
            "--repository".to_owned(),
            text(&repo).to_owned(),
            "--data-dir".to_owned(),
            text(&data).to_owned(),
            "--identity".to_owned(),
            demo_identity(),
            "--webhook-secret-file".to_owned(),
            text(secret).to_owned(),
        ]
    };
    let refused_with = |secret: &Path| {
        let args = args(secret);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, &[("RUST_LOG", "warn")])
    };

    let stderr = refused_with(&secret_dir);
    // No warning about the directory's mode first: the error is all there is to say.
    assert!(!stderr.contains("may be read by other users"), "{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "error: the webhook secret file {} is a directory, not a file; point \
             webhook-secret-file at a file holding the secret\n",
            secret_dir.display()
        )),
        "{stderr}"
    );

    let stderr = refused_with(&two_lines);
    assert!(
        stderr.ends_with(&format!(
            "error: the webhook secret file {} holds more than one line; it should hold one \
             line, the secret configured on the git host (one trailing newline is fine)\n",
            two_lines.display()
        )),
        "{stderr}"
    );
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn a_readable_identity_is_warned_about_once_however_many_revisions_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The demo identity is checked in as 0644, which the server warns about.
    let identity = dir.path().join("identity.txt");
    std::fs::copy(workspace().join("examples/demo-identity.txt"), &identity).expect("copy");
    std::fs::set_permissions(
        &identity,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let repo = crate::serve::example_work_tree(dir.path());
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let child = restic_manager()
        .args([
            "serve",
            "--repository",
            text(&repo),
            "--data-dir",
            text(&data),
        ])
        .args(["--identity", text(&identity), "--poll-interval", "1h"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve starts");
    let server = ServerProcess {
        child,
        addr: String::new(),
        log,
    };
    let head = crate::common::git(&repo, &["rev-parse", "HEAD"]);
    crate::serve::wait_until_applied(&data, &head, &server);

    let warnings = server
        .log()
        .matches("the identity file is accessible to other users")
        .count();
    assert_eq!(warnings, 1, "{}", server.log());
}
