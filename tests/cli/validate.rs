//! `validate` on directories: exit codes and the exact messages users see for bad input.

use std::path::Path;

use crate::common::{minimal_with, restic_manager, run, write};

/// Runs `validate DIR` and returns (exit code, stderr + stdout).
fn validate(dir: &Path) -> (i32, String) {
    let out = run(restic_manager().arg("validate").arg(dir));
    (out.code, format!("{}{}", out.stderr, out.stdout))
}

/// Asserts validation fails and the output contains `expected` (a headline or message).
fn assert_invalid(dir: &Path, expected: &str) {
    let (code, output) = validate(dir);
    assert_eq!(code, 1, "expected exit 1, output:\n{output}");
    assert!(
        output.contains(expected),
        "expected {expected:?} in:\n{output}"
    );
}

#[test]
fn minimal_repository_is_valid() {
    let dir = minimal_with(&[]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("valid: 1 host, 1 policy, 1 repository, 0 notifications"));
    // The host has no agent-key: a warning, not an error.
    assert!(output.contains("hosts/web-1.toml: warning: host `web-1` has no agent-key"));
}

#[test]
fn wrong_type_names_file_line_and_column() {
    let dir = minimal_with(&[("hosts/web-1.toml", "paused = 1\n")]);
    assert_invalid(
        dir.path(),
        "hosts/web-1.toml:1:10: error: invalid type: integer `1`, expected a boolean",
    );
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { crn = \"0 2 * * *\" }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:4:14: error: unknown key `crn`",
    );
    assert_invalid(dir.path(), "did you mean `cron`?");
}

#[test]
fn duplicate_key_is_reported() {
    let dir = minimal_with(&[("hosts/web-1.toml", "paused = true\npaused = false\n")]);
    assert_invalid(
        dir.path(),
        "hosts/web-1.toml:2:1: error: duplicate key `paused`",
    );
}

#[test]
fn invalid_cron_is_reported_with_the_expression() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"61 2 * * *\" }\nretention = { keep-daily = 7 }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:4:21: error: invalid cron expression `61 2 * * *`",
    );
}

#[test]
fn cron_that_never_fires_is_an_error() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 0 31 2 *\" }\nretention = { keep-daily = 7 }\n",
    )]);
    assert_invalid(dir.path(), "cron expression `0 0 31 2 *` never fires");
}

#[test]
fn unknown_timezone_is_reported() {
    let dir = minimal_with(&[("hosts/web-1.toml", "timezone = \"Mars/Olympus_Mons\"\n")]);
    assert_invalid(
        dir.path(),
        "hosts/web-1.toml:1:12: error: unknown time zone `Mars/Olympus_Mons`",
    );
}

#[test]
fn relative_and_empty_paths_are_rejected() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"etc\", \"\"]\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:3:10: error: path `etc` is not absolute; paths must start with `/`",
    );
    assert_invalid(
        dir.path(),
        "policies/system.toml:3:17: error: path is empty",
    );

    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = []\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:3:9: error: paths is empty: a policy must back up at least one path",
    );
}

#[test]
fn retention_that_keeps_nothing_is_an_error() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 0, keep-last = 0 }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:5:13: error: this retention keeps nothing: forget would delete \
         every snapshot of the policy",
    );
}

#[test]
fn missing_repository_is_named_with_a_suggestion() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"locl\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:2:14: error: unknown repository `locl`",
    );
    assert_invalid(dir.path(), "did you mean `local`?");
}

#[test]
fn selector_matching_nothing_is_a_warning() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { labels = { role = \"db\" } }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n",
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(
            "policies/system.toml:1:9: warning: policy `system` selects no host, so it backs \
             up nothing"
        ),
        "{output}"
    );
}

#[test]
fn a_misspelt_object_directory_is_a_warning_naming_the_likely_one() {
    let dir = minimal_with(&[("hots/a.toml", "labels = { role = \"web\" }\n")]);
    write(dir.path(), "docs/notes.md", b"not config");
    write(dir.path(), ".github/settings.toml", b"");

    let (code, output) = validate(dir.path());

    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(
            "hots: warning: `hots` holds .toml files but is not one of the object directories \
             (hosts/, policies/, repositories/, notifications/), so none of them is read; did \
             you mean `hosts/`?"
        ),
        "{output}"
    );
    assert!(!output.contains("docs"), "{output}");
    assert!(!output.contains(".github"), "{output}");

    // The same warning for a revision, and for a directory with nothing else in it.
    let lone = crate::common::config_dir(&[("polices/system.toml", "")]);
    let (code, output) = validate(lone.path());
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("did you mean `policies/`?"), "{output}");
    assert!(
        output.contains("this does not look like a config repository"),
        "{output}"
    );
}

#[test]
fn policy_without_retention_is_a_warning() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\" }\n",
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{output}");
    assert!(output.contains(
        "policies/system.toml: warning: policy `system` has no retention: its snapshots are \
         never forgotten"
    ));
}

#[test]
fn duplicate_hostnames_are_an_error() {
    let dir = minimal_with(&[
        ("hosts/web-1.toml", "hostname = \"web.example.net\"\n"),
        ("hosts/web-2.toml", "hostname = \"web.example.net\"\n"),
    ]);
    assert_invalid(
        dir.path(),
        "hosts/web-2.toml:1:12: error: hostname `web.example.net` is also used by host `web-1`",
    );
}

#[test]
fn same_path_to_same_repository_from_two_policies_is_an_error() {
    let dir = minimal_with(&[(
        "policies/again.toml",
        "hosts = { all = true }\nrepository = \"local\"\npaths = [\"/srv\", \"/etc\"]\n\
         schedule = { every = \"6h\" }\nretention = { keep-last = 3 }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:3:10: error: path `/etc` of host `web-1` is already backed up \
         into repository `local` by policy `again`",
    );
}

#[test]
fn bad_file_names_are_rejected() {
    for name in ["Web-1", "web..1", "web_1"] {
        let dir = minimal_with(&[(&format!("hosts/{name}.toml"), "")]);
        assert_invalid(
            dir.path(),
            &format!("hosts/{name}.toml: error: `{name}` is not a valid object name"),
        );
    }
}

#[test]
fn non_utf8_file_is_rejected_with_its_offset() {
    let dir = minimal_with(&[]);
    write(
        dir.path(),
        "hosts/web-2.toml",
        b"description = \"caf\xe9\"\n",
    );
    assert_invalid(
        dir.path(),
        "hosts/web-2.toml:1:19: error: file is not valid UTF-8 (invalid byte at offset 18)",
    );
}

#[test]
fn file_over_one_mebibyte_is_refused_unread() {
    let dir = minimal_with(&[]);
    let big = format!("description = \"{}\"\n", "x".repeat(1024 * 1024));
    write(dir.path(), "hosts/web-2.toml", big.as_bytes());
    assert_invalid(
        dir.path(),
        "hosts/web-2.toml: error: `hosts/web-2.toml` is 1048593 bytes, more than the 1048576 \
         bytes (1 MiB) a config file may have; refused unread",
    );
}

#[test]
fn deeply_nested_toml_is_an_error_not_a_crash() {
    let deep = format!(
        "description = {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let dir = minimal_with(&[("hosts/web-1.toml", &deep)]);
    assert_invalid(dir.path(), "hosts/web-1.toml:1:");
    assert_invalid(
        dir.path(),
        "cannot recurse further; max recursion depth met",
    );
}

#[test]
fn empty_directory_is_not_a_config_repository() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_invalid(
        dir.path(),
        "error: no hosts/, policies/, repositories/ or notifications/ directory found: this \
         does not look like a config repository",
    );
}

#[test]
fn missing_directory_is_an_io_error() {
    let out = run(restic_manager().args(["validate", "/nonexistent/config-repo"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("error: cannot read config directory /nonexistent/config-repo"),
        "{}",
        out.stderr
    );
}

#[test]
fn symlink_leaving_the_repository_is_refused() {
    let outside = tempfile::tempdir().expect("temp dir");
    write(
        outside.path(),
        "secret.toml",
        b"description = \"outside\"\n",
    );
    let dir = minimal_with(&[]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.toml"),
        dir.path().join("hosts/web-2.toml"),
    )
    .expect("symlink");
    assert_invalid(
        dir.path(),
        "hosts/web-2.toml: error: `hosts/web-2.toml` is a symlink pointing outside the \
         repository; refused",
    );
}

#[test]
fn symlink_inside_the_repository_is_followed() {
    let dir = minimal_with(&[("shared/web.toml", "labels = { role = \"web\" }\n")]);
    std::fs::remove_file(dir.path().join("hosts/web-1.toml")).expect("rm");
    std::os::unix::fs::symlink("../shared/web.toml", dir.path().join("hosts/web-1.toml"))
        .expect("symlink");
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{output}");
}

#[test]
fn inline_url_credentials_point_to_env() {
    let dir = minimal_with(&[(
        "repositories/local.toml",
        "url = \"rest:https://alice:hunter2@backup.example.net/\"\n\
         password = { sealed = \"x\" }\n",
    )]);
    assert_invalid(
        dir.path(),
        "repositories/local.toml:1:7: error: rest url contains credentials",
    );
    assert_invalid(
        dir.path(),
        "set them in `env` (RESTIC_REST_USERNAME, RESTIC_REST_PASSWORD)",
    );
}

#[test]
fn plain_password_and_bad_armor_are_rejected() {
    let dir = minimal_with(&[(
        "repositories/local.toml",
        "url = \"/srv/restic\"\npassword = \"hunter2\"\n",
    )]);
    assert_invalid(
        dir.path(),
        "repositories/local.toml:2:12: error: the repository password must be sealed, not plain \
         text",
    );

    let dir = minimal_with(&[(
        "repositories/local.toml",
        "url = \"/srv/restic\"\npassword = { sealed = \"not armor\" }\n",
    )]);
    assert_invalid(
        dir.path(),
        "repositories/local.toml:2:12: error: password: the sealed value is not age armor",
    );
}

#[test]
fn plain_secret_env_is_rejected_and_plain_settings_are_kept_exactly() {
    let dir = minimal_with(&[(
        "repositories/local.toml",
        "url = \"s3:https://s3.example.net/bucket\"\npassword = { sealed = \"x\" }\n\
         env = { AWS_SECRET_ACCESS_KEY = \"abc\" }\n",
    )]);
    assert_invalid(
        dir.path(),
        "repositories/local.toml:3:33: error: `AWS_SECRET_ACCESS_KEY` is a secret and must be \
         sealed, not plain text",
    );
}

#[test]
fn json_format_lists_every_diagnostic() {
    let dir = minimal_with(&[("hosts/web-1.toml", "paused = 1\n")]);
    let out = run(restic_manager()
        .arg("validate")
        .arg(dir.path())
        .args(["--format", "json"]));
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"], 1);
    let first = &report["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "hosts/web-1.toml");
    assert_eq!(first["line"], 1);
    assert_eq!(first["column"], 10);
    assert_eq!(
        first["message"],
        "invalid type: integer `1`, expected a boolean"
    );
}

#[test]
fn all_errors_of_several_files_are_reported_in_one_run() {
    let dir = minimal_with(&[
        ("hosts/web-1.toml", "pasued = true\n"),
        (
            "policies/system.toml",
            "hosts = { names = [\"web-1\"] }\nrepository = \"nope\"\npaths = [\"/etc\"]\n\
             schedule = { cron = \"0 25 * * *\" }\nretention = { keep-daily = 7 }\n",
        ),
    ]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 1);
    for expected in [
        "hosts/web-1.toml:1:1: error: unknown key `pasued`",
        "policies/system.toml:2:14: error: unknown repository `nope`",
        "policies/system.toml:4:21: error: invalid cron expression `0 25 * * *`",
    ] {
        assert!(
            output.contains(expected),
            "expected {expected:?} in:\n{output}"
        );
    }
}

#[test]
fn usage_error_exits_two() {
    let out = run(restic_manager().args(["validate", "--format", "yaml"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("invalid value 'yaml' for '--format <FORMAT>'"),
        "{}",
        out.stderr
    );
}

#[test]
fn example_repository_is_valid() {
    let (code, output) = validate(&crate::common::example_repo());
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("valid: 3 hosts, 3 policies, 2 repositories, 1 notification"));
}

/// The acceptance case: three broken files, three errors with positions, one run.
#[test]
fn broken_copy_of_the_example_reports_all_three_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    crate::common::copy_tree(&crate::common::example_repo(), dir.path());
    let edit = |path: &str, from: &str, to: &str| {
        let full = dir.path().join(path);
        let text = std::fs::read_to_string(&full).expect("read");
        assert!(text.contains(from), "{path} has no {from:?}");
        std::fs::write(full, text.replacen(from, to, 1)).expect("write");
    };
    edit(
        "policies/web.toml",
        "every = \"6h\"",
        "cron = \"0 */6 * * * * *\"",
    );
    edit("hosts/db-1.toml", "timezone", "time-zone");
    edit(
        "policies/postgres.toml",
        "repository = \"offsite\"",
        "repository = \"ofsite\"",
    );

    let (code, output) = validate(dir.path());
    assert_eq!(code, 1, "{output}");
    let headlines: Vec<&str> = output.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(headlines.len(), 3, "{output}");
    assert!(
        headlines[0].starts_with("hosts/db-1.toml:"),
        "{headlines:?}"
    );
    assert!(
        headlines[0].ends_with("error: unknown key `time-zone`"),
        "{headlines:?}"
    );
    assert!(
        headlines[1].starts_with("policies/postgres.toml:"),
        "{headlines:?}"
    );
    assert!(
        headlines[1].ends_with("error: unknown repository `ofsite`"),
        "{headlines:?}"
    );
    assert!(
        headlines[2].starts_with("policies/web.toml:"),
        "{headlines:?}"
    );
    assert!(headlines[2].contains("error: invalid cron expression `0 */6 * * * * *`"));
    assert!(output.contains("did you mean `timezone`?"));
    assert!(output.contains("did you mean `offsite`?"));
}

#[test]
fn object_directory_that_is_not_a_directory_is_an_error() {
    let dir = minimal_with(&[]);
    write(dir.path(), "notifications", b"not a directory\n");
    assert_invalid(
        dir.path(),
        "notifications: error: `notifications/` is not a directory, so none of its objects can \
         be read",
    );
}

#[test]
fn object_directory_symlinked_outside_is_an_error() {
    let outside = tempfile::tempdir().expect("temp dir");
    write(
        outside.path(),
        "ops.toml",
        b"ntfy = { url = \"https://ntfy.example.net/x\" }\n",
    );
    let dir = minimal_with(&[]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("notifications")).expect("link");
    assert_invalid(
        dir.path(),
        "notifications: error: `notifications/` is a symlink to a place outside the repository; \
         refused, so none of its objects can be read",
    );
}

#[test]
fn jitter_as_long_as_the_interval_is_a_warning() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 * * * *\", jitter = \"2h\" }\nretention = { keep-daily = 7 }\n",
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(
            "policies/system.toml:4:43: warning: jitter 2h is not shorter than the time between \
             two runs (1h)"
        ),
        "{output}"
    );
}

#[test]
fn prune_on_append_only_repository_without_maintenance_is_an_error() {
    let repo = crate::common::minimal_repo()
        .into_iter()
        .find(|(p, _)| p == "repositories/local.toml")
        .expect("repository")
        .1;
    let dir = minimal_with(&[
        (
            "repositories/local.toml",
            &format!("append-only = true\n{repo}"),
        ),
        (
            "policies/system.toml",
            "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
             schedule = { cron = \"0 2 * * *\" }\nprune = { cron = \"0 4 * * 0\" }\n",
        ),
    ]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:5:9: error: repository `local` is append-only and has no \
         `maintenance` credential, so prune could never delete anything",
    );
}

#[test]
fn selector_naming_a_broken_host_file_does_not_claim_it_is_missing() {
    let dir = minimal_with(&[("hosts/web-1.toml", "paused = \"no\"\n")]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 1);
    assert!(!output.contains("host `web-1` does not exist"), "{output}");
}

#[test]
fn every_unknown_key_of_one_file_is_reported_in_one_run() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\", jiter = \"5m\" }\n\
         retention = { keep-daly = 7 }\nexclud = [\"*.tmp\"]\n",
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 1, "{output}");
    for expected in [
        "policies/system.toml:4:34: error: unknown key `jiter`",
        "policies/system.toml:5:15: error: unknown key `keep-daly`",
        "policies/system.toml:6:1: error: unknown key `exclud`",
        "did you mean `jitter`?",
        "did you mean `keep-daily`?",
        "did you mean `exclude`?",
    ] {
        assert!(
            output.contains(expected),
            "expected {expected:?} in:\n{output}"
        );
    }
    assert!(output.contains("invalid: 3 errors"), "{output}");
}

#[test]
fn a_bad_rule_is_not_also_reported_as_keeping_nothing() {
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"local\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-within = \"2w\" }\n",
    )]);
    assert_invalid(
        dir.path(),
        "policies/system.toml:5:29: error: invalid keep-within duration `2w`",
    );
    let (_, output) = validate(dir.path());
    assert!(!output.contains("keeps nothing"), "{output}");
    assert!(output.contains("invalid: 1 error"), "{output}");
}

#[test]
fn two_hosts_with_one_agent_key_are_an_error() {
    let key = "ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
    let dir = minimal_with(&[
        ("hosts/web-1.toml", &format!("agent-key = \"{key}\"\n")),
        ("hosts/web-2.toml", &format!("agent-key = \"{key}\"\n")),
    ]);
    assert_invalid(
        dir.path(),
        "hosts/web-2.toml:1:13: error: agent-key is also the key of host `web-1`",
    );
}

#[test]
fn a_finding_on_a_very_long_line_is_reported_without_a_crash() {
    let long = "x".repeat(70_000);
    let dir = minimal_with(&[(
        "hosts/web-1.toml",
        &format!("description = \"{long}\"; paused = 1\n"),
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("hosts/web-1.toml:1:70017: error:"),
        "{}",
        &output[..output.len().min(2000)]
    );
    assert!(output.contains("(the line is too long to show)"));
    assert!(output.len() < 10_000, "the long line is not echoed");

    // A warning on a long line of a valid config must not crash either.
    let dir = minimal_with(&[(
        "policies/system.toml",
        &format!(
            "hosts = {{ names = [\"web-1\"] }}\nrepository = \"local\"\npaths = [\"/etc\"]\n\
             schedule = {{ cron = \"0 2 * * *\" }}\nretention = {{ keep-daily = 7 }}\n\
             hooks = {{ before = [[\"{long}\"], [\"a b\"]] }}\n"
        ),
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{}", &output[..output.len().min(2000)]);
}

#[test]
fn control_characters_in_files_and_values_are_not_echoed() {
    // Raw in the file: TOML refuses it, and the snippet shows it as `?`.
    let dir = minimal_with(&[("hosts/web-1.toml", "description = \"a\u{1b}[2Jb\"\n")]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 1, "{output}");
    assert!(!output.contains('\u{1b}'), "{output}");
    assert!(output.contains("description = \"a?[2Jb\""), "{output}");

    // Escaped in TOML, so it reaches a value: messages show it as `?`, and values that reach
    // restic or a plan refuse it.
    let dir = minimal_with(&[(
        "policies/system.toml",
        "hosts = { names = [\"web-1\"] }\nrepository = \"loc\\u001b[2Jal\"\npaths = [\"/etc\"]\n\
         schedule = { cron = \"0 2 * * *\" }\nretention = { keep-daily = 7 }\n\
         exclude = [\"*.tmp\\n\\n#### Other changes\"]\n",
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 1, "{output}");
    assert!(!output.contains('\u{1b}'), "{output}");
    assert!(
        output.contains("unknown repository `loc?[2Jal`"),
        "{output}"
    );
    assert!(
        output.contains(
            "policies/system.toml:6:12: error: exclude pattern contains a control character"
        ),
        "{output}"
    );
}

#[test]
fn a_query_string_in_a_repository_url_is_a_warning() {
    let armor = crate::common::sealed_armor("pw");
    let dir = minimal_with(&[(
        "repositories/local.toml",
        &format!(
            "url = \"rest:https://backup.example.net/fleet?token=abc\"\n\
             password = {{ sealed = \"\"\"\n{armor}\"\"\" }}\n"
        ),
    )]);
    let (code, output) = validate(dir.path());
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(
            "repositories/local.toml:1:7: warning: the url has a query string, and the url is \
             printed by show, plan and logs"
        ),
        "{output}"
    );
}
