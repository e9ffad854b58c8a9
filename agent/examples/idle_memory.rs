//! Measures the agent's memory when connected and idle: starts a small server on loopback
//! that speaks the real handshake, runs the agent binary against it, waits, and reads the
//! agent's `VmRSS` and `VmHWM` from `/proc`.
//!
//! Run from the top of the source tree, after a release build of the agent:
//!
//! ```sh
//! cargo build --release -p restic-manager-agent
//! cargo run --release -p restic-manager-agent --example idle_memory -- \
//!     [--binary target/release/restic-manager-agent] [--idle-secs 60]
//! ```
//!
//! Linux only (it reads `/proc/<pid>/status`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints its measurement"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{AgentMessage, ServerMessage};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const SERVER_ID: &str = "age1idlememorymeasurement000000000000000000000000000000000000";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (binary, idle) = parse_args()?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("agent.key");
    agent::key::generate(&key)?;
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "")?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    tokio::spawn(serve(listener));

    let mut child = tokio::process::Command::new(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--server", &url, "--host", "idle-1", "--key"])
        .arg(&key)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id().context("the agent exited at once")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("connected to the server") {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(connected, Ok(true)) {
        bail!("the agent did not connect within 30 s");
    }
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    eprintln!("agent {pid} connected; idle for {idle:?}");
    tokio::time::sleep(idle).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for field in ["VmRSS", "VmHWM", "Threads"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
        println!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    child.kill().await?;
    Ok(())
}

fn parse_args() -> anyhow::Result<(PathBuf, Duration)> {
    let mut binary =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/restic-manager-agent");
    let mut idle = Duration::from_mins(1);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binary" => binary = args.next().context("--binary needs a path")?.into(),
            "--idle-secs" => {
                idle = Duration::from_secs(
                    args.next().context("--idle-secs needs a number")?.parse()?,
                );
            }
            other => bail!("unknown argument `{other}`; see the comment at the top of the file"),
        }
    }
    Ok((binary, idle))
}

/// Accepts agents, does the handshake, then answers pings and pings every 15 s.
async fn serve(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let Some(Ok(Message::Text(hello))) = ws.next().await else {
                return;
            };
            let Ok(AgentMessage::Hello(hello)) = protocol::decode(hello.as_str()) else {
                return;
            };
            let nonce = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
            let timestamp = jiff::Timestamp::now();
            let challenge = ServerMessage::Challenge {
                protocol: protocol::PROTOCOL_VERSION,
                server_id: SERVER_ID.to_owned(),
                nonce: nonce.clone(),
                timestamp,
            };
            let Ok(text) = protocol::encode(&challenge) else {
                return;
            };
            if ws.send(Message::text(text)).await.is_err() {
                return;
            }
            let Some(Ok(Message::Text(answer))) = ws.next().await else {
                return;
            };
            let Ok(AgentMessage::Authenticate { signature }) = protocol::decode(answer.as_str())
            else {
                return;
            };
            let message = protocol::auth_message(
                SERVER_ID,
                &nonce,
                timestamp,
                &hello.host,
                &hello.public_key,
            );
            let Ok(key) = protocol::parse_public_key(&hello.public_key) else {
                return;
            };
            if protocol::verify_challenge(&key, &message, &signature).is_err() {
                eprintln!("the agent's signature does not verify");
                return;
            }
            let welcome = ServerMessage::Welcome {
                host: hello.host,
                server_version: "idle-memory".to_owned(),
            };
            let Ok(text) = protocol::encode(&welcome) else {
                return;
            };
            if ws.send(Message::text(text)).await.is_err() {
                return;
            }
            let mut ping = tokio::time::interval(Duration::from_secs(protocol::PING_INTERVAL_SECS));
            loop {
                tokio::select! {
                    frame = ws.next() => if !matches!(frame, Some(Ok(_))) { return },
                    _ = ping.tick() => if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return;
                    },
                }
            }
        });
    }
}
