//! Augur's web dashboard: the pages people look at, served by `augur serve` itself.
//!
//! This crate serves static assets only: an HTML shell, ES modules and CSS, all embedded in
//! the binary at build time (`build.rs` turns every file under `assets/` into an
//! `include_bytes!`), so `cargo build` alone produces the dashboard and nothing needs Node.js
//! at build or run time. Every piece of data the pages show comes from the JSON API (`/v1/…`),
//! called by the browser with the signed-in user's token; so the dashboard can never show an
//! account what the API would not.
//!
//! - The page routes ([`PAGES`]) all answer the same `index.html` shell; the client router
//!   (`assets/app.js`) picks the page module from the path.
//! - Assets are under `/ui/…`, with their content type, an `ETag` (SHA-256 of the bytes) and
//!   `Cache-Control: no-cache`: browsers revalidate and get `304 Not Modified`, so module URLs
//!   need no version and a new binary's assets are never served stale.
//! - Every answer carries a strict Content-Security-Policy (scripts and styles from this
//!   origin only, no inline code; images and media also from the public URL's origin, where
//!   output files are), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and
//!   `X-Frame-Options: DENY`.
//! - With [`DashboardConfig::assets_dir`] set (`AUGUR_DASHBOARD_DIR`), assets are read from
//!   that directory on every request instead: edit a page, reload, no rebuild.
//!
//! Unknown paths are not answered here: the API's JSON 404 stays the fallback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// The embedded assets: `(path under assets/, bytes)`.
const EMBEDDED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page routes; each answers the HTML shell.
pub const PAGES: &[&str] = &[
    "/",
    "/signin",
    "/predictions/{id}",
    "/models",
    "/models/{owner}/{name}",
    "/batches",
    "/batches/{id}",
    "/workflows",
    "/workflows/{owner}/{name}",
    "/runs/{id}",
    "/account",
    "/admin",
];

/// How the dashboard is served.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// The server's public URL: output files live under it, so its origin may serve images
    /// and media to the pages.
    pub public_url: String,
    /// Read assets from this directory on every request instead of the embedded copies
    /// (`AUGUR_DASHBOARD_DIR`, for development).
    pub assets_dir: Option<PathBuf>,
}

/// An embedded asset and its entity tag.
#[derive(Debug)]
struct Asset {
    bytes: &'static [u8],
    etag: HeaderValue,
}

#[derive(Debug)]
enum Source {
    Embedded(HashMap<&'static str, Asset>),
    Dir(PathBuf),
}

#[derive(Debug)]
struct Inner {
    source: Source,
    csp: HeaderValue,
}

type Shared = Arc<Inner>;

/// The dashboard's routes: the pages and `/ui/…`. Merge it beside the API's router, which
/// keeps the fallback.
pub fn router(config: DashboardConfig) -> Router {
    let source = match config.assets_dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "dashboard assets are read from disk");
            Source::Dir(dir)
        }
        None => Source::Embedded(
            EMBEDDED
                .iter()
                .map(|&(path, bytes)| {
                    (
                        path,
                        Asset {
                            bytes,
                            etag: etag_of(bytes),
                        },
                    )
                })
                .collect(),
        ),
    };
    let csp = HeaderValue::from_str(&content_security_policy(&config.public_url))
        .unwrap_or_else(|_| HeaderValue::from_static(BASE_POLICY));
    let shared = Arc::new(Inner { source, csp });
    let mut router = Router::new();
    for page in PAGES {
        router = router.route(page, get(shell));
    }
    router.route("/ui/{*path}", get(asset)).with_state(shared)
}

/// The policy without the public URL's origin.
const BASE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The Content-Security-Policy: this origin for code, styles and API calls; images and media
/// also from the public URL's origin (output files' URLs are absolute under it).
fn content_security_policy(public_url: &str) -> String {
    let origin = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin())
        .filter(url::Origin::is_tuple)
        .map(|o| o.ascii_serialization());
    match origin {
        Some(origin) => format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; \
             img-src 'self' data: blob: {origin}; media-src 'self' blob: {origin}; \
             connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'"
        ),
        None => BASE_POLICY.to_owned(),
    }
}

fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

async fn shell(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    serve(&inner, "index.html", &headers).await
}

async fn asset(
    State(inner): State<Shared>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !is_asset_path(&path) {
        return not_found(&inner, &path);
    }
    serve(&inner, &path, &headers).await
}

/// A path this crate may serve: relative, made of plain names (letters, digits, `-`, `_`,
/// `.`), none of them starting with a dot (so no `..`, no hidden files).
fn is_asset_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 200
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

async fn serve(inner: &Inner, path: &str, headers: &HeaderMap) -> Response {
    let (bytes, etag) = match &inner.source {
        Source::Embedded(assets) => match assets.get(path) {
            Some(asset) => (Body::from(asset.bytes), asset.etag.clone()),
            None => return not_found(inner, path),
        },
        Source::Dir(dir) => match read_from(dir, path).await {
            Some(bytes) => {
                let etag = etag_of(&bytes);
                (Body::from(bytes), etag)
            }
            None => return not_found(inner, path),
        },
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(bytes);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(h, &inner.csp);
    response
}

async fn read_from(dir: &Path, path: &str) -> Option<Vec<u8>> {
    match tokio::fs::read(dir.join(path)).await {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path, error = %e, "cannot read a dashboard asset");
            }
            None
        }
    }
}

/// The API's error shape, so a client sees one kind of 404.
fn not_found(inner: &Inner, path: &str) -> Response {
    let body = format!(
        "{{\"status\":404,\"code\":\"route_not_found\",\"title\":\"Not found\",\"detail\":{}}}",
        json_string(&format!("no dashboard asset {path}"))
    );
    let mut response = (StatusCode::NOT_FOUND, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    secure(h, &inner.csp);
    response
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn secure(h: &mut HeaderMap, csp: &HeaderValue) {
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(dir: Option<PathBuf>) -> Router {
        router(DashboardConfig {
            public_url: "https://augur.example:8443/base".into(),
            assets_dir: dir,
        })
    }

    async fn get(app: &Router, path: &str, etag: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = etag {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_page_route_answers_the_shell_with_a_strict_policy() {
        let app = app(None);
        for path in [
            "/",
            "/signin",
            "/predictions/abc",
            "/models/augur/demo-image",
            "/runs/r1",
            "/admin",
        ] {
            let response = get(&app, path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(
                csp.contains("img-src 'self' data: blob: https://augur.example:8443;"),
                "{csp}"
            );
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert!(text(response).await.contains("/ui/app.js"));
        }
    }

    #[tokio::test]
    async fn assets_have_their_types_and_revalidate_by_etag() {
        let app = app(None);
        let response = get(&app, "/ui/app.js", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let etag = response.headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_owned();
        let again = get(&app, "/ui/app.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(text(again).await.is_empty());
        let css = get(&app, "/ui/style.css", Some("\"other\"")).await;
        assert_eq!(css.status(), StatusCode::OK);
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn unknown_and_escaping_asset_paths_are_json_404s() {
        let app = app(None);
        for path in [
            "/ui/nope.js",
            "/ui/../Cargo.toml",
            "/ui/lib/%2e%2e/x",
            "/ui/.hidden",
        ] {
            let response = get(&app, path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert!(text(response).await.contains("route_not_found"));
        }
    }

    #[tokio::test]
    async fn a_directory_of_assets_is_read_on_every_request() {
        let dir = std::env::temp_dir().join(format!("augur-dash-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>one</p>").unwrap();
        std::fs::write(dir.join("lib/x.js"), "export {}").unwrap();
        let app = app(Some(dir.clone()));
        assert_eq!(text(get(&app, "/", None).await).await, "<p>one</p>");
        std::fs::write(dir.join("index.html"), "<p>two</p>").unwrap();
        assert_eq!(text(get(&app, "/account", None).await).await, "<p>two</p>");
        assert_eq!(
            text(get(&app, "/ui/lib/x.js", None).await).await,
            "export {}"
        );
        assert_eq!(
            get(&app, "/ui/lib/y.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_policy_names_only_the_public_urls_origin() {
        let csp = content_security_policy("https://user:pw@files.example/x?y");
        assert!(csp.contains("img-src 'self' data: blob: https://files.example;"));
        assert!(!csp.contains("user"));
        assert_eq!(content_security_policy("not a url"), BASE_POLICY);
    }
}
