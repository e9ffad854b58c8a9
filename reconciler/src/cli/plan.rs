//! `restic-manager plan`: describe what a change between two revisions does to the fleet.

/// Flags of `plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `plan`.
pub fn run(_args: &Args) -> u8 {
    2
}
