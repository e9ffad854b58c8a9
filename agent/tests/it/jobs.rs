//! Jobs: who may run them, what the server hears while they run, and results that are
//! delivered exactly once across lost connections and restarts.

use std::path::Path;
use std::time::Duration;

use protocol::{AgentMessage, JobResult, LogStream, Outcome, ServerMessage};

use crate::support::{
    HOST, InProcessAgent, TestExecutor, TestServer, Workspace, job, settings, spawn_run,
    test_timing, within,
};

/// Long enough for a duplicate that would come to come.
const QUIET: Duration = Duration::from_millis(500);

fn results_in(messages: &[AgentMessage]) -> Vec<&JobResult> {
    messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Result(result) => Some(result.as_ref()),
            _ => None,
        })
        .collect()
}

async fn wait_for_file(path: &Path, present: bool) {
    // The agent writes and removes these files with no message to wait on; check until they
    // are as expected, within the usual limit.
    within(
        &format!(
            "{} to be {}",
            path.display(),
            if present { "written" } else { "removed" }
        ),
        async {
            while path.exists() != present {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_job_for_another_host_is_refused_and_never_run() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let executor = TestExecutor::immediate();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        executor.clone(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;

    conn.send(&ServerMessage::Job(Box::new(job("j-other", "db-1"))));
    let AgentMessage::Refused { job_id, reason } = conn.recv().await else {
        panic!("expected a refusal");
    };
    assert_eq!(job_id, "j-other");
    assert!(
        reason.contains("`db-1`") && reason.contains("`web-1`"),
        "{reason}"
    );
    let (result, before) = conn.recv_result().await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(result.outcome, Outcome::Refused);
    assert_eq!(result.message, reason);
    assert!(executor.runs().is_empty(), "the job was run");

    // Sent again, it is still not run: the stored refusal is sent again.
    conn.send(&ServerMessage::Job(Box::new(job("j-other", "db-1"))));
    let (again, _) = conn.recv_result().await;
    assert_eq!(again, result);
    assert!(executor.runs().is_empty());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_job_id_that_is_not_a_file_name_is_refused() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let executor = TestExecutor::immediate();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        executor.clone(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;

    for (id, expected) in [("../../escape", "starts with `.`"), ("a/b", "contains '/'")] {
        conn.send(&ServerMessage::Job(Box::new(job(id, HOST))));
        let AgentMessage::Refused { job_id, reason } = conn.recv().await else {
            panic!("expected a refusal of {id}");
        };
        assert_eq!(job_id, id);
        assert!(reason.starts_with("job id refused: "), "{reason}");
        assert!(reason.contains(expected), "{reason}");
        let (result, _) = conn.recv_result().await;
        assert_eq!(result.outcome, Outcome::Refused);
    }
    assert!(executor.runs().is_empty());
    assert!(!state.path().join("escape.json").exists());
    assert_eq!(
        std::fs::read_dir(state.path().join("results"))
            .unwrap()
            .count(),
        0
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn progress_and_logs_go_out_and_a_repeated_id_is_not_run_twice() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let executor = TestExecutor::blocking();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        executor.clone(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;

    conn.send(&ServerMessage::Job(Box::new(job("j-1", HOST))));
    assert_eq!(
        conn.recv().await,
        AgentMessage::Accepted {
            job_id: "j-1".into()
        }
    );
    executor.wait_started(1).await;
    let mut live = [conn.recv().await, conn.recv().await];
    live.sort_by_key(|m| matches!(m, AgentMessage::Progress(_)));
    assert_eq!(
        live[0],
        AgentMessage::Log {
            job_id: "j-1".into(),
            stream: LogStream::Stdout,
            line: "started".into()
        }
    );
    let AgentMessage::Progress(progress) = &live[1] else {
        panic!("expected progress, got {:?}", live[1]);
    };
    assert_eq!(
        progress.job_id, "j-1",
        "the agent names the job in its progress"
    );

    // While it runs, the same id is accepted again, not started again.
    conn.send(&ServerMessage::Job(Box::new(job("j-1", HOST))));
    assert_eq!(
        conn.recv().await,
        AgentMessage::Accepted {
            job_id: "j-1".into()
        }
    );

    executor.release();
    let (result, _) = conn.recv_result().await;
    assert_eq!(result.outcome, Outcome::Succeeded);

    // Not acknowledged: sent again, the stored result comes back, the job does not run.
    conn.send(&ServerMessage::Job(Box::new(job("j-1", HOST))));
    let (again, before) = conn.recv_result().await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(again, result);
    assert_eq!(executor.runs(), ["j-1"]);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_running_job() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let executor = TestExecutor::blocking();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        executor.clone(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;

    conn.send(&ServerMessage::Job(Box::new(job("j-cancel", HOST))));
    executor.wait_started(1).await;
    conn.send(&ServerMessage::Cancel {
        job_id: "j-cancel".into(),
    });
    let (result, _) = conn.recv_result().await;
    assert_eq!(result.outcome, Outcome::Cancelled);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_job_outlives_the_connection_and_its_result_arrives_once_even_after_a_restart() {
    let mut server = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let executor = TestExecutor::blocking();
    let agent = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        executor.clone(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;
    conn.send(&ServerMessage::Job(Box::new(job("j-long", HOST))));
    assert_eq!(
        conn.recv().await,
        AgentMessage::Accepted {
            job_id: "j-long".into()
        }
    );
    executor.wait_started(1).await;

    // The server goes away mid-job. The agent dials again and says the job still runs.
    conn.drop_connection();
    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    assert_eq!(hello.running, ["j-long"]);

    // The job ends while the agent is not connected: its result is stored, its last log
    // line dropped.
    executor.release();
    executor.wait_finished(1).await;
    let stored = state.path().join("results").join("j-long.json");
    wait_for_file(&stored, true).await;

    // That connection never completes; the next one does, and gets the result once.
    drop(conn);
    let mut conn = server.accept().await;
    let hello = conn.handshake().await;
    assert!(hello.running.is_empty(), "{:?}", hello.running);
    let (result, before) = conn.recv_result().await;
    assert!(
        before.is_empty(),
        "events while disconnected are dropped: {before:?}"
    );
    assert_eq!(result.job_id, "j-long");
    assert_eq!(result.outcome, Outcome::Succeeded);
    let later = conn.drain(QUIET).await;
    assert!(
        results_in(&later).is_empty(),
        "the result came twice: {later:?}"
    );

    // The acknowledgement removes it; the id sent again is answered, not run.
    conn.send(&ServerMessage::Ack {
        job_id: "j-long".into(),
    });
    wait_for_file(&stored, false).await;
    conn.send(&ServerMessage::Job(Box::new(job("j-long", HOST))));
    assert_eq!(
        conn.recv().await,
        AgentMessage::Accepted {
            job_id: "j-long".into()
        }
    );
    let AgentMessage::Log { line, stream, .. } = conn.recv().await else {
        panic!("expected a log line with the recorded outcome");
    };
    assert_eq!(stream, LogStream::Agent);
    assert!(
        line.contains("already ran") && line.contains("succeeded"),
        "{line}"
    );
    assert_eq!(executor.runs(), ["j-long"]);

    // A new agent on the same state directory: nothing to resend, and the id still does not
    // run.
    agent.stop().await.unwrap();
    let restarted_executor = TestExecutor::immediate();
    let restarted = InProcessAgent::start(
        settings(&server.url(), state.path(), test_timing()),
        restarted_executor.clone(),
    );
    let mut conn = server.accept().await;
    conn.handshake().await;
    assert!(results_in(&conn.drain(QUIET).await).is_empty());
    conn.send(&ServerMessage::Job(Box::new(job("j-long", HOST))));
    assert_eq!(
        conn.recv().await,
        AgentMessage::Accepted {
            job_id: "j-long".into()
        }
    );
    assert!(matches!(conn.recv().await, AgentMessage::Log { .. }));
    assert!(
        restarted_executor.runs().is_empty(),
        "the job ran again after a restart"
    );
    restarted.stop().await.unwrap();
}

#[tokio::test]
async fn a_stored_result_survives_a_killed_agent_process() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let args = workspace.run_args(&server.url());
    let mut agent = spawn_run(&args, &[]);
    let mut conn = server.accept().await;
    conn.handshake().await;

    conn.send(&ServerMessage::Job(Box::new(job("j-kill", HOST))));
    let (result, _) = conn.recv_result().await;
    assert_eq!(result.job_id, "j-kill");

    // Not acknowledged, then the process dies without a chance to clean up.
    agent.kill().await;
    let mut agent = spawn_run(&args, &[]);
    let mut conn = server.accept().await;
    conn.handshake().await;
    let (redelivered, _) = conn.recv_result().await;
    assert_eq!(redelivered, result, "the same stored result, not a new run");

    // The id sent again brings the stored result, not a second run.
    conn.send(&ServerMessage::Job(Box::new(job("j-kill", HOST))));
    let (again, before) = conn.recv_result().await;
    assert!(
        !before
            .iter()
            .any(|m| matches!(m, AgentMessage::Accepted { .. })),
        "{before:?}"
    );
    assert_eq!(again.started_at, result.started_at);

    conn.send(&ServerMessage::Ack {
        job_id: "j-kill".into(),
    });
    wait_for_file(
        &workspace.dir.path().join("state/results/j-kill.json"),
        false,
    )
    .await;
    agent.kill().await;
}

#[tokio::test]
async fn a_job_that_did_not_do_its_work_is_logged_as_an_error_and_a_success_as_info() {
    let mut server = TestServer::start().await;
    let workspace = Workspace::new();
    let mut agent = spawn_run(&workspace.run_args(&server.url()), &[]);
    let mut conn = server.accept().await;
    conn.handshake().await;

    // A real restic, a repository that does not exist.
    conn.send(&ServerMessage::Job(Box::new(job("j-missing", HOST))));
    let (missing, _) = conn.recv_result().await;
    assert_eq!(
        missing.outcome,
        Outcome::RepositoryMissing,
        "{}",
        missing.message
    );
    let line = agent
        .wait_for_line(&["job ended", "j-missing", "outcome=repository-missing"])
        .await;
    assert!(line.contains("ERROR"), "{line}");

    // Hooks, which this agent's (empty) settings file does not allow.
    let mut hooked = job("j-hooks", HOST);
    hooked.hooks.before = vec![vec!["/bin/true".to_owned()]];
    conn.send(&ServerMessage::Job(Box::new(hooked)));
    let (refused, _) = conn.recv_result().await;
    assert_eq!(refused.outcome, Outcome::Refused, "{}", refused.message);
    let line = agent
        .wait_for_line(&["job ended", "j-hooks", "outcome=refused"])
        .await;
    assert!(line.contains("ERROR"), "{line}");

    // A repository created by an init job.
    let mut init = job("j-init", HOST);
    init.kind = protocol::JobKind::Init;
    init.backup = None;
    init.repository.url = workspace.path("repo");
    conn.send(&ServerMessage::Job(Box::new(init)));
    let (created, _) = conn.recv_result().await;
    assert_eq!(created.outcome, Outcome::Succeeded, "{}", created.message);
    let line = agent
        .wait_for_line(&["job ended", "j-init", "outcome=succeeded"])
        .await;
    assert!(line.contains("INFO"), "{line}");
    agent.kill().await;
}
