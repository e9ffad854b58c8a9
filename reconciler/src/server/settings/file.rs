//! The settings file: its keys as written, and reading it so that every unknown key is
//! reported at once with its line and column, and every value keeps its place for the errors
//! found later.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;

use super::{SettingsError, line_col};

/// The settings file as written. Every key is optional; unknown keys are errors. Values that
/// are checked later keep their place in the file, so an error can point at it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SettingsFile {
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    pub data_dir: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub git: Option<GitFile>,
    pub view: Option<ViewFile>,
}

/// The `[git]` table of the settings file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GitFile {
    /// A local path or an `https://` / `ssh://` URL.
    #[schemars(with = "Option<String>")]
    pub repository: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub branch: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub poll_interval: Option<Spanned<String>>,
    pub webhook_secret_file: Option<PathBuf>,
}

/// The `[view]` table of the settings file: who may read the status view, the JSON API and
/// `/metrics`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ViewFile {
    /// Client networks (CIDRs, or single addresses) allowed to read the view.
    #[schemars(with = "Option<Vec<String>>")]
    pub allow: Option<Vec<Spanned<String>>>,
    /// A file holding the bearer token every view request must carry.
    pub token_file: Option<PathBuf>,
}

/// Parses the settings file, reporting every unknown key at once (with line and column, in
/// file order) before any other problem.
pub(super) fn parse_file(path: &Path, text: &str) -> Result<SettingsFile, SettingsError> {
    let parse_error = |e: &toml::de::Error| {
        let (message, help) = crate::config::load::explain_toml_error(e.message().trim_end());
        SettingsError::Parse {
            path: path.to_owned(),
            at: e
                .span()
                .map_or_else(|| "somewhere".to_owned(), |span| line_col(text, span.start)),
            message: match help {
                Some(help) => format!("{message}; {help}"),
                None => message,
            },
        }
    };
    let doc = toml::de::DeTable::parse(text).map_err(|e| parse_error(&e))?;

    let schema = file_schema();
    let mut problems: Vec<(usize, String)> =
        crate::config::keys::unknown_keys(doc.get_ref(), schema)
            .into_iter()
            .map(|key| {
                let valid = key.valid.join(", ");
                let help = match crate::config::load::suggest(
                    &key.key,
                    key.valid.iter().map(String::as_str),
                ) {
                    Some(best) => format!("did you mean `{best}`? valid keys here: {valid}"),
                    None => format!("valid keys here: {valid}"),
                };
                let at = line_col(text, key.span.start);
                (
                    key.span.start,
                    format!("  {at}: unknown key `{}`; {help}", key.key),
                )
            })
            .collect();
    problems.sort_by_key(|(at, _)| *at);
    if !problems.is_empty() {
        return Err(SettingsError::UnknownKeys {
            path: path.to_owned(),
            keys: problems.into_iter().map(|(_, text)| text).collect(),
        });
    }
    if let Some(error) = table_expected(path, text, doc.get_ref()) {
        return Err(error);
    }

    SettingsFile::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| parse_error(&e))
}

/// `[git]` and `[view]` must be tables; serde would say `expected struct GitFile`.
fn table_expected(path: &Path, text: &str, doc: &toml::de::DeTable<'_>) -> Option<SettingsError> {
    use toml::de::DeValue;

    for (key, value) in doc {
        let name: &str = key.get_ref();
        let keys = match name {
            "git" => "repository, branch, poll-interval and webhook-secret-file",
            "view" => "allow and token-file",
            _ => continue,
        };
        let found = match value.get_ref() {
            DeValue::Table(_) => continue,
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a number",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date",
            DeValue::Array(_) => "an array",
        };
        return Some(SettingsError::Parse {
            path: path.to_owned(),
            at: line_col(text, key.span().start),
            message: format!(
                "`{name}` must be a table, not {found}: write a [{name}] section with any of \
                 {keys}"
            ),
        });
    }
    None
}

/// The settings file's JSON Schema, generated once: the same walk that finds every unknown
/// key of a config file finds them here.
fn file_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(crate::schema::schema_of::<SettingsFile>)
}
