//! The audit log: append-only and hash-chained. Each entry carries the hash of the one before
//! it, and its own hash covers its number, time, actor, action, subject, commit, detail and
//! that previous hash; changing, removing or reordering any entry breaks every hash after it.
//!
//! The database refuses `UPDATE` and `DELETE` on the table (triggers), which stops mistakes;
//! the chain is what shows tampering by someone who can write the file.
//! [`verify_audit`] walks the chain and names the first entry that does not fit;
//! [`verify_from`] walks it in steps, from a point already verified, so a long chain can be
//! checked without holding the database for seconds and a chain checked once need not be
//! walked again from the start.

use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::Digest as _;

use super::StoreError;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: jiff::Timestamp,
    /// Who caused it: `git` (a revision), `agent`, `webhook`, `scheduler`, `server`.
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub commit: Option<String>,
    /// A JSON object.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every entry fits; `entries` were checked and `last_hash` ends the chain.
    Intact { entries: u64, last_hash: String },
    /// The first entry that does not fit, and why.
    Broken { seq: i64, reason: String },
}

/// What an entry's hash covers.
pub struct Hashed<'a> {
    pub seq: i64,
    /// Seconds since the epoch, as stored.
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub commit: Option<&'a str>,
    pub detail: &'a str,
    pub prev_hash: &'a str,
}

impl Hashed<'_> {
    /// SHA-256 over the previous hash and a JSON array of the fields, which keeps field
    /// boundaries unambiguous.
    #[must_use]
    pub fn hash(&self) -> String {
        let fields = serde_json::json!([
            self.seq,
            self.at,
            self.actor,
            self.action,
            self.subject,
            self.commit,
            self.detail
        ]);
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(fields.to_string().as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// Appends an entry inside the caller's transaction.
pub fn append(
    conn: &Connection,
    actor: &str,
    action: &str,
    subject: &str,
    commit: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let last: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
    };
    let at = jiff::Timestamp::now().as_second();
    let detail = detail.to_string();
    let hash = Hashed {
        seq,
        at,
        actor,
        action,
        subject,
        commit,
        detail: &detail,
        prev_hash: &prev,
    }
    .hash();
    conn.prepare_cached(
        "INSERT INTO audit (seq, at, actor, action, subject, commit_id, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        seq, at, actor, action, subject, commit, detail, prev, hash
    ])?;
    Ok(())
}

fn read_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let at: i64 = row.get(1)?;
    Ok(AuditEntry {
        seq: row.get(0)?,
        at: jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        actor: row.get(2)?,
        action: row.get(3)?,
        subject: row.get(4)?,
        commit: row.get(5)?,
        detail: row.get(6)?,
        prev_hash: row.get(7)?,
        hash: row.get(8)?,
    })
}

const COLUMNS: &str = "seq, at, actor, action, subject, commit_id, detail, prev_hash, hash";

/// The newest `limit` entries, newest first.
pub fn latest(conn: &Connection, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], read_entry)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A verified entry of the chain: its number and hash. The entries up to it fit the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPoint {
    pub seq: i64,
    pub hash: String,
}

/// Where a walk in steps stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The walk reached the end, or a broken entry.
    Done(Verified),
    /// Every entry up to this point fits; the walk goes on from here.
    More(ChainPoint),
}

/// Walks the whole chain in order.
pub fn verify_audit(conn: &Connection) -> Result<Verified, StoreError> {
    match verify_from(conn, None, usize::MAX)? {
        Step::Done(verified) => Ok(verified),
        // Unreachable with no limit; the point is the end of the chain.
        Step::More(point) => Ok(Verified::Intact {
            entries: u64::try_from(point.seq).unwrap_or(0),
            last_hash: point.hash,
        }),
    }
}

/// Checks at most `limit` entries after `from` (from the first entry when `None`), in order.
/// `from` must be a point an earlier walk verified: it is checked to still carry the hash it
/// had then (a chain rewritten with fresh hashes from an older entry on changes it), and the
/// entries before it are not read again.
pub fn verify_from(
    conn: &Connection,
    from: Option<&ChainPoint>,
    limit: usize,
) -> Result<Step, StoreError> {
    let (mut expected_seq, mut prev) = match from {
        // The end of an empty chain is its start.
        None => (1, GENESIS.to_owned()),
        Some(point) if point.seq == 0 => (1, GENESIS.to_owned()),
        Some(point) => {
            if let Some(broken) = check_point(conn, point)? {
                return Ok(Step::Done(broken));
            }
            (point.seq + 1, point.hash.clone())
        }
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![
        expected_seq,
        i64::try_from(limit).unwrap_or(i64::MAX)
    ])?;
    let mut walked = 0;
    while let Some(row) = rows.next()? {
        // `at` is read raw: a value that is not a time is itself a sign of tampering.
        let seq: i64 = row.get(0)?;
        let at: i64 = row.get(1)?;
        let entry = read_entry(row)?;
        if let Some(broken) = check_entry(expected_seq, &prev, seq, at, &entry) {
            return Ok(Step::Done(broken));
        }
        prev = entry.hash;
        expected_seq += 1;
        walked += 1;
    }

    let end = ChainPoint {
        seq: expected_seq - 1,
        hash: prev,
    };
    if walked == limit {
        return Ok(Step::More(end));
    }
    Ok(Step::Done(Verified::Intact {
        entries: u64::try_from(end.seq).unwrap_or(0),
        last_hash: end.hash,
    }))
}

/// Whether the entry at `point` still carries the hash it was verified with.
fn check_point(conn: &Connection, point: &ChainPoint) -> Result<Option<Verified>, StoreError> {
    let hash: Option<String> = conn
        .prepare_cached("SELECT hash FROM audit WHERE seq = ?1")?
        .query_row([point.seq], |row| row.get(0))
        .optional()?;
    let reason = match hash {
        Some(hash) if hash == point.hash => return Ok(None),
        Some(_) => format!(
            "entry {} no longer carries the hash it had when this server verified it: the \
             chain up to it was rewritten",
            point.seq
        ),
        None => format!(
            "entry {} is missing, though this server verified it earlier: entries were removed",
            point.seq
        ),
    };
    Ok(Some(Verified::Broken {
        seq: point.seq,
        reason,
    }))
}

/// Checks one entry against the one before it; `Some` names what does not fit.
fn check_entry(
    expected_seq: i64,
    prev: &str,
    seq: i64,
    at: i64,
    entry: &AuditEntry,
) -> Option<Verified> {
    let describe = |reason: &str| Verified::Broken {
        seq,
        reason: format!(
            "entry {seq} ({} {} {}): {reason}",
            entry.at, entry.action, entry.subject
        ),
    };
    if seq != expected_seq {
        return Some(Verified::Broken {
            seq: expected_seq,
            reason: format!(
                "entry {expected_seq} is missing (the next entry is {seq}): entries were removed"
            ),
        });
    }
    if entry.prev_hash != prev {
        return Some(describe(
            "its previous-hash does not match the entry before it: an entry before it was \
             changed, removed or inserted",
        ));
    }
    let hash = Hashed {
        seq,
        at,
        actor: &entry.actor,
        action: &entry.action,
        subject: &entry.subject,
        commit: entry.commit.as_deref(),
        detail: &entry.detail,
        prev_hash: &entry.prev_hash,
    }
    .hash();
    if hash != entry.hash {
        return Some(describe(
            "its hash does not match its contents: the entry was changed after it was written",
        ));
    }
    None
}
