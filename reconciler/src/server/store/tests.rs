use super::*;
use crate::config::testing;
use crate::server::model::{JobState, ScheduleState};
use crate::server::reconcile::desired;

fn revision(commit: &str) -> RevisionInfo {
    RevisionInfo {
        commit: commit.repeat(40 / commit.len().max(1)),
        author: "Ops <ops@example.net>".into(),
        summary: "a change".into(),
        committed_at: None,
    }
}

fn example() -> FleetState {
    let (config, _) = testing::example_config_with_identity();
    desired(&config)
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path()).expect("store opens")
}

#[test]
fn a_new_store_is_created_at_the_latest_schema_with_a_private_directory() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let journal: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let sync: i64 = store
        .conn
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous = FULL");
}

#[test]
fn a_database_from_an_older_schema_is_migrated_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = migrations::open_at_version(&path, 1).unwrap();
        conn.execute(
            "INSERT INTO hosts (name, paused, agent_key, added_at) VALUES ('web-1', 0, NULL, 1)",
            [],
        )
        .unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }
    let mut store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    assert!(store.applied_state().unwrap().hosts.contains_key("web-1"));
    // The tables of the later step exist now.
    store
        .record_pending_key("web-2", "ed25519:x", "127.0.0.1:1", jiff::Timestamp::now())
        .unwrap();
    assert_eq!(store.pending_keys().unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_server_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", migrations::LATEST + 5)
            .unwrap();
    }
    let Err(err) = Store::open(dir.path()) else {
        panic!("a newer schema must be refused")
    };
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("schema version {}", migrations::LATEST + 5)),
        "{text}"
    );
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, migrations::LATEST + 5);
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error_and_is_not_modified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let garbage = b"this is not sqlite, it is a text file someone put here\n".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("garbage must be refused")
    };
    let text = err.to_string();
    assert!(
        text.contains("damaged or not a restic-manager database"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "no partial write");
}

#[test]
fn a_state_database_that_is_a_directory_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    std::fs::create_dir(&path).unwrap();
    let expected = format!(
        "the state database {} is a directory, not a file; move it aside (the server creates \
         state.db itself) or point --data-dir at the right directory",
        path.display()
    );

    let Err(err) = Store::open(dir.path()) else {
        panic!("a directory must be refused")
    };
    assert_eq!(err.to_string(), expected);
    let Err(err) = Store::open_read_only(dir.path()) else {
        panic!("a directory must be refused")
    };
    assert_eq!(err.to_string(), expected);
}

#[test]
fn someone_elses_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER);")
        .unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("a foreign database must be refused")
    };
    assert!(
        err.to_string()
            .contains("tables restic-manager did not create"),
        "{err}"
    );
}

#[test]
fn applying_a_revision_stores_and_audits_every_action_with_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let rev = revision("a1");
    let actions = store
        .apply_revision(&rev, example(), None, &ChangedKeys::default())
        .unwrap();
    assert!(!actions.is_empty());

    let audited: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM audit WHERE commit_id = ?1",
            [&rev.commit],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, i64::try_from(actions.len()).unwrap() + 1);
    assert_eq!(
        store.last_applied_revision().unwrap().unwrap().commit,
        rev.commit
    );

    // What was cached equals what a fresh open reads back.
    let cached = store.applied_state().unwrap().clone();
    drop(store);
    let mut reopened = open(&dir);
    assert_eq!(reopened.applied_state().unwrap(), &cached);
    assert_eq!(cached, example());

    // The same revision again changes nothing.
    let again = reopened
        .apply_revision(&revision("b2"), example(), None, &ChangedKeys::default())
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn an_invalid_revision_is_recorded_without_touching_the_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let good = revision("a1");
    store
        .apply_revision(&good, example(), None, &ChangedKeys::default())
        .unwrap();
    let bad = revision("c3");
    store
        .record_revision(&bad, Err("policies/system.toml:3:1: error: unknown key"))
        .unwrap();
    assert_eq!(
        store.last_applied_revision().unwrap().unwrap().commit,
        good.commit
    );
    assert_eq!(
        store.last_attempted_revision().unwrap().unwrap().commit,
        bad.commit
    );
    let (info, errors) = store.last_revision_errors().unwrap().unwrap();
    assert_eq!(info.commit, bad.commit);
    assert!(errors.contains("unknown key"));
}

#[test]
fn the_audit_chain_verifies_and_names_the_first_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store
        .apply_revision(&revision("a1"), example(), None, &ChangedKeys::default())
        .unwrap();
    let Verified::Intact { entries, .. } = store.verify_audit().unwrap() else {
        panic!("a fresh chain is intact");
    };
    assert!(entries > 5);

    // The database itself refuses changes.
    let err = store
        .conn
        .execute("UPDATE audit SET detail = '{}' WHERE seq = 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = store
        .conn
        .execute("DELETE FROM audit WHERE seq = 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    // Someone with write access to the file drops the triggers and edits an entry.
    store
        .conn
        .execute_batch(
            "DROP TRIGGER audit_is_append_only_update; DROP TRIGGER audit_is_append_only_delete;",
        )
        .unwrap();
    store
        .conn
        .execute(
            "UPDATE audit SET detail = '{\"schedule\":\"never\"}' WHERE seq = 3",
            [],
        )
        .unwrap();
    match store.verify_audit().unwrap() {
        Verified::Broken { seq, reason } => {
            assert_eq!(seq, 3);
            assert!(reason.starts_with("entry 3 ("), "{reason}");
            assert!(reason.contains("changed after it was written"), "{reason}");
        }
        other @ Verified::Intact { .. } => panic!("{other:?}"),
    }

    // Recomputing that entry's hash moves the break to the next entry.
    let (at, actor, action, subject, commit, detail, prev): (
        i64,
        String,
        String,
        String,
        Option<String>,
        String,
        String,
    ) = store
        .conn
        .query_row(
            "SELECT at, actor, action, subject, commit_id, detail, prev_hash FROM audit WHERE seq = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .unwrap();
    let forged = audit::Hashed {
        seq: 3,
        at,
        actor: &actor,
        action: &action,
        subject: &subject,
        commit: commit.as_deref(),
        detail: &detail,
        prev_hash: &prev,
    }
    .hash();
    store
        .conn
        .execute("UPDATE audit SET hash = ?1 WHERE seq = 3", [forged])
        .unwrap();
    match store.verify_audit().unwrap() {
        Verified::Broken { seq, reason } => {
            assert_eq!(seq, 4);
            assert!(reason.contains("previous-hash does not match"), "{reason}");
        }
        other @ Verified::Intact { .. } => panic!("{other:?}"),
    }

    // A removed entry is named as missing.
    store
        .conn
        .execute("DELETE FROM audit WHERE seq = 2", [])
        .unwrap();
    match store.verify_audit().unwrap() {
        Verified::Broken { seq, reason } => {
            assert_eq!(seq, 2);
            assert!(reason.contains("entry 2 is missing"), "{reason}");
        }
        other @ Verified::Intact { .. } => panic!("{other:?}"),
    }
}

fn new_job(id: &str, state: JobState) -> NewJob {
    // The store keeps whole seconds, as schedule instants are.
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    NewJob {
        id: id.into(),
        key: AssignmentKey {
            host: "web-1".into(),
            policy: "system".into(),
            kind: JobKind::Backup,
        },
        repository: "local".into(),
        state,
        reason: None,
        instant: Some(now),
        catch_up: false,
        run_after: now,
        deadline: now + jiff::SignedDuration::from_hours(1),
        max_duration_secs: 60,
    }
}

fn result(id: &str, outcome: protocol::Outcome) -> JobResult {
    let now = jiff::Timestamp::now();
    JobResult {
        job_id: id.into(),
        outcome,
        message: "done".into(),
        exit_code: Some(0),
        started_at: now,
        finished_at: now,
        summary: None,
        unreadable: Vec::new(),
        initialized: false,
        stderr_tail: String::new(),
        snapshots: None,
    }
}

use protocol::JobResult;

#[test]
fn queuing_a_job_twice_keeps_one_and_its_schedule_state_moves_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let job = new_job("web-1.system.backup.100", JobState::Queued);
    let state = ScheduleState {
        key: job.key.clone(),
        last_instant: job.instant,
        next_instant: Some(jiff::Timestamp::from_second(200).unwrap()),
    };
    let now = jiff::Timestamp::now();
    let jobs = std::slice::from_ref(&job);
    let states = std::slice::from_ref(&state);
    let first = store.queue_jobs(jobs, states, now).unwrap();
    assert_eq!(first, std::slice::from_ref(&job.id));
    let second = store.queue_jobs(jobs, states, now).unwrap();
    assert!(second.is_empty());
    assert_eq!(store.jobs_in_states(&[JobState::Queued]).unwrap().len(), 1);
    assert_eq!(store.schedule_states().unwrap()[&job.key], state);
    assert_eq!(
        store.active_job(&job.key).unwrap(),
        Some((job.id.clone(), JobState::Queued))
    );
}

#[test]
fn a_result_is_stored_once_and_a_late_transition_loses() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let job = new_job("j1", JobState::Queued);
    let now = jiff::Timestamp::now();
    store.queue_jobs(&[job], &[], now).unwrap();
    assert!(
        store
            .transition("j1", &[JobState::Queued], JobState::Dispatched, None, now)
            .unwrap()
    );
    assert!(
        !store
            .transition("j1", &[JobState::Queued], JobState::Dispatched, None, now)
            .unwrap()
    );
    assert!(
        store
            .finish_job(
                "j1",
                &result("j1", protocol::Outcome::Succeeded),
                JobState::Succeeded,
                Some("line")
            )
            .unwrap()
    );
    assert!(
        !store
            .finish_job(
                "j1",
                &result("j1", protocol::Outcome::Failed),
                JobState::Failed,
                None
            )
            .unwrap()
    );
    let stored = store.job("j1").unwrap().unwrap();
    assert_eq!(stored.state, JobState::Succeeded);
    assert_eq!(stored.log_tail.as_deref(), Some("line"));
    assert!(
        !store
            .transition("j1", &[JobState::Dispatched], JobState::Running, None, now)
            .unwrap()
    );
}

#[test]
fn late_jobs_are_missed_and_lost_ones_failed_but_a_late_result_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let now = jiff::Timestamp::now();
    let mut queued = new_job("q", JobState::Queued);
    queued.deadline = now - jiff::SignedDuration::from_secs(1);
    let mut sent = new_job("s", JobState::Queued);
    sent.run_after = now - jiff::SignedDuration::from_hours(3);
    sent.key.policy = "web".into();
    store.queue_jobs(&[queued, sent], &[], now).unwrap();
    store
        .transition(
            "s",
            &[JobState::Queued],
            JobState::Dispatched,
            None,
            sent_time(now),
        )
        .unwrap();

    let late = store.expire_jobs(now).unwrap();
    let mut ids: Vec<_> = late.iter().map(|j| j.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["q", "s"]);
    let q = store.job("q").unwrap().unwrap();
    assert_eq!(q.state, JobState::Missed);
    assert!(q.reason.unwrap().contains("agent offline"));
    let s = store.job("s").unwrap().unwrap();
    assert_eq!(s.state, JobState::Failed);
    assert!(s.message.unwrap().contains("no result from the agent"));

    assert!(
        store
            .finish_job(
                "s",
                &result("s", protocol::Outcome::Succeeded),
                JobState::Succeeded,
                None
            )
            .unwrap()
    );
    assert_eq!(store.job("s").unwrap().unwrap().state, JobState::Succeeded);
}

fn sent_time(now: jiff::Timestamp) -> jiff::Timestamp {
    now - jiff::SignedDuration::from_hours(3)
}

#[test]
fn after_a_restart_jobs_an_agent_does_not_report_are_sent_again_and_unknown_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let now = jiff::Timestamp::now();
    let mut a = new_job("web-1.system.backup.1", JobState::Queued);
    a.key.policy = "a".into();
    let mut b = new_job("web-1.system.backup.2", JobState::Queued);
    b.key.policy = "b".into();
    store.queue_jobs(&[a.clone(), b.clone()], &[], now).unwrap();
    for id in [&a.id, &b.id] {
        store
            .transition(id, &[JobState::Queued], JobState::Dispatched, None, now)
            .unwrap();
    }
    drop(store);

    let mut store = open(&dir);
    let settled = store
        .reconcile_agent_running("web-1", &[a.id.clone(), "web-1.other.backup.9".into()], now)
        .unwrap();
    assert_eq!(settled.requeued, [b.id.clone()]);
    assert_eq!(settled.unknown, ["web-1.other.backup.9".to_owned()]);
    assert_eq!(store.job(&b.id).unwrap().unwrap().state, JobState::Queued);
    assert_eq!(
        store.job(&a.id).unwrap().unwrap().state,
        JobState::Dispatched
    );
}

#[test]
fn an_init_that_succeeded_marks_the_repository_initialised_for_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut init = new_job("web-1.system.init.1", JobState::Queued);
    init.key.kind = JobKind::Init;
    let now = jiff::Timestamp::now();
    store.queue_jobs(&[init], &[], now).unwrap();
    assert!(!store.is_initialized("web-1", "local").unwrap());
    store
        .finish_job(
            "web-1.system.init.1",
            &result("web-1.system.init.1", protocol::Outcome::Succeeded),
            JobState::Succeeded,
            None,
        )
        .unwrap();
    assert!(store.is_initialized("web-1", "local").unwrap());
    assert!(!store.is_initialized("web-2", "local").unwrap());
    assert_eq!(
        store.last_init("web-1", "local").unwrap().unwrap().state,
        JobState::Succeeded
    );
}

#[test]
fn a_changed_schedule_forgets_the_old_instants_so_nothing_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let before = example();
    store
        .apply_revision(
            &revision("a1"),
            before.clone(),
            None,
            &ChangedKeys::default(),
        )
        .unwrap();
    let key = before.assignments[0].key.clone();
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let state = ScheduleState {
        key: key.clone(),
        last_instant: Some(at),
        next_instant: Some(at + jiff::SignedDuration::from_hours(24)),
    };
    store
        .queue_jobs(&[], std::slice::from_ref(&state), jiff::Timestamp::now())
        .unwrap();

    let mut after = before;
    after.assignments[0].schedule = "cron `0 4 * * *` (UTC)".into();
    let actions = store
        .apply_revision(&revision("b2"), after, None, &ChangedKeys::default())
        .unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let stored = &store.schedule_states().unwrap()[&key];
    assert_eq!((stored.last_instant, stored.next_instant), (None, None));
}

#[test]
fn a_second_store_on_the_same_data_directory_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let Err(err) = Store::open(dir.path()) else {
        panic!("two stores on one data directory must be refused")
    };
    let text = err.to_string();
    assert!(
        text.contains("another restic-manager server is running"),
        "{text}"
    );
    assert!(text.contains(LOCK_FILE), "{text}");
    drop(first);
    assert!(
        Store::open(dir.path()).is_ok(),
        "the lock goes with the store"
    );
}

#[test]
fn a_state_database_that_vanished_from_a_used_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let db = dir.path().join(DB_FILE);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
    }

    std::fs::write(&db, b"").unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("an emptied state.db must be refused")
    };
    let text = err.to_string();
    assert!(text.contains("is empty"), "{text}");
    assert!(text.contains("restore state.db"), "{text}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing written");

    std::fs::remove_file(&db).unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("a deleted state.db must be refused")
    };
    assert!(err.to_string().contains("is missing"), "{err}");
    assert!(!db.exists(), "no new database was created");

    // Deleting the lock file too is how an operator says "start over".
    std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
    assert!(Store::open(dir.path()).is_ok());
}

#[test]
fn a_lock_file_left_before_the_database_was_made_does_not_block_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOCK_FILE), b"").unwrap();
    let store = open(&dir);
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
}

/// Queues three web-1 jobs under the example revision: one waiting, one deferred, one sent.
fn store_with_web1_jobs(dir: &tempfile::TempDir) -> Store {
    let mut store = open(dir);
    store
        .apply_revision(&revision("a1"), example(), None, &ChangedKeys::default())
        .unwrap();
    let now = jiff::Timestamp::now();
    let mut deferred = new_job("d", JobState::Deferred);
    deferred.key.policy = "web".into();
    let mut sent = new_job("s", JobState::Queued);
    sent.key.kind = JobKind::Check;
    store
        .queue_jobs(&[new_job("q", JobState::Queued), deferred, sent], &[], now)
        .unwrap();
    store
        .transition("s", &[JobState::Queued], JobState::Dispatched, None, now)
        .unwrap();
    store
}

/// The waiting jobs of [`store_with_web1_jobs`] were cancelled with `reason`.
fn assert_waiting_jobs_cancelled(store: &Store, reason: &str) {
    for id in ["q", "d"] {
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Cancelled, "{id}");
        assert_eq!(job.reason.as_deref(), Some(reason), "{id}");
    }
}

#[test]
fn removing_a_host_closes_its_waiting_and_sent_jobs_and_a_late_result_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_web1_jobs(&dir);
    let mut without = example();
    without.hosts.remove("web-1");
    without.assignments.retain(|a| &*a.key.host != "web-1");
    store
        .apply_revision(&revision("b2"), without, None, &ChangedKeys::default())
        .unwrap();

    assert_waiting_jobs_cancelled(&store, "the host was removed from the configuration");
    let sent = store.job("s").unwrap().unwrap();
    assert_eq!(sent.state, JobState::Cancelled);
    let reason = sent.reason.unwrap();
    assert!(
        reason.contains("removed from the configuration while this job was sent"),
        "{reason}"
    );
    assert!(reason.contains("not recorded"), "{reason}");

    // The host comes back and its agent reports the run after all: the result is kept.
    assert!(
        store
            .finish_job(
                "s",
                &result("s", protocol::Outcome::Succeeded),
                JobState::Succeeded,
                None
            )
            .unwrap()
    );
    let late = store.job("s").unwrap().unwrap();
    assert_eq!(late.state, JobState::Succeeded);
    assert_eq!(
        late.reason, None,
        "the reason it was closed no longer holds"
    );
}

#[test]
fn pausing_a_host_cancels_what_waits_for_it_and_lets_a_sent_job_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_web1_jobs(&dir);
    let mut paused = example();
    paused.hosts.get_mut("web-1").unwrap().paused = true;
    store
        .apply_revision(&revision("c3"), paused, None, &ChangedKeys::default())
        .unwrap();

    assert_waiting_jobs_cancelled(&store, "the host was paused in the configuration");
    assert_eq!(store.job("s").unwrap().unwrap().state, JobState::Dispatched);
}

#[test]
fn the_chain_is_walked_in_steps_and_a_later_check_reads_only_what_was_added() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    for n in 0..25 {
        store
            .audit(
                "server",
                "test",
                &format!("entry-{n}"),
                None,
                &serde_json::json!({}),
            )
            .unwrap();
    }

    // A walk in steps of 10 ends where a walk in one go does.
    let mut from = None;
    let mut steps = 0;
    let stepped = loop {
        steps += 1;
        match store.verify_audit_step(from.as_ref(), 10).unwrap() {
            Step::Done(verified) => break verified,
            Step::More(point) => from = Some(point),
        }
    };
    assert_eq!(steps, 3);
    assert_eq!(stepped, store.verify_audit().unwrap());

    // The view's check: the first walks all, the next only what came since.
    let check = |store: &mut Store| loop {
        if let Some(check) = store.check_audit_step(10).unwrap() {
            break check;
        }
    };
    let first = check(&mut store);
    let Verified::Intact { entries, .. } = &first.verified else {
        panic!("{first:?}");
    };
    assert_eq!(*entries, 25);
    let walked_at = first.walked_at.expect("a complete walk");
    store
        .audit("server", "test", "entry-25", None, &serde_json::json!({}))
        .unwrap();
    let second = check(&mut store);
    assert!(
        matches!(second.verified, Verified::Intact { entries: 26, .. }),
        "{second:?}"
    );
    assert_eq!(second.walked_at, Some(walked_at));

    // An old entry edited in place is not read again (only `audit verify` finds it), but a
    // chain rewritten with fresh hashes changes the last entry checked, which is noticed.
    store
        .conn
        .execute_batch("DROP TRIGGER audit_is_append_only_update;")
        .unwrap();
    store
        .conn
        .execute("UPDATE audit SET detail = '{\"x\":1}' WHERE seq = 3", [])
        .unwrap();
    assert!(matches!(
        check(&mut store).verified,
        Verified::Intact { entries: 26, .. }
    ));
    assert!(matches!(
        store.verify_audit().unwrap(),
        Verified::Broken { seq: 3, .. }
    ));
    store
        .conn
        .execute("UPDATE audit SET hash = 'forged' WHERE seq = 26", [])
        .unwrap();
    let broken = check(&mut store);
    assert_eq!(
        broken.verified,
        Verified::Broken {
            seq: 26,
            reason: "entry 26 no longer carries the hash it had when this server verified it: \
                     the chain up to it was rewritten"
                .to_owned()
        }
    );
}

#[test]
fn a_rewrite_after_an_invalid_tip_names_that_tip_and_the_last_applied_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let detail = |store: &Store, commit: &str| -> serde_json::Value {
        let text: String = store
            .conn
            .query_row(
                "SELECT detail FROM audit WHERE action = 'history-rewritten' AND commit_id = ?1",
                [commit],
                |row| row.get(0),
            )
            .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (good, invalid, forced, again) = (
        revision("a1"),
        revision("b2"),
        revision("c3"),
        revision("d4"),
    );
    store
        .apply_revision(&good, example(), None, &ChangedKeys::default())
        .unwrap();
    store.record_revision(&invalid, Err("bad")).unwrap();

    // The invalid tip was the one fetched last: the force-push removed it, not the good one.
    store
        .apply_revision(
            &forced,
            example(),
            Some(&invalid.commit),
            &ChangedKeys::default(),
        )
        .unwrap();
    let entry = detail(&store, &forced.commit);
    assert_eq!(
        entry["detail"],
        format!(
            "the branch no longer contains {}, the tip fetched before, which was not applied; \
             the last applied commit was {}; following the new tip {}",
            invalid.commit, good.commit, forced.commit
        )
    );
    assert_eq!(entry["previous"], invalid.commit.as_str());
    assert_eq!(entry["last-applied"], good.commit.as_str());

    // A rewrite of the applied tip says so.
    store
        .apply_revision(
            &again,
            example(),
            Some(&forced.commit),
            &ChangedKeys::default(),
        )
        .unwrap();
    assert_eq!(
        detail(&store, &again.commit)["detail"],
        format!(
            "the branch no longer contains {}, the tip fetched before, which was the applied \
             commit; following the new tip {}",
            forced.commit, again.commit
        )
    );
}

#[test]
fn a_moved_repository_is_audited_and_initialised_again_and_an_old_failed_init_no_longer_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let none = ChangedKeys::default();
    store
        .apply_revision(&revision("a1"), example(), None, &none)
        .unwrap();
    let now = jiff::Timestamp::now();
    let mut init = new_job("web-1.system.init.1", JobState::Queued);
    init.key.kind = JobKind::Init;
    store.queue_jobs(&[init], &[], now).unwrap();
    let done = result("web-1.system.init.1", protocol::Outcome::Succeeded);
    store
        .finish_job("web-1.system.init.1", &done, JobState::Succeeded, None)
        .unwrap();
    assert!(store.is_initialized("web-1", "local").unwrap());
    assert_eq!(store.repository_moved_at("local").unwrap(), None);

    let mut moved = example();
    let old = moved.repositories["local"].clone().unwrap();
    moved
        .repositories
        .insert("local".into(), Some("/srv/elsewhere".into()));
    let actions = store
        .apply_revision(&revision("b2"), moved.clone(), None, &none)
        .unwrap();
    assert_eq!(
        actions,
        [Action::RepositoryMoved {
            repository: "local".into(),
            from: old.clone(),
            to: "/srv/elsewhere".into(),
        }]
    );
    assert!(
        !store.is_initialized("web-1", "local").unwrap(),
        "each host initialises the repository again at its new place"
    );
    assert!(store.repository_moved_at("local").unwrap().is_some());
    let detail: String = store
        .conn
        .query_row(
            "SELECT detail FROM audit WHERE action = 'repository-moved'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        detail.contains(&format!("moves from `{old}` to `/srv/elsewhere`")),
        "{detail}"
    );

    // What is stored reads back as applied, and the same revision again changes nothing.
    drop(store);
    let mut store = open(&dir);
    assert_eq!(store.applied_state().unwrap(), &moved);
    assert!(
        store
            .apply_revision(&revision("c3"), moved, None, &none)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_location_stored_before_schema_3_is_filled_in_without_an_action() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let none = ChangedKeys::default();
    store
        .apply_revision(&revision("a1"), example(), None, &none)
        .unwrap();
    store
        .conn
        .execute("UPDATE repositories SET location = NULL", [])
        .unwrap();
    drop(store);
    let mut store = open(&dir);
    assert_eq!(store.applied_state().unwrap().repositories["local"], None);
    let actions = store
        .apply_revision(&revision("b2"), example(), None, &none)
        .unwrap();
    assert!(actions.is_empty(), "{actions:?}");
    drop(store);
    let mut store = open(&dir);
    assert_eq!(store.applied_state().unwrap(), &example());
}
