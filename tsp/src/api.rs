//! The provisioning HTTP API (axum, JSON) over the token service. Every call carries
//! `Authorization: Bearer <requestor id>:<secret>`. Routes (see `docs/token-service.md`):
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/provision` | `{request_id, pan, expiry, device_public_key, entry_modes?, cvv2?}` | 200 approved, 202 otp_required, 200 declined / not_eligible, 503 issuer_unavailable; 400 `cvv2_required` without `cvv2` from a requestor configured `cvv2 = "required"` |
//! | `POST /v1/provision/{id}/otp` | `{otp}` | as above |
//! | `POST /v1/tokens/{ref}/confirm` | — | `{status: "active"}` |
//! | `POST /v1/tokens/{ref}/suspend`, `/resume`, `/delete` | — | `{status}` |
//! | `POST /v1/tokens/{ref}/replenish` | — | `{status, encrypted_token_data}` (cloud tokens) |
//! | `GET /v1/events?after=N` | — | `{events: [...]}`: issuer-initiated changes of the requestor's tokens |
//! | `POST /v1/issuer/tokens/{suspend,resume,delete}` | `{pan}` | `{tokens: [...]}` — issuers only (`Bearer <issuer name>:<secret>`) |
//!
//! Errors are `{"error": kind, "detail": ...}` with 400, 401, 404 or 409; no answer ever holds a
//! PAN, and no error repeats one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::service::{
    IssuerTokenView, ProvisionOutcome, ProvisionRequest, Requestor, TokenEvent, TokenService, TspError,
};
use crate::vault::TokenStatus;

fn error(status: StatusCode, kind: &str, detail: &str) -> Response {
    (status, Json(json!({"error": kind, "detail": detail}))).into_response()
}

impl IntoResponse for TspError {
    fn into_response(self) -> Response {
        match &self {
            TspError::Unauthorized => error(StatusCode::UNAUTHORIZED, "unauthorized", &self.to_string()),
            TspError::BadRequest(d) => error(StatusCode::BAD_REQUEST, "bad_request", d),
            TspError::NotFound => error(StatusCode::NOT_FOUND, "not_found", &self.to_string()),
            TspError::Conflict(d) => error(StatusCode::CONFLICT, "conflict", d),
            TspError::Cvv2Required => error(StatusCode::BAD_REQUEST, "cvv2_required", &self.to_string()),
        }
    }
}

fn outcome(o: ProvisionOutcome) -> Response {
    let status = match &o {
        ProvisionOutcome::OtpRequired { .. } => StatusCode::ACCEPTED,
        ProvisionOutcome::IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, Json(o)).into_response()
}

fn requestor<'a>(svc: &'a TokenService, headers: &HeaderMap) -> Result<&'a Requestor, TspError> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or(TspError::Unauthorized)?;
    let cred = auth.strip_prefix("Bearer ").ok_or(TspError::Unauthorized)?;
    let (id, secret) = cred.split_once(':').ok_or(TspError::Unauthorized)?;
    svc.authenticate(id, secret)
}

#[utoipa::path(
    post,
    path = "/v1/provision",
    request_body = ProvisionRequest,
    responses(
        (status = 200, description = "approved, declined or not eligible", body = ProvisionOutcome),
        (status = 202, description = "OTP step-up required", body = ProvisionOutcome),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "unknown requestor or wrong secret", body = ErrorBody),
        (status = 409, description = "conflict", body = ErrorBody),
        (status = 503, description = "issuer unavailable", body = ProvisionOutcome),
    )
)]
async fn provision(
    State(svc): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let r = match requestor(&svc, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let req: ProvisionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        // serde's message names the field and the position; it does not quote string values.
        Err(e) => return TspError::BadRequest(format!("body: {}", scrub(&e.to_string()))).into_response(),
    };
    match svc.provision(r, req).await {
        Ok(o) => outcome(o),
        Err(e) => e.into_response(),
    }
}

/// The OTP the cardholder received.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct OtpBody {
    otp: String,
}

/// An error: its kind and what was wrong.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `bad_request`, `cvv2_required`, `not_found` or `conflict`.
    error: String,
    detail: String,
}

/// A token's state after a lifecycle call.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatusBody {
    /// `inactive`, `active`, `suspended` or `deleted`.
    status: String,
    /// Replenishment only: the new limited-use keys sealed for the device (hex).
    encrypted_token_data: Option<String>,
}

/// The API's security scheme: `Authorization: Bearer <requestor id>:<secret>`.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "requestor",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<requestor id>:<secret>")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "issuer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<issuer name>:<secret>")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the provisioning API.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "paynet token service", description = "Token provisioning and lifecycle for registered token requestors"),
    paths(provision, otp, token_action, events, issuer_action),
    components(schemas(
        ProvisionRequest,
        ProvisionOutcome,
        OtpBody,
        ErrorBody,
        StatusBody,
        EventsBody,
        TokenEvent,
        IssuerPanBody,
        IssuerTokensBody,
        IssuerTokenView
    )),
    modifiers(&Security),
    security(("requestor" = []))
)]
pub struct ApiDoc;

#[utoipa::path(
    post,
    path = "/v1/provision/{id}/otp",
    params(("id" = String, Path, description = "the provisioning id")),
    request_body = OtpBody,
    responses(
        (status = 200, description = "approved or declined", body = ProvisionOutcome),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "unknown requestor or wrong secret", body = ErrorBody),
        (status = 404, description = "no such provisioning session", body = ErrorBody),
        (status = 409, description = "conflict", body = ErrorBody),
        (status = 503, description = "issuer unavailable", body = ProvisionOutcome),
    )
)]
async fn otp(
    State(svc): State<Arc<TokenService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let r = match requestor(&svc, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let b: OtpBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => {
            return TspError::BadRequest("body: {\"otp\": \"six digits\"} expected".into()).into_response();
        }
    };
    match svc.verify_otp(r, &id, &b.otp).await {
        Ok(o) => outcome(o),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/tokens/{token_ref}/{action}",
    params(
        ("token_ref" = String, Path, description = "the token's reference"),
        ("action" = String, Path, description = "confirm, suspend, resume, delete, or replenish (cloud tokens: a new batch of limited-use keys in encrypted_token_data)"),
    ),
    responses(
        (status = 200, description = "the token's new state", body = StatusBody),
        (status = 401, description = "unknown requestor or wrong secret", body = ErrorBody),
        (status = 404, description = "no such token or action", body = ErrorBody),
        (status = 409, description = "the lifecycle does not allow it", body = ErrorBody),
    )
)]
async fn token_action(
    State(svc): State<Arc<TokenService>>,
    headers: HeaderMap,
    Path((token_ref, action)): Path<(String, String)>,
) -> Response {
    let r = match requestor(&svc, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if action == "replenish" {
        return match svc.replenish(r, &token_ref).await {
            Ok(sealed) => Json(json!({"status": "active", "encrypted_token_data": sealed})).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let to = match action.as_str() {
        "confirm" | "resume" => TokenStatus::Active,
        "suspend" => TokenStatus::Suspended,
        "delete" => TokenStatus::Deleted,
        _ => return error(StatusCode::NOT_FOUND, "not_found", "unknown action"),
    };
    match svc.lifecycle(r, &token_ref, to).await {
        Ok(s) => Json(json!({"status": s.as_str()})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The requestor's issuer-initiated events.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventsBody {
    pub events: Vec<TokenEvent>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events with a higher sequence number.
    #[serde(default)]
    pub after: u64,
}

#[utoipa::path(
    get,
    path = "/v1/events",
    params(EventsQuery),
    responses(
        (status = 200, description = "issuer-initiated changes of the requestor's tokens", body = EventsBody),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "unknown requestor or wrong secret", body = ErrorBody),
    )
)]
async fn events(
    State(svc): State<Arc<TokenService>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = match requestor(&svc, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Ok(q) = query else {
        return TspError::BadRequest("after: a non-negative integer expected".into()).into_response();
    };
    Json(EventsBody { events: svc.events(r, q.after) }).into_response()
}

/// An issuer's lifecycle call: the PAN whose tokens change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct IssuerPanBody {
    pub pan: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IssuerTokensBody {
    pub tokens: Vec<IssuerTokenView>,
}

#[utoipa::path(
    post,
    path = "/v1/issuer/tokens/{action}",
    params(("action" = String, Path, description = "suspend, resume or delete every token of the PAN")),
    request_body = IssuerPanBody,
    responses(
        (status = 200, description = "the PAN's tokens and their states", body = IssuerTokensBody),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "unknown issuer or wrong secret", body = ErrorBody),
        (status = 404, description = "no such action, or a PAN of another issuer", body = ErrorBody),
    ),
    security(("issuer" = []))
)]
async fn issuer_action(
    State(svc): State<Arc<TokenService>>,
    headers: HeaderMap,
    Path(action): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let cred = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|c| c.split_once(':'));
    let issuer = match cred.map(|(n, s)| svc.authenticate_issuer(n, s)) {
        Some(Ok(i)) => i,
        _ => return TspError::Unauthorized.into_response(),
    };
    let to = match action.as_str() {
        "resume" => TokenStatus::Active,
        "suspend" => TokenStatus::Suspended,
        "delete" => TokenStatus::Deleted,
        _ => return error(StatusCode::NOT_FOUND, "not_found", "unknown action"),
    };
    let b: IssuerPanBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return TspError::BadRequest(format!("body: {}", scrub(&e.to_string()))).into_response(),
    };
    match svc.issuer_lifecycle(issuer, &b.pan, to) {
        Ok(tokens) => Json(IssuerTokensBody { tokens }).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Removes long digit runs from a message (a PAN sent as a JSON number would otherwise be
/// quoted back by the JSON parser's error).
fn scrub(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut run = String::new();
    for c in msg.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        if run.len() >= 6 {
            out.push_str("[digits]");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

async fn openapi() -> Response {
    use utoipa::OpenApi;
    match ApiDoc::openapi().to_json() {
        Ok(j) => ([(axum::http::header::CONTENT_TYPE, "application/json")], j).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "document"),
    }
}

pub fn router(svc: Arc<TokenService>) -> Router {
    Router::new()
        .route("/openapi.json", axum::routing::get(openapi))
        .route("/v1/provision", post(provision))
        .route("/v1/provision/{id}/otp", post(otp))
        .route("/v1/tokens/{token_ref}/{action}", post(token_action))
        .route("/v1/events", axum::routing::get(events))
        .route("/v1/issuer/tokens/{action}", post(issuer_action))
        .with_state(svc)
}

/// Serves the API on `listener` behind `door` (limits, TLS) until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<TokenService>,
    door: door::DoorConfig,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), door::Error> {
    door::serve(listener, router(svc), door, stop).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn scrub_removes_long_digit_runs() {
        assert_eq!(
            super::scrub("invalid type: integer `4761739001010010`, line 1 column 23"),
            "invalid type: integer `[digits]`, line 1 column 23"
        );
    }
}
