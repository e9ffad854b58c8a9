//! Times the server's reconcile on a generated repository (see `gen_fleet.rs`): computing the
//! desired state of a revision, diffing it against the applied state, applying the first
//! revision and a later change to a `SQLite` store, and rebuilding the schedule. For
//! docs/performance.md.
//!
//! Run: `cargo run --release -p restic-manager --example bench_reconcile -- REPO BASE HEAD`.

use std::time::{Duration, Instant};

use reconciler::server::model::{FleetState, RevisionInfo};
use reconciler::server::{reconcile, scheduler, store::Store};

const RUNS: usize = 15;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, base, head] = args.as_slice() else {
        report("usage: bench_reconcile REPO BASE HEAD");
        std::process::exit(2);
    };
    let repo = std::path::Path::new(repo);
    let load = |rev: &str| {
        let files = reconciler::git::read_revision(repo, rev).expect("revision readable");
        reconciler::config::load(&files)
            .config
            .expect("revision is valid")
    };
    let old = load(base);
    let new = load(head);

    let old_state = reconcile::desired(&old);
    let new_state = reconcile::desired(&new);
    report(&format!(
        "{} hosts, {} policies, {} assignments; the change is {} actions",
        new.hosts.len(),
        new.policies.len(),
        new_state.assignments.len(),
        reconcile::diff(&old_state, &new_state).len()
    ));

    let desired = median(|| {
        std::hint::black_box(reconcile::desired(&new));
    });
    let diff = median(|| {
        std::hint::black_box(reconcile::diff(&old_state, &new_state));
    });
    let both = median(|| {
        let desired = reconcile::desired(&new);
        std::hint::black_box(reconcile::diff(&old_state, &desired));
    });
    let noop = median(|| {
        let desired = reconcile::desired(&new);
        std::hint::black_box(reconcile::diff(&new_state, &desired));
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open(dir.path()).expect("store");
    let revision = |commit: &str| RevisionInfo {
        commit: commit.repeat(40),
        author: "bench <bench@example.invalid>".into(),
        summary: "bench".into(),
        committed_at: None,
    };
    let (_, first_apply) = timed(|| {
        store
            .apply_revision(
                &revision("a"),
                old_state.clone(),
                None,
                &reconcile::ChangedKeys::between(None, &old),
            )
            .expect("apply")
    });
    let (actions, change_apply) = timed(|| {
        store
            .apply_revision(
                &revision("b"),
                new_state.clone(),
                None,
                &reconcile::ChangedKeys::between(Some(&old), &new),
            )
            .expect("apply")
    });
    let (_, same_apply) = timed(|| {
        store
            .apply_revision(
                &revision("c"),
                new_state.clone(),
                None,
                &reconcile::ChangedKeys::between(Some(&new), &new),
            )
            .expect("apply")
    });
    let (states, read_states) = timed(|| store.schedule_states().expect("states"));
    let (scheduled, list) = timed(|| scheduler::scheduled(&new));
    let (_, build) =
        timed(|| scheduler::Scheduler::build(scheduled, &states, jiff::Timestamp::now()));
    let (reopened, reopen) = timed(|| {
        drop(store);
        let mut store = Store::open(dir.path()).expect("reopen");
        let _: &FleetState = store.applied_state().expect("state");
        store
    });
    drop(reopened);

    for (phase, took) in [
        ("desired state of the head (median)", desired),
        ("diff base → head (median)", diff),
        ("reconcile = desired + diff (median)", both),
        ("reconcile of an unchanged revision (median)", noop),
        ("apply the first revision to SQLite", first_apply),
        (
            &format!("apply the change ({} actions)", actions.len()),
            change_apply,
        ),
        ("apply an unchanged revision", same_apply),
        ("read the schedule state", read_states),
        ("list the assignments to schedule", list),
        ("rebuild the schedule", build),
        ("reopen the store and load the applied state", reopen),
    ] {
        report(&format!(
            "{phase:<46} {:>9.1} ms",
            took.as_secs_f64() * 1000.0
        ));
    }
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| timed(&mut f).1).collect();
    times.sort();
    times[RUNS / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

#[allow(clippy::print_stdout, reason = "a benchmark's report")]
fn report(line: &str) {
    println!("{line}");
}
