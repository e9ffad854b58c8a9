//! Retention: which snapshots `forget` keeps, as restic's `--keep-*` options.
//!
//! Besides parsing, this module answers the question reviewers care about most: does a new
//! retention keep less than the old one? [`Retention::rules`] lists every rule by its restic
//! name so `plan` can compare rule by rule.

use std::fmt;

use serde::Serialize;

/// Validated retention rules. At least one rule keeps something.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Retention {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<KeepWithin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<KeepWithin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<KeepWithin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<KeepWithin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<KeepWithin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<KeepWithin>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_tag: Vec<String>,
    pub group_by: GroupBy,
}

/// The value of one retention rule, comparable with the same rule's other value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleValue {
    Count(u32),
    Within(KeepWithin),
    Tags(Vec<String>),
}

impl RuleValue {
    /// Whether `self` keeps less than `old` (for tags: drops a tag `old` kept).
    #[must_use]
    pub fn keeps_less_than(&self, old: &RuleValue) -> bool {
        match (self, old) {
            (RuleValue::Count(new), RuleValue::Count(old)) => new < old,
            (RuleValue::Within(new), RuleValue::Within(old)) => {
                new.approx_hours() < old.approx_hours()
            }
            (RuleValue::Tags(new), RuleValue::Tags(old)) => old.iter().any(|t| !new.contains(t)),
            _ => false,
        }
    }
}

impl fmt::Display for RuleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleValue::Count(n) => write!(f, "{n}"),
            RuleValue::Within(w) => write!(f, "{w}"),
            RuleValue::Tags(tags) => write!(f, "{}", tags.join(", ")),
        }
    }
}

impl Retention {
    /// Every rule that is set, by its restic option name (without `--`).
    #[must_use]
    pub fn rules(&self) -> Vec<(&'static str, RuleValue)> {
        let counts = [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ];
        let withins = [
            ("keep-within", &self.keep_within),
            ("keep-within-hourly", &self.keep_within_hourly),
            ("keep-within-daily", &self.keep_within_daily),
            ("keep-within-weekly", &self.keep_within_weekly),
            ("keep-within-monthly", &self.keep_within_monthly),
            ("keep-within-yearly", &self.keep_within_yearly),
        ];
        let mut rules: Vec<_> = counts
            .into_iter()
            .filter_map(|(name, n)| n.map(|n| (name, RuleValue::Count(n))))
            .collect();
        rules.extend(
            withins
                .into_iter()
                .filter_map(|(name, w)| w.map(|w| (name, RuleValue::Within(w)))),
        );
        if !self.keep_tag.is_empty() {
            rules.push(("keep-tag", RuleValue::Tags(self.keep_tag.clone())));
        }
        rules
    }

    /// Whether forget with these rules would delete every snapshot.
    #[must_use]
    pub fn keeps_nothing(&self) -> bool {
        self.rules().iter().all(|(_, value)| match value {
            RuleValue::Count(n) => *n == 0,
            RuleValue::Within(w) => w.approx_hours() == 0,
            RuleValue::Tags(tags) => tags.is_empty(),
        })
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = self
            .rules()
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        if self.group_by.is_none() {
            write!(f, "{} (all snapshots in one group)", rules.join(", "))
        } else {
            write!(f, "{} (grouped by {})", rules.join(", "), self.group_by)
        }
    }
}

/// A `keep-within` duration in restic's form: years, months, days and hours (`1y6m3d12h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepWithin {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl KeepWithin {
    /// Parses restic's duration form: one or more `<number><unit>` with unit `y`, `m`, `d`
    /// or `h`, each unit at most once.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid keep-within duration `{text}`: use restic's form, numbers with y \
                 (years), m (months), d (days), h (hours), e.g. `1y6m` or `14d`"
            )
        };
        let mut out = Self::default();
        let mut seen = String::new();
        let mut digits = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits.parse().map_err(|_| invalid())?;
            digits.clear();
            if seen.contains(c) {
                return Err(invalid());
            }
            seen.push(c);
            match c {
                'y' => out.years = n,
                'm' => out.months = n,
                'd' => out.days = n,
                'h' => out.hours = n,
                _ => return Err(invalid()),
            }
        }
        if !digits.is_empty() || seen.is_empty() {
            return Err(invalid());
        }
        Ok(out)
    }

    /// The length in hours, with a year as 365 days and a month as 30: good enough to tell
    /// whether one duration is shorter than another.
    #[must_use]
    pub fn approx_hours(&self) -> u64 {
        u64::from(self.years) * 365 * 24
            + u64::from(self.months) * 30 * 24
            + u64::from(self.days) * 24
            + u64::from(self.hours)
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ];
        let mut wrote = false;
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
                wrote = true;
            }
        }
        if !wrote {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

impl Serialize for KeepWithin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// restic's `--group-by`: which snapshot properties form a group that retention counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// Parses a comma-separated subset of `host`, `paths` and `tags`. Empty means one group
    /// for all snapshots of the policy, as in restic.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self {
            host: false,
            paths: false,
            tags: false,
        };
        if text.trim().is_empty() {
            return Ok(out);
        }
        for part in text.split(',').map(str::trim) {
            let slot = match part {
                "host" => &mut out.host,
                "paths" => &mut out.paths,
                "tags" => &mut out.tags,
                _ => {
                    return Err(format!(
                        "invalid group-by `{text}`: use a comma-separated list of `host`, \
                         `paths` and `tags`"
                    ));
                }
            };
            if *slot {
                return Err(format!(
                    "invalid group-by `{text}`: `{part}` is listed twice"
                ));
            }
            *slot = true;
        }
        Ok(out)
    }
}

impl GroupBy {
    /// Whether all snapshots form one group (`group-by = ""`).
    #[must_use]
    pub fn is_none(&self) -> bool {
        !(self.host || self.paths || self.tags)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for GroupBy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_within_reads_restic_form() {
        let w = KeepWithin::parse("1y6m3d12h").unwrap();
        assert_eq!((w.years, w.months, w.days, w.hours), (1, 6, 3, 12));
        assert_eq!(w.to_string(), "1y6m3d12h");
        assert!(
            KeepWithin::parse("14")
                .unwrap_err()
                .contains("invalid keep-within")
        );
        assert!(KeepWithin::parse("2w").is_err());
        assert!(KeepWithin::parse("1d1d").is_err());
    }

    #[test]
    fn zero_counts_keep_nothing() {
        let r = Retention {
            keep_daily: Some(0),
            ..Retention::default()
        };
        assert!(r.keeps_nothing());
        let r = Retention {
            keep_daily: Some(1),
            ..Retention::default()
        };
        assert!(!r.keeps_nothing());
        assert!(Retention::default().keeps_nothing());
    }

    #[test]
    fn lowering_is_detected_per_rule() {
        assert!(RuleValue::Count(7).keeps_less_than(&RuleValue::Count(14)));
        assert!(!RuleValue::Count(14).keeps_less_than(&RuleValue::Count(7)));
        let a = RuleValue::Within(KeepWithin::parse("30d").unwrap());
        let b = RuleValue::Within(KeepWithin::parse("1m1d").unwrap());
        assert!(a.keeps_less_than(&b));
    }

    #[test]
    fn group_by_rejects_unknown_parts() {
        assert_eq!(
            GroupBy::parse("host,tags").unwrap().to_string(),
            "host,tags"
        );
        assert!(
            GroupBy::parse("host,label")
                .unwrap_err()
                .contains("invalid group-by")
        );
    }
}
