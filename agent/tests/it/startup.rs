//! What `run` checks before it connects, through the real binary: one agent per state
//! directory, no job directory left from a killed agent, a restic it can use, and a CA file
//! that holds certificates.

use std::time::Duration;

use crate::support::{TestServer, Workspace, run_to_end, spawn_run};

/// Long enough for a connection that should not come to come.
const QUIET: Duration = Duration::from_millis(500);

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `args` with the value of `--restic` replaced.
fn with_restic(mut args: Vec<String>, restic: &str) -> Vec<String> {
    let at = args
        .iter()
        .position(|a| a == "--restic")
        .expect("run_args passes --restic");
    restic.clone_into(&mut args[at + 1]);
    args
}

#[tokio::test]
async fn a_second_agent_on_the_same_state_directory_is_refused_at_once() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let args = workspace.run_args(&server.url());
    let mut first = spawn_run(&args, &[]);
    let mut conn = server.accept().await;
    conn.handshake().await;
    first.wait_for_line(&["restic found", "restic 0."]).await;
    let pid = first.child.id().expect("the first agent runs");

    let (code, _, stderr) = run_to_end(&as_strs(&args), &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    let state = workspace.path("state");
    assert!(
        stderr.contains(&format!(
            "error: another restic-manager-agent (pid {pid}) is running with the state \
             directory {state} (it holds {state}/agent.lock); stop it first"
        )),
        "{stderr}"
    );
    assert!(
        server.accept_within(QUIET).await.is_none(),
        "the second agent dialled the server"
    );
    assert!(
        conn.next_within(QUIET).await.is_none(),
        "the first agent's connection was disturbed"
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first agent stopped"
    );

    // SIGKILL leaves the lock file behind, but the kernel drops the lock with the process.
    first.kill().await;
    let mut second = spawn_run(&args, &[]);
    server.accept().await.handshake().await;
    second.kill().await;
}

#[tokio::test]
async fn job_directories_a_killed_agent_left_are_removed_at_start() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let leftover = workspace.dir.path().join("state/work/job-x");
    std::fs::create_dir_all(leftover.join("tmp")).unwrap();
    std::fs::write(leftover.join("password"), "the repository password").unwrap();

    let mut agent = spawn_run(&workspace.run_args(&server.url()), &[]);
    agent
        .wait_for_line(&[
            "removed job directories left by an earlier run",
            "removed=1",
        ])
        .await;
    assert!(!leftover.exists(), "{} is still there", leftover.display());
    server.accept().await.handshake().await;
    agent.kill().await;
}

#[tokio::test]
async fn an_agent_without_a_usable_restic_stops_before_connecting() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    for (restic, expected) in [
        (
            "/bin/true",
            "error: `/bin/true version` printed \"\", not restic's version line (`restic 0.18.0 \
             compiled with …`), so /bin/true does not look like restic.",
        ),
        (
            "/nonexistent/restic",
            "error: cannot run `/nonexistent/restic version`: No such file or directory",
        ),
    ] {
        let args = with_restic(workspace.run_args(&server.url()), restic);
        let (code, _, stderr) = run_to_end(&as_strs(&args), &[]).await;
        assert_eq!(code, Some(2), "{restic}: {stderr}");
        assert!(stderr.contains(expected), "{restic}: {stderr}");
        assert!(
            stderr.contains(
                "The agent needs restic 0.14.0 or newer: install it (Debian and Ubuntu: \
                 `apt-get install restic`"
            ),
            "{restic}: {stderr}"
        );
    }
    assert!(
        server.accept_within(QUIET).await.is_none(),
        "an agent without restic dialled the server"
    );
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_a_settings_error() {
    let workspace = Workspace::new();
    let ca = workspace.path("ca.pem");
    std::fs::write(&ca, "web-1\n").unwrap();
    let mut args = workspace.run_args("wss://127.0.0.1:9");
    args.extend(["--ca".to_owned(), ca.clone()]);
    let (code, _, stderr) = run_to_end(&as_strs(&args), &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: the CA file {ca} holds no PEM certificate; it should contain one or more \
             `-----BEGIN CERTIFICATE-----` blocks"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "not a log line: {stderr}");
}
