//! Hello, the challenge and its checks, and the server's rejections.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use protocol::ServerMessage;

use crate::support::{
    HOST, InProcessAgent, SERVER_ID, TestExecutor, TestServer, Workspace, settings, spawn_run,
    test_timing,
};

#[tokio::test]
async fn hello_names_the_host_the_key_and_the_versions() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        TestExecutor::immediate(),
    );

    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    assert_eq!(hello.protocol, protocol::PROTOCOL_VERSION);
    assert_eq!(hello.host, HOST);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        hello.restic_version.as_deref(),
        Some("restic 0.18.0 (test executor)")
    );
    assert_eq!(hello.os, std::env::consts::OS);
    assert_eq!(hello.arch, std::env::consts::ARCH);
    let expected_key = SigningKey::from_bytes(&[42u8; 32]).verifying_key();
    assert_eq!(hello.public_key, protocol::public_key_text(&expected_key));
    assert!(hello.running.is_empty());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_challenge_from_another_server_than_the_pinned_one_is_not_signed() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let pinned = "age1pinnedserver00000000000000000000000000000000000000000000";
    let mut args = workspace.run_args(&server.url());
    args.extend(["--server-id".to_owned(), pinned.to_owned()]);
    let mut agent = spawn_run(&args, &[]);

    let mut conn = server.accept().await;
    conn.hello().await;
    conn.challenge(SERVER_ID, jiff::Timestamp::now());
    conn.expect_closed_without_signing().await;
    let line = agent
        .wait_for_line(&["refusing to sign the server's challenge", SERVER_ID, pinned])
        .await;
    assert!(line.contains("ERROR"), "{line}");

    // It keeps trying, and keeps refusing.
    let mut again = server.accept().await;
    again.hello().await;
    agent.kill().await;

    // One line per refused challenge, not an error and a warning.
    let log = agent.log_to_end().await;
    let about_it: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("challenge") || l.contains("not connected"))
        .collect();
    assert_eq!(about_it.len(), 1, "{about_it:#?}");
    assert!(about_it[0].contains("retry_in="), "{}", about_it[0]);
}

#[tokio::test]
async fn an_old_challenge_is_not_signed_as_it_may_be_a_replay() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let mut agent = spawn_run(&workspace.run_args(&server.url()), &[]);

    let mut conn = server.accept().await;
    conn.hello().await;
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    conn.challenge(SERVER_ID, an_hour_ago);
    conn.expect_closed_without_signing().await;
    agent
        .wait_for_line(&[
            "refusing to sign the server's challenge",
            "from this agent's clock",
            "replayed challenge",
        ])
        .await;
    agent.kill().await;
}

#[tokio::test]
async fn a_version_mismatch_ends_the_agent_with_the_reason() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let mut agent = spawn_run(&workspace.run_args(&server.url()), &[]);

    let mut conn = server.accept().await;
    conn.hello().await;
    let reason =
        "peer speaks protocol version 1; this side speaks 2: upgrade the agent or the server";
    conn.send(&ServerMessage::Rejected {
        reason: reason.to_owned(),
        retry_after_secs: None,
        enrol_snippet: None,
    });

    assert_eq!(agent.wait_exit().await, Some(3), "{}", agent.stderr_text());
    agent
        .wait_for_line(&["the server rejected this agent", reason])
        .await;
    agent.wait_for_line(&["not retrying", reason]).await;
    assert!(
        server
            .accept_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn an_unknown_key_is_logged_with_the_snippet_and_retried_after_the_hint() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let mut agent = spawn_run(&workspace.run_args(&server.url()), &[]);

    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    let at = jiff::Timestamp::now();
    let nonce = conn.challenge(SERVER_ID, at);
    conn.verify_answer(&hello, &nonce, at).await;
    let snippet = format!("agent-key = \"{}\"", hello.public_key);
    conn.send(&ServerMessage::Rejected {
        reason: format!("host `{HOST}` has no agent-key yet; add to hosts/{HOST}.toml: {snippet}"),
        retry_after_secs: Some(1),
        enrol_snippet: Some(snippet.clone()),
    });
    let rejected_at = Instant::now();

    let line = agent
        .wait_for_line(&[
            "does not know this agent's key",
            &snippet,
            "hosts/web-1.toml",
        ])
        .await;
    assert!(line.contains("ERROR"), "{line}");

    // About as long as the server asked: between half of it and one and a half times it.
    let line = agent
        .wait_for_line(&[
            "dialling again about as long as the server asked",
            "server_asked=1s",
        ])
        .await;
    let mut again = server.accept().await;
    let waited = rejected_at.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "retried after {waited:?}, well before the hint; {line}"
    );
    assert_eq!(again.hello().await.public_key, hello.public_key);
    agent.kill().await;
}
