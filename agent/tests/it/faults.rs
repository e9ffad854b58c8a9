//! A server that misbehaves: frames over the limit, frames that are not the protocol, a
//! server that stops answering, and something that is not a restic-manager server at all.

use std::time::{Duration, Instant};

use protocol::{AgentMessage, MAX_FRAME_BYTES, ServerMessage};

use crate::support::{
    HOST, InProcessAgent, Incoming, TestExecutor, TestServer, Workspace, job, raw_server, settings,
    spawn_run, test_timing,
};

#[tokio::test]
async fn an_oversized_frame_drops_the_connection_and_the_agent_comes_back() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        TestExecutor::immediate(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;

    // A well-formed message, only too large.
    let huge = format!(
        "{{\"type\":\"ack\",\"job-id\":\"{}\"}}",
        "x".repeat(MAX_FRAME_BYTES)
    );
    conn.send_text(huge);
    loop {
        match conn.next().await {
            Incoming::Closed => break,
            Incoming::Message(AgentMessage::Result(r)) => panic!("unexpected result {r:?}"),
            _ => {}
        }
    }

    let mut conn = server.accept().await;
    conn.handshake().await;
    assert!(agent.is_running(), "the agent stopped");
    // It serves the new connection.
    conn.send(&ServerMessage::Job(Box::new(job("j-after", "db-1"))));
    assert!(matches!(conn.recv().await, AgentMessage::Refused { .. }));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_malformed_frame_is_logged_and_skipped() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let mut agent = spawn_run(&workspace.run_args(&server.url()), &[]);
    let mut conn = server.accept().await;
    conn.handshake().await;

    conn.send_text("{\"type\":\"job\", \"id\": ".to_owned());
    agent
        .wait_for_line(&["malformed message from the server; skipped", "line 1"])
        .await;
    conn.send_text("{\"type\":\"launch-missiles\"}".to_owned());
    agent
        .wait_for_line(&[
            "malformed message from the server; skipped",
            "launch-missiles",
        ])
        .await;

    // Same connection, still served.
    conn.send(&ServerMessage::Job(Box::new(job("j-next", "db-1"))));
    let AgentMessage::Refused { job_id, .. } = conn.recv().await else {
        panic!("expected a refusal on the same connection");
    };
    assert_eq!(job_id, "j-next");
    agent.kill().await;
}

#[tokio::test]
async fn a_server_that_stops_answering_is_taken_for_dead_and_dialled_again() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let timing = agent::connection::Timing {
        ping_interval: Duration::from_millis(100),
        dead_peer: Duration::from_millis(600),
        ..test_timing()
    };
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), timing),
        TestExecutor::immediate(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;

    // While the server reads, pings are answered and the connection lives past the limit.
    assert!(
        server
            .accept_within(Duration::from_millis(1200))
            .await
            .is_none(),
        "the agent dropped a live connection"
    );

    conn.freeze();
    let frozen_at = Instant::now();
    let mut again = server.accept().await;
    // The last pong came at most one ping interval before the freeze.
    let waited = frozen_at.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "reconnected after {waited:?}"
    );
    assert_eq!(again.handshake().await.host, HOST);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn wss_to_a_plain_http_port_says_that_port_does_not_speak_tls() {
    let addr = raw_server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let workspace = Workspace::new();
    let mut agent = spawn_run(&workspace.run_args(&format!("wss://{addr}")), &[]);
    let line = agent
        .wait_for_line(&["not connected to the server", "InvalidContentType"])
        .await;
    assert!(
        line.contains(&format!(
            "what {addr} answered is not TLS: is it a restic-manager server? For wss:// the port \
             must speak TLS (a reverse proxy in front of the server); the server's own port \
             speaks plain HTTP and is reached with ws://"
        )),
        "{line}"
    );
    agent.kill().await;
}

#[tokio::test]
async fn a_web_server_that_is_not_restic_manager_is_named_as_such() {
    let workspace = Workspace::new();

    // An old HTTP/1.0 server on the URL.
    let addr = raw_server("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>").await;
    let mut agent = spawn_run(&workspace.run_args(&format!("ws://{addr}")), &[]);
    let line = agent
        .wait_for_line(&[
            "not connected to the server",
            "HTTP version must be 1.1 or higher",
        ])
        .await;
    assert!(
        line.contains(&format!(
            "{addr} does not answer like a restic-manager server: check that the URL names the \
             server (or a reverse proxy that passes WebSocket upgrades on to it) and that its \
             path is the server's agent endpoint, /agent/v1; if that port speaks TLS (a reverse \
             proxy), use wss://"
        )),
        "{line}"
    );
    agent.kill().await;

    // A web server without the path.
    let addr = raw_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
    let mut agent = spawn_run(&workspace.run_args(&format!("ws://{addr}/agents")), &[]);
    let line = agent
        .wait_for_line(&["not connected to the server", "404 Not Found"])
        .await;
    assert!(
        line.contains(&format!(
            "{addr} has no WebSocket endpoint at /agents: the URL's path should be the server's \
             agent endpoint, /agent/v1 (the default when the URL has no path)"
        )),
        "{line}"
    );
    agent.kill().await;
}
