//! `show`: the effective per-host assignments, with every default filled in.

use crate::common::{minimal_with, restic_manager, run};

#[test]
fn show_prints_effective_schedule_retention_and_defaults() {
    let dir = minimal_with(&[("hosts/web-1.toml", "timezone = \"Europe/Berlin\"\n")]);
    let out = run(restic_manager().arg("show").arg(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for expected in [
        "host web-1 (hostname web-1, Europe/Berlin, not enrolled: no agent-key)",
        "  policy system -> repository local (/srv/restic/local)",
        "    paths:     /etc",
        "    tags:      policy:system",
        // The policy's cron has no zone of its own, so the host's zone applies.
        "    backup:    cron `0 2 * * *` (Europe/Berlin); missed runs: run once; stopped after 1d",
        "    retention: keep-daily 7 (grouped by host,paths); forget: cron `0 3 * * *` \
         (Europe/Berlin)",
        "    check:     never",
    ] {
        assert!(
            out.stdout.contains(expected),
            "expected {expected:?} in:\n{}",
            out.stdout
        );
    }
}

#[test]
fn show_one_host_as_json() {
    let dir = minimal_with(&[("hosts/web-2.toml", "")]);
    let out = run(restic_manager()
        .arg("show")
        .arg(dir.path())
        .args(["--host", "web-2"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("host web-2 (hostname web-2, UTC, not enrolled: no agent-key)")
    );
    assert!(
        out.stdout
            .contains("no policy selects this host: nothing is backed up")
    );
    assert!(!out.stdout.contains("host web-1"));

    let out = run(restic_manager()
        .arg("show")
        .arg(dir.path())
        .args(["--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let first = &json["hosts"][0];
    assert_eq!(first["name"], "web-1");
    assert_eq!(first["assignments"][0]["schedule"]["cron"], "0 2 * * *");
    assert_eq!(first["assignments"][0]["schedule"]["timezone"], "UTC");
    assert_eq!(first["assignments"][0]["retention"]["keep-daily"], 7);
}

#[test]
fn show_unknown_host_suggests_a_name() {
    let dir = minimal_with(&[]);
    let out = run(restic_manager()
        .arg("show")
        .arg(dir.path())
        .args(["--host", "web-l"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("error: there is no host `web-l` (did you mean `web-1`?)"),
        "{}",
        out.stderr
    );
}

#[test]
fn show_refuses_an_invalid_config() {
    let dir = minimal_with(&[("hosts/web-1.toml", "paused = \"yes\"\n")]);
    let out = run(restic_manager().arg("show").arg(dir.path()));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("hosts/web-1.toml:1:10: error: invalid type"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("the config is invalid; fix the errors above")
    );
}
