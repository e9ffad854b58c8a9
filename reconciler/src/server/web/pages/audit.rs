//! The audit page's context: the chain's check, then the newest entries.

use serde::Serialize;

use super::short;
use crate::server::store::{AuditCheck, AuditEntry, Verified};
use crate::server::web::facts::page_time;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct VerifyView {
    class: &'static str,
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct EntryRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    commit: Option<String>,
    commit_short: Option<String>,
    detail: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct AuditPage {
    title: &'static str,
    generated_at: String,
    verify: VerifyView,
    count: usize,
    limit: usize,
    entries: Vec<EntryRow>,
}

pub(super) fn context(entries: &[AuditEntry], check: &AuditCheck, limit: usize) -> AuditPage {
    let verify = match &check.verified {
        Verified::Intact { entries, last_hash } => {
            // Said as it is: entries older than the last check are not read again per visit.
            let since = check.walked_at.map_or_else(String::new, |at| {
                format!(
                    " This server walked the whole chain on {}; each visit since checks the \
                     entries added after the last check and that the last one checked is \
                     unchanged. Run `restic-manager audit verify` to walk it all again.",
                    page_time(at)
                )
            });
            VerifyView {
                class: "ok",
                text: format!(
                    "The audit log is intact: all {entries} entries fit the hash chain (last \
                     hash {}).{since}",
                    last_hash.get(..16).unwrap_or(last_hash)
                ),
            }
        }
        Verified::Broken { seq, reason } => VerifyView {
            class: "failed",
            text: format!(
                "The audit log is broken at entry {seq}: {reason}. Someone with write access \
                 to the state database changed it; compare with a backup of the data \
                 directory."
            ),
        },
    };
    AuditPage {
        title: "Audit log",
        generated_at: page_time(jiff::Timestamp::now()),
        verify,
        count: entries.len(),
        limit,
        entries: entries
            .iter()
            .map(|e| EntryRow {
                seq: e.seq,
                at: page_time(e.at),
                actor: e.actor.clone(),
                action: e.action.clone(),
                subject: e.subject.clone(),
                commit: e.commit.clone(),
                commit_short: e.commit.as_deref().map(short),
                detail: e.detail.clone(),
            })
            .collect(),
    }
}
