//! The parts of `restic-manager serve` that follow the config repository: fetching the branch
//! from a local or remote git repository ([`source`]), noticing commits to a local repository
//! and spacing polls ([`watch`]), and checking the signatures of `POST /hooks/git` ([`webhook`]).

pub mod source;
pub mod watch;
pub mod webhook;

#[cfg(test)]
mod testutil;
