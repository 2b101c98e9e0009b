//! Request metrics (`augur_http_request_duration_seconds`, a histogram by method, route
//! template and status; its `_count` counts requests) and the answer to a panicking handler.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::http::{Method, StatusCode};
use metrics::SharedString;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Records one request's latency and status, labelled by the route template (never the raw
/// path, whose ids would explode the label set).
pub(crate) async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str("unmatched"), |p| {
            route_label(p.as_str())
        });
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status_label(response.status())),
    ];
    metrics::histogram!("augur_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> SharedString {
    SharedString::const_str(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    })
}

/// Route templates, shared so a label costs no allocation per request.
fn route_label(route: &str) -> SharedString {
    static ROUTES: OnceLock<RwLock<HashMap<Box<str>, Arc<str>>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(RwLock::default);
    if let Some(label) = routes.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        return SharedString::from(label.clone());
    }
    let label: Arc<str> = Arc::from(route);
    routes
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(route.into(), label.clone());
    SharedString::from(label)
}

fn status_label(status: StatusCode) -> SharedString {
    // The codes Augur answers with; anything else is rare enough to allocate.
    const KNOWN: [&str; 16] = [
        "200", "201", "204", "304", "400", "401", "404", "405", "409", "413", "415", "422", "429",
        "500", "503", "504",
    ];
    KNOWN
        .iter()
        .find(|k| k.as_bytes() == status.as_str().as_bytes())
        .map_or_else(
            || SharedString::from(status.as_str().to_owned()),
            |k| SharedString::const_str(k),
        )
}

/// Turns a handler panic into a JSON 500 (the panic is logged, not sent).
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {what}")).into_response()
}

/// The span of one request in the request log: method and route template, never the raw URI
/// (query strings and paths may carry tokens, such as a stream URL's `?token=`).
pub(crate) fn request_span(request: &axum::extract::Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::debug_span!("request", method = %request.method(), route)
}
