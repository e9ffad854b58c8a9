//! Per-object validation: one raw host, repository, policy or notification into its model type.
//!
//! Each function reports every problem of its object into the diagnostics and returns
//! [`Checked::Invalid`] if any was an error. Checks that need other objects live in
//! [`super::load`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::load::SealedRef;
use super::model::{
    AgentKey, Check, DEFAULT_FORGET_CRON, DEFAULT_MAX_DURATION, EnvValue, Hooks, Host, Maintenance,
    MissedRun, Notification, NotifyEvent, Policy, Prune, Repository, Sealed, Selector, Target,
    TimeZoneName,
};
use super::raw::{
    RawHooks, RawHost, RawMaintenance, RawNotification, RawPolicy, RawRepository, RawRetention,
    RawSelector, RawUrlTarget, ScheduleKeys, SecretValue,
};
use super::retention::{GroupBy, KeepWithin, Retention};
use super::schedule::{CronExpr, Schedule, Trigger, format_duration, parse_duration};
use super::url::{Backend, RepoUrl};

/// The outcome of validating one object.
pub enum Checked<T> {
    Ok(T),
    Invalid,
}

/// What validation writes into.
pub struct Cx<'a> {
    pub d: &'a mut Diagnostics,
    pub sealed: &'a mut Vec<SealedRef>,
}

/// Tracks whether an object had an error, so the object can be left out.
struct Object<'c, 'a> {
    cx: &'c mut Cx<'a>,
    file: &'c str,
    failed: bool,
}

impl Object<'_, '_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.failed = true;
        self.cx.d.error(self.file, span, message);
    }

    fn error_help(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.failed = true;
        self.cx.d.error_help(self.file, span, message, help);
    }

    fn warning(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.cx.d.warning(self.file, span, message);
    }

    fn warning_help(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.cx.d.warning_help(self.file, span, message, help);
    }

    fn finish<T>(self, value: T) -> Checked<T> {
        if self.failed {
            Checked::Invalid
        } else {
            Checked::Ok(value)
        }
    }

    /// Runs a parser on a spanned string, reporting its error at the span.
    fn parse<T>(
        &mut self,
        value: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(value.get_ref()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(Some(value.span()), message);
                None
            }
        }
    }

    fn timezone(&mut self, value: Option<&Spanned<String>>) -> Option<TimeZoneName> {
        value.and_then(|v| self.parse(v, TimeZoneName::parse))
    }

    fn positive_duration(
        &mut self,
        value: &Spanned<String>,
        what: &str,
    ) -> Option<jiff::SignedDuration> {
        let duration = self.parse(value, parse_duration)?;
        if duration.is_zero() {
            self.error(
                Some(value.span()),
                format!("{what} must be longer than zero"),
            );
            return None;
        }
        Some(duration)
    }

    /// Checks a sealed value's armor and remembers it for identity checks.
    fn sealed(&mut self, span: Range<usize>, what: &str, armor: &str) -> Option<Sealed> {
        match crate::secrets::check_sealed(armor) {
            Ok(sealed) => {
                self.cx.sealed.push(SealedRef {
                    file: self.file.to_owned(),
                    span,
                    what: what.to_owned(),
                    armor: sealed.0.clone(),
                });
                Some(sealed)
            }
            Err(why) => {
                self.error_help(
                    Some(span),
                    format!("{what}: the sealed value is not age armor ({why})"),
                    "produce it with `restic-manager seal` or `age -r RECIPIENT -a`, and paste \
                     the whole armor including the BEGIN and END lines",
                );
                None
            }
        }
    }

    fn selector(&mut self, raw: &Spanned<RawSelector>) -> Selector {
        let selector = raw.get_ref();
        if !selector.all && selector.names.is_empty() && selector.labels.is_empty() {
            self.error_help(
                Some(raw.span()),
                "this host selector is empty",
                "set `names = [...]`, `labels = { ... }` or `all = true`",
            );
        }
        Selector {
            all: selector.all,
            names: selector.names.iter().map(|n| n.get_ref().clone()).collect(),
            labels: selector
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
        }
    }

    fn schedule(
        &mut self,
        span: Range<usize>,
        keys: ScheduleKeys<'_>,
        what: &str,
    ) -> Option<Schedule> {
        let trigger = match (keys.cron, keys.every) {
            (Some(cron), None) => self
                .parse(cron, CronExpr::parse)
                .map(|c| Trigger::Cron(Arc::new(c))),
            (None, Some(every)) => {
                let every = self.positive_duration(every, "`every`")?;
                if every < jiff::SignedDuration::from_mins(1) {
                    self.error(keys.every.map(Spanned::span), "`every` must be at least 1m");
                    return None;
                }
                Some(Trigger::Every(every))
            }
            (Some(_), Some(_)) => {
                self.error(
                    Some(span),
                    format!("{what} has both `cron` and `every`; keep one"),
                );
                None
            }
            (None, None) => {
                self.error_help(
                    Some(span),
                    format!("{what} needs `cron` or `every`"),
                    "e.g. `{ cron = \"0 2 * * *\" }` or `{ every = \"6h\" }`",
                );
                None
            }
        };
        let timezone = self.timezone(keys.timezone);
        let jitter = match keys.jitter {
            Some(j) => self.parse(j, parse_duration)?,
            None => jiff::SignedDuration::ZERO,
        };
        let schedule = Schedule {
            trigger: trigger?,
            timezone,
            jitter,
        };
        if let (Some(span), Some(gap)) = (keys.jitter.map(Spanned::span), schedule.shortest_gap())
            && jitter >= gap
        {
            self.warning(
                Some(span),
                format!(
                    "jitter {} is not shorter than the time between two runs ({}), so runs \
                     can follow each other closely or bunch up",
                    format_duration(jitter),
                    format_duration(gap)
                ),
            );
        }
        Some(schedule)
    }

    /// Environment for a backend: valid names, nothing restic-manager sets itself, secrets
    /// sealed.
    fn env(
        &mut self,
        backend: Backend,
        raw: &BTreeMap<Spanned<String>, Spanned<SecretValue>>,
    ) -> BTreeMap<String, EnvValue> {
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let key = name.get_ref();
            let valid_name = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                self.error(
                    Some(name.span()),
                    format!(
                        "`{key}` is not a valid environment variable name: use A-Z, 0-9 and \
                         `_`, not starting with a digit"
                    ),
                );
                continue;
            }
            if key.starts_with("RESTIC_PASSWORD") || key.starts_with("RESTIC_REPOSITORY") {
                self.error_help(
                    Some(name.span()),
                    format!("`{key}` is set by restic-manager itself"),
                    "set the repository password with `password` and the location with `url`",
                );
                continue;
            }
            let what = format!("env {key}");
            match value.get_ref() {
                SecretValue::Sealed(armor) => {
                    if let Some(sealed) = self.sealed(value.span(), &what, armor) {
                        out.insert(key.clone(), EnvValue::Sealed(sealed));
                    }
                }
                SecretValue::Plain(plain) => {
                    if is_secret_name(backend, key) {
                        self.error_help(
                            Some(value.span()),
                            format!("`{key}` is a secret and must be sealed, not plain text"),
                            "run `restic-manager seal` and paste its `{ sealed = \"...\" }` \
                             here; then rotate this credential, it has been committed",
                        );
                        continue;
                    }
                    if plain.trim() != plain {
                        self.warning(
                            Some(value.span()),
                            format!(
                                "the value of `{key}` has leading or trailing whitespace, which \
                                 restic will use as part of it"
                            ),
                        );
                    }
                    out.insert(key.clone(), EnvValue::Plain(plain.clone()));
                }
            }
        }
        out
    }
}

/// Whether an environment variable carries a secret and so must be sealed.
fn is_secret_name(backend: Backend, name: &str) -> bool {
    if let Some((_, secret)) = backend.credential_env().iter().find(|(n, _)| *n == name) {
        return *secret;
    }
    let identifies =
        name.ends_with("_ID") || name.ends_with("_NAME") || name.ends_with("_USERNAME");
    !identifies
        && ["PASSWORD", "SECRET", "TOKEN", "KEY", "SAS", "CREDENTIAL"]
            .iter()
            .any(|word| name.contains(word))
        && name != "GOOGLE_APPLICATION_CREDENTIALS"
}

fn object<'c, 'a>(cx: &'c mut Cx<'a>, file: &'c str) -> Object<'c, 'a> {
    Object {
        cx,
        file,
        failed: false,
    }
}

/// Validates a host.
pub fn host(cx: &mut Cx<'_>, file: &str, name: &str, raw: &RawHost) -> Checked<Host> {
    let mut o = object(cx, file);

    let hostname = match &raw.hostname {
        Some(h) => {
            let text = h.get_ref();
            if text.is_empty() || text.trim() != text || text.chars().any(char::is_control) {
                o.error(
                    Some(h.span()),
                    "hostname must be non-empty, without surrounding spaces or control characters",
                );
            }
            text.clone()
        }
        None => name.to_owned(),
    };
    let agent_key = if let Some(key) = &raw.agent_key {
        o.parse(key, AgentKey::parse)
    } else {
        o.warning_help(
            None,
            format!("host `{name}` has no agent-key, so its agent cannot connect yet"),
            "commit the public key of the host's agent as `agent-key = \"ed25519:...\"`",
        );
        None
    };
    for (key, value) in &raw.labels {
        if !valid_label(key) {
            // The key has no span of its own; its value sits on the same line.
            o.error(
                Some(value.span()),
                format!(
                    "label name `{key}` is not valid: use letters, digits, `-`, `_`, `.` and \
                     `/`, starting with a letter or digit"
                ),
            );
        }
        if value.get_ref().chars().any(char::is_control) {
            o.error(
                Some(value.span()),
                format!("label `{key}` contains a control character"),
            );
        }
    }
    let timezone = o.timezone(raw.timezone.as_ref());

    let host = Host {
        name: name.to_owned(),
        hostname,
        agent_key,
        labels: raw
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        timezone,
        paused: raw.paused,
        description: raw.description.clone(),
    };
    o.finish(host)
}

fn valid_label(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && key.len() <= 63
}

/// Validates a repository.
pub fn repository(
    cx: &mut Cx<'_>,
    file: &str,
    name: &str,
    raw: &RawRepository,
) -> Checked<Repository> {
    let mut o = object(cx, file);

    let url = parse_url(&mut o, &raw.url);
    let backend = url.as_ref().map_or(Backend::Local, |u| u.backend);
    let password = match raw.password.get_ref() {
        SecretValue::Sealed(armor) => o.sealed(raw.password.span(), "password", armor),
        SecretValue::Plain(_) => {
            o.error_help(
                Some(raw.password.span()),
                "the repository password must be sealed, not plain text",
                "run `restic-manager seal` (it reads the password on stdin) and write \
                 `password = { sealed = \"...\" }`; then change the password, it has been \
                 committed",
            );
            None
        }
    };
    let env = o.env(backend, &raw.env);
    let maintenance = raw
        .maintenance
        .as_ref()
        .map(|m| maintenance(&mut o, backend, m));

    let (Some(url), Some(password)) = (url, password) else {
        return Checked::Invalid;
    };
    let repo = Repository {
        name: name.to_owned(),
        url,
        password,
        env,
        append_only: raw.append_only,
        maintenance,
        description: raw.description.clone(),
    };
    o.finish(repo)
}

fn parse_url(o: &mut Object<'_, '_>, raw: &Spanned<String>) -> Option<RepoUrl> {
    match RepoUrl::parse(raw.get_ref()) {
        Ok(url) => {
            // `show`, `plan` and logs print the url; a token in its query would go with it.
            if url.backend != Backend::Local && url.text.contains('?') {
                o.warning_help(
                    Some(raw.span()),
                    "the url has a query string, and the url is printed by show, plan and logs",
                    "if the query carries a token or key, move it into a sealed `env` value",
                );
            }
            Some(url)
        }
        Err(e) => {
            match e.help {
                Some(help) => o.error_help(Some(raw.span()), e.message, help),
                None => o.error(Some(raw.span()), e.message),
            }
            None
        }
    }
}

fn maintenance(o: &mut Object<'_, '_>, backend: Backend, raw: &RawMaintenance) -> Maintenance {
    let url = raw.url.as_ref().and_then(|u| parse_url(o, u));
    let env_backend = url.as_ref().map_or(backend, |u| u.backend);
    let env = o.env(env_backend, &raw.env);
    if url.is_none() && env.is_empty() && raw.url.is_none() {
        o.warning(
            None,
            "the maintenance credential is empty, so it is the everyday one",
        );
    }
    Maintenance { url, env }
}

/// Validates a policy.
pub fn policy(cx: &mut Cx<'_>, file: &str, name: &str, raw: &RawPolicy) -> Checked<Policy> {
    let mut o = object(cx, file);

    let hosts = o.selector(&raw.hosts);
    let paths = paths(&mut o, &raw.paths);
    let exclude = non_empty_strings(&mut o, &raw.exclude, "exclude pattern");
    let exclude_if_present = non_empty_strings(&mut o, &raw.exclude_if_present, "file name");
    let tags = tags(&mut o, &raw.tags);
    let schedule = o.schedule(
        raw.schedule.span(),
        raw.schedule.get_ref().schedule_keys(),
        "schedule",
    );
    let max_duration = match &raw.max_duration {
        Some(d) => o.positive_duration(d, "max-duration"),
        None => Some(DEFAULT_MAX_DURATION),
    };

    let retention = raw.retention.as_ref().and_then(|r| retention(&mut o, r));
    if raw.retention.is_none() {
        o.warning_help(
            None,
            format!("policy `{name}` has no retention: its snapshots are never forgotten"),
            "add a [retention] table, e.g. `keep-daily = 7`, `keep-weekly = 4`",
        );
    }
    let default_zone = schedule.as_ref().and_then(|s| s.timezone.clone());
    let forget = match (&raw.forget, &raw.retention) {
        (Some(f), Some(_)) => o.schedule(f.span(), f.get_ref().schedule_keys(), "forget"),
        (Some(f), None) => {
            o.error_help(
                Some(f.span()),
                "`forget` is scheduled but there is no retention to apply",
                "add a [retention] table or remove `forget`",
            );
            None
        }
        (None, _) => retention.as_ref().map(|_| Schedule {
            trigger: Trigger::Cron(Arc::new(
                CronExpr::parse(DEFAULT_FORGET_CRON).expect("the default forget cron parses"),
            )),
            timezone: default_zone.clone(),
            jitter: jiff::SignedDuration::ZERO,
        }),
    };
    let prune = raw.prune.as_ref().and_then(|p| {
        let schedule = o.schedule(p.span(), p.get_ref().schedule_keys(), "prune")?;
        let max_unused = p
            .get_ref()
            .max_unused
            .as_ref()
            .and_then(|m| o.parse(m, check_max_unused));
        Some(Prune {
            schedule,
            max_unused,
        })
    });
    let check = raw.check.as_ref().and_then(|c| {
        let schedule = o.schedule(c.span(), c.get_ref().schedule_keys(), "check")?;
        let read_data_subset = c
            .get_ref()
            .read_data_subset
            .as_ref()
            .and_then(|s| o.parse(s, check_subset));
        Some(Check {
            schedule,
            read_data_subset,
        })
    });
    let hooks = raw
        .hooks
        .as_ref()
        .map(|h| hooks(&mut o, h))
        .unwrap_or_default();

    let (Some(schedule), Some(max_duration)) = (schedule, max_duration) else {
        return Checked::Invalid;
    };
    let policy = Policy {
        name: name.to_owned(),
        description: raw.description.clone(),
        hosts,
        repository: raw.repository.get_ref().clone(),
        paths,
        exclude,
        exclude_if_present,
        exclude_caches: raw.exclude_caches,
        tags,
        one_file_system: raw.one_file_system,
        schedule,
        missed_run: raw
            .missed_run
            .as_ref()
            .map_or(MissedRun::RunOnce, |m| *m.get_ref()),
        max_duration,
        partial_is_success: raw.partial_is_success,
        retention,
        forget,
        prune,
        check,
        hooks,
    };
    o.finish(policy)
}

fn paths(o: &mut Object<'_, '_>, raw: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
    if raw.get_ref().is_empty() {
        o.error_help(
            Some(raw.span()),
            "paths is empty: a policy must back up at least one path",
            "list absolute paths, e.g. `paths = [\"/etc\", \"/var/www\"]`",
        );
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for path in raw.get_ref() {
        let text = path.get_ref();
        let problem = if text.is_empty() {
            Some("path is empty".to_owned())
        } else if !text.starts_with('/') {
            Some(format!(
                "path `{text}` is not absolute; paths must start with `/`"
            ))
        } else if text.chars().any(char::is_control) {
            Some(format!(
                "path `{}` contains a control character",
                text.escape_debug()
            ))
        } else if text.split('/').any(|c| c == ".." || c == ".") {
            Some(format!(
                "path `{text}` contains `.` or `..`; write the path it means"
            ))
        } else if text.len() > 1 && (text.ends_with('/') || text.contains("//")) {
            Some(format!(
                "path `{text}` has a trailing or doubled `/`; write it without"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            o.error(Some(path.span()), message);
            continue;
        }
        if text.trim() != text {
            o.warning(
                Some(path.span()),
                format!("path `{text}` begins or ends with a space, which restic keeps"),
            );
        }
        if !seen.insert(text.clone()) {
            o.error(Some(path.span()), format!("path `{text}` is listed twice"));
            continue;
        }
        out.push(text.clone());
    }
    out
}

fn non_empty_strings(o: &mut Object<'_, '_>, raw: &[Spanned<String>], what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in raw {
        if item.get_ref().trim().is_empty() {
            o.error(Some(item.span()), format!("{what} is empty"));
        } else if item.get_ref().chars().any(char::is_control) {
            o.error(
                Some(item.span()),
                format!("{what} contains a control character"),
            );
        } else {
            out.push(item.get_ref().clone());
        }
    }
    out
}

fn tags(o: &mut Object<'_, '_>, raw: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for tag in raw {
        let text = tag.get_ref();
        if text.is_empty()
            || text.contains(',')
            || text.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            o.error(
                Some(tag.span()),
                format!("tag `{text}` is not valid: tags are non-empty, without `,` or spaces"),
            );
        } else if text.starts_with("policy:") {
            o.error_help(
                Some(tag.span()),
                format!("tag `{text}` uses the reserved `policy:` prefix"),
                "restic-manager tags every backup `policy:<name>` itself",
            );
        } else {
            out.push(text.clone());
        }
    }
    out
}

fn retention(o: &mut Object<'_, '_>, raw: &Spanned<RawRetention>) -> Option<Retention> {
    let r = raw.get_ref();
    let errors_before = o.cx.d.errors().count();
    let mut within =
        |v: &Option<Spanned<String>>| v.as_ref().and_then(|v| o.parse(v, KeepWithin::parse));
    let keep_within = within(&r.keep_within);
    let keep_within_hourly = within(&r.keep_within_hourly);
    let keep_within_daily = within(&r.keep_within_daily);
    let keep_within_weekly = within(&r.keep_within_weekly);
    let keep_within_monthly = within(&r.keep_within_monthly);
    let keep_within_yearly = within(&r.keep_within_yearly);
    let keep_tag = tags_plain(o, &r.keep_tag);
    let group_by = match &r.group_by {
        Some(g) => o.parse(g, GroupBy::parse)?,
        None => GroupBy::default(),
    };
    let retention = Retention {
        keep_last: r.keep_last,
        keep_hourly: r.keep_hourly,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
        keep_yearly: r.keep_yearly,
        keep_within,
        keep_within_hourly,
        keep_within_daily,
        keep_within_weekly,
        keep_within_monthly,
        keep_within_yearly,
        keep_tag,
        group_by,
    };
    // A rule that did not parse is missing here; saying the rest keeps nothing would only
    // repeat that error.
    if o.cx.d.errors().count() > errors_before {
        return None;
    }
    if retention.keeps_nothing() {
        o.error_help(
            Some(raw.span()),
            "this retention keeps nothing: forget would delete every snapshot of the policy",
            "set at least one keep-* rule above zero, e.g. `keep-daily = 7`, or remove the \
             retention to keep everything",
        );
        return None;
    }
    Some(retention)
}

fn tags_plain(o: &mut Object<'_, '_>, raw: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for tag in raw {
        let text = tag.get_ref();
        if text.is_empty() || text.contains(',') {
            o.error(
                Some(tag.span()),
                format!("keep-tag `{text}` is not a valid tag"),
            );
        } else {
            out.push(text.clone());
        }
    }
    out
}

/// `--max-unused`: a percentage, a size, or `unlimited`.
fn check_max_unused(text: &str) -> Result<String, String> {
    if text == "unlimited" || is_percent(text).is_some() || is_size(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid max-unused `{text}`: use a percentage (`5%`), a size (`2G`) or `unlimited`"
        ))
    }
}

/// `--read-data-subset`: `n%`, `n/m` or a size.
fn check_subset(text: &str) -> Result<String, String> {
    let invalid = || {
        format!(
            "invalid read-data-subset `{text}`: use a percentage (`5%`), a part (`1/10`) or a \
             size (`2G`)"
        )
    };
    if let Some(p) = is_percent(text) {
        if p <= 0.0 || p > 100.0 {
            return Err(invalid());
        }
        return Ok(text.to_owned());
    }
    if let Some((n, m)) = text.split_once('/') {
        let (Ok(n), Ok(m)) = (n.parse::<u32>(), m.parse::<u32>()) else {
            return Err(invalid());
        };
        if n == 0 || n > m {
            return Err(invalid());
        }
        return Ok(text.to_owned());
    }
    if is_size(text) {
        return Ok(text.to_owned());
    }
    Err(invalid())
}

fn is_percent(text: &str) -> Option<f64> {
    let number = text.strip_suffix('%')?;
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    number.parse().ok()
}

fn is_size(text: &str) -> bool {
    let digits = text.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T']);
    text.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
}

fn hooks(o: &mut Object<'_, '_>, raw: &RawHooks) -> Hooks {
    let mut list = |commands: &[Spanned<Vec<String>>], what: &str| -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for argv in commands {
            let args = argv.get_ref();
            let Some(program) = args.first() else {
                o.error(
                    Some(argv.span()),
                    format!("{what} hook is an empty command"),
                );
                continue;
            };
            if program.is_empty() || args.iter().any(|a| a.contains('\0')) {
                o.error(
                    Some(argv.span()),
                    format!("{what} hook has an empty program name or a NUL byte"),
                );
                continue;
            }
            if args.len() == 1 && program.contains(' ') {
                o.warning_help(
                    Some(argv.span()),
                    format!(
                        "{what} hook `{program}` looks like a shell command line, but hooks \
                         are not run through a shell"
                    ),
                    "split it into an argv array, e.g. [\"pg_dumpall\", \"-f\", \"/var/backups/all.sql\"]",
                );
            }
            out.push(args.clone());
        }
        out
    };
    let before = list(&raw.before, "before");
    let after = list(&raw.after, "after");
    let on_failure = list(&raw.on_failure, "on-failure");
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|t| o.positive_duration(t, "hook timeout"))
        .unwrap_or(super::model::DEFAULT_HOOK_TIMEOUT);
    Hooks {
        before,
        after,
        on_failure,
        timeout,
    }
}

/// Validates a notification.
pub fn notification(
    cx: &mut Cx<'_>,
    file: &str,
    name: &str,
    raw: &RawNotification,
) -> Checked<Notification> {
    let mut o = object(cx, file);

    let events: BTreeSet<NotifyEvent> = match &raw.events {
        Some(events) if events.get_ref().is_empty() => {
            o.error(
                Some(events.span()),
                "events is empty: list at least one event",
            );
            BTreeSet::new()
        }
        Some(events) => events.get_ref().iter().copied().collect(),
        None => [NotifyEvent::Failure, NotifyEvent::Recovery].into(),
    };
    let hosts = match &raw.hosts {
        Some(h) => o.selector(h),
        None => Selector {
            all: true,
            ..Selector::default()
        },
    };
    let policies = raw.policies.iter().map(|p| p.get_ref().clone()).collect();

    let mut targets = Vec::new();
    if let Some(webhook) = &raw.webhook {
        let url = target_url(&mut o, &webhook.url, "webhook url");
        if let Some(body) = &webhook.body {
            let mut registry = handlebars::Handlebars::new();
            if let Err(e) = registry.register_template_string("body", body.get_ref()) {
                o.error(
                    Some(body.span()),
                    format!("webhook body is not a valid template: {e}"),
                );
            }
        }
        targets.push(url.map(|url| {
            Target::Webhook {
                url,
                body: webhook.body.as_ref().map(|b| b.get_ref().clone()),
                content_type: webhook
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".to_owned()),
            }
        }));
    }
    if let Some(ntfy) = &raw.ntfy {
        targets.push(url_target(&mut o, ntfy, "ntfy url").map(|url| Target::Ntfy { url }));
    }
    if let Some(hc) = &raw.healthchecks {
        targets.push(
            url_target(&mut o, hc, "healthchecks url").map(|url| Target::Healthchecks { url }),
        );
    }
    if targets.len() != 1 {
        o.error_help(
            None,
            format!(
                "notification `{name}` must have exactly one target, it has {}",
                targets.len()
            ),
            "add one [webhook], [ntfy] or [healthchecks] table; use one file per target",
        );
        return Checked::Invalid;
    }
    let Some(Some(target)) = targets.pop() else {
        return Checked::Invalid;
    };
    let notification = Notification {
        name: name.to_owned(),
        events,
        hosts,
        policies,
        target,
    };
    o.finish(notification)
}

fn url_target(o: &mut Object<'_, '_>, raw: &RawUrlTarget, what: &str) -> Option<EnvValue> {
    target_url(o, &raw.url, what)
}

fn target_url(o: &mut Object<'_, '_>, raw: &Spanned<SecretValue>, what: &str) -> Option<EnvValue> {
    match raw.get_ref() {
        SecretValue::Sealed(armor) => o.sealed(raw.span(), what, armor).map(EnvValue::Sealed),
        SecretValue::Plain(text) => match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                if u.password().is_some() {
                    o.warning_help(
                        Some(raw.span()),
                        format!("{what} contains a password in plain text"),
                        "seal the whole URL with `restic-manager seal`",
                    );
                }
                Some(EnvValue::Plain(text.clone()))
            }
            Ok(u) => {
                o.error(
                    Some(raw.span()),
                    format!("{what} must be http or https, not `{}`", u.scheme()),
                );
                None
            }
            Err(e) => {
                o.error(
                    Some(raw.span()),
                    format!("{what} `{text}` is not a valid URL: {e}"),
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_and_sizes() {
        assert!(check_subset("5%").is_ok());
        assert!(check_subset("1/10").is_ok());
        assert!(check_subset("2G").is_ok());
        assert!(check_subset("0%").is_err());
        assert!(check_subset("11/10").is_err());
        assert!(
            check_subset("lots")
                .unwrap_err()
                .contains("invalid read-data-subset `lots`")
        );
        assert!(check_max_unused("unlimited").is_ok());
        assert!(check_max_unused("10%").is_ok());
        assert!(check_max_unused("10GG").is_err());
    }

    #[test]
    fn secret_names_are_recognised() {
        assert!(is_secret_name(Backend::S3, "AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret_name(Backend::S3, "AWS_ACCESS_KEY_ID"));
        assert!(!is_secret_name(Backend::S3, "AWS_DEFAULT_REGION"));
        assert!(is_secret_name(Backend::Local, "MY_API_TOKEN"));
        assert!(!is_secret_name(Backend::Rest, "RESTIC_REST_USERNAME"));
    }
}
