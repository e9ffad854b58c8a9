//! Reading what a request asks for: path segments and query parameters, checked so that a
//! typo is a 400 naming the parameter and the values it takes, never a silently empty answer.

use std::collections::HashMap;

use crate::server::model::JobState;

use super::error::WebError;

/// The default number of jobs or audit entries in a list.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest number of jobs or audit entries in one list.
pub const MAX_LIMIT: usize = 1000;

/// The query parameters of one request, each given at most once.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses `raw` (without the `?`); only the names in `allowed` may appear. An empty
    /// value counts as not given, as an empty form field does.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Self, WebError> {
        let mut values = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                let takes = if allowed.is_empty() {
                    "this address takes no query parameters".to_owned()
                } else {
                    format!("this address takes {}", allowed.join(", "))
                };
                return Err(WebError::BadParameter {
                    name: name.into_owned(),
                    message: format!("unknown parameter; {takes}"),
                });
            }
            if value.is_empty() {
                continue;
            }
            if values
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(WebError::BadParameter {
                    name: name.into_owned(),
                    message: "given more than once; give it once".to_owned(),
                });
            }
        }
        Ok(Self(values))
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `limit`: a whole number from 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when not given.
    pub fn limit(&self) -> Result<usize, WebError> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(WebError::BadParameter {
                name: "limit".to_owned(),
                message: format!(
                    "`{text}` is not allowed; give a whole number from 1 to {MAX_LIMIT} \
                     (default {DEFAULT_LIMIT})"
                ),
            }),
        }
    }

    /// `state`: one of the job states.
    pub fn state(&self) -> Result<Option<JobState>, WebError> {
        let Some(text) = self.get("state") else {
            return Ok(None);
        };
        JobState::parse(text)
            .map(Some)
            .ok_or_else(|| WebError::BadParameter {
                name: "state".to_owned(),
                message: format!(
                    "`{text}` is not a job state; use one of {}",
                    JobState::ALL.map(JobState::as_str).join(", ")
                ),
            })
    }
}

/// The decoded segments of a request path; `None` when a segment is not valid
/// percent-encoded UTF-8.
#[must_use]
pub fn segments(path: &str) -> Option<Vec<String>> {
    path.trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect()
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        let q = |raw| Query::parse(raw, &["limit"]).unwrap();
        assert_eq!(q("").limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(q("limit=").limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(q("limit=7").limit().unwrap(), 7);
        assert_eq!(q("limit=1000").limit().unwrap(), 1000);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=ten",
            "limit=-1",
            "limit=2.5",
        ] {
            let err = q(bad).limit().unwrap_err().to_string();
            assert!(
                err.starts_with("query parameter `limit`:")
                    && err.contains("whole number from 1 to 1000"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn states_must_exist_and_the_error_lists_them() {
        let q = Query::parse("state=timed-out", &["state"]).unwrap();
        assert_eq!(q.state().unwrap(), Some(JobState::TimedOut));
        let err = Query::parse("state=done", &["state"])
            .unwrap()
            .state()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "query parameter `state`: `done` is not a job state; use one of queued, \
             deferred, dispatched, running, succeeded, partial, failed, timed-out, \
             cancelled, missed"
        );
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let err = Query::parse("hots=web-1", &["host", "state", "limit"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "query parameter `hots`: unknown parameter; this address takes host, state, limit"
        );
        let err = Query::parse("a=1", &[]).unwrap_err().to_string();
        assert!(err.contains("takes no query parameters"), "{err}");
        let err = Query::parse("limit=1&limit=2", &["limit"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than once"), "{err}");
        let q = Query::parse("host=web%2D1&state=", &["host", "state"]).unwrap();
        assert_eq!(q.get("host"), Some("web-1"));
        assert_eq!(q.get("state"), None);
    }

    #[test]
    fn path_segments_are_decoded() {
        assert_eq!(segments("/").unwrap(), [""]);
        assert_eq!(segments("/hosts/web-1").unwrap(), ["hosts", "web-1"]);
        assert_eq!(
            segments("/hosts/%3Cscript%3E").unwrap(),
            ["hosts", "<script>"]
        );
        assert_eq!(segments("/hosts/%zz"), None);
        assert_eq!(segments("/hosts/%ff"), None);
    }
}
