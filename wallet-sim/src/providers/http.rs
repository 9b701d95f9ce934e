//! JSON over HTTP between the parties: a small HTTP/1.1 client (one request per connection) and the
//! helpers the providers' axum servers share.

use crate::error::{Error, Result};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A call's answer: HTTP status and JSON body (Null when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// `POST base+path` with a JSON body (and `Authorization: Bearer` when given).
pub async fn post(base: &str, path: &str, bearer: Option<&str>, body: &Value) -> Result<Answer> {
    request("POST", base, path, bearer, Some(body)).await
}

/// `GET base+path` (with `Authorization: Bearer` when given).
pub async fn get(base: &str, path: &str, bearer: Option<&str>) -> Result<Answer> {
    request("GET", base, path, bearer, None).await
}

async fn request(
    method: &str,
    base: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer> {
    let addr =
        base.strip_prefix("http://").ok_or_else(|| Error::http(base, "only http:// is spoken here"))?;
    let addr = addr.trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Error::http(format!("connecting to {base}"), e))?;
    let body = body.filter(|b| !b.is_null()).map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| Error::http(format!("{method} {base}{path}"), e))?;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .map_err(|_| Error::http(format!("{method} {base}{path}"), "no answer in 30 s"))?
        .map_err(|e| Error::http(format!("{method} {base}{path}"), e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) =
        text.split_once("\r\n\r\n").ok_or_else(|| Error::http(format!("{base}{path}"), "no HTTP header"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::http(format!("{base}{path}"), "no HTTP status"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body_text = if chunked { dechunk(rest)? } else { rest.to_string() };
    let body = if body_text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body_text.trim())
            .map_err(|e| Error::http(format!("{base}{path}"), format!("answer is not JSON: {e}")))?
    };
    Ok(Answer { status, body })
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").ok_or_else(|| Error::http("chunked body", "cut short"))?;
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| Error::http("chunked body", "bad chunk size"))?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..n).ok_or_else(|| Error::http("chunked body", "chunk cut short"))?;
        out.push_str(chunk);
        s = rest.get(n + 2..).unwrap_or("");
    }
}

/// The body of a 2xx answer, or an error naming the party and what it said.
pub fn ok(party: &str, a: Answer) -> Result<Value> {
    if (200..300).contains(&a.status) {
        Ok(a.body)
    } else {
        Err(Error::Status { party: party.to_string(), status: a.status, body: a.body.to_string() })
    }
}

/// The token service's answer to pass on to the phone: a refusal of the call itself (4xx: bad
/// input, a CVV2 the requestor must send, an unknown session) is passed on with its status, kind
/// and detail — the token service's errors never hold card data — instead of being read as an
/// outcome; anything else is the outcome.
pub fn relay(a: Answer) -> std::result::Result<Answer, ApiError> {
    if !(400..500).contains(&a.status) {
        return Ok(a);
    }
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST);
    let text = |k: &str| a.body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Err(ApiError(status, text("error"), format!("the token service refused the call: {}", text("detail"))))
}

/// A provider's error answer: `{"error": kind, "detail"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String, pub String);

impl ApiError {
    pub fn bad(detail: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::BAD_REQUEST, "bad_request".into(), detail.to_string())
    }
    pub fn refused(detail: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::CONFLICT, "refused".into(), detail.to_string())
    }
    pub fn upstream(detail: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::BAD_GATEWAY, "upstream".into(), detail.to_string())
    }
    pub fn not_found(detail: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::NOT_FOUND, "not_found".into(), detail.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::upstream(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1, "detail": self.2}))).into_response()
    }
}

pub type ApiResult = std::result::Result<Json<Value>, ApiError>;

/// A string field of a JSON body.
pub fn field<'a>(v: &'a Value, name: &str) -> std::result::Result<&'a str, ApiError> {
    v.get(name).and_then(Value::as_str).ok_or_else(|| ApiError::bad(format!("field {name} is required")))
}

/// Runs an axum router on `listener` behind the shared door (header and request timeouts, body
/// and connection limits; loopback, so plaintext) until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), door::Error> {
    door::serve(listener, router, door::DoorConfig::default(), stop).await
}
