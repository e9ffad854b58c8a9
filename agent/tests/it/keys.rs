//! `keygen` and `pubkey`, and how `run` treats a bad key, through the real binary.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::{Workspace, spawn_run};

async fn output(args: &[&str]) -> (Option<i32>, String, String) {
    crate::support::run_to_end(args, &[]).await
}

#[tokio::test]
async fn keygen_writes_a_private_key_and_prints_the_line_to_commit() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("new").join("agent.key");
    let key_text = key.to_str().unwrap();

    let (code, stdout, stderr) = output(&["keygen", "--key", key_text, "--host", "web-7"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let line = stdout.trim();
    let public = line
        .strip_prefix("agent-key = \"")
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("unexpected stdout: {stdout}"));
    protocol::parse_public_key(public).expect("a valid public key");
    assert!(stderr.contains("hosts/web-7.toml"), "{stderr}");
    assert!(stderr.contains(key_text), "{stderr}");

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(key.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    let (code, again, _) = output(&["pubkey", "--key", key_text]).await;
    assert_eq!(code, Some(0));
    assert_eq!(again, stdout, "pubkey prints the same line");
}

#[tokio::test]
async fn keygen_refuses_to_overwrite_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    let key_text = key.to_str().unwrap();
    let (code, _, _) = output(&["keygen", "--key", key_text]).await;
    assert_eq!(code, Some(0));
    let before = std::fs::read(&key).unwrap();

    let (code, stdout, stderr) = output(&["keygen", "--key", key_text]).await;
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{key_text} already exists; refusing to overwrite")),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is unchanged");
}

#[tokio::test]
async fn a_key_others_can_read_is_refused_with_the_fix() {
    let workspace = Workspace::new();
    let key = workspace.path("agent.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();

    let (code, stdout, stderr) = output(&["pubkey", "--key", &key]).await;
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!(
            "the agent key {key} can be read or changed by users other"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("mode 0640"), "{stderr}");
    assert!(stderr.contains(&format!("chmod 600 {key}")), "{stderr}");

    // `run` refuses it the same way, before dialling.
    let mut process = spawn_run(&workspace.run_args("ws://127.0.0.1:9"), &[]);
    assert_eq!(process.wait_exit().await, Some(2));
    process.wait_for_line(&["chmod 600"]).await;
}

#[tokio::test]
async fn a_malformed_key_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_text = key.to_str().unwrap();

    let (code, _, stderr) = output(&["pubkey", "--key", key_text]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!(
            "{key_text} is not a restic-manager agent key: its first line is not \
             `restic-manager-agent-key-v1`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("restic-manager-agent keygen"), "{stderr}");

    let (code, _, stderr) = output(&["pubkey", "--key", "/nonexistent/agent.key"]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("cannot read the agent key /nonexistent/agent.key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn keygen_refuses_a_host_name_that_run_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    let (code, stdout, stderr) = output(&[
        "keygen",
        "--key",
        key.to_str().unwrap(),
        "--host",
        "Bad Host",
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with(
            "error: `host` from --host (or RM_AGENT_HOST): `Bad Host` is not a host name of the \
             config repository"
        ),
        "{stderr}"
    );
    assert!(!key.exists(), "a key was written for a name run refuses");
}

#[tokio::test]
async fn a_directory_given_as_the_key_is_named_as_a_directory() {
    let workspace = Workspace::new();
    let dir = workspace.dir.path().to_str().unwrap().to_owned();

    let (code, stdout, stderr) = output(&["keygen", "--key", &dir]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: {dir} is a directory; --key takes the path of the key file to create, such \
             as {dir}/agent.key"
        )
    );

    let (code, _, stderr) = output(&["pubkey", "--key", &dir]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: the agent key {dir} is a directory, not a key file; pass the path of the key \
             file"
        )),
        "{stderr}"
    );

    let mut args = workspace.run_args("ws://127.0.0.1:9");
    let at = args.iter().position(|a| a == "--key").unwrap();
    args[at + 1].clone_from(&dir);
    let mut process = spawn_run(&args, &[]);
    assert_eq!(process.wait_exit().await, Some(2));
    let line = process
        .wait_for_line(&[&format!(
            "the agent key {dir} is a directory, not a key file"
        )])
        .await;
    assert!(!line.contains("keygen --key"), "{line}");
}
