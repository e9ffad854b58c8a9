//! Refused webhook requests, recorded without letting a flood fill the audit log or the log.
//!
//! The first refusal is audited as `webhook-refused` and logged at warn, in full. Refusals in
//! the minute after it are only counted; when the minute is over, one summary entry ("N more
//! refused webhook requests since …", with the remote addresses and reasons seen) is audited
//! and logged, and while refusals go on there is at most one summary a minute. After a quiet
//! minute the next refusal is recorded in full again. A summary still open at shutdown is
//! written then.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::run::Server;

/// How often a summary of counted refusals is written, at most.
pub const SUMMARY_INTERVAL: Duration = Duration::from_mins(1);

/// The most distinct remote addresses and reasons a summary names; the count covers all.
const NAMED_IN_SUMMARY: usize = 10;

/// What to do with a refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Noted {
    /// Audit and log it in full.
    Record,
    /// Only counted; `flush_at` is when the summary is due, given once per summary, when the
    /// first refusal of it is counted.
    Counted { flush_at: Option<Instant> },
}

/// The refusals counted since the last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    /// When the first counted refusal arrived.
    pub since: jiff::Timestamp,
    /// Distinct client addresses, at most [`NAMED_IN_SUMMARY`], in the order they came.
    pub remotes: Vec<String>,
    /// Distinct reasons, at most [`NAMED_IN_SUMMARY`], in the order they came.
    pub reasons: Vec<String>,
}

impl Summary {
    /// The sentence the audit entry and the log line carry.
    #[must_use]
    pub fn text(&self) -> String {
        let requests = if self.count == 1 {
            "refused webhook request"
        } else {
            "refused webhook requests"
        };
        format!("{} more {requests} since {}", self.count, self.since)
    }
}

/// The rate limiter's state: when the current minute ends and what was counted in it.
#[derive(Debug)]
pub struct Refusals {
    interval: Duration,
    window_end: Option<Instant>,
    pending: Option<Summary>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new(SUMMARY_INTERVAL)
    }
}

impl Refusals {
    /// A limiter writing at most one entry per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            window_end: None,
            pending: None,
        }
    }

    /// Notes a refusal from `remote` for `reason` at `now` (`at` is the same moment on the
    /// wall clock, for the summary's text).
    pub fn note(&mut self, now: Instant, at: jiff::Timestamp, remote: &str, reason: &str) -> Noted {
        let in_window = self.window_end.is_some_and(|end| now < end);
        // A summary not yet written keeps counting, even when its flush is a little late.
        if !in_window && self.pending.is_none() {
            self.window_end = Some(now + self.interval);
            return Noted::Record;
        }

        let first = self.pending.is_none();
        let summary = self.pending.get_or_insert_with(|| Summary {
            count: 0,
            since: at,
            remotes: Vec::new(),
            reasons: Vec::new(),
        });
        summary.count += 1;
        add_distinct(&mut summary.remotes, remote);
        add_distinct(&mut summary.reasons, reason);
        Noted::Counted {
            flush_at: first.then(|| self.window_end.unwrap_or(now)),
        }
    }

    /// Takes what was counted, if anything, and starts the next minute at `now`: the next
    /// summary is a minute away at the earliest.
    pub fn flush(&mut self, now: Instant) -> Option<Summary> {
        let summary = self.pending.take()?;
        self.window_end = Some(now + self.interval);
        Some(summary)
    }
}

fn add_distinct(list: &mut Vec<String>, item: &str) {
    if list.len() < NAMED_IN_SUMMARY && !list.iter().any(|known| known == item) {
        list.push(item.to_owned());
    }
}

/// Records a refused webhook request from `remote`: in full when it is the first for a
/// while, else counted for the next summary (whose writing it schedules when it is the first
/// counted).
pub fn refused(server: &Arc<Server>, remote: &str, reason: &str) {
    let noted = server.refusals.lock().expect("refusals lock").note(
        Instant::now(),
        jiff::Timestamp::now(),
        &client_address(remote),
        reason,
    );
    match noted {
        Noted::Record => {
            warn!(
                error = %reason,
                remote,
                "webhook refused; further refusals within a minute are counted and summarised"
            );
            let server = Arc::clone(server);
            let (remote, reason) = (remote.to_owned(), reason.to_owned());
            // Written on the blocking pool: the audit log's fsync must not stall the
            // runtime's threads.
            tokio::task::spawn_blocking(move || {
                server.audit_blocking("webhook", "webhook-refused", &remote, &reason);
            });
        }
        Noted::Counted { flush_at: None } => {}
        Noted::Counted { flush_at: Some(at) } => {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                write_summary(&server).await;
            });
        }
    }
}

/// Writes the summary of the refusals counted so far, if any: at its minute, and at shutdown.
pub async fn write_summary(server: &Arc<Server>) {
    let summary = server
        .refusals
        .lock()
        .expect("refusals lock")
        .flush(Instant::now());
    let Some(summary) = summary else {
        return;
    };
    let text = summary.text();
    warn!(
        count = summary.count,
        remotes = ?summary.remotes,
        reasons = ?summary.reasons,
        "{text}"
    );
    let subject = match summary.remotes.as_slice() {
        [only] => only.clone(),
        _ => "several clients".to_owned(),
    };
    let detail = serde_json::json!({
        "detail": text,
        "count": summary.count,
        "since": summary.since.to_string(),
        "remotes": summary.remotes,
        "reasons": summary.reasons,
    });
    let server = Arc::clone(server);
    let written = tokio::task::spawn_blocking(move || {
        let mut store = server.store.lock().expect("store lock");
        store.audit("webhook", "webhook-refused", &subject, None, &detail)
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not write the audit log"),
        Err(e) => tracing::error!(error = %e, "writing the audit log failed"),
    }
}

/// The client's IP address without its port: a flood comes from ever new ports.
fn client_address(remote: &str) -> String {
    remote
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| remote.to_owned(), |addr| addr.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).expect("a time")
    }

    #[test]
    fn the_first_refusal_is_recorded_and_the_next_ones_summarised_once_a_minute() {
        let start = Instant::now();
        let secs = |n: u64| start + Duration::from_secs(n);
        let mut refusals = Refusals::default();

        assert_eq!(
            refusals.note(secs(0), at(0), "192.0.2.1", "no signature"),
            Noted::Record
        );
        assert_eq!(
            refusals.note(secs(1), at(1), "192.0.2.1", "no signature"),
            Noted::Counted {
                flush_at: Some(secs(60))
            }
        );
        for n in 2..3000 {
            let noted = refusals.note(secs(n / 300), at(1), "192.0.2.2", "wrong signature");
            assert_eq!(noted, Noted::Counted { flush_at: None });
        }

        let summary = refusals.flush(secs(60)).expect("a summary");
        assert_eq!(summary.count, 2999);
        assert_eq!(summary.since, at(1));
        assert_eq!(summary.remotes, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(summary.reasons, ["no signature", "wrong signature"]);
        assert_eq!(
            summary.text(),
            format!("2999 more refused webhook requests since {}", at(1))
        );
        assert_eq!(refusals.flush(secs(61)), None);

        // The flood goes on: counted again, the next summary a minute after the last one.
        assert_eq!(
            refusals.note(secs(70), at(70), "192.0.2.2", "wrong signature"),
            Noted::Counted {
                flush_at: Some(secs(120))
            }
        );
        assert_eq!(refusals.flush(secs(120)).map(|s| s.count), Some(1));

        // After a quiet minute, the next refusal is recorded in full again.
        assert_eq!(
            refusals.note(secs(200), at(200), "192.0.2.3", "x"),
            Noted::Record
        );
    }

    #[test]
    fn a_late_flush_keeps_counting_into_the_summary_it_has_not_written() {
        let start = Instant::now();
        let mut refusals = Refusals::new(Duration::from_secs(10));
        refusals.note(start, at(0), "a", "r");
        refusals.note(start + Duration::from_secs(5), at(5), "a", "r");

        let late = start + Duration::from_secs(11);
        assert_eq!(
            refusals.note(late, at(11), "a", "r"),
            Noted::Counted { flush_at: None }
        );
        assert_eq!(refusals.flush(late).map(|s| s.count), Some(2));
    }

    #[test]
    fn a_summary_names_at_most_ten_clients_and_one_is_singular() {
        let start = Instant::now();
        let mut refusals = Refusals::default();
        refusals.note(start, at(0), "first", "r");
        for n in 0..25 {
            refusals.note(start, at(0), &format!("198.51.100.{n}"), "r");
        }
        let summary = refusals.flush(start).expect("a summary");
        assert_eq!(summary.count, 25);
        assert_eq!(summary.remotes.len(), 10);

        refusals.note(start + Duration::from_secs(1), at(1), "a", "r");
        let one = refusals.flush(start).expect("a summary");
        assert_eq!(
            one.text(),
            format!("1 more refused webhook request since {}", at(1))
        );
    }

    #[test]
    fn the_client_address_drops_the_port() {
        assert_eq!(client_address("192.0.2.1:41234"), "192.0.2.1");
        assert_eq!(client_address("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(client_address("unknown"), "unknown");
    }
}
