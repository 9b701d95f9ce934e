//! The door under attack: real servers on 127.0.0.1, raw sockets as the attacker.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use door::{DoorConfig, DoorTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn app() -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/echo", post(|b: axum::body::Bytes| async move { format!("{}\n", b.len()) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late\n"
            }),
        )
}

struct Door {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), door::Error>>,
}

impl Door {
    async fn start(cfg: DoorConfig) -> Door {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(door::serve(l, app(), cfg, stop.clone()));
        Door { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("stops").expect("join");
        r.expect("served");
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: &[u8]) -> String {
    s.write_all(req).await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_root(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    exchange(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await
}

#[tokio::test]
async fn a_slow_header_is_cut_off_while_others_are_served() {
    let d = Door::start(DoorConfig { header_read_timeout_ms: 400, ..DoorConfig::default() }).await;
    // Half a header, then silence (slowloris).
    let mut slow = TcpStream::connect(d.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
    let t0 = Instant::now();
    // Meanwhile others are answered at once.
    for _ in 0..5 {
        let a = tokio::time::timeout(Duration::from_secs(2), get_root(d.addr)).await.expect("served");
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
    assert!(t0.elapsed() < Duration::from_millis(400), "others waited for the slow client");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the slow client was never cut off");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(300), "cut off too early: {waited:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "the half request was served");
    d.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_a_slot_frees() {
    let d = Door::start(DoorConfig { max_connections: 2, ..DoorConfig::default() }).await;
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        // A keep-alive request: the connection stays open and holds its slot.
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut b = [0u8; 256];
        let n = s.read(&mut b).await.expect("read");
        assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let third = tokio::spawn(get_root(d.addr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served past the limit of 2");
    held.pop();
    let a = tokio::time::timeout(Duration::from_secs(3), third).await.expect("served once a slot freed");
    assert!(a.expect("join").starts_with("HTTP/1.1 200"));
    drop(held);
    d.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let d = Door::start(DoorConfig { body_limit: 1024, ..DoorConfig::default() }).await;
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let body = vec![b'x'; 100 * 1024];
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&out));
    // Chunked, no declared length: cut off on the stream.
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'y'; 0x400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let a = exchange(&mut s, &req).await;
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    // Within the limit: served.
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let a = exchange(
        &mut s,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("3\n"), "{a}");
    d.stop().await;
}

#[tokio::test]
async fn a_request_over_its_deadline_is_408() {
    let d = Door::start(DoorConfig { request_timeout_ms: 200, ..DoorConfig::default() }).await;
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let a = exchange(&mut s, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(a.starts_with("HTTP/1.1 408"), "{a}");
    d.stop().await;
}

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, as PEM files.
fn pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, sans) in [
        ("server", vec!["localhost".to_string(), "127.0.0.1".to_string()]),
        ("client", vec!["bureau".to_string()]),
    ] {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(sans).expect("params").signed_by(&key, &ca).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

async fn tls_get(addr: SocketAddr, dir: &Path, with_cert: bool) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca") {
        roots.add(c.expect("cert")).expect("add");
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots);
    let config = if with_cert {
        let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join("client.pem"))
            .expect("pem")
            .map(|c| c.expect("cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).expect("key");
        builder.with_client_auth_cert(chain, key).expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut s = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn tls_and_mutual_tls_round_trip() {
    let dir = tempfile::tempdir().expect("tmp");
    pki(dir.path());
    let tls = |client_ca: Option<&str>| DoorTls {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: client_ca.map(|c| dir.path().join(c)),
    };
    let d = Door::start(DoorConfig { tls: Some(tls(None)), ..DoorConfig::default() }).await;
    let a = tls_get(d.addr, dir.path(), false).await.expect("TLS round trip");
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("hello\n"), "{a}");
    // Plain HTTP to a TLS door gets no answer.
    let plain = tokio::time::timeout(Duration::from_secs(6), get_root(d.addr)).await.expect("closed");
    assert!(!plain.contains("200 OK"), "{plain}");
    d.stop().await;

    let d = Door::start(DoorConfig { tls: Some(tls(Some("ca.pem"))), ..DoorConfig::default() }).await;
    let refused = tls_get(d.addr, dir.path(), false).await;
    assert!(
        refused.as_ref().map_or(true, |a| !a.contains("200 OK")),
        "served without a client cert: {refused:?}"
    );
    let a = tls_get(d.addr, dir.path(), true).await.expect("mutual TLS round trip");
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    d.stop().await;
}

#[tokio::test]
async fn plaintext_off_loopback_is_refused() {
    let l = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let r = door::serve(l, app(), DoorConfig::default(), CancellationToken::new()).await;
    match r {
        Err(door::Error::PlaintextOffLoopback { addr: a }) => assert_eq!(a, addr),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // With insecure_plaintext the operator accepts the risk: served.
    let l = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let stop = CancellationToken::new();
    let cfg = DoorConfig { insecure_plaintext: true, ..DoorConfig::default() };
    let task = tokio::spawn(door::serve(l, app(), cfg, stop.clone()));
    let a = get_root(SocketAddr::from(([127, 0, 0, 1], port))).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    stop.cancel();
    task.await.expect("join").expect("served");
    // Bad TLS files: a clear error naming the file, nothing served.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cfg = DoorConfig {
        tls: Some(DoorTls {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        }),
        ..DoorConfig::default()
    };
    let e = door::serve(l, app(), cfg, CancellationToken::new()).await.expect_err("refused");
    assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
}

#[test]
fn config_parses_with_defaults_and_validates() {
    let c: DoorConfig = serde_json::from_str("{}").expect("defaults");
    assert_eq!(c, DoorConfig::default());
    let c: DoorConfig = serde_json::from_str(r#"{"max_connections": 8}"#).expect("one field");
    assert_eq!((c.max_connections, c.body_limit), (8, 64 * 1024));
    assert!(serde_json::from_str::<DoorConfig>(r#"{"max_conections": 8}"#).is_err(), "a typo is an error");
    let bad = DoorConfig { max_connections: 0, body_limit: 0, ..DoorConfig::default() };
    let e = bad.validate().expect_err("invalid");
    assert!(e.contains("max_connections") && e.contains("body_limit"), "{e}");
}
