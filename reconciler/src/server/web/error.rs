//! The view's one error type, and the one place it becomes an HTTP response: JSON under
//! `/api/`, an HTML page for the pages, plain text for `/metrics` and for refused requests.
//!
//! What a client sees is written for a person and never includes internals: a failing query
//! is logged with its cause, and the answer only says that the state could not be read.

use tracing::error;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::pages::Pages;

/// Why a view request was not answered with what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The client's address is not in the allow list.
    #[error(
        "the status view does not answer {client}: the address is not in the server's view \
         allow list (setting `allow` in [view], --view-allow or RM_VIEW_ALLOW)"
    )]
    Forbidden { client: String },
    /// A token is required and the request's is missing or wrong.
    #[error(
        "this status view needs a bearer token, and {reason}; send `Authorization: Bearer \
         <token>` with the token from the server's view token file"
    )]
    Unauthorized { reason: &'static str },
    /// Anything but GET or HEAD.
    #[error(
        "the status view is read-only: {method} is not allowed here, only GET and HEAD; \
         change the fleet by committing to the config repository"
    )]
    MethodNotAllowed { method: String },
    /// No such page, host or job. The text names what was looked for.
    #[error("{0}")]
    NotFound(String),
    /// A query parameter that cannot be used. The text names it and the allowed values.
    #[error("query parameter `{name}`: {message}")]
    BadParameter { name: String, message: String },
    /// The store (or the metrics encoder) failed; `what` says what was being done.
    #[error("{what}: {source}")]
    Internal {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How a response is written, by the part of the view that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Json,
    Html,
    Text,
}

impl WebError {
    pub fn internal(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            what,
            source: source.into(),
        }
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::Forbidden { .. } => StatusCode::FORBIDDEN,
            WebError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            WebError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            WebError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: the message, except for internal errors.
    fn public_text(&self) -> String {
        match self {
            WebError::Internal { what, .. } => {
                format!("internal error while {what}; the server's log has the details")
            }
            other => other.to_string(),
        }
    }

    /// The response for this error. Refused requests always get plain text: they are
    /// answered before anything else is looked at.
    pub fn into_response(self, flavor: Flavor, pages: &Pages) -> Response {
        if let WebError::Internal { what, source } = &self {
            error!(error = %source, what, "the status view could not answer");
        }
        let status = self.status();
        let text = self.public_text();
        let refused = matches!(
            self,
            WebError::Forbidden { .. } | WebError::Unauthorized { .. }
        );
        let mut response = match flavor {
            _ if refused => super::text(status, format!("{text}\n")),
            Flavor::Json => super::json(
                status,
                &serde_json::json!({ "error": text, "status": status.as_u16() }),
            ),
            Flavor::Html => super::html(status, pages.error(status, &text)),
            Flavor::Text => super::text(status, format!("{text}\n")),
        };
        let headers = response.headers_mut();
        match self {
            WebError::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"restic-manager\""),
                );
            }
            WebError::MethodNotAllowed { .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::StoreError;

    #[test]
    fn an_internal_error_is_told_without_its_cause() {
        let err = WebError::internal(
            "listing jobs",
            StoreError::Decode("no such column: jobs.secret_detail".into()),
        );
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let told = err.public_text();
        assert_eq!(
            told,
            "internal error while listing jobs; the server's log has the details"
        );
        // The cause stays in what is logged.
        assert!(err.to_string().contains("secret_detail"), "{err}");
    }

    #[test]
    fn each_error_has_its_status() {
        let cases = [
            (
                WebError::Forbidden {
                    client: "192.0.2.1".into(),
                },
                403,
            ),
            (WebError::Unauthorized { reason: "no token" }, 401),
            (
                WebError::MethodNotAllowed {
                    method: "POST".into(),
                },
                405,
            ),
            (WebError::NotFound("no host".into()), 404),
            (
                WebError::BadParameter {
                    name: "limit".into(),
                    message: "x".into(),
                },
                400,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.public_text(), err.to_string());
        }
    }
}
