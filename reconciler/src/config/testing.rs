//! Test support: config repositories built in memory.

use super::source::{ConfigFile, ConfigFiles};
use super::{Config, Loaded, load};

/// Age armor of `plaintext` for a throwaway recipient.
#[must_use]
pub fn sealed(plaintext: &str) -> String {
    let recipient = age::x25519::Identity::generate().to_public();
    crate::secrets::seal(&[recipient], plaintext.as_bytes()).expect("sealing works")
}

/// A repository file with a sealed password, the same armor every time so that two loads
/// of one file compare equal.
pub fn repository(url: &str) -> String {
    static ARMOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let armor = ARMOR.get_or_init(|| sealed("pw"));
    format!("url = \"{url}\"\npassword = {{ sealed = \"\"\"\n{armor}\"\"\" }}\n")
}

/// Loads files given as `(path, content)`.
#[must_use]
pub fn load_files(files: &[(&str, &str)]) -> Loaded {
    let files = ConfigFiles {
        files: files
            .iter()
            .map(|(path, content)| ConfigFile {
                path: (*path).to_owned(),
                content: Ok(content.as_bytes().to_vec()),
            })
            .collect(),
        dirs_found: 3,
        ..ConfigFiles::default()
    };
    load(&files)
}

/// Loads files that must be valid.
#[must_use]
pub fn config(files: &[(&str, &str)]) -> Config {
    let loaded = load_files(files);
    match loaded.config {
        Some(config) => config,
        None => panic!(
            "invalid test config:\n{}",
            loaded.diagnostics.render_text(false)
        ),
    }
}

/// The example config repository shipped in `examples/config-repo`, with the demo identity
/// that opens its sealed values.
#[must_use]
pub fn example_config_with_identity() -> (Config, crate::secrets::Identity) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let files = super::source::read_dir(&root.join("config-repo")).expect("examples readable");
    let loaded = load(&files);
    let Some(config) = loaded.config else {
        panic!(
            "examples/config-repo is invalid:\n{}",
            loaded.diagnostics.render_text(false)
        );
    };
    let identity = crate::secrets::load_identity(&root.join("demo-identity.txt"))
        .expect("examples/demo-identity.txt loads");
    (config, identity)
}
