//! The restic-manager agent: dials out to the server and runs restic on its host.
//!
//! NOTE: not built yet. The binary only says so; see docs/src/limitations.md.

pub mod runner;
