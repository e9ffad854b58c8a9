use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::instants::{between, next_after};
use super::*;
use crate::config::model::TimeZoneName;
use crate::config::schedule::CronExpr;

fn cron(text: &str, zone: &str) -> Schedule {
    Schedule {
        trigger: Trigger::Cron(Arc::new(CronExpr::parse(text).unwrap())),
        timezone: Some(TimeZoneName::parse(zone).unwrap()),
        jitter: SignedDuration::ZERO,
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn wall(schedule: &Schedule, t: Timestamp) -> String {
    instants::in_zone(schedule, t)
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string()
}

#[test]
fn a_daily_run_in_the_spring_forward_gap_still_runs_once_that_day() {
    // Europe/Berlin jumps from 02:00 to 03:00 on 2026-03-29: 02:30 does not exist.
    let s = cron("30 2 * * *", "Europe/Berlin");
    let runs = between(
        &s,
        at("2026-03-27T12:00:00Z"),
        at("2026-03-31T12:00:00Z"),
        10,
    );
    let walls: Vec<String> = runs.iter().map(|t| wall(&s, *t)).collect();
    assert_eq!(walls.len(), 4, "{walls:?}");
    assert_eq!(walls[0], "2026-03-28 02:30 CET");
    assert!(walls[1].starts_with("2026-03-29 03:"), "{walls:?}");
    assert_eq!(walls[2], "2026-03-30 02:30 CEST");
    assert_eq!(walls[3], "2026-03-31 02:30 CEST");
}

#[test]
fn a_daily_run_in_the_repeated_fall_back_hour_runs_once() {
    // Europe/Berlin goes from 03:00 CEST back to 02:00 CET on 2026-10-25: 02:30 happens twice.
    let s = cron("30 2 * * *", "Europe/Berlin");
    let runs = between(
        &s,
        at("2026-10-23T12:00:00Z"),
        at("2026-10-27T12:00:00Z"),
        10,
    );
    let walls: Vec<String> = runs.iter().map(|t| wall(&s, *t)).collect();
    assert_eq!(
        walls,
        [
            "2026-10-24 02:30 CEST",
            "2026-10-25 02:30 CEST",
            "2026-10-26 02:30 CET",
            "2026-10-27 02:30 CET",
        ]
    );
}

#[test]
fn an_hourly_run_fires_once_per_wall_clock_hour_across_both_changes() {
    let s = cron("15 * * * *", "Europe/Berlin");
    // Fall-back day: 23 distinct wall-clock hours would be wrong, 25 timeline hours too; the
    // repeated 02:15 fires once, so the day has 24 runs.
    let day = between(
        &s,
        at("2026-10-24T22:00:00Z"),
        at("2026-10-25T23:00:00Z"),
        100,
    );
    assert_eq!(
        day.len(),
        24,
        "{:?}",
        day.iter().map(|t| wall(&s, *t)).collect::<Vec<_>>()
    );
    // Spring-forward day: 02:15 does not exist; 23 runs.
    let day = between(
        &s,
        at("2026-03-28T23:00:00Z"),
        at("2026-03-29T22:00:00Z"),
        100,
    );
    let walls: Vec<String> = day.iter().map(|t| wall(&s, *t)).collect();
    assert!(walls.iter().all(|w| !w.contains(" 02:")), "{walls:?}");
    assert!(
        walls.windows(2).all(|w| w[0] != w[1]),
        "no wall-clock time twice: {walls:?}"
    );
}

#[test]
fn intervals_are_aligned_to_the_epoch_and_ignore_zones() {
    let every = SignedDuration::from_hours(6);
    assert_eq!(
        instants::every_after(every, at("2026-12-04T05:59:59Z")),
        Some(at("2026-12-04T06:00:00Z"))
    );
    assert_eq!(
        instants::every_after(every, at("2026-12-04T06:00:00Z")),
        Some(at("2026-12-04T12:00:00Z"))
    );
    assert_eq!(
        instants::every_at_or_before(every, at("2026-12-04T06:00:00Z")),
        Some(at("2026-12-04T06:00:00Z"))
    );
}

fn key(host: &str, kind: JobKind) -> AssignmentKey {
    AssignmentKey {
        host: host.into(),
        policy: "system".into(),
        kind,
    }
}

#[test]
fn jitter_spreads_a_thousand_hosts_and_is_stable() {
    let jitter = SignedDuration::from_mins(30);
    let offsets: Vec<i64> = (0..1000)
        .map(|i| jitter_offset(&key(&format!("host-{i}"), JobKind::Backup), jitter).as_secs())
        .collect();
    assert!(offsets.iter().all(|s| (0..1800).contains(s)));
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for s in &offsets {
        *per_second.entry(*s).or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= 5,
        "at most a handful of hosts start in any one second: {busiest}"
    );
    assert!(
        per_second.len() > 400,
        "{} distinct seconds",
        per_second.len()
    );
    // Ten-minute buckets each get roughly a third.
    for bucket in 0..3 {
        let n = offsets.iter().filter(|s| **s / 600 == bucket).count();
        assert!((250..420).contains(&n), "bucket {bucket}: {n}");
    }
    assert_eq!(
        jitter_offset(&key("host-7", JobKind::Backup), jitter),
        jitter_offset(&key("host-7", JobKind::Backup), jitter)
    );
    assert_eq!(
        jitter_offset(&key("host-7", JobKind::Backup), SignedDuration::ZERO),
        SignedDuration::ZERO
    );
}

struct Idle;
impl Running for Idle {
    fn active(&self, _: &AssignmentKey) -> Option<(String, JobState)> {
        None
    }
}

struct Busy(RefCell<Vec<AssignmentKey>>);
impl Running for Busy {
    fn active(&self, key: &AssignmentKey) -> Option<(String, JobState)> {
        self.0
            .borrow()
            .contains(key)
            .then(|| ("web-1.system.backup.1".to_owned(), JobState::Running))
    }
}

fn assignment(schedule: Schedule, missed_run: MissedRun) -> Scheduled {
    Scheduled {
        key: key("web-1", JobKind::Backup),
        repository: "main".into(),
        scope: Arc::from("main"),
        schedule,
        offset: SignedDuration::from_secs(90),
        missed_run,
        max_duration_secs: 3600,
        paused: false,
    }
}

fn state(last: Option<&str>, next: Option<&str>) -> HashMap<AssignmentKey, ScheduleState> {
    let k = key("web-1", JobKind::Backup);
    HashMap::from([(
        k.clone(),
        ScheduleState {
            key: k,
            last_instant: last.map(at),
            next_instant: next.map(at),
        },
    )])
}

#[test]
fn a_new_assignment_waits_for_its_next_instant_and_then_runs_once() {
    let a = assignment(cron("0 2 * * *", "UTC"), MissedRun::RunOnce);
    let now = at("2026-12-04T01:00:00Z");
    let mut s = Scheduler::build(vec![a], &HashMap::new(), now);
    assert_eq!(s.next_due(), Some(at("2026-12-04T02:01:30Z")));
    assert!(
        s.take_due(at("2026-12-04T02:01:29Z"), &Idle)
            .jobs
            .is_empty()
    );

    let due = s.take_due(at("2026-12-04T02:01:30Z"), &Idle);
    assert_eq!(due.jobs.len(), 1);
    let job = &due.jobs[0];
    assert_eq!(
        job.id,
        scheduled_job_id(&job.key, at("2026-12-04T02:00:00Z"))
    );
    assert_eq!(job.state, JobState::Queued);
    assert!(!job.catch_up);
    assert_eq!(job.run_after, at("2026-12-04T02:01:30Z"));
    assert_eq!(job.deadline, at("2026-12-05T02:01:30Z"));
    assert_eq!(due.states[0].next_instant, Some(at("2026-12-05T02:00:00Z")));
    // Nothing more until tomorrow.
    assert!(
        s.take_due(at("2026-12-04T23:00:00Z"), &Idle)
            .jobs
            .is_empty()
    );
}

#[test]
fn after_a_week_of_downtime_one_catch_up_run_not_a_burst() {
    let a = assignment(cron("0 * * * *", "UTC"), MissedRun::RunOnce);
    let states = state(Some("2026-11-27T10:00:00Z"), Some("2026-11-27T11:00:00Z"));
    let now = at("2026-12-04T10:30:00Z");
    let mut s = Scheduler::build(vec![a], &states, now);
    let due = s.take_due(now, &Idle);
    assert_eq!(due.jobs.len(), 1, "{:?}", due.jobs);
    let job = &due.jobs[0];
    assert!(job.catch_up);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.instant, Some(at("2026-12-04T10:00:00Z")));
    assert!(
        job.reason.as_deref().unwrap_or("").contains("168 run(s)"),
        "{:?}",
        job.reason
    );
    assert_eq!(due.states[0].next_instant, Some(at("2026-12-04T11:00:00Z")));
    assert!(s.take_due(now, &Idle).jobs.is_empty());
}

#[test]
fn with_skip_missed_runs_are_recorded_as_missed_and_not_run() {
    let a = assignment(cron("0 * * * *", "UTC"), MissedRun::Skip);
    let states = state(Some("2026-12-04T06:00:00Z"), Some("2026-12-04T07:00:00Z"));
    let now = at("2026-12-04T10:30:00Z");
    let mut s = Scheduler::build(vec![a], &states, now);
    let due = s.take_due(now, &Idle);
    assert_eq!(due.jobs.len(), 1);
    assert_eq!(due.jobs[0].state, JobState::Missed);
    assert!(
        due.jobs[0].reason.as_deref().unwrap_or("").contains("skip"),
        "{:?}",
        due.jobs[0].reason
    );
}

#[test]
fn an_instant_due_while_the_previous_run_is_still_going_is_an_overrun() {
    let a = assignment(cron("*/5 * * * *", "UTC"), MissedRun::RunOnce);
    let now = at("2026-12-04T10:00:00Z");
    let mut s = Scheduler::build(vec![a], &HashMap::new(), now);
    let busy = Busy(RefCell::new(vec![key("web-1", JobKind::Backup)]));
    let due = s.take_due(at("2026-12-04T10:06:30Z"), &busy);
    assert_eq!(due.jobs.len(), 1);
    assert_eq!(due.jobs[0].state, JobState::Missed);
    assert!(
        due.jobs[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .starts_with("overrun: the previous run (job web-1.system.backup.1) was still running"),
        "{:?}",
        due.jobs[0].reason
    );
}

#[test]
fn a_paused_host_advances_its_schedule_without_jobs() {
    let mut a = assignment(cron("0 * * * *", "UTC"), MissedRun::RunOnce);
    a.paused = true;
    let now = at("2026-12-04T10:00:00Z");
    let mut s = Scheduler::build(vec![a], &HashMap::new(), now);
    let due = s.take_due(at("2026-12-04T11:05:00Z"), &Idle);
    assert!(due.jobs.is_empty());
    assert_eq!(due.states[0].next_instant, Some(at("2026-12-04T12:00:00Z")));
    assert_eq!(
        s.next_instant(&key("web-1", JobKind::Backup)),
        None,
        "a paused assignment has no next run to show"
    );
}

#[test]
fn a_schedule_that_stops_firing_leaves_the_working_set() {
    // 29 February 2028 at noon: fires once in the window, then not for four years; the
    // working set keeps it, with its far next instant.
    let a = assignment(cron("0 12 29 2 *", "UTC"), MissedRun::RunOnce);
    let s = Scheduler::build(vec![a], &HashMap::new(), at("2026-12-04T10:00:00Z"));
    assert_eq!(
        s.next_instant(&key("web-1", JobKind::Backup)),
        Some(at("2028-02-29T12:00:00Z"))
    );
    assert_eq!(
        next_after(&cron("0 12 29 2 *", "UTC"), at("2028-02-29T12:00:00Z")),
        Some(at("2032-02-29T12:00:00Z"))
    );
}

fn scope(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[test]
fn maintenance_waits_for_backups_and_backups_wait_behind_waiting_maintenance() {
    let repo = scope("offsite");
    let mut activity = Activity::default();
    assert_eq!(
        may_start(JobKind::Backup, &repo, &activity),
        Decision::Start
    );
    activity.started(JobKind::Backup, &repo, "b1");
    assert_eq!(
        may_start(JobKind::Backup, &repo, &activity),
        Decision::Start
    );
    let Decision::Defer { reason } = may_start(JobKind::Prune, &repo, &activity) else {
        panic!("prune must wait");
    };
    assert_eq!(
        reason,
        "waiting for 1 backup(s) to repository `offsite` to finish"
    );

    activity.waiting(&repo);
    let Decision::Defer { reason } = may_start(JobKind::Backup, &repo, &activity) else {
        panic!("a new backup waits behind the prune");
    };
    assert!(reason.contains("goes after it"), "{reason}");
    // Another repository is unaffected, and so are unlock and inventories.
    assert_eq!(
        may_start(JobKind::Backup, &scope("local@web-1"), &activity),
        Decision::Start
    );
    assert_eq!(
        may_start(JobKind::Unlock, &repo, &activity),
        Decision::Start
    );

    let mut activity = Activity::default();
    activity.started(JobKind::Forget, &repo, "f1");
    assert_eq!(
        may_start(JobKind::Check, &repo, &activity),
        Decision::Defer {
            reason: "waiting for the forget of repository `offsite` (job f1) to finish".into()
        }
    );
}

#[test]
fn the_example_fleet_schedules_local_repositories_per_host() {
    let (config, _) = crate::config::testing::example_config_with_identity();
    let all = scheduled(&config);
    let web = all
        .iter()
        .find(|s| {
            &*s.key.host == "web-1" && &*s.key.policy == "system" && s.key.kind == JobKind::Backup
        })
        .unwrap();
    assert_eq!(&*web.scope, "local@web-1");
    let db = all
        .iter()
        .find(|s| {
            &*s.key.host == "db-1" && &*s.key.policy == "postgres" && s.key.kind == JobKind::Prune
        })
        .unwrap();
    assert_eq!(&*db.scope, "offsite");
    assert_eq!(
        db.schedule.timezone.as_ref().unwrap().name.as_ref(),
        "Europe/Berlin"
    );
    assert!(
        all.iter()
            .any(|s| &*s.key.host == "db-1" && s.key.kind == JobKind::Snapshots),
        "inventories are scheduled"
    );
}
