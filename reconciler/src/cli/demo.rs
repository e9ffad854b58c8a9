//! `restic-manager demo`: flags, then the demo itself ([`crate::demo`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::demo::{Cycle, Options, report::Report};

/// Flags of `demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the working area in DIR (a new or empty directory, or an earlier demo's to start
    /// it again). [default: a temporary directory, removed when the demo stops]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Address and port the demo's server listens on; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Stop after the first backup, forget and check, with exit code 1 if any of them failed.
    #[arg(long)]
    pub once: bool,
    /// The restic binary the demo's agent runs.
    #[arg(long, env = "RM_RESTIC", value_name = "PATH", default_value = "restic")]
    pub restic: PathBuf,
}

/// Runs the demo: 0 when the first cycle succeeded, 1 when a job of it failed, 2 when the
/// demo could not run.
pub fn run(args: Args) -> u8 {
    let options = Options {
        dir: args.dir.filter(|d| !d.as_os_str().is_empty()),
        listen: args.listen,
        once: args.once,
        restic: args.restic,
    };
    let Some(runtime) = super::runtime() else {
        return 2;
    };
    let mut out = Report::new();
    match runtime.block_on(crate::demo::run(options, &mut out)) {
        Ok(Cycle::AllSucceeded) => 0,
        Ok(Cycle::SomethingFailed) => 1,
        Err(e) => {
            super::report_error(&e);
            2
        }
    }
}
