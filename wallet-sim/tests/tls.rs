//! wallet-sim's HTTP client against a door with mutual TLS (a server on 127.0.0.1 with a test
//! CA): refused until it trusts the CA and presents a client certificate the door's client CA
//! signed, then served. In its own process: the client's TLS settings are the process's.

use std::path::Path;

use axum::routing::get;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_util::sync::CancellationToken;
use wallet_sim::providers::http;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, san) in [("server", "127.0.0.1"), ("client", "phone-1")] {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![san.to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

#[tokio::test]
async fn a_door_with_mutual_tls_serves_the_client_once_it_trusts_the_ca_and_shows_its_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    pki(dir.path());
    let cfg = door::DoorConfig {
        tls: Some(door::DoorTls {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: Some(dir.path().join("ca.pem")),
        }),
        ..door::DoorConfig::default()
    };
    let router =
        axum::Router::new().route("/v1/ping", get(|| async { axum::Json(serde_json::json!({"ok": true})) }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("https://{}", l.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(l, router, cfg, stop.clone()));

    let e = http::get(&base, "/v1/ping", None).await.expect_err("no CA trusted");
    assert!(e.to_string().contains("trusted CA"), "{e}");
    http::trust(&dir.path().join("ca.pem")).expect("trust");
    assert!(http::get(&base, "/v1/ping", None).await.is_err(), "served without a client certificate");
    http::use_client_certificate(&dir.path().join("client.pem"), &dir.path().join("client.key"))
        .expect("identity");
    let a = http::get(&base, "/v1/ping", None).await.expect("served");
    assert_eq!((a.status, a.body["ok"].as_bool()), (200, Some(true)));
    // In clear, the door does not answer.
    let plain = base.replace("https://", "http://");
    assert!(http::get(&plain, "/v1/ping", None).await.is_err());
    stop.cancel();
    server.await.expect("join").expect("served");
}
