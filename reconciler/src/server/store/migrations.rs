//! The schema, as numbered steps. Step N takes a database from `user_version` N-1 to N; each
//! runs in its own transaction together with the version bump, so a crash mid-migration
//! leaves the previous version intact. Steps are never edited once released: a change to the
//! schema is a new step at the end.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// The schema version this build writes: one per step.
#[allow(
    clippy::cast_possible_wrap,
    reason = "a handful of steps, far from i64::MAX"
)]
pub const LATEST: i64 = STEPS.len() as i64;

/// Step `i` (0-based) migrates from version `i` to `i + 1`.
const STEPS: &[&str] = &[
    // 1: revisions, hosts, sessions, assignments, schedule state, jobs and the audit log.
    r"
    CREATE TABLE revisions (
        attempt      INTEGER PRIMARY KEY AUTOINCREMENT,
        commit_id    TEXT NOT NULL,
        author       TEXT NOT NULL,
        summary      TEXT NOT NULL,
        committed_at INTEGER,
        seen_at      INTEGER NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('applied', 'invalid')),
        errors       TEXT
    );
    CREATE INDEX revisions_by_commit ON revisions (commit_id);

    CREATE TABLE hosts (
        name      TEXT PRIMARY KEY,
        paused    INTEGER NOT NULL DEFAULT 0,
        agent_key TEXT,
        added_at  INTEGER NOT NULL
    );

    CREATE TABLE agent_sessions (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        host            TEXT NOT NULL,
        remote          TEXT NOT NULL,
        agent_version   TEXT NOT NULL,
        restic_version  TEXT,
        connected_at    INTEGER NOT NULL,
        disconnected_at INTEGER
    );
    CREATE INDEX agent_sessions_by_host ON agent_sessions (host, connected_at);

    CREATE TABLE assignments (
        host           TEXT NOT NULL,
        policy         TEXT NOT NULL,
        kind           TEXT NOT NULL,
        repository     TEXT NOT NULL,
        schedule       TEXT NOT NULL,
        content_digest TEXT NOT NULL,
        PRIMARY KEY (host, policy, kind)
    );

    CREATE TABLE repositories (
        name     TEXT PRIMARY KEY,
        added_at INTEGER NOT NULL
    );

    CREATE TABLE schedule_state (
        host         TEXT NOT NULL,
        policy       TEXT NOT NULL,
        kind         TEXT NOT NULL,
        last_instant INTEGER,
        next_instant INTEGER,
        last_job_id  TEXT,
        PRIMARY KEY (host, policy, kind)
    );

    CREATE TABLE jobs (
        id                TEXT PRIMARY KEY,
        host              TEXT NOT NULL,
        policy            TEXT NOT NULL,
        kind              TEXT NOT NULL,
        repository        TEXT NOT NULL,
        state             TEXT NOT NULL,
        reason            TEXT,
        instant           INTEGER,
        catch_up          INTEGER NOT NULL DEFAULT 0,
        run_after         INTEGER NOT NULL,
        deadline          INTEGER NOT NULL,
        max_duration_secs INTEGER NOT NULL,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL,
        dispatched_at     INTEGER,
        started_at        INTEGER,
        finished_at       INTEGER,
        outcome           TEXT,
        exit_code         INTEGER,
        message           TEXT,
        summary           TEXT,
        unreadable        TEXT,
        stderr_tail       TEXT,
        log_tail          TEXT,
        lost              INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_state ON jobs (state);
    CREATE INDEX jobs_by_assignment ON jobs (host, policy, kind, created_at);

    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        subject   TEXT NOT NULL,
        commit_id TEXT,
        detail    TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    );
    CREATE INDEX audit_by_commit ON audit (commit_id);
    CREATE TRIGGER audit_is_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_is_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    ",
    // 2: agents waiting for enrolment, snapshot inventories, and which host has initialised
    // which repository.
    r"
    CREATE TABLE pending_keys (
        host       TEXT NOT NULL,
        key        TEXT NOT NULL,
        remote     TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (host, key)
    );

    CREATE TABLE snapshot_inventory (
        host         TEXT NOT NULL,
        policy       TEXT NOT NULL,
        repository   TEXT NOT NULL,
        snapshots    TEXT NOT NULL,
        count        INTEGER NOT NULL,
        latest       TEXT,
        refreshed_at INTEGER NOT NULL,
        PRIMARY KEY (host, policy, repository)
    );

    CREATE TABLE repository_init (
        host           TEXT NOT NULL,
        repository     TEXT NOT NULL,
        initialized_at INTEGER NOT NULL,
        job_id         TEXT NOT NULL,
        PRIMARY KEY (host, repository)
    );
    ",
    // 3: each repository's location, so a moved repository is noticed and initialised again,
    // and since when it is there, so an init that failed at the old location no longer counts.
    r"
    ALTER TABLE repositories ADD COLUMN location TEXT;
    ALTER TABLE repositories ADD COLUMN located_at INTEGER;
    ",
];

/// Brings the database to `target`, one step per transaction.
pub fn migrate(conn: &mut Connection, path: &Path, target: i64) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported: LATEST,
        });
    }
    if found == 0 && has_foreign_tables(conn)? {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            reason: "it holds tables restic-manager did not create".to_owned(),
        });
    }
    for version in found..target {
        let step = usize::try_from(version).unwrap_or(usize::MAX);
        let Some(sql) = STEPS.get(step) else { break };
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = version + 1, "state database migrated");
    }
    Ok(())
}

/// Whether a database at version 0 already holds tables: someone else's file.
fn has_foreign_tables(conn: &Connection) -> Result<bool, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |row| row.get(0),
    )?;
    Ok(count > 0)
}

/// Opens `path` migrated only up to `version`: for tests of upgrades from older schemas.
#[cfg(test)]
pub fn open_at_version(path: &Path, version: i64) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    migrate(&mut conn, path, version)?;
    Ok(conn)
}
