//! Command-line entry: flag parsing with clap and dispatch to one module per subcommand.
//!
//! Exit codes are part of the interface: validate exits 0 valid, 1 invalid, 2 usage or I/O
//! error; plan exits 0 no change, 1 changes, 2 error, 3 risky change with `--fail-on-risky`.

mod audit;
mod demo;
mod keys;
mod plan;
mod serve;
mod show;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// `GitOps` control plane for restic backups.
#[derive(Debug, Parser)]
#[command(name = "restic-manager", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config repository (a directory, or a git revision) and report every problem.
    Validate(validate::Args),
    /// Show what each host will run: policies, schedules, retention and repositories.
    Show(show::Args),
    /// Describe what a change between two git revisions does to the fleet, flagging risks.
    Plan(plan::Args),
    /// Create the server's age identity and print its recipient.
    Keygen(keys::KeygenArgs),
    /// Seal a secret read from stdin for use in a config file.
    Seal(keys::SealArgs),
    /// Run the server: follow the config repository, schedule jobs, serve the agents.
    Serve(serve::Args),
    /// Read the server's audit log, or check its hash chain (`audit verify`).
    Audit(audit::Args),
    /// Run a server, an agent for this machine and a real restic backup, all on this machine.
    Demo(demo::Args),
}

/// Output format of the reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Parses the command line, runs the subcommand and returns its exit code.
#[must_use]
pub fn main() -> ExitCode {
    // The matches are kept: `serve` names the environment variable, not the flag, in an
    // error about a value that came from the environment.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)))
        .map_err(|e| e.format(&mut Cli::command()));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The server reports its state changes; the one-shot commands only their warnings.
    init_tracing(if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    });
    let code = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Show(args) => show::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Keygen(args) => keys::keygen(&args),
        Command::Seal(args) => keys::seal(&args),
        Command::Serve(args) => serve::run(args, matches.subcommand_matches("serve")),
        Command::Audit(args) => audit::run(&args),
        Command::Demo(args) => demo::run(args),
    };
    ExitCode::from(code)
}

/// Crates whose info lines are noise to an operator, quieted to warnings by default: the
/// `notify` crate logs one line for each watch it cannot remove, several per push into a
/// watched bare repository, although nothing is wrong.
const QUIET_BY_DEFAULT: &str = "notify=warn";

/// Logs go to stderr (stdout is for data), filtered by `RUST_LOG`, else at `default` with
/// [`QUIET_BY_DEFAULT`]. A `RUST_LOG` is taken as it is, so `RUST_LOG=notify=debug` still
/// shows those lines.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_color(&std::io::stderr()))
        .init();
}

fn default_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::new(format!("{default},{QUIET_BY_DEFAULT}"))
}

/// The async runtime of the long-running commands; `None` (after saying why) when it cannot
/// start.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            report_error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            None
        }
    }
}

/// Prints an error for the operator on stderr, in one place so the form stays the same: the
/// message, then each cause the message does not already include.
pub(crate) fn report_error(error: &anyhow::Error) {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    print_err(&format!("error: {text}\n"));
}

/// Writes a command's result on stdout: the data, never logs.
#[allow(clippy::print_stdout, reason = "stdout carries the command's result")]
pub(crate) fn print_out(text: &str) {
    print!("{text}");
}

/// Writes diagnostics, hints and warnings for the operator on stderr, beside the logs.
#[allow(clippy::print_stderr, reason = "the CLI's channel for diagnostics")]
pub(crate) fn print_err(text: &str) {
    eprint!("{text}");
}

/// Whether stdout/stderr should get colour: only on a terminal and without `NO_COLOR`.
pub(crate) fn use_color(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
