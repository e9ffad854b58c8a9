//! The agent's settings through the real binary: the file, the environment and the flags.

use crate::support::{TestServer, Workspace, restic_binary, run_to_end, spawn_binary};

#[tokio::test]
async fn an_unknown_key_in_the_agent_file_names_the_file_and_line() {
    let workspace = Workspace::new();
    let config = workspace.path("agent.toml");
    std::fs::write(
        &config,
        "server = \"ws://127.0.0.1:9\"\nhost = \"web-1\"\nallow_hooks = true\n",
    )
    .unwrap();
    let (code, _, stderr) = run_to_end(&["run", "--config", &config], &[]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("{config}:3: unknown field `allow_hooks`")),
        "{stderr}"
    );
    assert!(
        stderr.contains("allow-hooks"),
        "the message lists the known keys: {stderr}"
    );
}

#[tokio::test]
async fn a_bad_limit_in_the_file_names_the_key_and_the_file() {
    let workspace = Workspace::new();
    let config = workspace.path("agent.toml");
    std::fs::write(
        &config,
        "server = \"ws://127.0.0.1:9\"\nhost = \"web-1\"\nmax-duration = \"6 hours\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run_to_end(&["run", "--config", &config], &[]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("`max-duration` from {config}: `6 hours` has ` `")),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_environment_wins_over_the_file_and_a_flag_over_both() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let config = workspace.path("agent.toml");
    // The file points at a closed port and names another host; the environment and a flag
    // correct both.
    std::fs::write(
        &config,
        format!(
            "server = \"ws://127.0.0.1:9\"\nhost = \"from-file\"\nkey = \"{}\"\n\
             state-dir = \"{}\"\n",
            workspace.path("agent.key"),
            workspace.path("state")
        ),
    )
    .unwrap();
    let url = server.url();
    let restic = restic_binary();
    let restic = restic.to_str().unwrap();
    let mut agent = spawn_binary(
        &["run", "--host", "from-flag"],
        &[
            ("RM_AGENT_CONFIG", &config),
            ("RM_AGENT_SERVER", &url),
            ("RM_AGENT_HOST", "from-env"),
            ("RM_AGENT_RESTIC", restic),
        ],
    );
    let mut conn = server.accept().await;
    assert_eq!(conn.hello().await.host, "from-flag");
    agent.kill().await;

    let mut agent = spawn_binary(
        &["run"],
        &[
            ("RM_AGENT_CONFIG", &config),
            ("RM_AGENT_SERVER", &url),
            ("RM_AGENT_HOST", "from-env"),
            ("RM_AGENT_RESTIC", restic),
        ],
    );
    let mut conn = server.accept().await;
    assert_eq!(conn.hello().await.host, "from-env");
    agent.kill().await;
}

#[tokio::test]
async fn a_server_url_with_a_password_is_refused_without_echoing_it() {
    let workspace = Workspace::new();
    let (code, _, stderr) = run_to_end(
        &[
            "run",
            "--config",
            &workspace.path("agent.toml"),
            "--host",
            "web-1",
            "--server",
            "wss://agent:hunter2@backup.example.net",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("carries a user name or password"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
