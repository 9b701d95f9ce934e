//! JSON over HTTP between the parties: a small HTTP/1.1 client (one request per connection) and the
//! helpers the providers' axum servers share.
//!
//! The client speaks `http://` and `https://` (rustls, TLS 1.3, the server's certificate checked
//! against the CAs this process trusts: [`trust`]; with a client certificate when one is set:
//! [`use_client_certificate`], for a door that wants mutual TLS). No CA is trusted by default:
//! an `https://` call without one is refused, never made unchecked.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the process's `https://` calls trust and present.
#[derive(Default)]
struct ClientTls {
    roots: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// The config built from the above (rebuilt when they change).
    config: Option<Arc<rustls::ClientConfig>>,
}

static CLIENT_TLS: Mutex<Option<ClientTls>> = Mutex::new(None);

fn tls_error(detail: impl std::fmt::Display) -> Error {
    Error::start("TLS client", detail)
}

fn rebuild(t: &mut ClientTls) -> Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for c in &t.roots {
        roots.add(c.clone()).map_err(tls_error)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(door::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots);
    let mut config = match &t.identity {
        Some((chain, key)) => {
            builder.with_client_auth_cert(chain.clone(), key.clone_key()).map_err(tls_error)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    t.config = Some(Arc::new(config));
    Ok(())
}

/// Trusts the CA certificates of a PEM file for this process's `https://` calls (in addition to
/// those trusted already). Errors name the file, never a key.
pub fn trust(ca_pem: &Path) -> Result<()> {
    let certs = door::tls::certs(ca_pem).map_err(tls_error)?;
    let mut g = CLIENT_TLS.lock().unwrap_or_else(|p| p.into_inner());
    let t = g.get_or_insert_with(ClientTls::default);
    for c in certs {
        if !t.roots.contains(&c) {
            t.roots.push(c);
        }
    }
    rebuild(t)
}

/// Presents this certificate chain and key (PEM files) to servers that ask for one (a door with
/// a `client_ca`).
pub fn use_client_certificate(cert_pem: &Path, key_pem: &Path) -> Result<()> {
    let chain = door::tls::certs(cert_pem).map_err(tls_error)?;
    let key = door::tls::key(key_pem).map_err(tls_error)?;
    let mut g = CLIENT_TLS.lock().unwrap_or_else(|p| p.into_inner());
    let t = g.get_or_insert_with(ClientTls::default);
    t.identity = Some((chain, Arc::new(key)));
    rebuild(t)
}

fn client_config() -> Option<Arc<rustls::ClientConfig>> {
    CLIENT_TLS.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|t| t.config.clone())
}

/// Writes `req` and reads the whole answer (the server closes the connection after it; over TLS
/// with its close_notify — an answer cut short without one is an error, never taken as whole).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req).await?;
    s.flush().await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    Ok(raw)
}

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
    let (tls, addr) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
        (Some(a), _) => (true, a),
        (None, Some(a)) => (false, a),
        _ => return Err(Error::http(base, "only http:// and https:// are spoken here")),
    };
    let addr = addr.trim_end_matches('/');
    let body = body.filter(|b| !b.is_null()).map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let what = || format!("{method} {base}{path}");
    let config = match tls {
        true => Some(client_config().ok_or_else(|| {
            Error::http(what(), "https:// needs a trusted CA (wallet-sim --ca-file, providers::http::trust)")
        })?),
        false => None,
    };
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Error::http(format!("connecting to {base}"), e))?;
        match config {
            None => {
                let mut s = tcp;
                exchange(&mut s, req.as_bytes()).await
            }
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| Error::http(format!("connecting to {base}"), e))?;
                let mut s = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Error::http(format!("TLS with {base}"), e))?;
                exchange(&mut s, req.as_bytes()).await
            }
        }
        .map_err(|e| Error::http(what(), e))
    };
    let raw = tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .map_err(|_| Error::http(what(), "no answer in 30 s"))??;
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

/// Runs an axum router on `listener` behind the shared door under `cfg` (header and request
/// timeouts, body and connection limits, TLS when configured; plaintext only on loopback unless
/// `insecure_plaintext`) until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cfg: door::DoorConfig,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), door::Error> {
    door::serve(listener, router, cfg, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_without_a_trusted_ca_is_refused_before_connecting_and_other_schemes_too() {
        // Nothing listens on port 1: the refusal comes before any connection.
        let e = get("https://127.0.0.1:1", "/", None).await.expect_err("refused");
        assert!(e.to_string().contains("trusted CA"), "{e}");
        let e = get("ftp://127.0.0.1:1", "/", None).await.expect_err("refused");
        assert!(e.to_string().contains("http:// and https://"), "{e}");
    }

    #[test]
    fn a_ca_file_that_does_not_load_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").expect("write");
        let e = trust(&f).expect_err("refused");
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }
}
