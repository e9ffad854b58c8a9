//! Writes a large synthetic config repository, for the validate and plan benchmarks in
//! docs/performance.md.
//!
//! Run: `cargo run --release -p restic-manager --example gen_fleet -- DIR [HOSTS] [POLICIES]
//! [--variant] [--recipient=age1…]`. Hosts get one of 100 `role` labels; policies select a
//! role each, so every host runs `POLICIES / 100` policies. `--variant` writes the "after"
//! revision of a change: every tenth policy keeps fewer daily snapshots and drops a path, and
//! the last host is gone. `--recipient` seals the repositories' passwords to that recipient
//! (a server's), instead of to a throwaway one, so a server can open them.

use std::fmt::Write as _;
use std::path::Path;

const ROLES: usize = 100;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let variant = args.iter().any(|a| a == "--variant");
    let recipient = args
        .iter()
        .find_map(|a| a.strip_prefix("--recipient="))
        .map(|r| reconciler::secrets::parse_recipient(r).expect("a valid age recipient"));
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(dir) = positional.first() else {
        #[allow(clippy::print_stderr, reason = "a usage message for a developer tool")]
        {
            eprintln!("usage: gen_fleet DIR [HOSTS] [POLICIES] [--variant]");
        }
        std::process::exit(2);
    };
    let hosts: usize = positional
        .get(1)
        .map_or(Ok(10_000), |n| n.parse())
        .unwrap_or(10_000);
    let policies: usize = positional
        .get(2)
        .map_or(Ok(500), |n| n.parse())
        .unwrap_or(500);
    let dir = Path::new(dir.as_str());

    // The variant keeps the repositories as they are: sealing again would produce new
    // ciphertext and show up in the plan as a changed password.
    let kinds: &[&str] = if variant {
        &["hosts", "policies"]
    } else {
        &["hosts", "policies", "repositories", "notifications"]
    };
    for kind in kinds {
        let path = dir.join(kind);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
    }

    let armor = sealed("benchmark password", recipient);
    for r in (0..4).filter(|_| !variant) {
        let text = format!(
            "url = \"/srv/restic/repo-{r}\"\npassword = {{ sealed = \"\"\"\n{armor}\"\"\" }}\n"
        );
        std::fs::write(dir.join(format!("repositories/repo-{r}.toml")), text)?;
    }

    let host_count = if variant { hosts - 1 } else { hosts };
    for h in 0..host_count {
        let zone = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"][h % 4];
        let text = format!(
            "hostname = \"host-{h:05}.example.net\"\nlabels = {{ role = \"r{:03}\", dc = \
             \"dc{}\" }}\ntimezone = \"{zone}\"\n",
            h % ROLES,
            h % 3
        );
        std::fs::write(dir.join(format!("hosts/host-{h:05}.toml")), text)?;
    }

    for p in 0..policies {
        let changed = variant && p % 10 == 0;
        let mut text = String::new();
        let _ = writeln!(text, "description = \"synthetic policy {p}\"");
        let _ = writeln!(
            text,
            "hosts = {{ labels = {{ role = \"r{:03}\" }} }}",
            p % ROLES
        );
        let _ = writeln!(text, "repository = \"repo-{}\"", p % 4);
        if changed {
            let _ = writeln!(text, "paths = [\"/srv/p{p}/data\"]");
        } else {
            let _ = writeln!(text, "paths = [\"/srv/p{p}/data\", \"/srv/p{p}/conf\"]");
        }
        let _ = writeln!(text, "exclude = [\"*.tmp\", \"/srv/p{p}/data/cache\"]");
        let _ = writeln!(text, "tags = [\"synthetic\"]");
        let _ = writeln!(
            text,
            "schedule = {{ cron = \"{} {} * * *\", jitter = \"15m\" }}",
            p % 60,
            p % 24
        );
        let daily = if changed { 7 } else { 14 };
        let _ = writeln!(
            text,
            "retention = {{ keep-daily = {daily}, keep-weekly = 8 }}"
        );
        let _ = writeln!(text, "prune = {{ cron = \"0 4 * * 0\" }}");
        let _ = writeln!(
            text,
            "check = {{ cron = \"0 5 1 * *\", read-data-subset = \"5%\" }}"
        );
        std::fs::write(dir.join(format!("policies/policy-{p:03}.toml")), text)?;
    }

    std::fs::write(
        dir.join("notifications/ops.toml"),
        "ntfy = { url = \"https://ntfy.example.net/backups\" }\n",
    )?;
    Ok(())
}

fn sealed(plaintext: &str, recipient: Option<age::x25519::Recipient>) -> String {
    let recipient = recipient.unwrap_or_else(|| age::x25519::Identity::generate().to_public());
    reconciler::secrets::seal(&[recipient], plaintext.as_bytes()).expect("sealing works")
}
