//! End-to-end tests of the `restic-manager` binary: real files, real git repositories, the
//! exit codes and messages a user sees.

mod agent_session;
mod common;
mod docs;
mod fleet;
mod plan;
// The same search for restic binaries as the agent's tests.
#[path = "../../agent/tests/shared/restic.rs"]
mod restic;
mod schema;
mod secrets;
mod serve;
mod serve_start;
mod show;
mod validate;
mod validate_rev;
mod web;
