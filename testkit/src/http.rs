//! The tests' HTTP client: one request per connection (`Connection: close`), over plain TCP to a
//! server on 127.0.0.1, with an optional bearer credential and a body. Enough for the network's
//! doors without an HTTP client dependency; chunked bodies are put back together.

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body (de-chunked).
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.body.trim()).unwrap_or(serde_json::Value::Null)
    }

    /// The status line.
    pub fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// The whole answer as received (head, blank line, body).
    pub fn raw(&self) -> String {
        format!("{}\r\n\r\n{}", self.head, self.body)
    }
}

fn request_text(addr: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> String {
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    let content = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
    };
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{body}")
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply { status, head: head.to_string(), body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(rest));
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

fn host(base: &str) -> &str {
    base.trim_start_matches("http://").trim_end_matches('/')
}

/// `method base+path` (`base` as `http://host:port` or `host:port`).
pub async fn request(base: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = host(base);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(request_text(addr, method, path, bearer, body).as_bytes()).await.expect("write the request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read the answer");
    parse(&out)
}

/// `GET base+path`.
pub async fn get(base: &str, path: &str, bearer: Option<&str>) -> Reply {
    request(base, "GET", path, bearer, "").await
}

/// `POST base+path` with a JSON body.
pub async fn post(base: &str, path: &str, bearer: Option<&str>, body: &str) -> Reply {
    request(base, "POST", path, bearer, body).await
}

/// [`request`] from synchronous code.
pub fn request_blocking(base: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> Reply {
    use std::io::{Read, Write};
    let addr = host(base);
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(request_text(addr, method, path, bearer, body).as_bytes()).expect("write the request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the answer");
    parse(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\r\n{\"a\":1}");
        assert_eq!((r.status, r.json()["a"].as_i64()), (201, Some(1)));
        let c = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"b\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        );
        assert_eq!((c.status, c.body.as_str()), (200, "{\"b\":2}"));
        assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    }
}
