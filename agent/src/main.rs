//! The `restic-manager-agent` binary. It does not do anything yet, and says so rather than
//! exiting silently as if it had worked.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(
        clippy::print_stderr,
        reason = "the only thing this binary does is explain itself"
    )]
    {
        eprintln!(
            "restic-manager-agent: the agent is not built yet; only the config tools of \
             `restic-manager` work today (see docs/src/limitations.md)"
        );
    }
    ExitCode::from(2)
}
