//! Sealed values: the server's age identity, sealing secrets for it, and opening them.

use crate::config::model::Sealed;

/// The first line of age ASCII armor.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// Normalises armor as written in TOML (indented multi-line strings are common) and checks
/// that it holds a well-formed age header. Does not need the identity.
pub fn check_sealed(text: &str) -> Result<Sealed, String> {
    let normalized: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    if !normalized.starts_with(ARMOR_BEGIN) {
        return Err(format!("it does not start with `{ARMOR_BEGIN}`"));
    }
    let reader = age::armor::ArmoredReader::new(normalized.as_bytes());
    age::Decryptor::new(reader).map_err(|e| e.to_string())?;
    Ok(Sealed(normalized))
}

/// Opens every sealed value of a load with the identity in `identity_file`, adding an error
/// for each that does not open and a warning for each whose secret has surrounding
/// whitespace.
pub fn check_openable(
    _identity_file: &std::path::Path,
    _loaded: &mut crate::config::Loaded,
) -> anyhow::Result<()> {
    anyhow::bail!("--identity is not implemented yet")
}
