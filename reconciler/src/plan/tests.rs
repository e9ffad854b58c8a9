//! Tests of the plan engine on configs built in memory.

use super::*;
use crate::config::testing::{config, repository};

const POLICY: &str = r#"
hosts = { labels = { role = "web" } }
repository = "local"
paths = ["/etc", "/var/www"]
schedule = { cron = "0 * * * *" }
retention = { keep-daily = 14, keep-weekly = 4 }
check = { cron = "0 5 * * 0" }
"#;

fn fleet(policy: &str) -> Config {
    let local = repository("/srv/restic/local");
    let other = repository("/srv/restic/other");
    config(&[
        ("hosts/web-1.toml", "labels = { role = \"web\" }\n"),
        ("hosts/web-2.toml", "labels = { role = \"web\" }\n"),
        ("repositories/local.toml", &local),
        ("repositories/other.toml", &other),
        ("policies/web.toml", policy),
    ])
}

fn risky(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.risky)
        .map(|c| c.summary.clone())
        .collect()
}

#[test]
fn same_config_has_no_changes() {
    let plan = diff(&fleet(POLICY), &fleet(POLICY));
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn lowered_retention_and_dropped_path_are_risky_and_grouped() {
    let head = POLICY
        .replace("keep-daily = 14", "keep-daily = 7")
        .replace(", \"/var/www\"", "");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    assert_eq!(
        risky(&plan),
        [
            "`/var/www` no longer backed up",
            "keep-daily lowered from 14 to 7"
        ]
    );
    assert!(plan.changes.iter().all(|c| c.hosts == ["web-1", "web-2"]));
    assert!(plan.has_risky());
}

#[test]
fn raised_retention_is_not_risky() {
    let head = POLICY.replace("keep-daily = 14", "keep-daily = 30");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    assert!(!plan.has_risky());
    assert_eq!(plan.changes[0].summary, "keep-daily raised from 14 to 30");
}

#[test]
fn removed_rule_and_removed_retention_are_risky() {
    let head = POLICY.replace(", keep-weekly = 4", "");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    assert_eq!(
        risky(&plan),
        ["keep-weekly 4 removed: fewer snapshots are kept"]
    );

    let head = POLICY.replace("retention = { keep-daily = 14, keep-weekly = 4 }\n", "");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    assert!(risky(&plan)[0].starts_with("retention removed"), "{plan:?}");
}

#[test]
fn rarer_schedule_and_disabled_check_are_risky() {
    let head = POLICY
        .replace("0 * * * *", "0 2 * * *")
        .replace("check = { cron = \"0 5 * * 0\" }\n", "");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    let risky = risky(&plan);
    assert!(
        risky
            .iter()
            .any(|s| s.starts_with("backups run less often")),
        "{risky:?}"
    );
    assert!(
        risky.iter().any(|s| s.starts_with("check disabled")),
        "{risky:?}"
    );
}

#[test]
fn more_frequent_schedule_is_not_risky() {
    let head = POLICY.replace("0 * * * *", "*/15 * * * *");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    assert!(!plan.has_risky(), "{plan:?}");
    assert_eq!(plan.changes.len(), 1);
}

#[test]
fn moving_to_another_repository_is_risky() {
    let head = POLICY.replace("repository = \"local\"", "repository = \"other\"");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].kind, ChangeKind::RepositoryMoved);
    assert!(plan.changes[0].risky);
}

#[test]
fn removed_host_is_risky_and_added_host_is_not() {
    let base = fleet(POLICY);
    let mut head = base.clone();
    head.hosts.remove("web-2");
    let plan = diff(&base, &head);
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].kind, ChangeKind::HostRemoved);
    assert!(plan.changes[0].risky);
    assert_eq!(plan.changes[0].hosts, ["web-2"]);

    let plan = diff(&head, &base);
    assert_eq!(plan.changes[0].kind, ChangeKind::HostAdded);
    assert!(!plan.has_risky());
}

#[test]
fn path_moved_to_another_policy_is_not_lost() {
    let base = fleet(POLICY);
    let mut head = fleet(&POLICY.replace(", \"/var/www\"", ""));
    let mut extra = head.policies["web"].clone();
    extra.name = "www".to_owned();
    extra.paths = vec!["/var/www".to_owned()];
    extra.repository = "other".to_owned();
    head.policies.insert("www".to_owned(), extra);
    let plan = diff(&base, &head);
    assert!(!plan.has_risky(), "{plan:?}");
}

#[test]
fn markdown_lists_risky_changes_first() {
    let head = POLICY.replace("keep-daily = 14", "keep-daily = 7");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    let revisions = Revisions {
        base: "a".to_owned(),
        head: "b".to_owned(),
    };
    let md = plan.render_markdown(&revisions);
    assert!(md.contains("#### ⚠️ Risky changes\n\n- policy `web` on `web-1`, `web-2`: keep-daily lowered from 14 to 7\n"), "{md}");
    let text = plan.render_text(&revisions);
    assert!(
        text.contains("  ! policy web on web-1, web-2: keep-daily lowered from 14 to 7\n"),
        "{text}"
    );
}

#[test]
fn skipping_missed_runs_and_reading_less_in_check_are_risky() {
    let base = POLICY.replace(
        "check = { cron = \"0 5 * * 0\" }",
        "check = { cron = \"0 5 * * 0\", read-data-subset = \"10%\" }",
    );
    let head = base.replace("10%", "1/20") + "missed-run = \"skip\"\n";
    let plan = diff(&fleet(&base), &fleet(&head));
    assert_eq!(
        risky(&plan),
        [
            "check reads 10% of the data → 1/20 of the data",
            "missed-run: run-once → skip"
        ]
    );
}

#[test]
fn a_hook_timeout_alone_is_not_risky_but_a_new_command_is() {
    let base = format!("{POLICY}hooks = {{ before = [[\"true\"]] }}\n");
    let longer = base.replace("[[\"true\"]] }", "[[\"true\"]], timeout = \"1h\" }");
    let plan = diff(&fleet(&base), &fleet(&longer));
    assert!(!plan.has_risky(), "{plan:?}");
    assert_eq!(plan.changes[0].summary, "hook timeout: 15m → 1h");

    let other = base.replace("[[\"true\"]]", "[[\"curl\", \"https://example.net\"]]");
    let plan = diff(&fleet(&base), &fleet(&other));
    assert_eq!(plan.changes[0].kind, ChangeKind::HooksChanged);
    assert!(plan.changes[0].risky);
}

#[test]
fn markdown_cannot_be_steered_by_config_values() {
    let head = POLICY.replace("check = {", "exclude = [\"<!-- @admins\"]\ncheck = {");
    let plan = diff(&fleet(POLICY), &fleet(&head));
    let revisions = Revisions {
        base: "a".to_owned(),
        head: "b".to_owned(),
    };
    let md = plan.render_markdown(&revisions);
    assert!(!md.contains("<!--"), "{md}");
    assert!(md.contains("&lt;!-- &#64;admins"), "{md}");
}
