//! `restic-manager keygen` and `restic-manager seal`: the server identity and sealed values.

/// Flags of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {}

/// Flags of `seal`.
#[derive(Debug, clap::Args)]
pub struct SealArgs {}

/// Runs `keygen`.
pub fn keygen(_args: &KeygenArgs) -> u8 {
    2
}

/// Runs `seal`.
pub fn seal(_args: &SealArgs) -> u8 {
    2
}
