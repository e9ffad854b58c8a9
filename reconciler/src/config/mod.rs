//! The config repository: files in, a validated [`model::Config`] and [`diag::Diagnostics`]
//! out.
//!
//! Loading is three steps: a [`source`] lists the files (directory or git revision), [`load`]
//! parses each into the [`raw`] types and validates it into the [`model`] types, then checks
//! the objects against each other. [`effective`] derives what each host runs.

pub mod diag;
pub mod effective;
pub mod keys;
pub mod load;
pub mod model;
mod objects;
pub mod raw;
pub mod retention;
pub mod schedule;
pub mod source;
#[cfg(test)]
pub mod testing;
pub mod url;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use load::{Loaded, load};
pub use model::Config;
