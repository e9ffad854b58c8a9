//! restic-manager's server side: the config repository model and the tools built on it
//! (`validate`, `show`, `plan`, `seal`, `keygen`), the server that follows the repository and
//! dispatches jobs to agents ([`server`]), and the one-command demo ([`demo`]).
//!
//! The binary in `main.rs` only parses flags and calls into [`cli`]; everything it does is a
//! library function here so tests and the server share one implementation.

pub mod cli;
pub mod config;
pub mod demo;
pub mod git;
pub mod plan;
pub mod schema;
pub mod secrets;
pub mod server;
