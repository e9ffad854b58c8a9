//! View access: the allow list and the bearer token, and bad view settings at start.

use std::net::IpAddr;
use std::time::Duration;

use super::{get, request, start_agent, try_get, try_request, web_repo};
use crate::agent_session::agent_key;
use crate::common::restic_manager;
use crate::serve::{free_port, start_server_at, wait_for};

#[test]
fn the_allow_list_refuses_other_addresses_but_not_the_agents_or_the_webhook() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = agent_key(45);
    let repo = web_repo(dir.path(), &public);
    let addr = format!("127.0.0.1:{}", free_port());
    let server = start_server_at(
        repo.to_str().expect("utf-8"),
        &dir.path().join("data"),
        &addr,
        &[
            "--poll-interval",
            "1h",
            "--view-allow",
            "127.0.0.2/32,10.0.0.0/8",
        ],
    );
    let other: IpAddr = "127.0.0.2".parse().expect("ip");
    wait_for(Duration::from_secs(20), || {
        let reply = try_get(&addr, "/api/v1/status", Some(other))?;
        (!reply.json()["revision"].is_null()).then_some(())
    })
    .unwrap_or_else(|| panic!("not applied, or 127.0.0.2 refused:\n{}", server.log()));

    for path in [
        "/",
        "/api/v1/status",
        "/metrics",
        "/hosts/web-1",
        "/static/style.css",
    ] {
        let reply = get(&addr, path);
        assert_eq!(reply.status, 403, "{path}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            reply.body,
            "the status view does not answer 127.0.0.1: the address is not in the server's \
             view allow list (setting `allow` in [view], --view-allow or RM_VIEW_ALLOW)\n"
        );
        assert_eq!(
            request(&addr, "GET", path, &[], Some(other)).status,
            200,
            "{path} from 127.0.0.2"
        );
    }
    // Refused before anything else: a refused client learns nothing about methods either.
    assert_eq!(request(&addr, "POST", "/", &[], None).status, 403);

    // The agents and the webhook are outside the view's rules.
    assert_eq!(get(&addr, "/healthz").status, 200);
    assert_eq!(
        request(&addr, "POST", "/hooks/git", &[], None).body,
        "webhook not configured: set webhook-secret-file\n"
    );
    let agent = start_agent(&addr, "web-1", key);
    wait_for(Duration::from_secs(10), || {
        (agent.seen.lock().expect("lock").welcomed > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("the agent was not welcomed:\n{}", server.log()));
}

#[test]
fn a_token_file_makes_every_view_request_need_the_bearer_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, public) = agent_key(46);
    let repo = web_repo(dir.path(), &public);
    let token_file = dir.path().join("view-token");
    std::fs::write(&token_file, "view-s3cret-0123\n").expect("token");
    let settings = dir.path().join("server.toml");
    std::fs::write(
        &settings,
        format!("[view]\ntoken-file = \"{}\"\n", token_file.display()),
    )
    .expect("settings");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = start_server_at(
        repo.to_str().expect("utf-8"),
        &dir.path().join("data"),
        &addr,
        &[
            "--poll-interval",
            "1h",
            "--config",
            settings.to_str().expect("utf-8"),
        ],
    );
    let good = [("Authorization", "Bearer view-s3cret-0123")];
    wait_for(Duration::from_secs(20), || {
        let reply = try_request(&addr, "GET", "/api/v1/status", &good, None)?;
        (reply.status == 200 && !reply.json()["revision"].is_null()).then_some(())
    })
    .unwrap_or_else(|| panic!("not applied, or the token refused:\n{}", server.log()));

    for path in ["/", "/api/v1/hosts", "/metrics", "/jobs/x"] {
        let reply = get(&addr, path);
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"restic-manager\"")
        );
        assert_eq!(
            reply.body,
            "this status view needs a bearer token, and this request carries no \
             Authorization header; send `Authorization: Bearer <token>` with the token from \
             the server's view token file\n"
        );
        let wrong = request(
            &addr,
            "GET",
            path,
            &[("Authorization", "Bearer view-s3cret-0124")],
            None,
        );
        assert_eq!(wrong.status, 401);
        assert!(wrong.body.contains("is not the one"), "{wrong:?}");
        let basic = request(
            &addr,
            "GET",
            path,
            &[("Authorization", "Basic dXNlcjpwdw==")],
            None,
        );
        assert!(basic.body.contains("not of the form"), "{basic:?}");
        let answered = request(&addr, "GET", path, &good, None);
        assert_ne!(answered.status, 401, "{path}: {answered:?}");
        assert_ne!(answered.status, 403, "{path}: {answered:?}");
    }
    assert_eq!(get(&addr, "/healthz").status, 200);
    assert!(!server.log().contains("view-s3cret"), "{}", server.log());
}

#[test]
fn bad_view_settings_stop_the_server_at_start_and_say_which() {
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = crate::common::workspace().join("examples/demo-identity.txt");
    let serve = |extra: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = restic_manager();
        cmd.args([
            "serve",
            "--repository",
            "/nonexistent",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--identity")
        .arg(&identity)
        .args(extra);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        crate::common::run(&mut cmd)
    };

    let out = serve(&["--view-allow", "127.0.0.1,office"], None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--view-allow: `office` is not a network such as 192.0.2.0/24"),
        "{}",
        out.stderr
    );
    let out = serve(&[], Some(("RM_VIEW_ALLOW", "10.0.0.0/33")));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("RM_VIEW_ALLOW: `10.0.0.0/33`"),
        "{}",
        out.stderr
    );

    let missing = dir.path().join("no-token");
    let out = serve(
        &["--view-token-file", missing.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "cannot read the view token file {}",
            missing.display()
        )),
        "{}",
        out.stderr
    );
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("write");
    let out = serve(
        &[],
        Some(("RM_VIEW_TOKEN_FILE", empty.to_str().expect("utf-8"))),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is empty"), "{}", out.stderr);
}
