//! The messages the restic-manager server and its agents exchange over their WebSocket.
//!
//! NOTE: nothing is defined here yet. The protocol is written together with the agent; until
//! then this crate only holds the workspace's place for it (see docs/src/limitations.md).
