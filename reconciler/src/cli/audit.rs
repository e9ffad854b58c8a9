//! `restic-manager audit`: read the server's audit log, and check its hash chain.
//!
//! Both open the state database read-only, so they are safe beside a running server.

use std::path::PathBuf;

use super::{Format, print_out, report_error};
use crate::server::settings::DEFAULT_DATA_DIR;
use crate::server::store::{Store, Verified};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check the audit log's hash chain; name the first entry that does not fit.
    Verify(Target),
    /// Print the newest entries of the audit log, newest first.
    Log(LogArgs),
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The server's data directory. [default: ./data]
    #[arg(long, env = "RM_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct LogArgs {
    #[command(flatten)]
    target: Target,
    /// How many entries.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

impl Target {
    fn open(&self) -> Result<Store, u8> {
        let dir = self
            .data_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Store::open_read_only(&dir).map_err(|e| {
            report_error(&anyhow::Error::new(e));
            2
        })
    }
}

/// Runs `audit`: verify exits 0 intact, 1 broken, 2 when the log cannot be read.
pub fn run(args: &Args) -> u8 {
    match &args.command {
        Command::Verify(target) => verify(target),
        Command::Log(log) => show(log),
    }
}

fn verify(target: &Target) -> u8 {
    let store = match target.open() {
        Ok(store) => store,
        Err(code) => return code,
    };
    match store.verify_audit() {
        Ok(Verified::Intact { entries, last_hash }) => {
            print_out(&format!(
                "audit log intact: {entries} entries in {}, last hash {last_hash}\n",
                store.path().display()
            ));
            0
        }
        Ok(Verified::Broken { reason, .. }) => {
            print_out(&format!(
                "audit log BROKEN in {}: {reason}\nEvery entry from there on is unverified; \
                 compare with a backup of the data directory to see what changed.\n",
                store.path().display()
            ));
            1
        }
        Err(e) => {
            report_error(&anyhow::Error::new(e).context("cannot read the audit log"));
            2
        }
    }
}

fn show(args: &LogArgs) -> u8 {
    let store = match args.target.open() {
        Ok(store) => store,
        Err(code) => return code,
    };
    let entries = match store.audit_entries(args.limit) {
        Ok(entries) => entries,
        Err(e) => {
            report_error(&anyhow::Error::new(e).context("cannot read the audit log"));
            return 2;
        }
    };
    match args.format {
        Format::Json => {
            let list: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "seq": e.seq,
                        "at": e.at.to_string(),
                        "actor": e.actor,
                        "action": e.action,
                        "subject": e.subject,
                        "commit": e.commit,
                        "detail": serde_json::from_str::<serde_json::Value>(&e.detail)
                            .unwrap_or(serde_json::Value::String(e.detail.clone())),
                        "hash": e.hash,
                    })
                })
                .collect();
            print_out(&format!("{:#}\n", serde_json::Value::Array(list)));
        }
        Format::Text => {
            let mut text = String::new();
            for e in &entries {
                let commit = e.commit.as_deref().map_or(String::new(), |c| {
                    format!(" [{}]", c.get(..12).unwrap_or(c))
                });
                text.push_str(&format!(
                    "{:>6}  {}  {:<9} {:<20} {}{commit}  {}\n",
                    e.seq,
                    e.at,
                    e.actor,
                    e.action,
                    crate::config::diag::printable(&e.subject),
                    crate::config::diag::printable(&e.detail)
                ));
            }
            print_out(&text);
        }
    }
    0
}
