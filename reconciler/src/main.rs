//! The `restic-manager` binary: parses flags and hands over to [`reconciler::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    reconciler::cli::main()
}
