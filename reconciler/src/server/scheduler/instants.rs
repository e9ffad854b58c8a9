//! Schedule instants: when a cron expression fires in its time zone, and when an interval
//! does, as points on the timeline.
//!
//! Daylight saving time is where cron in a time zone goes wrong, so the rules are explicit:
//! - on a fall-back day a wall-clock time happens twice; an expression matching it fires
//!   once, at the first occurrence (the next instant must be later on the wall clock, not
//!   only on the timeline);
//! - on a spring-forward day a wall-clock time in the gap does not happen at all; croner
//!   moves such a run to the first valid time after the gap, so a daily job still runs that
//!   day.
//!
//! Intervals (`every = "6h"`) ignore zones: they fire at whole multiples of the interval
//! since the Unix epoch, so the instants are the same after a restart and on every server.

use jiff::{SignedDuration, Timestamp, Zoned};

use crate::config::model::{Schedule, Trigger};

/// The first instant of `schedule` strictly after `after`.
#[must_use]
pub fn next_after(schedule: &Schedule, after: Timestamp) -> Option<Timestamp> {
    match &schedule.trigger {
        Trigger::Every(every) => every_after(*every, after),
        Trigger::Cron(expr) => {
            let zone = schedule
                .timezone
                .as_ref()
                .map_or(jiff::tz::TimeZone::UTC, |z| z.zone.clone());
            let from = after.to_zoned(zone);
            let wall = from.datetime();
            let mut cursor = from;
            // A handful of steps covers a repeated hour; a bound keeps a surprise finite.
            for _ in 0..240 {
                let next = expr.next_after(&cursor)?;
                if next.datetime() > wall {
                    return Some(next.timestamp());
                }
                cursor = next;
            }
            None
        }
    }
}

/// The first multiple of `every` since the epoch strictly after `after`.
#[must_use]
pub fn every_after(every: SignedDuration, after: Timestamp) -> Option<Timestamp> {
    let step = every.as_secs();
    if step <= 0 {
        return None;
    }
    let at = after.as_second();
    let next = (at.div_euclid(step) + 1).checked_mul(step)?;
    Timestamp::from_second(next).ok()
}

/// The last multiple of `every` since the epoch at or before `at`.
#[must_use]
pub fn every_at_or_before(every: SignedDuration, at: Timestamp) -> Option<Timestamp> {
    let step = every.as_secs();
    if step <= 0 {
        return None;
    }
    let secs = at.as_second().div_euclid(step).checked_mul(step)?;
    Timestamp::from_second(secs).ok()
}

/// Instants of `schedule` in `(from, to]`, at most `limit` of them: for tests and the status
/// view's "next runs".
#[must_use]
pub fn between(
    schedule: &Schedule,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Vec<Timestamp> {
    let mut out = Vec::new();
    let mut cursor = from;
    while out.len() < limit {
        match next_after(schedule, cursor) {
            Some(next) if next <= to => {
                out.push(next);
                cursor = next;
            }
            _ => break,
        }
    }
    out
}

/// An instant shown in the schedule's zone, for messages.
#[must_use]
pub fn in_zone(schedule: &Schedule, at: Timestamp) -> Zoned {
    let zone = schedule
        .timezone
        .as_ref()
        .map_or(jiff::tz::TimeZone::UTC, |z| z.zone.clone());
    at.to_zoned(zone)
}
