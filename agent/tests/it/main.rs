//! The agent's integration tests: one test binary. Each module drives the agent (in-process,
//! or the real binary where the binary's own behaviour is under test) against a WebSocket
//! server on loopback that speaks the real protocol.

mod faults;
mod handshake;
mod jobs;
mod keys;
#[path = "../shared/restic.rs"]
mod restic;
mod settings;
mod startup;
mod support;
mod tls;
