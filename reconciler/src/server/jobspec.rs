//! Turning a queued job into the data an agent runs: the policy's paths and rules, the
//! repository's location, and its credentials opened with the server identity just for this
//! job. Nothing built here is stored or logged; [`protocol::Secret`] keeps the values out of
//! `Debug` output.
//!
//! Maintenance jobs (forget, prune, check) use the repository's maintenance credential when it
//! has one, so an append-only everyday credential never needs delete rights; backups never
//! receive the maintenance credential.

use std::collections::BTreeMap;

use protocol::{
    BackupSpec, CheckSpec, ForgetSpec, HookSpec, JobKind, JobSpec, PruneSpec, RepositoryAccess,
    Secret,
};

use crate::config::model::{Config, EnvValue, Sealed};
use crate::secrets::{self, ExposeSecret as _, Identity};

use super::model::AssignmentKey;

/// How long a maintenance or inventory job may run.
const MAINTENANCE_MAX_SECS: u64 = 24 * 3600;

/// Why a job could not be built. The job fails with this message; it names what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("host `{0}` is not in the applied configuration")]
    UnknownHost(String),
    #[error("policy `{0}` is not in the applied configuration")]
    UnknownPolicy(String),
    #[error("repository `{0}` is not in the applied configuration")]
    UnknownRepository(String),
    #[error("policy `{policy}` has no {kind} settings")]
    NotConfigured { policy: String, kind: JobKind },
    #[error("cannot open the sealed {what} of repository `{repository}`: {reason}")]
    Sealed {
        repository: String,
        what: String,
        reason: String,
    },
}

/// Builds the job `id` for `key` from the applied configuration.
pub fn build(
    config: &Config,
    identity: &Identity,
    id: &str,
    key: &AssignmentKey,
) -> Result<JobSpec, SpecError> {
    let host = config
        .hosts
        .get(&*key.host)
        .ok_or_else(|| SpecError::UnknownHost(key.host.to_string()))?;
    let policy = config
        .policies
        .get(&*key.policy)
        .ok_or_else(|| SpecError::UnknownPolicy(key.policy.to_string()))?;
    let repository = config
        .repositories
        .get(&policy.repository)
        .ok_or_else(|| SpecError::UnknownRepository(policy.repository.clone()))?;

    // The maintenance credential travels only with the jobs that need delete rights.
    let maintenance = repository
        .maintenance
        .as_ref()
        .filter(|_| key.kind.is_maintenance());
    let url = maintenance
        .and_then(|m| m.url.as_ref())
        .unwrap_or(&repository.url)
        .text
        .clone();
    let env_source = maintenance.map_or(&repository.env, |m| &m.env);
    let open = |sealed: &Sealed, what: &str| -> Result<Secret, SpecError> {
        let plain = secrets::open(identity, sealed).map_err(|e| SpecError::Sealed {
            repository: repository.name.clone(),
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        let text =
            String::from_utf8(plain.expose_secret().to_vec()).map_err(|_| SpecError::Sealed {
                repository: repository.name.clone(),
                what: what.to_owned(),
                reason: "the value is not UTF-8 text".to_owned(),
            })?;
        Ok(Secret::new(text))
    };
    let password = open(&repository.password, "password")?;
    let mut env = BTreeMap::new();
    for (name, value) in env_source {
        let secret = match value {
            EnvValue::Plain(text) => Secret::new(text.clone()),
            EnvValue::Sealed(sealed) => open(sealed, &format!("env {name}"))?,
        };
        env.insert(name.clone(), secret);
    }

    let mut spec = JobSpec {
        id: id.to_owned(),
        kind: key.kind,
        host: key.host.to_string(),
        hostname: host.hostname.clone(),
        policy: key.policy.to_string(),
        repository: RepositoryAccess {
            name: repository.name.clone(),
            url,
            password,
            env,
        },
        max_duration_secs: MAINTENANCE_MAX_SECS,
        init_if_missing: false,
        backup: None,
        forget: None,
        check: None,
        prune: None,
        hooks: HookSpec::default(),
    };
    let not_configured = || SpecError::NotConfigured {
        policy: policy.name.clone(),
        kind: key.kind,
    };
    match key.kind {
        JobKind::Backup => {
            spec.max_duration_secs = u64::try_from(policy.max_duration.as_secs()).unwrap_or(1);
            spec.backup = Some(BackupSpec {
                paths: policy.paths.clone(),
                exclude: policy.exclude.clone(),
                exclude_if_present: policy.exclude_if_present.clone(),
                exclude_caches: policy.exclude_caches,
                one_file_system: policy.one_file_system,
                tags: policy.tags.clone(),
            });
            spec.hooks = HookSpec {
                before: policy.hooks.before.clone(),
                after: policy.hooks.after.clone(),
                on_failure: policy.hooks.on_failure.clone(),
                timeout_secs: u64::try_from(policy.hooks.timeout.as_secs()).unwrap_or(1),
            };
        }
        JobKind::Forget => {
            let retention = policy.retention.as_ref().ok_or_else(not_configured)?;
            spec.forget = Some(ForgetSpec {
                keep: retention
                    .rules()
                    .into_iter()
                    .flat_map(|(name, value)| match value {
                        crate::config::retention::RuleValue::Tags(tags) => tags
                            .into_iter()
                            .map(|tag| (name.to_owned(), tag))
                            .collect::<Vec<_>>(),
                        other => vec![(name.to_owned(), other.to_string())],
                    })
                    .collect(),
                group_by: retention.group_by.to_string(),
                prune: false,
            });
        }
        JobKind::Prune => {
            let prune = policy.prune.as_ref().ok_or_else(not_configured)?;
            spec.prune = Some(PruneSpec {
                max_unused: prune.max_unused.clone(),
            });
        }
        JobKind::Check => {
            let check = policy.check.as_ref().ok_or_else(not_configured)?;
            spec.check = Some(CheckSpec {
                read_data_subset: check.read_data_subset.clone(),
            });
        }
        // An init creates the repository only when `cat config` finds none; a backup never
        // does, so a repository that vanished is reported instead of silently started anew.
        JobKind::Init => spec.init_if_missing = true,
        JobKind::Unlock | JobKind::Snapshots => {}
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing;

    fn key(host: &str, policy: &str, kind: JobKind) -> AssignmentKey {
        AssignmentKey {
            host: host.into(),
            policy: policy.into(),
            kind,
        }
    }

    #[test]
    fn a_backup_carries_paths_and_the_opened_password() {
        let (config, identity) = testing::example_config_with_identity();
        let spec = build(
            &config,
            &identity,
            "j1",
            &key("web-1", "system", JobKind::Backup),
        )
        .unwrap();
        let backup = spec.backup.unwrap();
        assert_eq!(backup.paths, ["/etc", "/root", "/home"]);
        assert!(!spec.init_if_missing, "only init jobs create repositories");
        assert_eq!(spec.max_duration_secs, 4 * 3600);
        assert!(!spec.repository.password.expose().is_empty());
        assert!(spec.repository.password.expose().trim() == spec.repository.password.expose());
    }

    #[test]
    fn maintenance_uses_the_maintenance_credential_and_backups_never_do() {
        let (config, identity) = testing::example_config_with_identity();
        let forget = build(
            &config,
            &identity,
            "j2",
            &key("db-1", "postgres", JobKind::Forget),
        )
        .unwrap();
        assert!(
            forget.repository.url.ends_with(":8001/fleet"),
            "{}",
            forget.repository.url
        );
        assert_eq!(
            forget.repository.env["RESTIC_REST_USERNAME"].expose(),
            "fleet-maintenance"
        );
        let rules = forget.forget.unwrap();
        assert!(!rules.keep.is_empty());

        let backup = build(
            &config,
            &identity,
            "j3",
            &key("db-1", "postgres", JobKind::Backup),
        )
        .unwrap();
        assert!(backup.repository.url.ends_with(":8000/fleet"));
        assert_eq!(
            backup.repository.env["RESTIC_REST_USERNAME"].expose(),
            "fleet"
        );
    }

    #[test]
    fn unknown_names_are_errors_not_panics() {
        let (config, identity) = testing::example_config_with_identity();
        assert_eq!(
            build(
                &config,
                &identity,
                "j",
                &key("nope", "system", JobKind::Backup)
            )
            .unwrap_err(),
            SpecError::UnknownHost("nope".into())
        );
        assert_eq!(
            build(
                &config,
                &identity,
                "j",
                &key("web-1", "nope", JobKind::Backup)
            )
            .unwrap_err(),
            SpecError::UnknownPolicy("nope".into())
        );
    }

    #[test]
    fn a_wrong_identity_names_the_repository() {
        let (config, _) = testing::example_config_with_identity();
        let other = Identity::generate();
        let err = build(
            &config,
            &other,
            "j",
            &key("web-1", "system", JobKind::Backup),
        )
        .unwrap_err();
        assert!(
            matches!(&err, SpecError::Sealed { repository, .. } if repository == "local"),
            "{err}"
        );
    }
}
