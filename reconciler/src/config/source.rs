//! Where config files come from: a directory on disk, or a revision of a git repository.
//!
//! Both sources produce the same [`ConfigFiles`]: the `.toml` files found under the four object
//! directories, each with its bytes or the reason it could not be read. The rules that protect
//! the loader live here: files over [`MAX_FILE_BYTES`] are not read, symlinks that leave the
//! repository are refused, and anything that is not a `.toml` file is reported and skipped. A
//! top-level directory that is not one of the four but holds `.toml` files (`hots/`) is
//! reported too: its objects would otherwise go missing without a word.

use std::path::{Component, Path, PathBuf};

/// The directories that hold config objects, one kind each.
pub const KIND_DIRS: [&str; 4] = ["hosts", "policies", "repositories", "notifications"];

/// The largest config file read (1 MiB). Anything bigger is refused unread.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One `.toml` file of a config repository.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Path relative to the repository root with `/` separators, e.g. `hosts/web-1.toml`.
    pub path: String,
    /// The file's bytes, or why they could not be read.
    pub content: Result<Vec<u8>, String>,
}

/// Everything a source found.
#[derive(Debug, Clone, Default)]
pub struct ConfigFiles {
    /// The candidate config files, sorted by path.
    pub files: Vec<ConfigFile>,
    /// Entries that were skipped, with why: `(path, message)`. Reported as warnings.
    pub skipped: Vec<(String, String)>,
    /// Object directories that exist but cannot be read as one, with why: the objects in
    /// them would silently go missing, so these make the revision invalid.
    pub refused: Vec<(String, String)>,
    /// How many of the four object directories exist.
    pub dirs_found: usize,
}

/// A source could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read config directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}")]
    Git(String),
}

/// Reads the config files of a directory.
pub fn read_dir(root: &Path) -> Result<ConfigFiles, SourceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Io { path, source }
    };
    let meta = std::fs::metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory(root.to_owned()));
    }
    let canonical_root = root.canonicalize().map_err(io(root))?;

    let mut found = ConfigFiles::default();
    for kind in KIND_DIRS {
        let dir = root.join(kind);
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if meta.file_type().is_symlink() && !inside(&canonical_root, &dir) {
            found.refused.push((
                kind.to_owned(),
                "is a symlink to a place outside the repository; refused".to_owned(),
            ));
            continue;
        }
        if dir.join(".git").exists() {
            // A checked-out submodule: git reads it as a commit entry, not as files of this
            // repository, so the directory and a revision would disagree.
            found.refused.push((
                kind.to_owned(),
                "is a git submodule, not a directory of this repository".to_owned(),
            ));
            continue;
        }
        if !dir.is_dir() {
            found
                .refused
                .push((kind.to_owned(), "is not a directory".to_owned()));
            continue;
        }
        found.dirs_found += 1;

        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                found.skipped.push((
                    format!("{kind}/{}", entry.file_name().to_string_lossy()),
                    "has a file name that is not UTF-8; skipped".to_owned(),
                ));
                continue;
            };
            let rel = format!("{kind}/{name}");
            if let Some(file) = read_entry(&canonical_root, &entry.path(), &rel, &mut found) {
                found.files.push(file);
            }
        }
    }
    for name in other_dirs_with_toml(root).map_err(io(root))? {
        found.skipped.push((name.clone(), unknown_dir(&name)));
    }
    Ok(found)
}

/// The top-level directories besides the four kinds that hold `.toml` files directly, sorted.
/// Hidden directories, symlinks and checked-out submodules are left out, as git would see no
/// tree of this repository there.
fn other_dirs_with_toml(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir
            || name.starts_with('.')
            || KIND_DIRS.contains(&name.as_str())
            || entry.path().join(".git").exists()
        {
            continue;
        }
        let holds_toml = std::fs::read_dir(entry.path())?.flatten().any(|file| {
            Path::new(&file.file_name())
                .extension()
                .is_some_and(|e| e == "toml")
                && file.file_type().is_ok_and(|t| !t.is_dir())
        });
        if holds_toml {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Why a top-level directory of `.toml` files is not read, with the kind it likely means.
#[must_use]
pub fn unknown_dir(name: &str) -> String {
    let hint = crate::config::load::suggest(name, KIND_DIRS)
        .map_or_else(String::new, |kind| format!("; did you mean `{kind}/`?"));
    format!(
        "holds .toml files but is not one of the object directories (hosts/, policies/, \
         repositories/, notifications/), so none of them is read{hint}"
    )
}

/// Reads one directory entry, or records why it was skipped.
fn read_entry(
    canonical_root: &Path,
    path: &Path,
    rel: &str,
    found: &mut ConfigFiles,
) -> Option<ConfigFile> {
    let Ok(link_meta) = std::fs::symlink_metadata(path) else {
        found
            .skipped
            .push((rel.to_owned(), "vanished while reading; skipped".to_owned()));
        return None;
    };
    let is_toml = Path::new(rel).extension().is_some_and(|e| e == "toml");
    if link_meta.is_dir() {
        found.skipped.push((
            rel.to_owned(),
            "is a directory; config objects are files directly in their kind's directory"
                .to_owned(),
        ));
        return None;
    }
    if !is_toml {
        found
            .skipped
            .push((rel.to_owned(), "is not a .toml file; skipped".to_owned()));
        return None;
    }

    if link_meta.file_type().is_symlink() && !inside(canonical_root, path) {
        // A target that leaves the repository by its own text is refused as such, whether
        // or not it exists; one inside that cannot be resolved is broken.
        let leaves = std::fs::read_link(path)
            .ok()
            .and_then(|target| target.to_str().and_then(|target| resolve_link(rel, target)));
        let why = if leaves.is_some() && path.canonicalize().is_err() {
            "is a symlink to nothing (its target is missing, or the link loops)"
        } else {
            "is a symlink pointing outside the repository; refused"
        };
        return Some(ConfigFile {
            path: rel.to_owned(),
            content: Err(why.to_owned()),
        });
    }
    let content = match std::fs::metadata(path) {
        Err(e) => Err(format!("cannot be read: {e}")),
        Ok(meta) if !meta.is_file() => Err("is not a regular file".to_owned()),
        Ok(meta) if meta.len() > MAX_FILE_BYTES => Err(too_big(meta.len())),
        Ok(_) => std::fs::read(path).map_err(|e| format!("cannot be read: {e}")),
    };
    Some(ConfigFile {
        path: rel.to_owned(),
        content,
    })
}

/// The message for a file over the size limit.
#[must_use]
pub fn too_big(len: u64) -> String {
    format!(
        "is {len} bytes, more than the {MAX_FILE_BYTES} bytes (1 MiB) a config file may have; \
         refused unread"
    )
}

/// Whether `path`, with every symlink resolved, is inside `canonical_root`.
fn inside(canonical_root: &Path, path: &Path) -> bool {
    path.canonicalize()
        .is_ok_and(|p| p.starts_with(canonical_root))
}

/// Resolves a symlink target found at `link` (both relative to the repository root, `/`
/// separated) without touching the disk. `None` when it leaves the repository.
#[must_use]
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_resolution_stays_inside_or_fails() {
        assert_eq!(
            resolve_link("hosts/a.toml", "b.toml").as_deref(),
            Some("hosts/b.toml")
        );
        assert_eq!(
            resolve_link("hosts/a.toml", "../shared/a.toml").as_deref(),
            Some("shared/a.toml")
        );
        assert_eq!(resolve_link("hosts/a.toml", "../../etc/passwd"), None);
        assert_eq!(resolve_link("hosts/a.toml", "/etc/passwd"), None);
    }
}
