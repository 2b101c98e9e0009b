//! `/v1/files`: the files API in Replicate's shape (upload, list, get, delete), and signed
//! download URLs that work without a token until they expire.
//!
//! `POST /v1/files` takes multipart fields `content` (the bytes; its file name and type are
//! used unless `filename` or `type` fields say otherwise) and `metadata` (JSON), streams the
//! bytes through a SHA-256 and a size limit into the object store in parts (an upload never sits
//! whole in memory), then records the file; a refused upload's bytes are deleted. It
//! authenticates inside the handler, not in a layer, and no error answer (a bad token, a file
//! too large, a malformed body) breaks the client's connection: what the handler leaves of the
//! body is read by [`crate::limits`] ([`DRAIN_LIMIT`]), as on every route. A small rest is read
//! before the answer, so the connection stays open; a large or endless rest (a `Content-Length`
//! beyond the limit is refused before any of the body is read) is answered at once with
//! `Connection: close` while it is read and thrown away in the background, up to a bound, so
//! that a client still writing reads the answer instead of a reset; and a client waiting for
//! `100 Continue` gets the answer without ever being asked for the body.
//!
//! Another account's file is a 404, like a missing one. Served bytes carry
//! `X-Content-Type-Options: nosniff` and a sandboxing `Content-Security-Policy`, and any type a
//! browser would run (HTML, SVG, XML, scripts) is sent as an attachment ([`safe_headers`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Extension;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use augur_core::file::FileObject;
use augur_core::{AccountId, Caller, Timestamp};

use crate::AppState;
use crate::error::{ApiError, ApiResult, AppPath, AppQuery, ErrorCode};

/// Most bytes read and thrown away after an error, so that the client can read the answer; a
/// longer body gets the answer with `Connection: close`.
pub(crate) const DRAIN_LIMIT: u64 = 64 << 20;
/// The largest `metadata` field.
const MAX_METADATA_BYTES: usize = 64 << 10;
/// Room in a request's body beside the file itself: the multipart framing and the small
/// fields (`filename`, `type`, `metadata`, each at most [`MAX_METADATA_BYTES`]). A body longer
/// than the file limit plus this cannot hold an acceptable upload, so a `Content-Length` above
/// it is refused before the body is read.
const FORM_OVERHEAD: u64 = 256 << 10;

pub(crate) fn upload_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/files", post(upload))
        .route("/v1/files/{id}/download", get(download))
        // The upload enforces its own limit while it streams.
        .layer(DefaultBodyLimit::disable())
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/files", get(list))
        .route("/v1/files/{id}", get(get_one).delete(delete))
}

/// A file as the API shows it.
pub(crate) fn file_json(state: &AppState, file: &FileObject) -> Value {
    let public = &state.config.public_url;
    json!({
        "id": file.id,
        "name": file.name,
        "content_type": file.content_type,
        "size": file.size,
        "etag": file.sha256,
        "checksums": {"sha256": file.sha256},
        "metadata": file.metadata,
        "created_at": file.created_at,
        "expires_at": file.expires_at,
        "urls": {
            "get": format!("{public}/v1/files/{}", file.id),
            "download": state.config.url_signer.download_url(public, file, file.expires_at),
        },
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::FileNotFound,
        format!(
            "file {:?} not found",
            id.chars().take(80).collect::<String>()
        ),
    )
}

async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(&state, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The longest body an acceptable upload can have.
fn body_limit(state: &AppState) -> u64 {
    state.config.max_file_bytes.saturating_add(FORM_OVERHEAD)
}

/// The 413 for a body longer than [`body_limit`]: `length` bytes long, or found longer as it
/// was read.
fn body_too_large(state: &AppState, length: Option<u64>) -> ApiError {
    let max = state.config.max_file_bytes;
    let size = length.map_or_else(|| "longer".to_owned(), |n| format!("{n} bytes, longer"));
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the request body is {size} than this server's limit of {max} bytes for a file \
             plus {FORM_OVERHEAD} bytes for the other form fields"
        ),
    )
    .with_field("content")
    .with("limit", max)
}

/// What the multipart body said.
#[derive(Default)]
struct Upload {
    size: u64,
    sha256: Option<String>,
    field_name: Option<String>,
    field_type: Option<String>,
    filename: Option<String>,
    content_type: Option<String>,
    metadata: Option<Value>,
}

/// Authenticates, then streams the multipart body into the object store; an error leaves the
/// rest of the body to [`limits`](crate::limits), which reads it before or after the answer.
async fn receive(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let caller = crate::auth::check(state, headers).await?;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the file as multipart/form-data with a content field",
            )
        })?;
    // Refused before a byte of the body is read: it cannot hold an acceptable upload.
    if let Some(length) = crate::limits::declared_length(headers).filter(|&n| n > body_limit(state))
    {
        return Err(body_too_large(state, Some(length)));
    }
    let limit = body_limit(state);
    let over_limit = Arc::new(AtomicBool::new(false));
    let mut read = 0u64;
    let body = body.into_data_stream().map({
        let over_limit = over_limit.clone();
        move |chunk| {
            if let Ok(chunk) = &chunk {
                read += chunk.len() as u64;
                if read > limit {
                    // A chunked body (or one longer than it said): stop here.
                    over_limit.store(true, Ordering::Relaxed);
                    return Err(axum::Error::new("body too large"));
                }
            }
            chunk
        }
    });
    let multipart = multer::Multipart::new(body, boundary);
    let id = FileObject::generate_id(&caller.account);
    let object_key = FileObject::object_key(&id);
    let upload = match read_fields(state, multipart, &object_key).await {
        Ok(upload) => upload,
        Err(e) => {
            // The bytes may have been stored before a later field failed.
            if let Err(e) = state.files.delete_upload(&object_key).await {
                tracing::warn!(file_id = %id, error = %e, "cannot delete a refused upload's bytes");
            }
            let e = if over_limit.load(Ordering::Relaxed) {
                body_too_large(state, None)
            } else {
                e
            };
            if e.code() == ErrorCode::PayloadTooLarge
                && crate::limits::declared_length(headers).is_none()
            {
                // The rest of a chunked body may be endless: answer at once, and let the
                // limits read it (up to a bound) in the background before the connection
                // closes.
                let mut response = e.into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Ok(response);
            }
            return Err(e);
        }
    };
    match record(state, &caller, id.clone(), upload).await {
        Ok(response) => Ok(response),
        Err(e) => {
            if let Err(e) = state.files.delete_upload(&object_key).await {
                tracing::warn!(file_id = %id, error = %e, "cannot delete a refused upload's bytes");
            }
            Err(e)
        }
    }
}

/// Reads every field; the `content` field's bytes stream into the object store under
/// `object_key` through a digest and the size limit.
async fn read_fields(
    state: &AppState,
    mut multipart: multer::Multipart<'_>,
    object_key: &str,
) -> ApiResult<Upload> {
    let max = state.config.max_file_bytes;
    let mut upload = Upload::default();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "content" if upload.sha256.is_some() => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the content field is given more than once; send one file per request",
                )
                .with_field("content"));
            }
            "content" => {
                upload.field_name = field.file_name().map(str::to_owned);
                upload.field_type = field.content_type().map(ToString::to_string);
                let mut writer = state
                    .files
                    .upload_writer(object_key)
                    .await
                    .map_err(ApiError::internal)?;
                let mut hasher = Sha256::new();
                loop {
                    let chunk = match field.chunk().await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        Err(e) => {
                            writer.abort().await;
                            return Err(multipart_error(e));
                        }
                    };
                    upload.size += chunk.len() as u64;
                    if upload.size > max {
                        writer.abort().await;
                        return Err(ApiError::new(
                            ErrorCode::PayloadTooLarge,
                            format!("the file is larger than this server's limit of {max} bytes"),
                        )
                        .with_field("content")
                        .with("limit", max));
                    }
                    hasher.update(&chunk);
                    writer.write(chunk).await.map_err(ApiError::internal)?;
                }
                writer.finish().await.map_err(ApiError::internal)?;
                upload.sha256 = Some(
                    hasher
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
            }
            name @ ("filename" | "type" | "metadata")
                if match name {
                    "filename" => upload.filename.is_some(),
                    "type" => upload.content_type.is_some(),
                    _ => upload.metadata.is_some(),
                } =>
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("the {name} field is given more than once; send it once"),
                )
                .with_field(name));
            }
            "filename" => upload.filename = Some(small_text(&mut field, "filename").await?),
            "type" => upload.content_type = Some(small_text(&mut field, "type").await?),
            "metadata" => {
                let text = small_text(&mut field, "metadata").await?;
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("metadata must be a JSON object: {e}"),
                    )
                    .with_field("metadata")
                })?;
                // An object, as a file's `metadata` is shown: `null`, a list or a number
                // would read as a different field in every client.
                if !value.is_object() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        "metadata must be a JSON object (`{...}`)",
                    )
                    .with_field("metadata"));
                }
                upload.metadata = Some(value);
            }
            // Fields the API does not know are read and ignored.
            _ => while field.chunk().await.map_err(multipart_error)?.is_some() {},
        }
    }
    Ok(upload)
}

/// Checks what the fields said and records the file (whose bytes are stored).
async fn record(
    state: &AppState,
    caller: &Caller,
    id: String,
    upload: Upload,
) -> ApiResult<Response> {
    let Some(sha256) = upload.sha256 else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the content field with the file's bytes is missing",
        )
        .with_field("content"));
    };
    let name = upload
        .filename
        .or(upload.field_name)
        .map(|n| n.trim().chars().take(255).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "file".to_owned());
    let content_type = upload
        .content_type
        .or(upload.field_type)
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            augur_engine::files::content_type_for(&name)
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    if !is_media_type(&content_type) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "type must be a media type such as image/png, got {:?}",
                content_type.chars().take(100).collect::<String>()
            ),
        )
        .with_field("type"));
    }
    let now = Timestamp::now();
    let file = FileObject {
        id,
        owner: caller.account.clone(),
        name,
        content_type,
        size: upload.size,
        sha256,
        created_at: now,
        expires_at: now.plus(state.config.file_expiry),
        metadata: upload.metadata.unwrap_or_else(|| json!({})),
    };
    state.service.files().create(&file).await?;
    tracing::info!(file_id = %file.id, owner = %file.owner, size = file.size, "file uploaded");
    let mut response = (StatusCode::CREATED, Json(file_json(state, &file))).into_response();
    if let Ok(location) =
        HeaderValue::from_str(&format!("{}/v1/files/{}", state.config.public_url, file.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A short text field, whole.
async fn small_text(field: &mut multer::Field<'_>, name: &str) -> ApiResult<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the {name} field is larger than {MAX_METADATA_BYTES} bytes"),
            )
            .with_field(name));
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the {name} field must be UTF-8 text"),
        )
        .with_field(name)
    })
}

fn multipart_error(e: multer::Error) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("the multipart body is malformed: {e}"),
    )
}

/// `type/subtype` with optional parameters, in printable ASCII.
fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    text.len() <= 255
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(a, b)| token(a) && token(b))
}

/// Reads a file the caller may see; another account's is not found, like a missing one.
async fn read_visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Arc<FileObject>> {
    match state.service.files().get(id).await? {
        Some(file) if caller.may_see(&file.owner) => Ok(file),
        _ => Err(not_found(id)),
    }
}

async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let file = read_visible(&state, &caller, &id).await?;
    Ok(Json(file_json(&state, &file)).into_response())
}

async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let file = read_visible(&state, &caller, &id).await?;
    state
        .service
        .files()
        .delete(&file.owner, &file.id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    // The record went first: from now on nothing serves the bytes, so a failure here only
    // leaves bytes for the operator to reclaim.
    if let Err(e) = state
        .files
        .delete_upload(&FileObject::object_key(&file.id))
        .await
    {
        tracing::warn!(file_id = %file.id, error = %e, "cannot delete a deleted file's bytes");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    AppQuery(params): AppQuery<crate::paging::PageParams>,
) -> ApiResult<Response> {
    let (limit, after) = crate::paging::start(params.limit, params.cursor.as_deref())?;
    let asked = after.clone();
    // The admin token sees every account's files.
    let owner = (!caller.admin).then_some(&caller.account);
    let page = crate::paging::fill(
        limit,
        state.config.list_page_bytes,
        after,
        |after, limit| {
            let files = state.service.files();
            async move {
                let page = files.list(owner, after, limit).await?;
                Ok((page.items, page.next))
            }
        },
        |f: &Arc<FileObject>, out: &mut Vec<u8>| {
            crate::paging::write_json(out, &file_json(&state, f));
        },
    )
    .await?;
    let route = crate::pages::Route {
        url: format!("{}/v1/files", state.config.public_url),
        filters: &[],
        limit: params.limit.map(|_| limit),
    };
    Ok(page.into_response(&route, asked.as_ref()))
}

/// A download's query: the signed URL's three parameters and nothing else (a stray key is a
/// 400, as the document's `additionalProperties: false` says, rather than silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadParams {
    expiry: Option<i64>,
    owner: Option<String>,
    signature: Option<String>,
}

/// `GET /v1/files/{id}/download`: the bytes, for a valid signed URL or the owner's token.
async fn download(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(params): AppQuery<DownloadParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let owner = match (params.expiry, params.owner, params.signature) {
        (Some(expiry), Some(owner), Some(signature)) => {
            let owner = AccountId::parse(&owner).map_err(|_| bad_signature())?;
            if !state
                .config
                .url_signer
                .verify(&id, &owner, expiry, &signature)
            {
                return Err(bad_signature());
            }
            if Timestamp::now().as_micros() / 1_000_000 >= expiry {
                return Err(ApiError::new(
                    ErrorCode::UrlExpired,
                    "this download URL has expired; get a fresh one from GET /v1/files/{id}",
                ));
            }
            Some(owner)
        }
        (None, None, None) => {
            let caller = crate::auth::check(&state, &headers).await?;
            (!caller.admin).then_some(caller.account)
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "a download URL needs expiry, owner and signature together, or an Authorization header",
            ));
        }
    };
    let file = match state.service.files().get(&id).await? {
        Some(file) if owner.as_ref().is_none_or(|o| *o == file.owner) => file,
        _ => return Err(not_found(&id)),
    };
    let bytes = state
        .files
        .get_upload(&FileObject::object_key(&file.id))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(&id))?;
    let mut response = bytes.into_response();
    safe_headers(response.headers_mut(), &file.content_type, &file.name);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

fn bad_signature() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidSignature,
        "the download URL's signature is not valid; get a fresh one from GET /v1/files/{id}",
    )
}

/// Media types served inline: ones a browser displays but never runs.
const INLINE_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "audio/wav",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
    "video/webm",
    "text/plain",
    "application/json",
    "application/octet-stream",
];

/// Sets the headers every served file carries: its type, `nosniff`, a sandboxing CSP, and
/// `Content-Disposition: attachment` for any type a browser might run (HTML, SVG, XML,
/// scripts, anything not known to be inert).
pub(crate) fn safe_headers(headers: &mut HeaderMap, content_type: &str, name: &str) {
    let essence = augur_engine::files::media_essence(content_type);
    let inline = INLINE_TYPES.contains(&essence.as_str());
    let shown = if inline && essence == "text/plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        essence.clone()
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&shown)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    if !inline {
        let safe_name = augur_engine::files::sanitize_name(name);
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_checked() {
        for good in [
            "image/png",
            "text/plain; charset=utf-8",
            "application/vnd.a+json",
        ] {
            assert!(is_media_type(good), "{good}");
        }
        for bad in ["", "png", "image/", "a/b\r\nx: y", "a b/c"] {
            assert!(!is_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn browsers_never_run_served_files() {
        for (ty, attachment) in [
            ("image/png", false),
            ("image/svg+xml", true),
            ("text/html", true),
            ("TEXT/HTML; charset=utf-8", true),
            ("application/xhtml+xml", true),
            ("application/javascript", true),
            ("text/plain", false),
        ] {
            let mut headers = HeaderMap::new();
            safe_headers(&mut headers, ty, "x \"y\".svg");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(
                headers[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("sandbox")
            );
            assert_eq!(
                headers.contains_key(header::CONTENT_DISPOSITION),
                attachment,
                "{ty}"
            );
            if attachment {
                assert_eq!(
                    headers[header::CONTENT_DISPOSITION],
                    "attachment; filename=\"x__y_.svg\""
                );
            }
        }
    }
}
