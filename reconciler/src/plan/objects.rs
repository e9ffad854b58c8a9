//! Changes to repositories and notifications: objects that are not placed on hosts, so
//! their changes are reported once rather than per host.

use std::collections::BTreeMap;

use super::{ChangeKind, Differ};
use crate::config::model::{EnvValue, Notification, Repository};

impl Differ {
    pub(super) fn repository(
        &mut self,
        name: &str,
        old: Option<&Repository>,
        new: Option<&Repository>,
    ) {
        let kind = ChangeKind::RepositoryChanged;
        let policy = None;
        match (old, new) {
            (None, Some(r)) => self.push(
                None,
                kind,
                false,
                policy,
                format!("repository `{name}` added at `{}`", r.url),
            ),
            (Some(_), None) => self.push(
                None,
                kind,
                false,
                policy,
                format!("repository `{name}` removed from the config (its data is not touched)"),
            ),
            (Some(x), Some(y)) => {
                if x.append_only && !y.append_only {
                    self.push(None, kind, true, policy, format!("repository `{name}` is no longer append-only: the everyday credential can now delete snapshots"));
                } else if !x.append_only && y.append_only {
                    self.push(
                        None,
                        kind,
                        false,
                        policy,
                        format!("repository `{name}` is now append-only"),
                    );
                }
                if x.password != y.password {
                    self.push(None, kind, false, policy, format!("repository `{name}`: the sealed password changed; it must match a key of the repository or every job fails"));
                }
                let env_names =
                    |env: &BTreeMap<String, EnvValue>| env.keys().cloned().collect::<Vec<_>>();
                if x.env != y.env {
                    self.push(
                        None,
                        kind,
                        false,
                        policy,
                        format!(
                            "repository `{name}`: backend environment changes (now: {})",
                            env_names(&y.env).join(", ")
                        ),
                    );
                }
                if x.maintenance != y.maintenance {
                    let summary = match (&x.maintenance, &y.maintenance) {
                        (Some(_), None) => {
                            format!("repository `{name}`: maintenance credential removed")
                        }
                        (None, Some(_)) => {
                            format!("repository `{name}`: maintenance credential added")
                        }
                        _ => format!("repository `{name}`: maintenance credential changes"),
                    };
                    self.push(None, kind, false, policy, summary);
                }
            }
            (None, None) => {}
        }
    }

    pub(super) fn notification(
        &mut self,
        name: &str,
        old: Option<&Notification>,
        new: Option<&Notification>,
    ) {
        let kind = ChangeKind::NotificationChanged;
        match (old, new) {
            (None, Some(_)) => self.push(
                None,
                kind,
                false,
                None,
                format!("notification `{name}` added"),
            ),
            (Some(_), None) => self.push(
                None,
                kind,
                true,
                None,
                format!(
                    "notification `{name}` removed: the failures it reported are no longer sent"
                ),
            ),
            (Some(x), Some(y)) if x != y => {
                let lost: Vec<String> = x
                    .events
                    .difference(&y.events)
                    .map(|e| format!("{e:?}").to_lowercase())
                    .collect();
                if lost.is_empty() {
                    self.push(
                        None,
                        kind,
                        false,
                        None,
                        format!("notification `{name}` changes"),
                    );
                } else {
                    self.push(
                        None,
                        kind,
                        true,
                        None,
                        format!("notification `{name}` no longer sends: {}", lost.join(", ")),
                    );
                }
            }
            _ => {}
        }
    }
}
