//! The one place the test binaries find the restic binaries they run (included by the agent's
//! `runner.rs` and `it/`, and by the workspace's end-to-end tests in `tests/cli`).

use std::path::{Path, PathBuf};

/// The restic binaries to test against: `RM_TEST_RESTIC_BINARIES` (colon-separated) when
/// set, else `restic` on PATH plus `<workspace>/target/tools/restic-0.18/usr/bin/restic`.
pub fn restic_binaries() -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Some(list) = std::env::var_os("RM_TEST_RESTIC_BINARIES") {
        found.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
    } else {
        if let Some(path) = std::env::var_os("PATH")
            && let Some(restic) = std::env::split_paths(&path)
                .map(|dir| dir.join("restic"))
                .find(|p| p.is_file())
        {
            found.push(restic);
        }
        let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tools/restic-0.18/usr/bin/restic");
        if tools.is_file() {
            found.push(tools);
        }
    }
    assert!(
        !found.is_empty(),
        "no restic binary found for the tests: install restic 0.14 or newer (Debian: \
         `apt-get install restic`), run `.ci/install-restic-0.18` for restic 0.18, or set \
         RM_TEST_RESTIC_BINARIES to a colon-separated list of restic binaries"
    );
    found
}
