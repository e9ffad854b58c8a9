//! `restic-manager serve`: the reconciler. It follows the config repository ([`source`],
//! [`watch`], [`webhook`]), keeps its state in `SQLite`, turns the applied revision into
//! schedules, and dispatches jobs ([`jobspec`]) to agents.

pub mod jobspec;
pub mod model;
pub mod settings;
pub mod source;
pub mod watch;
pub mod webhook;

#[cfg(test)]
mod testutil;
