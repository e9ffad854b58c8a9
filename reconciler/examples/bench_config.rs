//! Times each phase of `validate` and `plan` on a generated repository (see `gen_fleet.rs`),
//! so docs/performance.md can say where the time goes.
//!
//! Run: `cargo run --release -p restic-manager --example bench_config -- REPO BASE HEAD`.

use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, base, head] = args.as_slice() else {
        report("usage: bench_config REPO BASE HEAD");
        std::process::exit(2);
    };
    let repo = Path::new(repo);

    let (files, read) = timed(|| reconciler::git::read_revision(repo, base).expect("base"));
    let (old, load) = timed(|| reconciler::config::load(&files));
    let old = old.config.expect("base is valid");
    let (files, read_head) = timed(|| reconciler::git::read_revision(repo, head).expect("head"));
    let (new, load_head) = timed(|| reconciler::config::load(&files));
    let new = new.config.expect("head is valid");
    let (views, effective) = timed(|| reconciler::config::effective::effective(&new));
    let (plan, diff) = timed(|| reconciler::plan::diff(&old, &new));

    let assignments: usize = views.iter().map(|h| h.assignments.len()).sum();
    report(&format!(
        "{} hosts, {} policies, {assignments} assignments, {} plan lines",
        new.hosts.len(),
        new.policies.len(),
        plan.changes.len()
    ));
    for (phase, took) in [
        ("read base revision", read),
        ("load + validate base", load),
        ("read head revision", read_head),
        ("load + validate head", load_head),
        ("effective assignments (head)", effective),
        ("diff (both effective + compare)", diff),
    ] {
        report(&format!(
            "{phase:<34} {:>8.1} ms",
            took.as_secs_f64() * 1000.0
        ));
    }
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
