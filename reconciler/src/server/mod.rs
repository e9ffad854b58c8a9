//! `restic-manager serve`: the reconciler. It follows the config repository, keeps its state
//! in `SQLite`, turns the applied revision into schedules, and dispatches jobs to agents.

pub mod jobspec;
pub mod model;
pub mod settings;
