//! The restic-manager agent: dials out to the server, proves its key, and runs the jobs the
//! server sends for its host.
//!
//! [`settings`] reads the flags, environment and local file; [`key`] holds the agent's
//! identity; [`state`] and [`ledger`] keep results and job ids on disk; [`jobs`] decides what
//! runs and delivers results; [`connection`] speaks the protocol, after [`challenge`] has
//! checked what the server asks it to sign; [`service`] starts and stops it all. What actually
//! runs a job is an [`executor::Executor`]: in the agent, [`runner`], which owns every
//! restic invocation.

pub mod backoff;
pub mod challenge;
pub mod connection;
pub mod executor;
pub mod jobs;
pub mod key;
pub mod ledger;
pub mod runner;
pub mod service;
pub mod settings;
pub mod state;
pub mod tls;
