//! The server's HTTP surface: the agents' WebSocket, the git webhook, a health check, and the
//! read-only status view with its JSON API and `/metrics` ([`super::web`]).
//!
//! Every route is read-only towards the fleet: nothing here can start a job or change a
//! setting. The webhook only asks for an earlier fetch of the branch the server follows, and
//! only with a valid signature; a bad one is answered 401, a body over [`WEBHOOK_MAX_BYTES`]
//! 413, and both are logged and audited, rate-limited ([`super::refusals`]). The view answers only
//! the clients its access rules allow; the WebSocket and the webhook authenticate on their
//! own and are not subject to those rules.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tracing::info;
use warp::Filter as _;
use warp::http::{HeaderMap, StatusCode};

use super::hub;
use super::run::Server;
use super::web::{self, View};
use super::webhook;

/// The largest webhook body accepted (1 MiB). Push events are small; a larger body is refused
/// before it is read.
pub const WEBHOOK_MAX_BYTES: u64 = 1024 * 1024;

/// All routes.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the routes hold the server for as long as they live"
)]
pub fn routes(
    server: Arc<Server>,
    view: Arc<View>,
) -> impl warp::Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_server = {
        let server = Arc::clone(&server);
        warp::any().map(move || Arc::clone(&server))
    };

    let agent = warp::path("agent")
        .and(warp::path("v1"))
        .and(warp::path::end())
        .and(warp::ws())
        .and(warp::addr::remote())
        .and(with_server.clone())
        .map(
            |ws: warp::ws::Ws, remote: Option<SocketAddr>, server: Arc<Server>| {
                ws.max_message_size(protocol::MAX_FRAME_BYTES)
                    .max_frame_size(protocol::MAX_FRAME_BYTES)
                    .on_upgrade(move |socket| hub::serve_connection(socket, remote, server))
            },
        );

    // A body announced as too large is refused (and recorded) before it is read; without
    // this route, `content_length_limit` below would refuse it without a word.
    let hook_too_large = warp::path("hooks")
        .and(warp::path("git"))
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::header::optional::<u64>("content-length"))
        .and_then(|length: Option<u64>| async move {
            match length {
                Some(length) if length > WEBHOOK_MAX_BYTES => Ok(length),
                _ => Err(warp::reject::not_found()),
            }
        })
        .and(warp::addr::remote())
        .and(with_server.clone())
        .map(git_hook_too_large);

    let hook = warp::path("hooks")
        .and(warp::path("git"))
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::body::content_length_limit(WEBHOOK_MAX_BYTES))
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and(warp::addr::remote())
        .and(with_server.clone())
        .map(git_hook);

    let health = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_server.clone())
        .map(health);

    agent
        .or(hook_too_large)
        .or(hook)
        .or(health)
        .or(web::routes(view))
        .recover(|rejection: warp::Rejection| async move {
            let (status, text) = if rejection.is_not_found() {
                (StatusCode::NOT_FOUND, "not found\n")
            } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            } else {
                (StatusCode::BAD_REQUEST, "bad request\n")
            };
            Ok::<_, std::convert::Infallible>(warp::reply::with_status(text, status))
        })
}

/// `POST /hooks/git`: a verified request asks for an immediate fetch.
#[allow(
    clippy::needless_pass_by_value,
    reason = "warp hands a filter's values over by value"
)]
fn git_hook(
    headers: HeaderMap,
    body: Bytes,
    remote: Option<SocketAddr>,
    server: Arc<Server>,
) -> warp::reply::WithStatus<&'static str> {
    let Some(secret) = &server.webhook_secret else {
        return not_configured();
    };
    let from = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    match webhook::verify(
        |name| headers.get(name).map(warp::http::HeaderValue::as_bytes),
        &body,
        secret,
    ) {
        Ok(provider) => {
            info!(%provider, remote = %from, "webhook verified; fetching now");
            server.fetch_now.notify_one();
            warp::reply::with_status("fetching\n", StatusCode::ACCEPTED)
        }
        Err(e) => {
            super::refusals::refused(&server, &from, &e.to_string());
            warp::reply::with_status("signature check failed\n", StatusCode::UNAUTHORIZED)
        }
    }
}

/// `/healthz`: 200 while the server can use its state database, 503 naming the error once
/// the scheduler's regular pass over it fails (a damaged file, a full disk), so a load
/// balancer or a probe sees what the log says.
#[allow(
    clippy::needless_pass_by_value,
    reason = "warp hands each request its own clone"
)]
fn health(server: Arc<Server>) -> warp::reply::Response {
    use warp::Reply as _;
    match &*server.store_failing.lock().expect("health lock") {
        None => "ok\n".into_response(),
        Some((since, error)) => warp::reply::with_status(
            format!(
                "unhealthy: the state database fails since {since}: {error}; the server's log \
                 names the file\n"
            ),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .into_response(),
    }
}

/// `POST /hooks/git` with a `Content-Length` over [`WEBHOOK_MAX_BYTES`]: refused unread.
#[allow(
    clippy::needless_pass_by_value,
    reason = "warp hands a filter's values over by value"
)]
fn git_hook_too_large(
    length: u64,
    remote: Option<SocketAddr>,
    server: Arc<Server>,
) -> warp::reply::WithStatus<&'static str> {
    if server.webhook_secret.is_none() {
        return not_configured();
    }
    let from = remote.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let reason = format!(
        "the webhook request's body is {length} bytes, more than the {WEBHOOK_MAX_BYTES} bytes \
         (1 MiB) a webhook may carry"
    );
    super::refusals::refused(&server, &from, &reason);
    warp::reply::with_status(
        "request body too large: a webhook may carry at most 1 MiB\n",
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// The answer to a webhook when the server has no webhook secret.
fn not_configured() -> warp::reply::WithStatus<&'static str> {
    warp::reply::with_status(
        "webhook not configured: set webhook-secret-file\n",
        StatusCode::NOT_FOUND,
    )
}
