//! The read-only status view: HTML pages for people, a JSON API under `/api/v1/` for scripts,
//! and `/metrics` for Prometheus, all answered from the store and the running server.
//!
//! Nothing here can start a job, change a setting or reach an agent: only GET and HEAD are
//! answered, anything else is a 405. Every request is first checked against the view's access
//! rules ([`access`]): the client's address must be in the allow list, and when a token file
//! is set the request must carry its token. The agents' WebSocket and the git webhook are
//! served by [`super::http`] and have their own authentication.

pub mod access;
pub mod api;
pub mod error;
pub mod facts;
pub mod metrics;
pub mod pages;
pub mod params;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use warp::Filter as _;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::run::Server;
use access::ViewAccess;
use error::{Flavor, WebError};
use pages::Pages;
use params::Query;

/// The first path segments the view answers; any other path is left to the other routes.
const VIEW_ROOTS: [&str; 7] = ["", "hosts", "jobs", "audit", "static", "metrics", "api"];

/// What the view keeps between requests.
pub struct View {
    server: Arc<Server>,
    access: ViewAccess,
    pages: Pages,
    results: Arc<Mutex<metrics::ResultCounter>>,
}

/// The view could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ViewSetupError {
    #[error(transparent)]
    Token(#[from] access::TokenFileError),
    #[error("the status view's templates do not compile: {0}")]
    Templates(#[from] Box<handlebars::TemplateError>),
    #[error("cannot read the job counts for /metrics: {0}")]
    Store(#[from] crate::server::store::StoreError),
}

impl View {
    /// Compiles the templates and starts counting job results; `access` holds the rules,
    /// with the token already read.
    pub fn new(server: Arc<Server>, access: ViewAccess) -> Result<Self, ViewSetupError> {
        let pages = Pages::new()?;
        let results = {
            let store = server.store.lock().expect("store lock");
            metrics::ResultCounter::start(&store)?
        };
        Ok(Self {
            server,
            access,
            pages,
            results: Arc::new(Mutex::new(results)),
        })
    }
}

/// The view's routes. A path outside the view is rejected as not found, so the agents'
/// WebSocket and the webhook keep their own answers.
pub fn routes(
    view: Arc<View>,
) -> impl warp::Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::path::full()
        .and_then(|path: warp::path::FullPath| async move {
            let first = path.as_str().trim_start_matches('/').split('/').next();
            if first.is_some_and(|f| VIEW_ROOTS.contains(&f)) {
                Ok(path)
            } else {
                Err(warp::reject::not_found())
            }
        })
        .and(warp::method())
        .and(warp::addr::remote())
        .and(warp::header::headers_cloned())
        .and(query)
        .and(warp::any().map(move || Arc::clone(&view)))
        .then(
            |path: warp::path::FullPath,
             method: Method,
             remote: Option<SocketAddr>,
             headers: HeaderMap,
             query: String,
             view: Arc<View>| async move {
                handle(&view, path.as_str(), &method, remote, &headers, &query).await
            },
        )
}

/// Answers one view request; every error becomes its response here.
async fn handle(
    view: &Arc<View>,
    path: &str,
    method: &Method,
    remote: Option<SocketAddr>,
    headers: &HeaderMap,
    query: &str,
) -> Response {
    let flavor = if path.starts_with("/api/") {
        Flavor::Json
    } else if path == "/metrics" || path.starts_with("/static/") {
        Flavor::Text
    } else {
        Flavor::Html
    };
    let answer = async {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if let Err(e) = view.access.check(remote, authorization) {
            tracing::debug!(remote = ?remote, path, error = %e, "view request refused");
            return Err(e);
        }
        if method != Method::GET && method != Method::HEAD {
            return Err(WebError::MethodNotAllowed {
                method: method.to_string(),
            });
        }
        let Some(segments) = params::segments(path) else {
            return Err(WebError::NotFound(format!(
                "no page at {path}: the address is not valid percent-encoded UTF-8"
            )));
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        route(view, &segments, query).await
    };
    match answer.await {
        Ok(response) => response,
        Err(e) => e.into_response(flavor, &view.pages),
    }
}

/// The view's addresses.
async fn route(view: &Arc<View>, segments: &[&str], raw_query: &str) -> Result<Response, WebError> {
    let server = &view.server;
    let none: &[&str] = &[];
    match segments {
        [""] => {
            Query::parse(raw_query, none)?;
            let fleet = facts::gather(server, None).await?;
            Ok(html(StatusCode::OK, view.pages.overview(&fleet)))
        }
        ["hosts", name] => {
            Query::parse(raw_query, none)?;
            let fleet = facts::gather(server, Some(name)).await?;
            let detail = api::host_detail(server, &fleet, name).await?;
            Ok(html(StatusCode::OK, view.pages.host(&fleet, &detail)))
        }
        ["jobs", id] => {
            Query::parse(raw_query, none)?;
            let (record, progress) = api::job_record(server, id).await?;
            Ok(html(
                StatusCode::OK,
                view.pages.job(&record, progress.as_ref()),
            ))
        }
        ["audit"] => {
            let query = Query::parse(raw_query, &["limit"])?;
            let limit = query.limit()?;
            let check = api::check_audit(server).await?;
            let entries = server
                .with_store(move |store| store.audit_entries(limit))
                .await
                .map_err(|e| WebError::internal("reading the audit log", e))?;
            Ok(html(
                StatusCode::OK,
                view.pages.audit(&entries, &check, limit),
            ))
        }
        ["static", "style.css"] => {
            let mut response = text(StatusCode::OK, pages::STYLE_CSS.to_owned());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            );
            Ok(response)
        }
        ["metrics"] => {
            Query::parse(raw_query, none)?;
            metrics_response(view).await
        }
        ["api", "v1", rest @ ..] => api_route(view, rest, raw_query).await,
        _ => Err(WebError::NotFound(format!(
            "no page at /{}; the pages are /, /hosts/<name>, /jobs/<id> and /audit",
            segments.join("/")
        ))),
    }
}

/// The JSON API's addresses, below `/api/v1/`.
async fn api_route(
    view: &Arc<View>,
    segments: &[&str],
    raw_query: &str,
) -> Result<Response, WebError> {
    let server = &view.server;
    let none: &[&str] = &[];
    match segments {
        ["status"] => {
            Query::parse(raw_query, none)?;
            let fleet = facts::gather(server, None).await?;
            Ok(json(StatusCode::OK, &api::status(&fleet)))
        }
        ["hosts"] => {
            Query::parse(raw_query, none)?;
            let fleet = facts::gather(server, None).await?;
            Ok(json(StatusCode::OK, &api::hosts(&fleet)))
        }
        ["hosts", name] => {
            Query::parse(raw_query, none)?;
            let fleet = facts::gather(server, Some(name)).await?;
            Ok(json(
                StatusCode::OK,
                &api::host_detail(server, &fleet, name).await?,
            ))
        }
        ["jobs"] => {
            let query = Query::parse(raw_query, &["host", "state", "limit"])?;
            Ok(json(StatusCode::OK, &api::jobs(server, &query).await?))
        }
        ["jobs", id] => {
            Query::parse(raw_query, none)?;
            let (record, progress) = api::job_record(server, id).await?;
            Ok(json(StatusCode::OK, &api::job_detail(&record, progress)))
        }
        ["audit"] => {
            let query = Query::parse(raw_query, &["limit"])?;
            Ok(json(StatusCode::OK, &api::audit(server, &query).await?))
        }
        ["audit", "verify"] => {
            Query::parse(raw_query, none)?;
            Ok(json(StatusCode::OK, &api::audit_verify(server).await?))
        }
        ["pending-keys"] => {
            Query::parse(raw_query, none)?;
            let pending = server
                .with_store(|store| store.pending_key_records())
                .await
                .map_err(|e| WebError::internal("reading the pending agent keys", e))?;
            Ok(json(StatusCode::OK, &api::pending_keys(&pending)))
        }
        _ => Err(WebError::NotFound(format!(
            "no API endpoint /api/v1/{}; the endpoints are status, hosts, hosts/<name>, jobs, \
             jobs/<id>, audit, audit/verify and pending-keys",
            segments.join("/")
        ))),
    }
}

/// `/metrics`: the counter is brought up to date, then the fleet is gathered and encoded.
async fn metrics_response(view: &Arc<View>) -> Result<Response, WebError> {
    let results = Arc::clone(&view.results);
    let counts = view
        .server
        .with_store(move |store| {
            let mut counter = results.lock().expect("results lock");
            counter.update(store).map(|()| counter.counts().clone())
        })
        .await
        .map_err(|e| WebError::internal("counting job results", e))?;
    let fleet = facts::gather(&view.server, None).await?;
    let body = metrics::render(&fleet, &counts)
        .map_err(|e| WebError::internal("encoding the metrics", e))?;
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// Headers every view response carries: nothing is cached, nothing is sniffed.
fn with_common_headers(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn response(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    with_common_headers(response, content_type)
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response {
    response(status, body.into_bytes(), "text/plain; charset=utf-8")
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec_pretty(body) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            response(status, bytes, "application/json")
        }
        Err(e) => {
            tracing::error!(error = %e, "an API answer could not be encoded");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while encoding the answer; the server's log has the details\n"
                    .to_owned(),
            )
        }
    }
}

/// An HTML page. Its policy allows the page's own style sheet and nothing else: no script,
/// no frame, no form, so text that slipped through escaping still could not run.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut response = response(status, body.into_bytes(), "text/html; charset=utf-8");
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}
