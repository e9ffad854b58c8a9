//! The pages in a real headless Chromium, driven over `WebDriver` by fantoccini.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Fleet, MARKUP, failure_message, try_get};
use crate::serve::{free_port, wait_for};

/// Finds a program on PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(chromedriver: &Path) -> Driver {
    let port = free_port();
    let child = std::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let ready = wait_for(Duration::from_secs(20), || {
        let reply = try_get(&format!("127.0.0.1:{port}"), "/status", None)?;
        (reply.status == 200 && reply.body.contains("\"ready\":true")).then_some(())
    });
    assert!(ready.is_some(), "chromedriver did not become ready");
    driver
}

#[test]
fn a_browser_shows_the_overview_and_a_host_and_follows_a_link_to_a_failed_job() {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        panic!(
            "this test needs Chromium and its WebDriver: install the Debian packages \
             `chromium` and `chromium-driver` (apt-get install chromium chromium-driver)"
        );
    };
    let fleet = Fleet::start();
    let base = format!("http://{}", fleet.addr());
    let driver = start_driver(&chromedriver);
    let profile = tempfile::tempdir().expect("profile dir");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = tokio::time::timeout(
            Duration::from_mins(1),
            fantoccini::ClientBuilder::new(
                hyper_util::client::legacy::connect::HttpConnector::new(),
            )
            .capabilities(capabilities)
            .connect(&driver.url),
        )
        .await
        .expect("the browser starts within a minute")
        .expect("a WebDriver session");

        let result = browse(&client, &base).await;
        let _ = client.close().await;
        result.unwrap_or_else(|e| panic!("{e}\n{}", fleet.server.log()));
    });
}

/// The visible text of the page's body.
async fn body_text(client: &fantoccini::Client) -> Result<String, fantoccini::error::CmdError> {
    client
        .find(fantoccini::Locator::Css("body"))
        .await?
        .text()
        .await
}

async fn browse(client: &fantoccini::Client, base: &str) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");

    // The overview: the revision, the failed backup in words, the host described in markup
    // that shows as text, and the pending agent with its line to commit.
    client
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| fail("opening the overview", &e))?;
    let text = body_text(client)
        .await
        .map_err(|e| fail("reading the overview", &e))?;
    for expected in [
        "Backups of the fleet",
        "Revision in force:",
        "Needs attention",
        "the last backup of web-1/files failed",
        &format!("{MARKUP} front"),
        "Agents waiting for enrolment",
    ] {
        if !text.contains(expected) {
            return Err(format!("the overview does not show {expected:?}:\n{text}"));
        }
    }
    if client.get_alert_text().await.is_ok() {
        return Err("a script ran: an alert is open".to_owned());
    }

    // The host page.
    client
        .goto(&format!("{base}/hosts/web-1"))
        .await
        .map_err(|e| fail("opening the host page", &e))?;
    let text = body_text(client)
        .await
        .map_err(|e| fail("reading the host page", &e))?;
    for expected in [
        "Host web-1",
        "Backups",
        "Schedules",
        "Recent jobs",
        "Snapshots",
    ] {
        if !text.contains(expected) {
            return Err(format!("the host page does not show {expected:?}:\n{text}"));
        }
    }

    // From the overview, the failed cell links to its job.
    client
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| fail("opening the overview again", &e))?;
    let link = client
        .find(fantoccini::Locator::Css("table.matrix td.state-failed a"))
        .await
        .map_err(|e| fail("finding the failed backup's link", &e))?;
    link.click()
        .await
        .map_err(|e| fail("clicking the failed backup's link", &e))?;
    let url = client
        .current_url()
        .await
        .map_err(|e| fail("reading the URL", &e))?;
    if !url.path().starts_with("/jobs/web-1.files.backup.") {
        return Err(format!("the link led to {url}"));
    }
    let text = body_text(client)
        .await
        .map_err(|e| fail("reading the job page", &e))?;
    let headline = format!("The backup of web-1/files failed: {}", failure_message());
    if !text.contains(&headline) || !text.contains("restic exit code") {
        return Err(format!("the job page does not say {headline:?}:\n{text}"));
    }
    if client.get_alert_text().await.is_ok() {
        return Err("a script ran on the job page".to_owned());
    }
    Ok(())
}
