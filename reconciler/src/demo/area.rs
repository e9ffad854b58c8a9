//! The demo's working area: a config repository made from the shipped example, the server's
//! identity, a sample directory to back up, and the places the server, the agent and restic
//! keep their state.
//!
//! ```text
//! DIR/config/              the config repository (git): the example, adapted, this host enrolled
//! DIR/server/              the server's data directory: state.db and identity.txt
//! DIR/agent/               the agent's key, its settings file and its state directory
//! DIR/restic-repo/         the local restic repository the backups go to
//! DIR/restic-password.txt  its password (0600), so `restic snapshots` can be run by hand
//! DIR/sample/              the files backed up
//! ```
//!
//! The config repository gets three commits, so `git log` tells the story: the example fleet
//! as shipped, the changes that make it run on this machine, and the commit that enrols this
//! machine's agent (the step an operator takes for every new host).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The example config repository, compiled in so the demo works from an installed binary.
pub const EXAMPLE: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../examples/config-repo/README.md"),
    ),
    (
        "hosts/db-1.toml",
        include_str!("../../../examples/config-repo/hosts/db-1.toml"),
    ),
    (
        "hosts/web-1.toml",
        include_str!("../../../examples/config-repo/hosts/web-1.toml"),
    ),
    (
        "hosts/web-2.toml",
        include_str!("../../../examples/config-repo/hosts/web-2.toml"),
    ),
    (
        "notifications/ops.toml",
        include_str!("../../../examples/config-repo/notifications/ops.toml"),
    ),
    (
        "policies/postgres.toml",
        include_str!("../../../examples/config-repo/policies/postgres.toml"),
    ),
    (
        "policies/system.toml",
        include_str!("../../../examples/config-repo/policies/system.toml"),
    ),
    (
        "policies/web.toml",
        include_str!("../../../examples/config-repo/policies/web.toml"),
    ),
    (
        "repositories/local.toml",
        include_str!("../../../examples/config-repo/repositories/local.toml"),
    ),
    (
        "repositories/offsite.toml",
        include_str!("../../../examples/config-repo/repositories/offsite.toml"),
    ),
];

/// The policy the demo runs: the example's base-system policy, pointed at the sample.
pub const POLICY: &str = "system";

/// The repository it backs up to.
pub const REPOSITORY: &str = "local";

/// A marker that says a directory holds a demo's working area, so `--dir` can reuse one.
const MARKER: &str = "restic-manager-demo.txt";

/// Where everything of one demo lives.
#[derive(Debug, Clone)]
pub struct Area {
    pub root: PathBuf,
    pub host: String,
}

impl Area {
    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    #[must_use]
    pub fn server(&self) -> PathBuf {
        self.root.join("server")
    }
    #[must_use]
    pub fn identity(&self) -> PathBuf {
        self.server().join("identity.txt")
    }
    #[must_use]
    pub fn agent(&self) -> PathBuf {
        self.root.join("agent")
    }
    #[must_use]
    pub fn agent_key(&self) -> PathBuf {
        self.agent().join("agent.key")
    }
    #[must_use]
    pub fn agent_settings(&self) -> PathBuf {
        self.agent().join("agent.toml")
    }
    #[must_use]
    pub fn restic_repo(&self) -> PathBuf {
        self.root.join("restic-repo")
    }
    #[must_use]
    pub fn password_file(&self) -> PathBuf {
        self.root.join("restic-password.txt")
    }
    #[must_use]
    pub fn sample(&self) -> PathBuf {
        self.root.join("sample")
    }

    /// Whether the area was set up by an earlier run (with `--dir`).
    #[must_use]
    pub fn exists(&self) -> bool {
        self.root.join(MARKER).is_file()
    }
}

/// Checks that `root` can hold a new demo or holds an earlier one.
pub fn check_root(root: &Path) -> anyhow::Result<()> {
    if root.join(MARKER).is_file() {
        return Ok(());
    }
    if root.exists() {
        if !root.is_dir() {
            bail!(
                "{} is not a directory; pass --dir a new or empty directory",
                root.display()
            );
        }
        let mut entries =
            std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty and holds no earlier demo; pass --dir a new or empty directory \
                 (the demo writes a config repository, a restic repository and state there)",
                root.display()
            );
        }
    }
    Ok(())
}

/// The name this machine gets in the demo's config repository: its short host name made
/// into a valid object name, or `this-host`.
#[must_use]
pub fn host_name(system: Option<&str>) -> String {
    let mut name: String = system
        .unwrap_or_default()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_owned();
    name.truncate(40);
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() || crate::config::load::check_name(&name).is_err() {
        "this-host".to_owned()
    } else {
        name
    }
}

/// Writes the sample directory: a few text files, some nested, a 2 MiB binary file that does
/// not compress, and a `.tmp` file the example's excludes leave out.
pub fn write_sample(dir: &Path) -> anyhow::Result<()> {
    let write = |path: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&full, bytes).with_context(|| format!("cannot write {}", full.display()))
    };
    write(
        "README.txt",
        b"Sample files for the restic-manager demo. The demo backs up this directory with the\n\
          example's `system` policy; scratch.tmp is left out by its excludes.\n",
    )?;
    for i in 1..=20 {
        write(
            &format!("notes/note-{i:02}.txt"),
            format!("Note {i}: backups that are never restored are hopes, not backups.\n")
                .repeat(i)
                .as_bytes(),
        )?;
    }
    write("etc/app.conf", b"listen = 127.0.0.1:9000\nworkers = 4\n")?;
    write(
        "scratch.tmp",
        b"temporary: excluded by the policy's `*.tmp`\n",
    )?;
    // A simple generator is enough to make bytes restic cannot deduplicate or compress.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut data = Vec::with_capacity(2 << 20);
    while data.len() < 2 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    write("data/random.bin", &data)?;
    Ok(())
}

/// Runs git in `dir` with the demo's own committer, so the user's git configuration (signing,
/// hooks) plays no part.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=restic-manager demo",
            "-c",
            "user.email=demo@restic-manager.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run git: the demo keeps its config repository in git; install git")?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn write_file(root: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let full = root.join(path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&full, text).with_context(|| format!("cannot write {}", full.display()))
}

/// A TOML string literal of `text`, escaped.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The example's system policy with its paths replaced by the sample directory.
pub fn demo_policy(sample: &Path) -> anyhow::Result<String> {
    let example = EXAMPLE
        .iter()
        .find(|(path, _)| *path == "policies/system.toml")
        .map(|(_, text)| *text)
        .context("the example has no policies/system.toml")?;
    let paths_line = example
        .lines()
        .find(|line| line.starts_with("paths = "))
        .context("the example's system policy has no `paths = ` line")?;
    let sample = sample
        .to_str()
        .context("the demo directory's path is not UTF-8")?;
    Ok(example.replace(
        paths_line,
        &format!(
            "# The demo backs up its sample directory instead of /etc, /root and /home.\n\
             paths = [{}]",
            toml_string(sample)
        ),
    ))
}

/// Creates the config repository: the example as shipped, then the demo's adaptation (this
/// host only, the sample directory, a local repository sealed to `recipient`), then the
/// commit that enrols the agent key `agent_key`.
pub fn create_config_repo(
    area: &Area,
    recipient: &crate::secrets::Recipient,
    password: &str,
    agent_key: &str,
) -> anyhow::Result<()> {
    let repo = area.config();
    std::fs::create_dir_all(&repo).with_context(|| format!("cannot create {}", repo.display()))?;
    git(&repo, &["init", "-q"])?;
    for (path, text) in EXAMPLE {
        write_file(&repo, path, text)?;
    }
    git(&repo, &["add", "-A"])?;
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-m",
            "The example fleet, as shipped in examples/config-repo",
        ],
    )?;

    // This machine only: the example's hosts, its off-site repository and its chat webhook
    // are sealed to the public demo identity and point at machines that do not exist here.
    for path in [
        "hosts/db-1.toml",
        "hosts/web-1.toml",
        "hosts/web-2.toml",
        "notifications/ops.toml",
        "policies/postgres.toml",
        "policies/web.toml",
        "repositories/offsite.toml",
    ] {
        std::fs::remove_file(repo.join(path))
            .with_context(|| format!("cannot remove {path} from the demo's config repository"))?;
    }
    let sealed = crate::secrets::seal(std::slice::from_ref(recipient), password.as_bytes())?;
    let restic_repo = area.restic_repo();
    let restic_repo = restic_repo
        .to_str()
        .context("the demo directory's path is not UTF-8")?;
    write_file(
        &repo,
        "repositories/local.toml",
        &format!(
            "#:schema ../../../schema/repository.schema.json\n\
             # The demo's restic repository, in its working area.\n\
             description = \"Local repository of the restic-manager demo\"\n\
             url = {}\npassword = {{ sealed = \"\"\"\n{sealed}\"\"\" }}\n",
            toml_string(restic_repo)
        ),
    )?;
    write_file(&repo, "policies/system.toml", &demo_policy(&area.sample())?)?;
    let zone = jiff::tz::TimeZone::system()
        .iana_name()
        .filter(|name| crate::config::model::TimeZoneName::parse(name).is_ok())
        .map_or(String::new(), |name| {
            format!("timezone = {}\n", toml_string(name))
        });
    let host_file = format!("hosts/{}.toml", area.host);
    write_file(
        &repo,
        &host_file,
        &format!(
            "#:schema ../../../schema/host.schema.json\n\
             description = \"This machine, running the restic-manager demo\"\n\
             labels = {{ role = \"demo\" }}\n{zone}"
        ),
    )?;
    git(&repo, &["add", "-A"])?;
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-m",
            "demo: run the system policy on this machine, on a sample directory",
        ],
    )?;

    // Enrolling a host is a reviewed commit of its agent's public key.
    let text = std::fs::read_to_string(repo.join(&host_file))
        .with_context(|| format!("cannot read {host_file}"))?;
    write_file(
        &repo,
        &host_file,
        &format!("{text}agent-key = \"{agent_key}\"\n"),
    )?;
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-am",
            &format!("Enrol {}'s agent", area.host),
        ],
    )?;

    std::fs::write(
        area.root.join(MARKER),
        "This directory holds a restic-manager demo. Run `restic-manager demo --dir` on it again \
         to start it again.\n",
    )
    .context("cannot write the demo's marker file")?;
    Ok(())
}

/// Writes the agent's settings file: this host, the demo's server, and local limits that
/// allow reading the sample directory only and no hooks.
pub fn write_agent_settings(area: &Area, server: &str, restic: &Path) -> anyhow::Result<()> {
    let path = |p: &Path| -> anyhow::Result<String> {
        Ok(toml_string(
            p.to_str()
                .context("the demo directory's path is not UTF-8")?,
        ))
    };
    let text = format!(
        "# The demo's agent. Limits: it backs up the sample directory only and runs no hooks,\n\
         # whatever the server asks.\n\
         server = {}\nkey = {}\nstate-dir = {}\nhost = {}\nrestic = {}\n\
         allow-hooks = false\nallowed-paths = [{}]\n",
        toml_string(server),
        path(&area.agent_key())?,
        path(&area.agent().join("state"))?,
        toml_string(&area.host),
        path(restic)?,
        path(&area.sample())?,
    );
    std::fs::write(area.agent_settings(), text)
        .with_context(|| format!("cannot write {}", area.agent_settings().display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_example_is_the_shipped_example() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config-repo");
        let mut on_disk = Vec::new();
        for kind in ["hosts", "notifications", "policies", "repositories"] {
            for entry in std::fs::read_dir(root.join(kind)).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                on_disk.push(format!("{kind}/{name}"));
            }
        }
        on_disk.push("README.md".to_owned());
        on_disk.sort();
        let mut embedded: Vec<String> = EXAMPLE.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "embed every file of examples/config-repo in EXAMPLE"
        );
        for (path, text) in EXAMPLE {
            assert_eq!(&std::fs::read_to_string(root.join(path)).unwrap(), text);
        }
    }

    #[test]
    fn host_names_are_made_valid() {
        assert_eq!(host_name(Some("Web_01.example.net")), "web-01-example-net");
        assert_eq!(host_name(Some("--")), "this-host");
        assert_eq!(host_name(None), "this-host");
        assert_eq!(host_name(Some("ubuntu")), "ubuntu");
    }

    #[test]
    fn the_demo_policy_backs_up_the_sample_and_keeps_the_rest() {
        let text = demo_policy(Path::new("/tmp/a \"quoted\" dir/sample")).unwrap();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["paths"].as_array().unwrap()[0].as_str(),
            Some("/tmp/a \"quoted\" dir/sample")
        );
        assert!(text.contains("retention = "), "{text}");
        assert!(!text.contains("\"/etc\""), "{text}");
    }
}
