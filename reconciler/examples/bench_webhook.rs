//! Measures commit → stored assignment through the webhook, end to end: a real `serve`
//! process follows a bare repository; each round commits a schedule change, pushes it, sends
//! a signed `POST /hooks/git`, and polls the state database until the new schedule of one
//! assignment is stored. Prints the latency percentiles from the webhook request to the stored
//! row. For docs/performance.md.
//!
//! Run (from the top of the source tree, after `cargo build --release -p restic-manager`):
//! `cargo run --release -p restic-manager --example bench_webhook -- target/release/restic-manager
//! CONFIG_DIR POLICY HOST ROUNDS`, where `CONFIG_DIR` is a config repository whose sealed values
//! open with `examples/demo-identity.txt` (the example repository, or one made by `gen_fleet
//! --recipient=<the demo recipient>`), POLICY a policy file stem in it and HOST a host it applies
//! to.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hmac::Mac as _;

const SECRET: &str = "bench-webhook-secret";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bin, config, policy, host, rounds] = args.as_slice() else {
        report("usage: bench_webhook RESTIC_MANAGER CONFIG_DIR POLICY HOST ROUNDS");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("ROUNDS is a number");
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    copy_tree(Path::new(config), &work);
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "fleet"]);
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8"),
            "remote.git",
        ],
    );
    let remote = dir.path().join("remote.git");
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().expect("utf-8")],
    );
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let identity = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-identity.txt");
    let mut server = Command::new(bin)
        .args(["serve", "--listen", &addr, "--poll-interval", "1h"])
        .arg("--repository")
        .arg(format!("file://{}", remote.display()))
        .arg("--data-dir")
        .arg(&data)
        .arg("--identity")
        .arg(&identity)
        .arg("--webhook-secret-file")
        .arg(&secret)
        .env("RUST_LOG", "info,reconciler::server::follow=debug")
        .stdout(Stdio::null())
        .stderr(server_log())
        .spawn()
        .expect("serve starts");

    let started = Instant::now();
    let kind = "backup";
    wait(Duration::from_mins(2), || {
        schedule(&data, host, policy, kind).is_some()
    });
    report(&format!(
        "first revision applied after {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let policy_file = work.join(format!("policies/{policy}.toml"));
    let original = std::fs::read_to_string(&policy_file).expect("policy file");
    let line = original
        .lines()
        .find(|l| l.starts_with("schedule = "))
        .expect("the policy has a one-line schedule")
        .to_owned();
    let mut latencies = Vec::new();
    for round in 0..rounds {
        let cron = format!("{} {} * * *", round % 60, 1 + round / 60 % 20);
        let text = original.replace(&line, &format!("schedule = {{ cron = \"{cron}\" }}"));
        std::fs::write(&policy_file, text).expect("write policy");
        git(&work, &["commit", "-q", "-am", &format!("round {round}")]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);

        let sent = Instant::now();
        post_hook(&addr);
        let needle = format!("`{cron}`");
        wait(Duration::from_secs(30), || {
            schedule(&data, host, policy, kind).is_some_and(|s| s.contains(&needle))
        });
        latencies.push(sent.elapsed());
    }
    let _ = server.kill();
    let _ = server.wait();

    latencies.sort();
    // The nearest rank: the smallest latency at or above the share `percent` of all.
    let pick = |percent: usize| latencies[(percent * (latencies.len() - 1)).div_ceil(100)];
    report(&format!(
        "{rounds} rounds: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pick(50).as_secs_f64() * 1000.0,
        pick(90).as_secs_f64() * 1000.0,
        pick(99).as_secs_f64() * 1000.0,
        latencies.last().expect("rounds > 0").as_secs_f64() * 1000.0
    ));
}

/// The server's log goes to the file named by `BENCH_SERVER_LOG`, if set: its "revision
/// applied" lines carry the time spent validating and in total.
fn server_log() -> Stdio {
    match std::env::var_os("BENCH_SERVER_LOG") {
        Some(path) => std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    }
}

fn schedule(data: &Path, host: &str, policy: &str, kind: &str) -> Option<String> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(
        "SELECT schedule FROM assignments WHERE host = ?1 AND policy = ?2 AND kind = ?3",
        [host, policy, kind],
        |row| row.get(0),
    )
    .ok()
}

fn wait(timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn post_hook(addr: &str) {
    let body = "{\"ref\":\"refs/heads/main\"}";
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let request = format!(
        "POST /hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         X-Hub-Signature-256: {signature}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            if entry.file_name() != ".git" {
                copy_tree(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[allow(clippy::print_stdout, reason = "a benchmark's report")]
fn report(line: &str) {
    println!("{line}");
}
