//! [`ApiError`]: the only place HTTP statuses are decided, and the JSON body every error has.
//!
//! Every 4xx and 5xx is a problem document the Replicate clients understand (they read
//! `title`, `detail` and `status`) plus a stable machine-readable `code`:
//!
//! ```json
//! {"status": 422, "code": "invalid_input", "title": "Invalid input",
//!  "detail": "input.width: must be between 8 and 2048, got 4", "field": "input.width"}
//! ```
//!
//! A 5xx carries a generic detail; the real error is logged, never sent.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The closed set of error codes clients may match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON, or not of the expected shape.
    InvalidJson,
    /// A field of the request is missing or wrong.
    InvalidRequest,
    /// The model input does not fit the model's schema.
    InvalidInput,
    /// A header has a value the server cannot use.
    InvalidHeader,
    /// A list cursor is not one the server issued.
    InvalidCursor,
    /// A query parameter is wrong.
    InvalidQuery,
    /// A path segment cannot be decoded.
    InvalidPath,
    /// No `Authorization` header, or not a bearer token.
    Unauthenticated,
    /// The token is not valid.
    InvalidToken,
    /// No such prediction.
    PredictionNotFound,
    /// No such model.
    ModelNotFound,
    /// No such model version.
    VersionNotFound,
    /// No such file.
    FileNotFound,
    /// No such batch.
    BatchNotFound,
    /// No such webhook message.
    WebhookNotFound,
    /// No such workflow.
    WorkflowNotFound,
    /// No such workflow run.
    RunNotFound,
    /// No such deployment.
    DeploymentNotFound,
    /// The account already has a deployment with that name.
    DeploymentExists,
    /// No such collection.
    CollectionNotFound,
    /// No such route.
    RouteNotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The state machine refused the change (e.g. canceling a finished prediction).
    InvalidTransition,
    /// A client-supplied prediction id is taken by a different prediction.
    IdConflict,
    /// An `Idempotency-Key` was reused with a different request.
    IdempotencyKeyReused,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The body is not JSON.
    UnsupportedMediaType,
    /// Too many writers on one prediction; retry.
    Contention,
    /// The store is unreachable; retry after the hinted delay.
    StoreUnavailable,
    /// The request did not finish within the server's request timeout; retry.
    RequestTimeout,
    /// Anything else went wrong on the server.
    Internal,
    /// The route is for the admin token.
    AdminRequired,
    /// The account cannot afford the prediction.
    InsufficientCredits,
    /// The account is over one of its limits (running predictions, creates per minute).
    RateLimited,
    /// No such account.
    AccountNotFound,
    /// The username is taken.
    AccountExists,
    /// No such API token.
    TokenNotFound,
    /// A signed URL's signature is not the server's.
    InvalidSignature,
    /// A signed URL's time is past.
    UrlExpired,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidHeader | InvalidCursor | InvalidQuery | InvalidPath => {
                StatusCode::BAD_REQUEST
            }
            InvalidRequest | InvalidInput | IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Unauthenticated | InvalidToken => StatusCode::UNAUTHORIZED,
            PredictionNotFound | ModelNotFound | VersionNotFound | FileNotFound | BatchNotFound
            | WebhookNotFound | WorkflowNotFound | RunNotFound | RouteNotFound
            | DeploymentNotFound | CollectionNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            InvalidTransition | IdConflict => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Contention => StatusCode::TOO_MANY_REQUESTS,
            StoreUnavailable | RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            AdminRequired => StatusCode::FORBIDDEN,
            InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            AccountNotFound | TokenNotFound => StatusCode::NOT_FOUND,
            AccountExists | DeploymentExists => StatusCode::CONFLICT,
            InvalidSignature | UrlExpired => StatusCode::FORBIDDEN,
        }
    }

    fn title(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "Invalid JSON",
            InvalidRequest => "Invalid request",
            InvalidInput => "Invalid input",
            InvalidHeader => "Invalid header",
            InvalidCursor => "Invalid cursor",
            InvalidQuery => "Invalid query",
            InvalidPath => "Invalid path",
            Unauthenticated => "Unauthenticated",
            InvalidToken => "Invalid token",
            PredictionNotFound => "Prediction not found",
            ModelNotFound => "Model not found",
            VersionNotFound => "Version not found",
            FileNotFound => "File not found",
            BatchNotFound => "Batch not found",
            WebhookNotFound => "Webhook message not found",
            WorkflowNotFound => "Workflow not found",
            RunNotFound => "Run not found",
            DeploymentNotFound => "Deployment not found",
            DeploymentExists => "Deployment exists",
            CollectionNotFound => "Collection not found",
            RouteNotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            InvalidTransition => "Invalid transition",
            IdConflict => "Prediction id conflict",
            IdempotencyKeyReused => "Idempotency key reused",
            PayloadTooLarge => "Payload too large",
            UnsupportedMediaType => "Unsupported media type",
            Contention => "Too many concurrent updates",
            StoreUnavailable => "Service unavailable",
            RequestTimeout => "Request timed out",
            Internal => "Internal server error",
            AdminRequired => "Admin token required",
            InsufficientCredits => "Insufficient credits",
            RateLimited => "Request was throttled",
            AccountNotFound => "Account not found",
            AccountExists => "Account exists",
            TokenNotFound => "Token not found",
            InvalidSignature => "Invalid signature",
            UrlExpired => "URL expired",
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    field: Option<String>,
    retry_after: Option<Duration>,
    extra: serde_json::Map<String, serde_json::Value>,
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a code and a message naming the problem.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            field: None,
            retry_after: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Adds a member to the body (`price`, `available`): what a client needs to act on it.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Names the request field to blame.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// A 500 whose cause is logged but not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "the server failed to handle the request; it has been logged",
        )
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    status: u16,
    code: ErrorCode,
    title: &'static str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = Problem {
            status: status.as_u16(),
            code: self.code,
            title: self.code.title(),
            detail: &self.detail,
            field: self.field.as_deref(),
            extra: &self.extra,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<augur_core::Error> for ApiError {
    fn from(e: augur_core::Error) -> Self {
        use augur_core::Error as E;
        match e {
            E::NotFound(id) => ApiError::new(
                ErrorCode::PredictionNotFound,
                format!("prediction {id} not found"),
            ),
            E::Transition(t) => ApiError::new(ErrorCode::InvalidTransition, t.to_string()),
            E::IdConflict(id) => ApiError::new(
                ErrorCode::IdConflict,
                format!("prediction id {id} is already used by a prediction with different parameters"),
            )
            .with_field("id"),
            E::IdRetired(id) => ApiError::new(
                ErrorCode::InvalidRequest,
                format!("prediction id {id} is too old to be used: ids whose time is past the tombstone retention are never used again; choose a new id"),
            )
            .with_field("id"),
            E::IdempotencyKeyReused { key } => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                format!("Idempotency-Key {key:?} was already used with a different request body; use a new key for a new request"),
            )
            .with_field("Idempotency-Key"),
            E::Contention(id) => ApiError::new(
                ErrorCode::Contention,
                format!("prediction {id} is being updated by too many writers; retry"),
            )
            .with_retry_after(Duration::from_secs(1)),
            E::Store(store) => store.into(),
            E::RunNotFound(id) => {
                ApiError::new(ErrorCode::RunNotFound, format!("run {id:?} not found"))
            }
            E::WorkflowNotFound(name) => ApiError::new(
                ErrorCode::WorkflowNotFound,
                format!("workflow {name} not found; GET /v1/workflows lists those you can run"),
            ),
            E::InvalidBlueprint(e) => {
                ApiError::new(ErrorCode::InvalidInput, e.to_string()).with_field(e.field)
            }
            E::DeploymentNotFound(name) => ApiError::new(
                ErrorCode::DeploymentNotFound,
                format!("deployment {name} not found; GET /v1/deployments lists yours"),
            ),
            E::DeploymentExists(name) => ApiError::new(
                ErrorCode::DeploymentExists,
                format!("deployment {name} already exists; PATCH it to make a new release"),
            )
            .with_field("name"),
            E::BatchNotFound(id) => {
                ApiError::new(ErrorCode::BatchNotFound, format!("batch {id:?} not found"))
            }
            E::AccountNotFound(id) => ApiError::new(
                ErrorCode::AccountNotFound,
                format!("account {id} not found"),
            ),
            E::AccountExists(id) => ApiError::new(
                ErrorCode::AccountExists,
                format!("the username {id} is taken"),
            )
            .with_field("username"),
            E::TokenNotFound(id) => ApiError::new(
                ErrorCode::TokenNotFound,
                format!("token {id} not found"),
            ),
            E::InsufficientCredits {
                account,
                available,
                price,
                model,
            } => {
                let what = model.as_ref().map_or_else(
                    || "this change".to_owned(),
                    |m| format!("a prediction of {m}"),
                );
                let mut e = ApiError::new(
                    ErrorCode::InsufficientCredits,
                    format!(
                        "{what} costs {price} credits and account {account} has {available} available; top up or wait for running predictions to settle"
                    ),
                )
                .with("price", price)
                .with("available", available);
                if let Some(model) = model {
                    e = e.with("model", model.to_string());
                }
                e
            }
            E::TooManyActive { account, limit } => ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "account {account} has {limit} predictions that have not finished, its limit; retry when one finishes"
                ),
            )
            .with("limit", limit)
            .with_retry_after(Duration::from_secs(1)),
            E::Invalid(why) => ApiError::new(ErrorCode::InvalidRequest, why),
            E::Busy(what) => ApiError::new(
                ErrorCode::Contention,
                format!("{what} is being updated by too many writers; retry"),
            )
            .with_retry_after(Duration::from_secs(1)),
            other => ApiError::internal(other),
        }
    }
}

impl From<augur_core::store::Error> for ApiError {
    fn from(e: augur_core::store::Error) -> Self {
        use augur_core::store::Error as S;
        match e {
            S::NotFound(id) => ApiError::new(
                ErrorCode::PredictionNotFound,
                format!("prediction {id} not found"),
            ),
            S::Unavailable { backend, source } => {
                tracing::warn!(backend, error = %source, "store unavailable");
                ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the prediction store is unavailable; retry shortly",
                )
                .with_retry_after(Duration::from_secs(2))
            }
            S::NoSpace { backend, source } => {
                tracing::warn!(backend, error = %source, "store has no space left");
                ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the prediction store has no space left (its disk or memory is full), so writes are refused until an operator frees space; reads still work; retry later",
                )
                .with_retry_after(Duration::from_secs(5))
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                // "Failed to deserialize the JSON body into the target type: input: invalid type..."
                let text = e.body_text();
                let detail = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, rest)| rest);
                let (path, message) = split_serde_path(detail);
                let (field, message) = augur_engine::models::describe_serde_error(path, message);
                match field {
                    Some(field) => {
                        ApiError::new(ErrorCode::InvalidRequest, format!("{field}: {message}"))
                            .with_field(field)
                    }
                    None => ApiError::new(ErrorCode::InvalidRequest, message),
                }
            }
            JsonRejection::JsonSyntaxError(e) => {
                // "input.?: EOF while parsing an object at line 1 column 20": the path is where
                // the document broke off, which names no field; the position does.
                let text = source_text(&e);
                let (_, message) = split_serde_path(&text);
                let at = message
                    .rfind(" at line ")
                    .map(|i| message[i + 4..].replacen(" column", ", column", 1))
                    .map(|at| format!(" ({at})"))
                    .unwrap_or_default();
                let (_, said) = augur_engine::models::describe_serde_error(".", message);
                ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("the request body is not valid JSON: {said}{at}"),
                )
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the request body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            }
            other => ApiError::new(ErrorCode::InvalidRequest, other.body_text()),
        }
    }
}

/// Splits serde_path_to_error's `path: message` (the path has no spaces; `.` when absent).
fn split_serde_path(text: &str) -> (&str, &str) {
    match text.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(' ') => (path, message),
        _ => (".", text),
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("invalid query string: {detail}"),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("invalid path: {}", rejection.body_text()),
        )
    }
}

/// `Json` whose rejections are [`ApiError`]s, so bad bodies get the same error shape.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A JSON body's shape is read before it is decoded, so that a body of many tiny
        // values cannot decode into a hundred times its size (`json_bounds`). Other content
        // types go straight to `Json`, which answers 415.
        // The same test as `Json`'s: `application/json` or `application/*+json`.
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|mime| {
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return match Json::<JsonObject<T>>::from_request(req, state).await {
                Ok(Json(JsonObject(value))) => Ok(AppJson(value)),
                Err(rejection) => Err(rejection.into()),
            };
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::from(JsonRejection::from(rejection)))?;
        crate::json_bounds::check(&bytes)?;
        match Json::<JsonObject<T>>::from_bytes(&bytes) {
            Ok(Json(JsonObject(value))) => Ok(AppJson(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// A body that must be a JSON object, as every [`AppJson`] body is documented. A derived
/// struct alone would also take a list of its fields in order (`[null, null]`), which no
/// client means (schemathesis sent one and it was accepted).
struct JsonObject<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
            .map(JsonObject)
    }
}

/// The answer for routes that do not exist, sent after reading the body (up to the body limit)
/// so that a client still sending it reads the answer rather than a broken pipe.
pub async fn route_not_found(uri: axum::http::Uri, body: axum::body::Body) -> ApiError {
    let _ = axum::body::to_bytes(body, 1 << 20).await;
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {}", uri.path()),
    )
}

/// The answer for a known route called with the wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `Path` whose rejections are [`ApiError`]s.
pub struct AppPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(AppPath(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// `Query` whose rejections are [`ApiError`]s.
pub struct AppQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(AppQuery(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// How many items a list page holds when the query does not say.
const DEFAULT_PAGE: usize = 100;
/// The most items a list page may hold.
const MAX_PAGE: usize = 1000;

/// A list route's `limit` query parameter: [`DEFAULT_PAGE`] when absent, else 1 to
/// [`MAX_PAGE`], or a 400 naming the field.
pub(crate) fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        )
        .with_field("limit"))
    }
}
