//! Loading a config repository: every file parsed and validated, every problem reported.
//!
//! The order is fixed: file-level checks (name, size, encoding), TOML parsing into the raw
//! types, per-object validation (in [`super::objects`]), then checks across objects. Nothing
//! stops early: a bad file is reported and left out, and the rest is still checked, so one
//! run shows everything that needs fixing.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::effective::Fleet;
use super::model::{Config, Policy};
use super::objects::{self, Checked};
use super::raw::{RawHost, RawNotification, RawPolicy, RawRepository};
use super::source::{ConfigFiles, KIND_DIRS};

/// The result of loading: a config when there was no error, and every finding either way.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: Option<Config>,
    pub diagnostics: Diagnostics,
    /// Every sealed value met, so callers holding the identity can try to open each one.
    pub sealed: Vec<SealedRef>,
}

/// Where a sealed value sits, for checks that need the server's identity.
#[derive(Debug, Clone)]
pub struct SealedRef {
    pub file: String,
    pub span: Range<usize>,
    /// What the value is, e.g. `password` or `env AWS_SECRET_ACCESS_KEY`.
    pub what: String,
    pub armor: String,
}

/// The longest object name, as for a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Checks an object name (a file stem): `[a-z0-9][a-z0-9-]*`, at most 63 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || !valid_chars || name.starts_with('-') || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}` is not a valid object name: use lowercase letters, digits and `-`, \
             starting with a letter or digit, at most {MAX_NAME_LEN} characters"
        ));
    }
    Ok(())
}

/// Loads and validates everything a source found.
#[must_use]
pub fn load(files: &ConfigFiles) -> Loaded {
    let mut d = Diagnostics::default();
    let mut sealed = Vec::new();

    // Said first, so a lone `hots/` is named beside "this does not look like a config
    // repository".
    for (path, why) in &files.skipped {
        d.warning(path, None, format!("`{path}` {why}"));
    }
    if files.dirs_found == 0 {
        d.global_error(
            "no hosts/, policies/, repositories/ or notifications/ directory found: this does \
             not look like a config repository",
            Some(
                "point at the repository's top directory, or create hosts/, policies/ and \
                 repositories/ with one .toml file per object"
                    .to_owned(),
            ),
        );
        return Loaded {
            config: None,
            diagnostics: d,
            sealed,
        };
    }
    for (path, why) in &files.refused {
        d.error_help(
            path,
            None,
            format!("`{path}/` {why}, so none of its objects can be read"),
            format!("make `{path}` a plain directory inside the repository"),
        );
    }

    // Parse every file into its raw type, remembering the spans for later checks.
    let mut parsed = Parsed::default();
    for file in &files.files {
        let Some((kind, name)) = split_path(&file.path) else {
            continue;
        };
        if let Err(message) = check_name(name) {
            d.error(&file.path, None, message);
            continue;
        }
        let bytes = match &file.content {
            Ok(bytes) => bytes,
            Err(why) => {
                d.error(&file.path, None, format!("`{}` {why}", file.path));
                continue;
            }
        };
        let Some(text) = decode(&mut d, &file.path, bytes) else {
            continue;
        };
        let obj = Obj {
            name: name.to_owned(),
            file: file.path.clone(),
        };
        match kind {
            "hosts" => {
                if let Some(raw) = parse::<RawHost>(&mut d, kind, &file.path, &text) {
                    parsed.hosts.push((obj, raw));
                }
            }
            "repositories" => {
                if let Some(raw) = parse::<RawRepository>(&mut d, kind, &file.path, &text) {
                    parsed.repositories.push((obj, raw));
                }
            }
            "policies" => {
                if let Some(raw) = parse::<RawPolicy>(&mut d, kind, &file.path, &text) {
                    parsed.policies.push((obj, raw));
                }
            }
            "notifications" => {
                if let Some(raw) = parse::<RawNotification>(&mut d, kind, &file.path, &text) {
                    parsed.notifications.push((obj, raw));
                }
            }
            _ => {}
        }
    }

    // Validate each object on its own.
    let mut config = Config::default();
    let mut ok = true;
    let mut cx = objects::Cx {
        d: &mut d,
        sealed: &mut sealed,
    };
    for (obj, raw) in &parsed.hosts {
        match objects::host(&mut cx, &obj.file, &obj.name, raw) {
            Checked::Ok(host) => {
                config.hosts.insert(obj.name.clone(), host);
            }
            Checked::Invalid => ok = false,
        }
    }
    for (obj, raw) in &parsed.repositories {
        match objects::repository(&mut cx, &obj.file, &obj.name, raw) {
            Checked::Ok(repo) => {
                config.repositories.insert(obj.name.clone(), repo);
            }
            Checked::Invalid => ok = false,
        }
    }
    let mut policy_files = BTreeMap::new();
    for (obj, raw) in &parsed.policies {
        match objects::policy(&mut cx, &obj.file, &obj.name, raw) {
            Checked::Ok(policy) => {
                policy_files.insert(obj.name.clone(), (obj.file.clone(), raw));
                config.policies.insert(obj.name.clone(), policy);
            }
            Checked::Invalid => ok = false,
        }
    }
    for (obj, raw) in &parsed.notifications {
        match objects::notification(&mut cx, &obj.file, &obj.name, raw) {
            Checked::Ok(notification) => {
                config.notifications.insert(obj.name.clone(), notification);
            }
            Checked::Invalid => ok = false,
        }
    }

    // Check the objects against each other. An object whose file exists but did not validate
    // still counts as defined, so a typo in it is not also reported as a dangling reference.
    let defined = Defined {
        hosts: names_in(files, "hosts"),
        repositories: names_in(files, "repositories"),
        policies: names_in(files, "policies"),
    };
    cross_check(&mut d, &config, &parsed, &policy_files, &defined);

    d.sort();
    let config = (ok && !d.has_errors()).then_some(config);
    Loaded {
        config,
        diagnostics: d,
        sealed,
    }
}

/// Names of the objects that have a file, valid or not.
struct Defined {
    hosts: std::collections::BTreeSet<String>,
    repositories: std::collections::BTreeSet<String>,
    policies: std::collections::BTreeSet<String>,
}

fn names_in(files: &ConfigFiles, kind: &str) -> std::collections::BTreeSet<String> {
    files
        .files
        .iter()
        .filter_map(|f| split_path(&f.path))
        .filter(|(k, _)| *k == kind)
        .map(|(_, name)| name.to_owned())
        .collect()
}

/// A parsed file's identity.
struct Obj {
    name: String,
    file: String,
}

/// Every file that parsed, by kind.
#[derive(Default)]
struct Parsed {
    hosts: Vec<(Obj, RawHost)>,
    repositories: Vec<(Obj, RawRepository)>,
    policies: Vec<(Obj, RawPolicy)>,
    notifications: Vec<(Obj, RawNotification)>,
}

/// `hosts/web-1.toml` → `("hosts", "web-1")`; `None` for anything else.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (kind, file) = path.split_once('/')?;
    if !KIND_DIRS.contains(&kind) {
        return None;
    }
    Some((kind, file.strip_suffix(".toml")?))
}

/// Decodes a file as UTF-8, or reports where it stops being UTF-8.
fn decode(d: &mut Diagnostics, path: &str, bytes: &[u8]) -> Option<Arc<str>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let text: Arc<str> = Arc::from(text);
            d.add_source(path, text.clone());
            Some(text)
        }
        Err(e) => {
            let at = e.valid_up_to();
            d.add_source(path, Arc::from(String::from_utf8_lossy(bytes).as_ref()));
            d.error_help(
                path,
                Some(at..at + 1),
                format!("file is not valid UTF-8 (invalid byte at offset {at})"),
                "config files must be UTF-8 text; re-save the file as UTF-8",
            );
            None
        }
    }
}

/// Parses TOML into a raw type, turning serde's messages into the config's vocabulary. Every
/// unknown key of the file is reported, not only the first serde meets.
fn parse<T: DeserializeOwned>(
    d: &mut Diagnostics,
    kind: &str,
    path: &str,
    text: &str,
) -> Option<T> {
    let doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            report_toml_error(d, path, text, &e);
            return None;
        }
    };
    let unknown = crate::schema::schema_value(kind)
        .map(|schema| super::keys::unknown_keys(doc.get_ref(), schema))
        .unwrap_or_default();
    for key in &unknown {
        let valid = key.valid.join(", ");
        let help = match suggest(&key.key, key.valid.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`? valid keys here: {valid}"),
            None if key.valid.is_empty() => "no keys are allowed here".to_owned(),
            None => format!("valid keys here: {valid}"),
        };
        d.error_help(
            path,
            Some(key.span.clone()),
            format!("unknown key `{}`", key.key),
            help,
        );
    }

    match T::deserialize(toml::de::Deserializer::from(doc)) {
        Ok(value) => Some(value),
        // Already reported above, with the others.
        Err(e) if !unknown.is_empty() && e.message().starts_with("unknown field") => None,
        Err(e) => {
            report_toml_error(d, path, text, &e);
            None
        }
    }
}

fn report_toml_error(d: &mut Diagnostics, path: &str, text: &str, error: &toml::de::Error) {
    let (mut message, help) = explain_toml_error(error.message());
    // toml's duplicate-key error points at the key but does not name it.
    if message == "duplicate key"
        && let Some(key) = error.span().and_then(|span| text.get(span))
    {
        message = format!("duplicate key `{}`", key.trim());
    }
    match help {
        Some(help) => d.error_help(path, error.span(), message, help),
        None => d.error(path, error.span(), message),
    }
}

/// Rewrites serde/toml error messages: "field" becomes "key", and an unknown key gets a
/// "did you mean" from the keys that are valid at that place.
#[must_use]
pub fn explain_toml_error(message: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once('`')
    {
        let valid: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let message = format!("unknown key `{key}`");
        let help = match suggest(key, valid.iter().copied()) {
            Some(best) => format!(
                "did you mean `{best}`? valid keys here: {}",
                valid.join(", ")
            ),
            None if valid.is_empty() => "no keys are allowed here".to_owned(),
            None => format!("valid keys here: {}", valid.join(", ")),
        };
        return (message, Some(help));
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.trim_end_matches('`');
        return (format!("missing required key `{key}`"), None);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once('`')
    {
        let expected = expected.trim_start_matches(", expected ");
        return (
            format!("unknown value `{value}`, expected {expected}"),
            None,
        );
    }
    (plain_types(&message.replace("field", "key")), None)
}

/// serde names Rust types in its messages (`expected struct RawSchedule`, `expected u32`);
/// say what they are in TOML instead.
fn plain_types(message: &str) -> String {
    let mut out = message.to_owned();
    // `expected struct RawSchedule` -> `expected a table`.
    if let Some(start) = out.find("expected struct ") {
        let name = start + "expected struct ".len();
        let end = out[name..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(out.len(), |i| name + i);
        out.replace_range(start..end, "expected a table");
    }
    for (rust, toml) in [
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Checks that need more than one object.
fn cross_check(
    d: &mut Diagnostics,
    config: &Config,
    parsed: &Parsed,
    policy_files: &BTreeMap<String, (String, &RawPolicy)>,
    defined: &Defined,
) {
    // Two hosts that restic would record under one name would share retention groups.
    let mut by_hostname: HashMap<&str, &str> = HashMap::new();
    for (name, host) in &config.hosts {
        if let Some(first) = by_hostname.insert(&host.hostname, name) {
            let file = format!("hosts/{name}.toml");
            let span = parsed
                .hosts
                .iter()
                .find(|(o, _)| &o.name == name)
                .and_then(|(_, raw)| raw.hostname.as_ref().map(serde_spanned::Spanned::span));
            d.error_help(
                &file,
                span,
                format!(
                    "hostname `{}` is also used by host `{first}`: restic would mix their \
                     snapshots",
                    host.hostname
                ),
                "give each host its own `hostname`",
            );
            by_hostname.insert(&host.hostname, first);
        }
    }

    // An agent key identifies one host: two hosts sharing one would let either agent receive
    // the other's jobs and credentials.
    let mut by_key: HashMap<[u8; 32], &str> = HashMap::new();
    for (name, host) in &config.hosts {
        let Some(key) = host.agent_key else { continue };
        if let Some(first) = by_key.insert(key.0, name) {
            by_key.insert(key.0, first);
            let span = parsed
                .hosts
                .iter()
                .find(|(o, _)| &o.name == name)
                .and_then(|(_, raw)| raw.agent_key.as_ref().map(Spanned::span));
            d.error_help(
                &format!("hosts/{name}.toml"),
                span,
                format!("agent-key is also the key of host `{first}`"),
                "give each host's agent its own key pair; a key may identify one host only",
            );
        }
    }

    // References from policies, checked on every policy that parsed (even one with other
    // errors) so that a single run shows them all.
    for (obj, raw) in &parsed.policies {
        if !defined.repositories.contains(raw.repository.get_ref()) {
            unknown_ref(
                d,
                &obj.file,
                raw.repository.span(),
                "repository",
                raw.repository.get_ref(),
                defined.repositories.iter(),
            );
        }
    }
    let fleet = Fleet::new(config);
    for (name, (file, raw)) in policy_files {
        let policy = &config.policies[name];
        check_policy_refs(d, config, &fleet, defined, file, raw, policy);
    }
    check_overlapping_paths(d, config, &fleet, policy_files);

    // References from notifications.
    for (obj, raw) in &parsed.notifications {
        for policy in &raw.policies {
            if !defined.policies.contains(policy.get_ref()) {
                unknown_ref(
                    d,
                    &obj.file,
                    policy.span(),
                    "policy",
                    policy.get_ref(),
                    defined.policies.iter(),
                );
            }
        }
        if let (Some(selector), Some(notification)) =
            (&raw.hosts, config.notifications.get(&obj.name))
        {
            if !fleet.selects_any(&notification.hosts) && !config.hosts.is_empty() {
                d.warning(
                    &obj.file,
                    Some(selector.span()),
                    "this selector matches no host",
                );
            }
            warn_missing_names(d, config, defined, &obj.file, &selector.get_ref().names);
        }
    }
}

/// A policy's repository and host references.
fn check_policy_refs(
    d: &mut Diagnostics,
    config: &Config,
    fleet: &Fleet,
    defined: &Defined,
    file: &str,
    raw: &RawPolicy,
    policy: &Policy,
) {
    match config.repositories.get(&policy.repository) {
        Some(repo) if repo.append_only && repo.maintenance.is_none() => {
            // Both jobs delete data, which the everyday credential of an append-only
            // repository cannot do.
            let deleting = [
                ("forget", raw.retention.as_ref().map(Spanned::span)),
                ("prune", raw.prune.as_ref().map(Spanned::span)),
            ];
            for (job, span) in deleting {
                let Some(span) = span else { continue };
                d.error_help(
                    file,
                    Some(span),
                    format!(
                        "repository `{}` is append-only and has no `maintenance` credential, \
                         so {job} could never delete anything",
                        repo.name
                    ),
                    format!(
                        "add a [maintenance] table to repositories/{}.toml, or remove `{}`",
                        repo.name,
                        if job == "forget" {
                            "retention"
                        } else {
                            "prune"
                        }
                    ),
                );
            }
        }
        _ => {}
    }

    warn_missing_names(d, config, defined, file, &raw.hosts.get_ref().names);
    // Hosts whose files have errors are not in the config; a selector matching only those is
    // not empty, just waiting for them to be fixed.
    let all_hosts_valid = defined.hosts.len() == config.hosts.len();
    if all_hosts_valid && !fleet.selects_any(&policy.hosts) {
        d.warning_help(
            file,
            Some(raw.hosts.span()),
            format!(
                "policy `{}` selects no host, so it backs up nothing",
                policy.name
            ),
            "check the host names and labels in `hosts`",
        );
    }
}

/// Two policies backing up the same path of one host into one repository would run two
/// backups of the same data and fight over retention. Only policies that share a
/// (repository, path) pair can collide, so hosts are compared for those alone.
fn check_overlapping_paths(
    d: &mut Diagnostics,
    config: &Config,
    fleet: &Fleet,
    policy_files: &BTreeMap<String, (String, &RawPolicy)>,
) {
    let mut by_target: BTreeMap<(&str, &str), Vec<(&Policy, usize)>> = BTreeMap::new();
    for policy in config.policies.values() {
        for (i, path) in policy.paths.iter().enumerate() {
            by_target
                .entry((policy.repository.as_str(), path.as_str()))
                .or_default()
                .push((policy, i));
        }
    }

    for ((repository, path), users) in by_target.into_iter().filter(|(_, u)| u.len() > 1) {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        for (policy, i) in users {
            let mut clashes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for host in fleet.select(&policy.hosts) {
                match owner.get(host.name.as_str()) {
                    Some(other) => clashes.entry(other).or_default().push(&host.name),
                    None => {
                        owner.insert(&host.name, &policy.name);
                    }
                }
            }
            let Some((file, raw)) = policy_files.get(&policy.name) else {
                continue;
            };
            let span = raw.paths.get_ref().get(i).map(serde_spanned::Spanned::span);
            for (other, hosts) in clashes {
                let whose = match hosts.as_slice() {
                    [one] => format!("host `{one}`"),
                    many => format!("hosts {}", name_list(many)),
                };
                d.error_help(
                    file,
                    span.clone(),
                    format!(
                        "path `{path}` of {whose} is already backed up into repository \
                         `{repository}` by policy `{other}`"
                    ),
                    "back each path of a host up to a repository from one policy only",
                );
            }
        }
    }
}

/// `a`, `b`, `c` and 7 more.
fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
    let mut out = shown.join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

/// Warns about each selector name that is not a host.
fn warn_missing_names(
    d: &mut Diagnostics,
    config: &Config,
    defined: &Defined,
    file: &str,
    names: &[Spanned<String>],
) {
    for name in names {
        if !defined.hosts.contains(name.get_ref()) {
            let help = match suggest(name.get_ref(), config.hosts.keys().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("there is no hosts/{}.toml", name.get_ref()),
            };
            d.warning_help(
                file,
                Some(name.span()),
                format!("host `{}` does not exist", name.get_ref()),
                help,
            );
        }
    }
}

/// Reports a reference to an object that does not exist.
fn unknown_ref<'a>(
    d: &mut Diagnostics,
    file: &str,
    span: Range<usize>,
    kind: &str,
    name: &str,
    known: impl Iterator<Item = &'a String> + Clone,
) {
    let dir = match kind {
        "repository" => "repositories",
        "policy" => "policies",
        _ => "hosts",
    };
    let help = if let Some(best) = suggest(name, known.clone().map(String::as_str)) {
        format!("did you mean `{best}`?")
    } else {
        let names: Vec<&str> = known.map(String::as_str).collect();
        if names.is_empty() {
            format!("there is no {dir}/{name}.toml and no {kind} is defined")
        } else {
            format!("there is no {dir}/{name}.toml; known: {}", names.join(", "))
        }
    };
    d.error_help(file, Some(span), format!("unknown {kind} `{name}`"), help);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_object_rule() {
        assert!(check_name("web-1").is_ok());
        assert!(check_name("0db").is_ok());
        for bad in ["Web-1", "web_1", "-web", "", "..", "a/b", &"a".repeat(64)] {
            assert!(
                check_name(bad)
                    .unwrap_err()
                    .contains("not a valid object name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn rust_type_names_become_toml_words() {
        let (message, _) =
            explain_toml_error("invalid type: string \"x\", expected struct RawSchedule");
        assert_eq!(message, "invalid type: string \"x\", expected a table");
        let (message, _) = explain_toml_error("invalid type: map, expected u32");
        assert_eq!(
            message,
            "invalid type: table, expected a whole number from 0 to 4294967295"
        );
    }

    #[test]
    fn unknown_key_gets_a_suggestion() {
        let (message, help) =
            explain_toml_error("unknown field `crn`, expected one of `cron`, `every`, `jitter`");
        assert_eq!(message, "unknown key `crn`");
        assert_eq!(
            help.unwrap(),
            "did you mean `cron`? valid keys here: cron, every, jitter"
        );
    }
}
