//! The record of job ids this agent has run, so that no id runs twice, not even across a
//! restart of the agent.
//!
//! Each id is recorded durably before its job starts, then updated when the job ends and when
//! the server acknowledges its result. The record is bounded: an acknowledged job is kept in
//! full for [`KEEP_DAYS`] days, and at most [`KEEP_JOBS`] of them; after that only its id is
//! kept, for the next [`KEEP_EXPIRED_IDS`] ids that age out. Jobs still running or with a
//! result not yet acknowledged are never dropped. The file is `jobs.json` in the state
//! directory, rewritten atomically on each change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use protocol::{JobId, Outcome};
use serde::{Deserialize, Serialize};

use crate::state::{StateError, write_atomic};

/// Days an acknowledged job stays in the record with its outcome.
pub const KEEP_DAYS: i64 = 30;

/// The most acknowledged jobs kept with their outcome.
pub const KEEP_JOBS: usize = 10_000;

/// The most ids kept, without outcome, after they age out of the record.
///
/// NOTE: an id older than that is unknown and would run again (see
/// `docs/src/limitations.md`).
pub const KEEP_EXPIRED_IDS: usize = 10_000;

/// The version of the file's format.
const FORMAT_VERSION: u32 = 1;

/// Where a job is in its life, as far as the record knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    /// Ended; its result waits in `results/` for the server's acknowledgement.
    Finished,
    Acknowledged,
}

/// One job in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Entry {
    pub id: JobId,
    pub state: JobState,
    pub started_at: Timestamp,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub acknowledged_at: Option<Timestamp>,
}

/// What the record says about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Unknown,
    Running(&'a Entry),
    Finished(&'a Entry),
    Acknowledged(&'a Entry),
    /// Ran long ago; only the id is left.
    Expired,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct LedgerFile {
    version: u32,
    jobs: Vec<Entry>,
    expired: Vec<JobId>,
}

/// The record, in memory and in its file.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    entries: HashMap<JobId, Entry>,
    /// Oldest first.
    expired: VecDeque<JobId>,
    expired_set: HashSet<JobId>,
}

impl Ledger {
    /// Reads the record; a missing file is an empty record, an unreadable one an error.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let mut ledger = Ledger {
            path: path.to_owned(),
            entries: HashMap::new(),
            expired: VecDeque::new(),
            expired_set: HashSet::new(),
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ledger),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| StateError::CorruptLedger {
            path: path.to_owned(),
            reason,
        };
        let file: LedgerFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "it is format version {}, this agent reads version {FORMAT_VERSION}",
                file.version
            )));
        }
        for entry in file.jobs {
            ledger.entries.insert(entry.id.clone(), entry);
        }
        for id in file.expired {
            if ledger.expired_set.insert(id.clone()) {
                ledger.expired.push_back(id);
            }
        }
        Ok(ledger)
    }

    #[must_use]
    pub fn lookup(&self, id: &str) -> Lookup<'_> {
        match self.entries.get(id) {
            Some(entry) => match entry.state {
                JobState::Running => Lookup::Running(entry),
                JobState::Finished => Lookup::Finished(entry),
                JobState::Acknowledged => Lookup::Acknowledged(entry),
            },
            None if self.expired_set.contains(id) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// When a job started, as recorded; now when the record does not know it.
    #[must_use]
    pub fn started_at(&self, id: &str) -> Timestamp {
        self.entries
            .get(id)
            .map_or_else(Timestamp::now, |e| e.started_at)
    }

    #[must_use]
    pub fn running_ids(&self) -> Vec<JobId> {
        self.ids_in(JobState::Running)
    }

    #[must_use]
    pub fn finished_ids(&self) -> Vec<JobId> {
        self.ids_in(JobState::Finished)
    }

    fn ids_in(&self, state: JobState) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self
            .entries
            .values()
            .filter(|e| e.state == state)
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Records a job as running, durably.
    pub fn record_started(&mut self, id: &str, at: Timestamp) -> Result<(), StateError> {
        self.expired_set.remove(id);
        self.expired.retain(|e| e != id);
        self.entries.insert(
            id.to_owned(),
            Entry {
                id: id.to_owned(),
                state: JobState::Running,
                started_at: at,
                finished_at: None,
                outcome: None,
                acknowledged_at: None,
            },
        );
        self.save(at)
    }

    /// Records how a job ended.
    pub fn record_finished(
        &mut self,
        id: &str,
        outcome: Outcome,
        at: Timestamp,
    ) -> Result<(), StateError> {
        let entry = self.entries.entry(id.to_owned()).or_insert_with(|| Entry {
            id: id.to_owned(),
            state: JobState::Running,
            started_at: at,
            finished_at: None,
            outcome: None,
            acknowledged_at: None,
        });
        entry.state = JobState::Finished;
        entry.finished_at = Some(at);
        entry.outcome = Some(outcome);
        self.save(Timestamp::now())
    }

    /// Records the server's acknowledgement; false when the id was not waiting for one.
    pub fn record_acked(&mut self, id: &str, at: Timestamp) -> Result<bool, StateError> {
        let Some(entry) = self.entries.get_mut(id) else {
            return Ok(false);
        };
        if entry.state != JobState::Finished {
            return Ok(false);
        }
        entry.state = JobState::Acknowledged;
        entry.acknowledged_at = Some(at);
        self.save(at)?;
        Ok(true)
    }

    /// Moves old acknowledged jobs to the id-only list and trims that list.
    fn prune(&mut self, now: Timestamp) {
        let horizon = now - SignedDuration::from_hours(24 * KEEP_DAYS);
        let mut acked: Vec<(Timestamp, JobId)> = self
            .entries
            .values()
            .filter(|e| e.state == JobState::Acknowledged)
            .map(|e| (e.acknowledged_at.unwrap_or(e.started_at), e.id.clone()))
            .collect();
        acked.sort();
        let over = acked.len().saturating_sub(KEEP_JOBS);
        for (index, (at, id)) in acked.into_iter().enumerate() {
            if index < over || at < horizon {
                self.entries.remove(&id);
                if self.expired_set.insert(id.clone()) {
                    self.expired.push_back(id);
                }
            }
        }
        while self.expired.len() > KEEP_EXPIRED_IDS {
            if let Some(id) = self.expired.pop_front() {
                self.expired_set.remove(&id);
            }
        }
    }

    fn save(&mut self, now: Timestamp) -> Result<(), StateError> {
        self.prune(now);
        let mut jobs: Vec<Entry> = self.entries.values().cloned().collect();
        jobs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        let file = LedgerFile {
            version: FORMAT_VERSION,
            jobs,
            expired: self.expired.iter().cloned().collect(),
        };
        let text = serde_json::to_vec(&file).map_err(|e| StateError::Encode {
            job_id: String::new(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path, &text)
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.entries.len(), self.expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_record_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.json");
        let mut ledger = Ledger::load(&path).unwrap();
        ledger.record_started("a", at(0)).unwrap();
        ledger.record_started("b", at(1)).unwrap();
        ledger
            .record_finished("b", Outcome::Succeeded, at(2))
            .unwrap();

        let ledger = Ledger::load(&path).unwrap();
        assert!(matches!(ledger.lookup("a"), Lookup::Running(_)));
        let Lookup::Finished(b) = ledger.lookup("b") else {
            panic!("b should be finished");
        };
        assert_eq!(b.outcome, Some(Outcome::Succeeded));
        assert_eq!(ledger.lookup("c"), Lookup::Unknown);
    }

    #[test]
    fn old_acknowledged_jobs_keep_only_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.json");
        let mut ledger = Ledger::load(&path).unwrap();
        ledger.record_started("old", at(0)).unwrap();
        ledger
            .record_finished("old", Outcome::Succeeded, at(1))
            .unwrap();
        ledger.record_acked("old", at(2)).unwrap();
        ledger.record_started("pending", at(3)).unwrap();
        ledger
            .record_finished("pending", Outcome::Failed, at(4))
            .unwrap();

        // 31 days later, the acknowledged job ages out; the unacknowledged one stays.
        let later = at(31 * 86_400);
        ledger.record_started("new", later).unwrap();
        assert_eq!(ledger.lookup("old"), Lookup::Expired);
        assert!(matches!(ledger.lookup("pending"), Lookup::Finished(_)));
        assert_eq!(Ledger::load(&path).unwrap().lookup("old"), Lookup::Expired);
    }

    #[test]
    fn the_record_is_bounded_in_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::load(&dir.path().join("jobs.json")).unwrap();
        // Fill the record past both bounds without writing the file each time.
        for n in 0..(KEEP_JOBS + KEEP_EXPIRED_IDS + 5) {
            let id = format!("j-{n}");
            let t = at(i64::try_from(n).unwrap());
            ledger.entries.insert(
                id.clone(),
                Entry {
                    id,
                    state: JobState::Acknowledged,
                    started_at: t,
                    finished_at: Some(t),
                    outcome: Some(Outcome::Succeeded),
                    acknowledged_at: Some(t),
                },
            );
        }
        ledger.prune(at(100_000));
        assert_eq!(ledger.len(), (KEEP_JOBS, KEEP_EXPIRED_IDS));
        assert_eq!(
            ledger.lookup("j-0"),
            Lookup::Unknown,
            "the oldest ids are gone"
        );
        assert_eq!(ledger.lookup("j-10"), Lookup::Expired);
        assert!(matches!(
            ledger.lookup(&format!("j-{}", KEEP_JOBS + KEEP_EXPIRED_IDS + 4)),
            Lookup::Acknowledged(_)
        ));
    }

    #[test]
    fn an_unreadable_record_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.json");
        std::fs::write(&path, b"{\"version\": 1, \"jobs\": [").unwrap();
        let err = Ledger::load(&path).unwrap_err().to_string();
        assert!(err.contains("is unreadable"), "{err}");
        assert!(err.contains("mv "), "{err}");

        std::fs::write(&path, b"{\"version\": 9, \"jobs\": [], \"expired\": []}").unwrap();
        let err = Ledger::load(&path).unwrap_err().to_string();
        assert!(err.contains("format version 9"), "{err}");
    }
}
