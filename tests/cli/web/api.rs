//! The JSON API's answers, and the pages' escaping of text from the config and from agents.

use std::time::Duration;

use super::metrics::{parse_metrics, value};
use super::{Fleet, MARKUP, failure_message, get, request, try_get, web_repo};
use crate::agent_session::agent_key;
use crate::common::{git, write};
use crate::serve::{free_port, start_server_at, wait_for};

fn is_rfc3339_utc(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.ends_with('Z') && text.len() == 20 && text.parse::<jiff::Timestamp>().is_ok()
    })
}

#[test]
fn the_api_describes_the_revision_hosts_jobs_audit_and_pending_agents() {
    let fleet = Fleet::start();
    let addr = fleet.addr();
    let head = git(&fleet.repo, &["rev-parse", "HEAD"]);

    let status = get(addr, "/api/v1/status").json();
    assert_eq!(status["revision"]["commit"], head.as_str(), "{status:#}");
    assert_eq!(status["revision"]["summary"], "web-1 and db-1");
    assert!(
        is_rfc3339_utc(&status["revision"]["applied-at"]),
        "{status:#}"
    );
    assert!(is_rfc3339_utc(&status["generated-at"]), "{status:#}");
    assert_eq!(status["invalid-revision"], serde_json::Value::Null);
    assert_eq!(status["source-error"], serde_json::Value::Null);
    assert_eq!(status["hosts"], 2);
    assert_eq!(status["agents-connected"], 1);
    assert_eq!(status["pending-keys"], 1);
    assert_eq!(status["backups"]["failed"], 1, "{status:#}");
    for state in ["queued", "deferred", "dispatched", "running"] {
        assert!(status["jobs"][state].is_u64(), "{status:#}");
    }

    let hosts = get(addr, "/api/v1/hosts").json();
    let names: Vec<&str> = hosts["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert_eq!(names, ["db-1", "web-1"]);
    let web1 = &hosts["hosts"][1];
    assert_eq!(web1["enrolled"], true);
    assert_eq!(web1["paused"], false);
    assert_eq!(web1["description"], format!("{MARKUP} front").as_str());
    assert_eq!(web1["agent"]["state"], "connected");
    assert_eq!(web1["agent"]["agent-version"], "test-agent 9.9");
    assert_eq!(web1["agent"]["restic-version"], "restic 0.18.0");
    let backup = &web1["backups"][0];
    assert_eq!(backup["policy"], "files");
    assert_eq!(backup["repository"], "local");
    assert_eq!(backup["health"], "failed", "{backup:#}");
    assert_eq!(backup["last-backup"]["state"], "failed");
    assert!(is_rfc3339_utc(&backup["last-success-at"]), "{backup:#}");
    assert!(backup["age-seconds"].as_i64().is_some_and(|a| a >= 0));
    assert_eq!(backup["interval-seconds"], 2);
    let message = backup["message"].as_str().expect("message");
    assert!(
        message.starts_with("the last backup of web-1/files failed")
            && message.contains(&failure_message())
            && message.contains("the last good backup is"),
        "{message}"
    );
    let db1 = &hosts["hosts"][0];
    assert_eq!(db1["enrolled"], false);
    assert_eq!(db1["agent"]["state"], "not-enrolled");
    assert_eq!(db1["backups"], serde_json::json!([]));

    let detail = get(addr, "/api/v1/hosts/web-1").json();
    assert_eq!(detail["host"]["name"], "web-1");
    let kinds: Vec<&str> = detail["assignments"]
        .as_array()
        .expect("assignments")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["backup"], "{detail:#}");
    assert_eq!(
        detail["assignments"][0]["schedule"],
        "cron `*/2 * * * * *` (UTC)"
    );
    assert!(is_rfc3339_utc(&detail["assignments"][0]["next-run"]));
    assert!(!detail["recent-jobs"].as_array().expect("jobs").is_empty());
    assert_eq!(detail["snapshots"][0]["policy"], "files");
    assert_eq!(detail["snapshots"][0]["count"], 2);
    // Newest first.
    assert_eq!(
        detail["snapshots"][0]["snapshots"][0]["time"],
        "2026-01-02T00:00:00Z"
    );

    // The job list: filtered, bounded, newest first.
    let failed = get(addr, "/api/v1/jobs?host=web-1&state=failed&limit=2").json();
    assert_eq!(failed["limit"], 2);
    let list = failed["jobs"].as_array().expect("jobs");
    assert!(!list.is_empty() && list.len() <= 2, "{failed:#}");
    assert!(
        list.iter()
            .all(|j| j["state"] == "failed" && j["host"] == "web-1")
    );
    let all = get(addr, "/api/v1/jobs").json();
    assert_eq!(all["limit"], 100);
    let created: Vec<&str> = all["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["created-at"].as_str())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");

    // One job in full.
    let id = list[0]["id"].as_str().expect("id");
    let job = get(addr, &format!("/api/v1/jobs/{id}")).json();
    assert_eq!(job["id"], id);
    assert_eq!(job["kind"], "backup");
    assert_eq!(job["state"], "failed");
    assert_eq!(job["outcome"], "failed");
    assert_eq!(job["exit-code"], 1);
    assert_eq!(job["message"], failure_message().as_str());
    assert_eq!(
        job["stderr-tail"],
        format!("Fatal: {MARKUP} unable to open the source").as_str()
    );
    assert!(job["max-duration-seconds"].is_i64());
    assert!(is_rfc3339_utc(&job["finished-at"]), "{job:#}");
    assert_eq!(job["progress"], serde_json::Value::Null);
    let good = get(addr, "/api/v1/jobs?host=web-1&state=succeeded&limit=1000").json();
    let good_backup = good["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["kind"] == "backup")
        .expect("a good backup")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let good = get(addr, &format!("/api/v1/jobs/{good_backup}")).json();
    assert_eq!(good["summary"]["files-new"], 12, "{good:#}");
    assert_eq!(good["summary"]["snapshot-id"], "4f6c2a1bd0e9");

    // The audit log and its chain.
    let audit = get(addr, "/api/v1/audit?limit=2").json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert!(entries[0]["seq"].as_i64() > entries[1]["seq"].as_i64());
    let applied = get(addr, "/api/v1/audit?limit=1000").json();
    let revision_applied = applied["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "revision-applied")
        .expect("revision-applied entry");
    assert_eq!(revision_applied["commit"], head.as_str());
    assert_eq!(revision_applied["detail"]["summary"], "web-1 and db-1");
    let verify = get(addr, "/api/v1/audit/verify").json();
    assert_eq!(verify["intact"], true, "{verify:#}");
    assert!(verify["entries"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(verify["broken-at"], serde_json::Value::Null);

    // The agent nobody enrolled, with the line that would enrol it.
    let pending = get(addr, "/api/v1/pending-keys").json();
    let first = &pending["pending-keys"][0];
    assert_eq!(first["host"], "db-1");
    assert_eq!(first["file"], "hosts/db-1.toml");
    let (_, stranger) = agent_key(42);
    assert_eq!(first["key"], stranger.as_str());
    assert_eq!(
        first["snippet"],
        format!("agent-key = \"{stranger}\"").as_str()
    );
    assert!(is_rfc3339_utc(&first["last-seen"]));
}

#[test]
fn an_invalid_newest_revision_is_reported_beside_the_one_in_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, public) = agent_key(43);
    let repo = web_repo(dir.path(), &public);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let server = start_server_at(
        repo.to_str().expect("utf-8"),
        &dir.path().join("data"),
        &addr,
        &["--poll-interval", "1h"],
    );
    wait_for(Duration::from_secs(20), || {
        (try_get(&addr, "/api/v1/status", None)?.json()["revision"]["commit"] == first.as_str())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not applied:\n{}", server.log()));

    write(&repo, "hosts/db-1.toml", b"descriptoin = \"typo\"\n");
    git(&repo, &["commit", "-q", "-am", "typo in db-1"]);
    let bad = git(&repo, &["rev-parse", "HEAD"]);
    let status = wait_for(Duration::from_secs(10), || {
        let status = get(&addr, "/api/v1/status").json();
        (status["invalid-revision"]["commit"] == bad.as_str()).then_some(status)
    })
    .unwrap_or_else(|| panic!("the invalid revision is not shown:\n{}", server.log()));
    assert_eq!(status["revision"]["commit"], first.as_str());
    assert_eq!(status["invalid-revision"]["summary"], "typo in db-1");
    let errors = status["invalid-revision"]["errors"]
        .as_str()
        .expect("errors");
    assert!(
        errors.contains("hosts/db-1.toml:1:1") && errors.contains("descriptoin"),
        "{errors}"
    );

    let page = get(&addr, "/");
    assert!(
        page.body
            .contains("The newest commit is invalid and was not applied"),
        "{}",
        page.body
    );
    assert!(page.body.contains("descriptoin"), "{}", page.body);
    let metrics = parse_metrics(&get(&addr, "/metrics").body);
    assert_eq!(
        value(&metrics, "restic_manager_revision_invalid", &[]),
        Some(1.0)
    );
}

#[test]
fn bad_requests_are_answered_404_400_and_405_with_what_was_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, public) = agent_key(44);
    let repo = web_repo(dir.path(), &public);
    let addr = format!("127.0.0.1:{}", free_port());
    let server = start_server_at(
        repo.to_str().expect("utf-8"),
        &dir.path().join("data"),
        &addr,
        &["--poll-interval", "1h"],
    );
    wait_for(Duration::from_secs(20), || {
        (!try_get(&addr, "/api/v1/status", None)?.json()["revision"].is_null()).then_some(())
    })
    .unwrap_or_else(|| panic!("not applied:\n{}", server.log()));

    let error = |path: &str, status: u16| -> String {
        let reply = get(&addr, path);
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        let body = reply.json();
        assert_eq!(body["status"], status, "{path}: {body:#}");
        body["error"].as_str().expect("error text").to_owned()
    };
    assert_eq!(
        error("/api/v1/hosts/web-9", 404),
        "no host named `web-9` in the revision in force"
    );
    assert_eq!(
        error("/api/v1/jobs/web-1.files.backup.1", 404),
        "no job with id `web-1.files.backup.1`; recent jobs are listed at /api/v1/jobs"
    );
    assert!(error("/api/v1/jobs?host=web-9", 404).contains("no host named `web-9`"));
    assert!(error("/api/v1/nothing", 404).starts_with("no API endpoint /api/v1/nothing"));
    assert_eq!(
        error("/api/v1/jobs?state=done", 400),
        "query parameter `state`: `done` is not a job state; use one of queued, deferred, \
         dispatched, running, succeeded, partial, failed, timed-out, cancelled, missed"
    );
    for limit in ["ten", "0", "5000"] {
        assert_eq!(
            error(&format!("/api/v1/jobs?limit={limit}"), 400),
            format!(
                "query parameter `limit`: `{limit}` is not allowed; give a whole number from \
                 1 to 1000 (default 100)"
            )
        );
    }
    assert!(error("/api/v1/audit?limit=x", 400).starts_with("query parameter `limit`"));
    assert_eq!(
        error("/api/v1/jobs?hots=web-1", 400),
        "query parameter `hots`: unknown parameter; this address takes host, state, limit"
    );

    // Nothing in the view changes anything: every other method is refused.
    for (method, path) in [
        ("POST", "/api/v1/status"),
        ("PUT", "/api/v1/jobs/web-1.files.backup.1"),
        ("DELETE", "/api/v1/hosts/web-1"),
        ("POST", "/"),
        ("PATCH", "/metrics"),
    ] {
        let reply = request(&addr, method, path, &[], None);
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert!(
            reply.body.contains(&format!(
                "the status view is read-only: {method} is not allowed"
            )),
            "{reply:?}"
        );
    }
    let head = request(&addr, "HEAD", "/", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{head:?}");

    // A page that does not exist is a page saying so, with the name escaped.
    let page = get(&addr, "/hosts/%3Cb%3Ex");
    assert_eq!(page.status, 404);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains("no host named &#x60;&lt;b&gt;x&#x60;"),
        "{}",
        page.body
    );
    assert_eq!(get(&addr, "/nowhere").status, 404);
    // The routes outside the view keep their answers.
    assert_eq!(get(&addr, "/healthz").body, "ok\n");
}

#[test]
fn text_from_the_config_and_from_agents_shows_as_text_on_every_page() {
    let fleet = Fleet::start();
    let addr = fleet.addr();
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    let failed = get(addr, "/api/v1/jobs?host=web-1&state=failed&limit=1").json();
    let job = failed["jobs"][0]["id"]
        .as_str()
        .expect("failed job")
        .to_owned();

    for path in [
        "/".to_owned(),
        "/hosts/web-1".to_owned(),
        format!("/jobs/{job}"),
    ] {
        let page = get(addr, &path);
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains(escaped), "{path}: {}", page.body);
        assert!(!page.body.contains(MARKUP), "{path} carries raw markup");
        assert!(
            page.header("content-security-policy")
                .is_some_and(|csp| csp.starts_with("default-src 'none'")),
            "{path}: {page:?}"
        );
    }
    // The overview says what is wrong in words, and links the failed run.
    let overview = get(addr, "/").body;
    assert!(
        overview.contains("the last backup of web-1/files failed"),
        "{overview}"
    );
    assert!(overview.contains(&format!("href=\"/jobs/{}", "web-1.files.backup.")));
    assert!(
        overview.contains("Agents waiting for enrolment"),
        "{overview}"
    );
    assert!(overview.contains("hosts/db-1.toml"), "{overview}");
    // The job page names restic's error output.
    let page = get(addr, &format!("/jobs/{job}")).body;
    assert!(page.contains("Fatal: &lt;script&gt;"), "{page}");
}

#[test]
fn healthz_turns_503_and_names_the_error_while_the_state_database_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = crate::serve::following_example(dir.path());
    let addr = fleet.server.addr.clone();
    assert_eq!(get(&addr, "/healthz").body, "ok\n");

    // A table taken away under the running server stands for a database gone bad.
    let db = rusqlite::Connection::open(fleet.data.join("state.db")).expect("open state.db");
    db.execute_batch("ALTER TABLE jobs RENAME TO jobs_aside;")
        .expect("rename");
    let failing = wait_for(Duration::from_secs(20), || {
        let reply = get(&addr, "/healthz");
        (reply.status == 503).then_some(reply.body)
    })
    .unwrap_or_else(|| panic!("/healthz stayed ok:\n{}", fleet.server.log()));
    assert!(
        failing.starts_with("unhealthy: the state database fails since "),
        "{failing}"
    );
    assert!(
        failing.contains("the server's log names the file"),
        "{failing}"
    );
    assert!(
        fleet.server.log().contains("state.db"),
        "the log names the file"
    );
    assert!(failing.contains("no such table: jobs"), "{failing}");

    db.execute_batch("ALTER TABLE jobs_aside RENAME TO jobs;")
        .expect("rename back");
    let healthy = wait_for(Duration::from_secs(20), || {
        (get(&addr, "/healthz").status == 200).then_some(())
    });
    assert!(healthy.is_some(), "{}", fleet.server.log());
}
