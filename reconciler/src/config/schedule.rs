//! Schedules: when a job runs, as a cron expression in a time zone or as a fixed interval.
//!
//! Parsing lives here together with the one question `plan` asks of two schedules: does the
//! new one run less often? Cron parsing is croner's (5 fields, or 6 with seconds first);
//! durations use a small `1h30m` form shared by every duration key.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeMap as _;

use super::model::TimeZoneName;

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub trigger: Trigger,
    /// The zone cron instants are read in. `None`: the host's zone, else UTC.
    pub timezone: Option<TimeZoneName>,
    /// Upper bound of the stable per-host delay.
    pub jitter: jiff::SignedDuration,
}

/// What makes a schedule fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Shared: every host an assignment applies to holds the same parsed expression.
    Cron(Arc<CronExpr>),
    Every(jiff::SignedDuration),
}

/// A parsed cron expression that keeps its text.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
}

impl CronExpr {
    /// Parses a 5-field or 6-field (seconds first) expression and checks that it ever fires.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) && !text.trim_start().starts_with('@') {
            return Err(format!(
                "invalid cron expression `{text}`: expected 5 fields (minute hour day month \
                 weekday) or 6 (with seconds first), found {fields}"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| {
                format!(
                    "invalid cron expression `{text}`: {e} (fields: [second] minute hour \
                     day-of-month month day-of-week)"
                )
            })?;
        let expr = Self {
            text: text.to_owned(),
            cron,
        };
        if expr
            .next_after(&reference_instant(&jiff::tz::TimeZone::UTC))
            .is_none()
        {
            return Err(format!(
                "cron expression `{text}` never fires (no matching date exists)"
            ));
        }
        Ok(expr)
    }

    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first instant strictly after `after`, in `after`'s zone.
    #[must_use]
    pub fn next_after(&self, after: &jiff::Zoned) -> Option<jiff::Zoned> {
        self.cron.find_next_occurrence(after, false).ok()
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronExpr {}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

/// A fixed instant used when schedules are compared, so `plan` output does not depend on the
/// day it is run.
fn reference_instant(zone: &jiff::tz::TimeZone) -> jiff::Zoned {
    jiff::civil::date(2026, 1, 5)
        .at(0, 0, 0, 0)
        .to_zoned(zone.clone())
        .unwrap_or_else(|_| jiff::Timestamp::UNIX_EPOCH.to_zoned(jiff::tz::TimeZone::UTC))
}

impl Schedule {
    /// The shortest time between two runs among the first few after a fixed reference date,
    /// read in UTC unless the schedule has a zone: cheap enough to check every schedule.
    #[must_use]
    pub fn shortest_gap(&self) -> Option<jiff::SignedDuration> {
        const SAMPLES: usize = 16;

        match &self.trigger {
            Trigger::Every(every) => Some(*every),
            Trigger::Cron(expr) => {
                let zone = self
                    .timezone
                    .as_ref()
                    .map_or(jiff::tz::TimeZone::UTC, |z| z.zone.clone());
                let mut last = expr.next_after(&reference_instant(&zone))?;
                let mut shortest: Option<jiff::SignedDuration> = None;
                for _ in 0..SAMPLES {
                    let Some(next) = expr.next_after(&last) else {
                        break;
                    };
                    let gap = next.timestamp().duration_since(last.timestamp());
                    shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
                    last = next;
                }
                shortest
            }
        }
    }

    /// The average time between two runs, measured over the year after a fixed reference
    /// date in `zone`. `None` when the schedule fires at most once in that year.
    #[must_use]
    pub fn mean_interval(&self, zone: &TimeZoneName) -> Option<jiff::SignedDuration> {
        const MAX_SAMPLES: i32 = 2_000;

        match &self.trigger {
            Trigger::Every(every) => Some(*every),
            Trigger::Cron(expr) => {
                let zone = self.timezone.as_ref().unwrap_or(zone);
                let start = reference_instant(&zone.zone);
                let end = start.timestamp() + jiff::SignedDuration::from_hours(366 * 24);
                let first = expr.next_after(&start)?;
                let mut last = first.clone();
                let mut count = 1;
                while count < MAX_SAMPLES {
                    match expr.next_after(&last) {
                        Some(next) if next.timestamp() <= end => {
                            last = next;
                            count += 1;
                        }
                        _ => break,
                    }
                }
                if count < 2 {
                    return None;
                }
                let span = last.timestamp().duration_since(first.timestamp());
                Some(span / (count - 1))
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.trigger {
            Trigger::Cron(expr) => write!(f, "cron `{}`", expr.as_str())?,
            Trigger::Every(every) => write!(f, "every {}", format_duration(*every))?,
        }
        // An interval runs the same in every zone; only cron instants are read in one.
        if let (Trigger::Cron(_), Some(zone)) = (&self.trigger, &self.timezone) {
            write!(f, " ({zone})")?;
        }
        if !self.jitter.is_zero() {
            write!(f, ", jitter up to {}", format_duration(self.jitter))?;
        }
        Ok(())
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match &self.trigger {
            Trigger::Cron(expr) => map.serialize_entry("cron", expr.as_str())?,
            Trigger::Every(every) => map.serialize_entry("every", &format_duration(*every))?,
        }
        if let Some(zone) = &self.timezone {
            map.serialize_entry("timezone", &*zone.name)?;
        }
        map.serialize_entry("jitter", &format_duration(self.jitter))?;
        map.end()
    }
}

/// Parses a duration such as `90s`, `30m`, `6h`, `1h30m`, `2d` or `1w`.
pub fn parse_duration(text: &str) -> Result<jiff::SignedDuration, String> {
    let invalid = || {
        format!(
            "invalid duration `{text}`: write a number and a unit (s, m, h, d, w), \
             e.g. `30m`, `6h` or `1h30m`"
        )
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid()),
        };
        let n: i64 = digits.parse().map_err(|_| invalid())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid());
    }
    // Ten years is far beyond any sensible job duration or interval; larger values are typos.
    if total > 10 * 366 * 86_400 {
        return Err(format!("duration `{text}` is longer than ten years"));
    }
    Ok(jiff::SignedDuration::from_secs(total))
}

/// Writes a duration in the form [`parse_duration`] reads, largest units first.
#[must_use]
pub fn format_duration(duration: jiff::SignedDuration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Serializes a duration in the config's own form.
pub fn serialize_duration<S: serde::Serializer>(
    duration: &jiff::SignedDuration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5_400);
        assert_eq!(format_duration(parse_duration("1h30m").unwrap()), "1h30m");
        assert_eq!(format_duration(parse_duration("2d").unwrap()), "2d");
        assert!(parse_duration("").unwrap_err().contains("invalid duration"));
        assert!(
            parse_duration("6")
                .unwrap_err()
                .contains("invalid duration `6`")
        );
        assert!(parse_duration("6 hours").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn cron_with_five_or_six_fields_parses() {
        assert!(CronExpr::parse("15 * * * *").is_ok());
        assert!(CronExpr::parse("0 15 * * * *").is_ok());
    }

    #[test]
    fn bad_cron_is_rejected_with_the_expression() {
        let err = CronExpr::parse("61 * * * *").unwrap_err();
        assert!(
            err.starts_with("invalid cron expression `61 * * * *`"),
            "{err}"
        );
        let err = CronExpr::parse("* * *").unwrap_err();
        assert!(err.contains("expected 5 fields"), "{err}");
    }

    #[test]
    fn cron_that_never_fires_is_rejected() {
        let err = CronExpr::parse("0 0 30 2 *").unwrap_err();
        assert!(err.contains("never fires"), "{err}");
    }

    #[test]
    fn daily_is_rarer_than_hourly() {
        let utc = TimeZoneName::utc();
        let make = |text: &str| Schedule {
            trigger: Trigger::Cron(Arc::new(CronExpr::parse(text).unwrap())),
            timezone: None,
            jitter: jiff::SignedDuration::ZERO,
        };
        let hourly = make("0 * * * *").mean_interval(&utc).unwrap();
        let daily = make("0 2 * * *").mean_interval(&utc).unwrap();
        assert_eq!(hourly.as_secs(), 3_600);
        assert_eq!(daily.as_secs(), 86_400);
    }
}
