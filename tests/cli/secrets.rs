//! `keygen`, `seal` and `validate --identity`: identities on disk, sealed values pasted into
//! config files, and what a user sees when a value does not open or carries whitespace.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use reconciler::secrets::{self, ExposeSecret as _};

use crate::common::{Run, copy_tree, example_repo, restic_manager, run, workspace, write};

/// A valid agent key, so that the test fleets produce no warning of their own.
const AGENT_KEY: &str = "ed25519:txaWFutCKxVS+wyyZQjd+29irhHASkZ3xkmLeg21bNc=";

/// Where the password value starts in [`fleet`]'s repository file: line 2, after
/// `password = `.
const PASSWORD_AT: &str = "repositories/local.toml:2:12";

/// Runs a command with `input` on its stdin.
fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // seal checks its flags before reading stdin, so it may exit before the input is written.
    let written = child.stdin.take().expect("stdin").write_all(input);
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    let out = child.wait_with_output().expect("the binary runs");
    Run {
        code: out.status.code().expect("exited normally, not by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `restic-manager seal ARGS` with `secret` on stdin.
fn seal(args: &[&str], secret: &[u8]) -> Run {
    run_with_stdin(restic_manager().arg("seal").args(args), secret)
}

/// Creates an identity at `path` with `keygen` and returns its recipient.
fn keygen(path: &Path) -> String {
    let out = run(restic_manager().arg("keygen").arg("--identity").arg(path));
    assert_eq!(out.code, 0, "keygen failed: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// Writes a one-host fleet whose repository password is `password_value`, pasted as is
/// after `password = ` on line 2.
fn fleet(root: &Path, password_value: &str) {
    write(
        root,
        "hosts/web-1.toml",
        format!("agent-key = \"{AGENT_KEY}\"\n").as_bytes(),
    );
    write(
        root,
        "repositories/local.toml",
        format!("url = \"/srv/restic/local\"\npassword = {password_value}").as_bytes(),
    );
    write(
        root,
        "policies/system.toml",
        b"hosts = { all = true }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
          schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n",
    );
}

/// Runs `validate DIR --identity IDENTITY`.
fn validate_with(dir: &Path, identity: &Path) -> Run {
    run(restic_manager()
        .arg("validate")
        .arg(dir)
        .arg("--identity")
        .arg(identity))
}

/// Loads `dir` with the library and opens the local repository's password.
fn open_password(dir: &Path, identity: &Path) -> Vec<u8> {
    let files = reconciler::config::source::read_dir(dir).expect("readable");
    let loaded = reconciler::config::load(&files);
    let config = loaded.config.unwrap_or_else(|| {
        panic!(
            "the config is invalid:\n{}",
            loaded.diagnostics.render_text(false)
        )
    });
    let identity = secrets::load_identity(identity).expect("identity loads");
    let opened = secrets::open(&identity, &config.repositories["local"].password).expect("opens");
    opened.expose_secret().to_vec()
}

/// Fails unless the `age` command-line tool is installed: these tests check interoperability
/// with it and must not pass silently without it.
fn age_cli() -> Command {
    match Command::new("age").arg("--version").output() {
        Ok(out) if out.status.success() => Command::new("age"),
        Ok(out) => panic!(
            "`age --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "the `age` command is needed by this test and could not be run ({e}): install the \
             `age` package (apt-get install age)"
        ),
    }
}

#[test]
fn keygen_writes_a_private_identity_and_refuses_to_overwrite_it() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(restic_manager().arg("keygen").current_dir(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The default path, private, with the recipient on stdout and the hint on stderr.
    let path = dir.path().join("data/identity.txt");
    let mode = std::fs::metadata(&path)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "identity mode {mode:o}");
    let dir_mode = std::fs::metadata(dir.path().join("data"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");
    let recipient = out.stdout.trim();
    assert!(
        recipient.starts_with("age1") && out.stdout.lines().count() == 1,
        "stdout: {}",
        out.stdout
    );
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.starts_with("# created: "), "{text}");
    assert!(
        text.contains(&format!("# public key: {recipient}\n")),
        "{text}"
    );
    assert!(text.contains("\nAGE-SECRET-KEY-1"), "no secret key line");
    assert!(
        out.stderr.starts_with(
            "wrote the server's identity to ./data/identity.txt (mode 0600): keep it on the \
             server and out of git."
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("AGE-SECRET-KEY"), "the key leaked");

    // A second keygen, here through RM_IDENTITY, must leave the first identity alone.
    let before = std::fs::read(&path).expect("read");
    let again = run(restic_manager().arg("keygen").env("RM_IDENTITY", &path));
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_eq!(
        again.stderr,
        format!(
            "error: {} already exists; refusing to overwrite an identity, since values sealed \
             to it could no longer be opened: move it away first, or pass another path with \
             --identity\n",
            path.display()
        )
    );
    assert!(again.stdout.is_empty(), "{}", again.stdout);
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn an_empty_rm_identity_counts_as_unset() {
    // As in CI when the secret behind the variable is missing: not "a value is required".
    let dir = tempfile::tempdir().expect("tempdir");

    let out = run(restic_manager()
        .arg("validate")
        .arg(example_repo())
        .env("RM_IDENTITY", ""));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "opened nothing: {}", out.stderr);

    let out = seal(&[], b"secret\n");
    let empty = run_with_stdin(
        restic_manager().arg("seal").env("RM_IDENTITY", ""),
        b"secret\n",
    );
    assert_eq!(empty.code, 2, "{}", empty.stderr);
    assert_eq!(
        empty.stderr, out.stderr,
        "the same as with RM_IDENTITY unset"
    );

    let out = run(restic_manager()
        .arg("keygen")
        .env("RM_IDENTITY", "")
        .current_dir(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        dir.path().join("data/identity.txt").is_file(),
        "the default path"
    );
}

#[test]
fn a_value_from_seal_passes_validate_with_the_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    keygen(&identity);

    // No --recipient: seal derives it from the identity, here given through RM_IDENTITY.
    let sealed = run_with_stdin(
        restic_manager().arg("seal").env("RM_IDENTITY", &identity),
        b"correct horse battery staple\n",
    );
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    assert!(sealed.stderr.is_empty(), "{}", sealed.stderr);
    assert!(
        sealed
            .stdout
            .starts_with("{ sealed = \"\"\"\n-----BEGIN AGE ENCRYPTED FILE-----\n"),
        "{}",
        sealed.stdout
    );
    assert!(
        sealed
            .stdout
            .ends_with("\n-----END AGE ENCRYPTED FILE-----\n\"\"\" }\n"),
        "{}",
        sealed.stdout
    );

    let repo = dir.path().join("repo");
    fleet(&repo, &sealed.stdout);
    let out = validate_with(&repo, &identity);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("valid: 1 host, 1 policy"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert_eq!(
        open_password(&repo, &identity),
        b"correct horse battery staple"
    );
}

#[test]
fn quotes_dollars_backslashes_and_unicode_survive_sealing_byte_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    let recipient = keygen(&identity);
    let secret = "pa\"ss'w$rd `x` \\ # ünïcödé";

    // Piped as `echo` would: the one trailing newline is dropped, nothing else changes.
    let sealed = seal(
        &["--recipient", &recipient],
        format!("{secret}\n").as_bytes(),
    );
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    assert!(sealed.stderr.is_empty(), "{}", sealed.stderr);

    let repo = dir.path().join("repo");
    fleet(&repo, &sealed.stdout);
    assert_eq!(open_password(&repo, &identity), secret.as_bytes());

    // A CRLF line ending is dropped the same way.
    let crlf = seal(&["-r", &recipient], format!("{secret}\r\n").as_bytes());
    fleet(&repo, &crlf.stdout);
    assert_eq!(open_password(&repo, &identity), secret.as_bytes());
}

#[test]
fn values_sealed_by_the_age_cli_validate_and_open_and_age_opens_ours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    let recipient = keygen(&identity);

    // age -r RECIPIENT -a, pasted indented, as people do in multi-line strings.
    let out = run_with_stdin(
        age_cli().args(["-r", &recipient, "-a"]),
        b"sealed by age itself",
    );
    assert_eq!(out.code, 0, "age failed: {}", out.stderr);
    let indented: String = out.stdout.lines().flat_map(|l| ["    ", l, "\n"]).collect();
    let repo = dir.path().join("repo");
    fleet(&repo, &format!("{{ sealed = \"\"\"\n{indented}\"\"\" }}\n"));

    let checked = validate_with(&repo, &identity);
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    assert!(!checked.stderr.contains("warning"), "{}", checked.stderr);
    assert_eq!(open_password(&repo, &identity), b"sealed by age itself");

    // And the other way round: age opens what seal printed.
    let sealed = seal(&["-r", &recipient], b"sealed by restic-manager");
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    let armor: String = sealed
        .stdout
        .lines()
        .filter(|l| !l.contains("\"\"\""))
        .flat_map(|l| [l, "\n"])
        .collect();
    let opened = run_with_stdin(
        age_cli().arg("-d").arg("-i").arg(&identity),
        armor.as_bytes(),
    );
    assert_eq!(opened.code, 0, "age -d failed: {}", opened.stderr);
    assert_eq!(opened.stdout, "sealed by restic-manager");
}

#[test]
fn a_value_sealed_for_another_recipient_fails_validate_at_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = dir.path().join("server.txt");
    let server_recipient = keygen(&server);
    let other_recipient = keygen(&dir.path().join("other.txt"));

    let sealed = seal(&["--recipient", &other_recipient], b"not for this server");
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    let repo = dir.path().join("repo");
    fleet(&repo, &sealed.stdout);

    let out = validate_with(&repo, &server);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.starts_with("invalid: 1 error"), "{}", out.stdout);
    let expected = format!(
        "{PASSWORD_AT}: error: password: cannot be opened with identity {}: it was sealed to \
         another recipient, not to this identity's {server_recipient}\n",
        server.display()
    );
    assert!(out.stderr.starts_with(&expected), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "re-seal it with `restic-manager seal --recipient {server_recipient}`"
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("not for this server"),
        "the secret leaked"
    );

    // Without the identity the same file is valid: the armor itself is well-formed.
    let plain = run(restic_manager().arg("validate").arg(&repo));
    assert_eq!(plain.code, 0, "{}", plain.stderr);
}

#[test]
fn a_secret_sealed_with_its_newline_gets_a_loud_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    let recipient = keygen(&identity);

    let sealed = seal(&["-r", &recipient, "--keep-newline"], b"hunter2\n");
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    assert!(
        sealed
            .stderr
            .starts_with("warning: the secret ends with a newline (sealed anyway); "),
        "{}",
        sealed.stderr
    );
    assert!(!sealed.stderr.contains("hunter2"), "the secret leaked");

    let repo = dir.path().join("repo");
    fleet(&repo, &sealed.stdout);
    let out = validate_with(&repo, &identity);
    assert_eq!(out.code, 0, "a warning must not invalidate: {}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "{PASSWORD_AT}: warning: password: the secret ends with a newline; restic uses an \
             environment value as-is but strips it from a password file, so the same secret \
             behaves differently per delivery method — re-seal it without the newline\n"
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2"), "the secret leaked");
    assert_eq!(open_password(&repo, &identity), b"hunter2\n");
}

#[test]
fn garbage_in_sealed_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    fleet(dir.path(), "{ sealed = \"not armor\" }\n");

    let out = run(restic_manager().arg("validate").arg(dir.path()));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "{PASSWORD_AT}: error: password: the sealed value is not age armor (it does not \
             start with `-----BEGIN AGE ENCRYPTED FILE-----`)\n"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn truncated_or_extended_armor_fails_validate_without_the_identity() {
    let armor = crate::common::sealed_armor("pw");
    let without_end = armor
        .strip_suffix("-----END AGE ENCRYPTED FILE-----\n")
        .expect("armor ends with its END line");
    for (armor, why) in [
        (
            without_end.to_owned(),
            "the END line `-----END AGE ENCRYPTED FILE-----` is missing",
        ),
        (
            format!("{armor}pasted twice\n"),
            "there is text after the END line",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        fleet(
            dir.path(),
            &format!("{{ sealed = \"\"\"\n{armor}\"\"\" }}\n"),
        );

        let out = run(restic_manager().arg("validate").arg(dir.path()));
        assert_eq!(out.code, 1, "{why}: {}", out.stderr);
        assert!(
            out.stderr.starts_with(&format!(
                "{PASSWORD_AT}: error: password: the sealed value is not age armor ({why})\n"
            )),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn validate_with_an_unreadable_identity_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.txt");
    let out = validate_with(&example_repo(), &missing);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot read identity file {}: ",
            missing.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn seal_names_a_bad_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = keygen(&dir.path().join("identity.txt"));

    let out = seal(&["-r", &good, "--recipient", "age1notarecipient"], b"x");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(
        out.stderr,
        "error: --recipient: `age1notarecipient` is not an age X25519 recipient (invalid Bech32 \
         encoding): expected `age1...` as printed by `restic-manager keygen` or `age-keygen -y`\n"
    );
}

#[test]
fn seal_never_echoes_a_secret_key_given_as_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    keygen(&identity);
    let text = std::fs::read_to_string(&identity).expect("read");
    let key = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("a secret key line");

    let out = seal(&["--recipient", key], b"x");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(
        out.stderr,
        "error: --recipient: this is an age secret key, not a recipient; pass the public key \
         (age1…) printed by `restic-manager keygen` — and treat this secret key as exposed if it \
         was typed where others can see it\n"
    );
    let body = &key["AGE-SECRET-KEY-1".len()..];
    assert!(!out.stderr.contains(body), "the key leaked");
}

#[test]
fn seal_refuses_an_empty_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipient = keygen(&dir.path().join("identity.txt"));

    for input in [&b""[..], b"\n", b"\r\n"] {
        let out = seal(&["-r", &recipient], input);
        assert_eq!(out.code, 2, "{input:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(
            out.stderr
                .starts_with("error: the secret on stdin is empty: pipe it in, e.g. "),
            "{input:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn seal_refuses_a_secret_that_is_not_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipient = keygen(&dir.path().join("identity.txt"));

    let out = seal(&["-r", &recipient], b"caf\xe9\n");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: the secret on stdin is not UTF-8 text;"),
        "{}",
        out.stderr
    );
}

#[test]
fn seal_refuses_a_nul_byte_and_warns_about_other_control_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    let recipient = keygen(&identity);

    let out = seal(&["-r", &recipient], b"s3cr3t\0tail\n");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.starts_with(
            "error: the secret on stdin contains a NUL byte, which cannot be passed to restic \
             through the environment"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t"), "the secret leaked");

    let out = seal(&["-r", &recipient], b"s3cr3t\x1b[0m\n");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("warning: the secret contains a control character (sealed anyway); "),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("s3cr3t"), "the secret leaked");

    // validate --identity says the same about a value sealed elsewhere, e.g. by age.
    let repo = dir.path().join("repo");
    fleet(&repo, &out.stdout);
    let checked = validate_with(&repo, &identity);
    assert_eq!(
        checked.code, 0,
        "a warning must not invalidate: {}",
        checked.stderr
    );
    assert!(
        checked.stderr.starts_with(&format!(
            "{PASSWORD_AT}: warning: password: the secret contains a control character"
        )),
        "{}",
        checked.stderr
    );
    assert!(!checked.stderr.contains("s3cr3t"), "the secret leaked");
}

#[test]
fn validate_refuses_a_secret_with_a_nul_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("identity.txt");
    let recipient = keygen(&identity);

    // seal refuses a NUL, so seal it with age as someone might.
    let out = run_with_stdin(age_cli().args(["-r", &recipient, "-a"]), b"s3cr3t\0tail");
    assert_eq!(out.code, 0, "age failed: {}", out.stderr);
    let repo = dir.path().join("repo");
    fleet(
        &repo,
        &format!("{{ sealed = \"\"\"\n{}\"\"\" }}\n", out.stdout),
    );

    let checked = validate_with(&repo, &identity);
    assert_eq!(checked.code, 1, "{}", checked.stderr);
    assert!(
        checked.stderr.starts_with(&format!(
            "{PASSWORD_AT}: error: password: the secret contains a NUL byte, which cannot be \
             passed to restic through the environment\n"
        )),
        "{}",
        checked.stderr
    );
    assert!(!checked.stderr.contains("s3cr3t"), "the secret leaked");
}

#[test]
fn seal_without_a_recipient_says_to_pass_one() {
    let out = seal(&[], b"secret\n");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: no recipient to seal for: pass --recipient age1... "),
        "{}",
        out.stderr
    );
}

#[test]
fn the_example_repository_opens_with_the_demo_identity() {
    let demo = workspace().join("examples/demo-identity.txt");
    let text = std::fs::read_to_string(&demo).expect("demo identity");
    assert!(text.starts_with("# DEMO ONLY: "), "{text}");

    let out = run(restic_manager().arg("validate").arg(example_repo()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "valid: 3 hosts, 3 policies, 2 repositories, 1 notification (0 warnings)\n"
    );

    // Every sealed value opens, and none draws a warning; the only thing said on stderr is
    // that the identity file is readable by others (git cannot record mode 0600).
    let out = validate_with(&example_repo(), &demo);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.ends_with("(0 warnings)\n"), "{}", out.stdout);
    assert!(
        out.stderr
            .lines()
            .all(|l| l.contains("the identity file is accessible to other users")),
        "{}",
        out.stderr
    );

    // Opened with the library too: five sealed values, each plain ASCII text.
    let files = reconciler::config::source::read_dir(&example_repo()).expect("readable");
    let loaded = reconciler::config::load(&files);
    let identity = secrets::load_identity(&demo).expect("demo identity loads");
    assert_eq!(loaded.sealed.len(), 5, "{:?}", loaded.sealed);
    for sealed in &loaded.sealed {
        let armor = secrets::check_sealed(&sealed.armor).expect("armor");
        let opened = secrets::open(&identity, &armor).expect("opens");
        let bytes = opened.expose_secret();
        assert!(
            !bytes.is_empty() && bytes.iter().all(u8::is_ascii_graphic),
            "{} in {} is not plain ASCII",
            sealed.what,
            sealed.file
        );
    }
}

#[test]
fn a_value_that_does_not_open_deep_in_a_file_is_located() {
    // The example's maintenance password replaced by one sealed for another server: the error
    // must point into the [maintenance.env] table, not at the file or the repository.
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    copy_tree(&example_repo(), &repo);
    let stranger = keygen(&dir.path().join("stranger.txt"));
    let sealed = seal(&["-r", &stranger], b"maintenance");
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);

    let path = repo.join("repositories/offsite.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    let (head, tail) = text
        .split_once("[maintenance.env]\n")
        .expect("a maintenance env table");
    let username = tail.lines().next().expect("the username line");
    let edited = format!(
        "{head}[maintenance.env]\n{username}\nRESTIC_REST_PASSWORD = {}",
        sealed.stdout
    );
    write(&repo, "repositories/offsite.toml", edited.as_bytes());
    let line = edited.lines().count() - sealed.stdout.lines().count() + 1;

    let demo = workspace().join("examples/demo-identity.txt");
    let out = validate_with(&repo, &demo);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let expected = format!(
        "repositories/offsite.toml:{line}:24: error: env RESTIC_REST_PASSWORD: cannot be opened \
         with identity {}: it was sealed to another recipient",
        demo.display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches(": error: ").count(),
        1,
        "only the replaced value fails: {}",
        out.stderr
    );
}

#[test]
fn every_example_file_names_its_json_schema() {
    let root = example_repo();
    for (dir, schema) in [
        ("hosts", "host"),
        ("policies", "policy"),
        ("repositories", "repository"),
        ("notifications", "notification"),
    ] {
        let mut seen = 0;
        for entry in std::fs::read_dir(root.join(dir)).expect("kind dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            let first = text.lines().next().unwrap_or_default();
            assert_eq!(
                first,
                format!("#:schema ../../../schema/{schema}.schema.json"),
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(seen > 0, "no file in {dir}");
    }
}
