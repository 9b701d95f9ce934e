//! Transport security end to end with real processes: an acquirer listener that requires mutual
//! TLS 1.3 (a client without a certificate from the CA is refused; one with it is served), and an
//! issuer link over mutual TLS. The issuer end is a second switch node whose TLS listener answers
//! sign-on and echo itself and authorizes in stand-in — so an approval with a stand-in code that
//! comes back through switch A proves the TLS link carried it both ways.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use common::{echo, purchase, start_in};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// A CA, a server certificate for 127.0.0.1 / localhost, and a client certificate, as PEM files.
fn pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, sans) in [
        ("server", vec!["localhost".to_string(), "127.0.0.1".to_string()]),
        ("client", vec!["acquirer-1".to_string()]),
    ] {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(sans).expect("params").signed_by(&key, &ca).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

fn node_config(listener_tls: &str, issuer: &str) -> String {
    format!(
        r#"
[node]
name = "tls-node"
[admin]
listen = "127.0.0.1:0"
[keys]
keystore = "keys.toml"

[[listener]]
name = "acquirer"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"
{listener_tls}
{issuer}
"#
    )
}

const MTLS: &str = "[listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n";

async fn tls_client(
    addr: &str,
    dir: &Path,
    with_cert: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
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
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut s = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await?;
    // With TLS 1.3 a refused client certificate shows on the first read or write.
    s.flush().await?;
    Ok(s)
}

async fn exchange(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    m: &Message,
) -> std::io::Result<Message> {
    let mut codec = FrameCodec::new(FramingKind::Binary2);
    let mut out = BytesMut::new();
    codec.encode(Frame::new(m.encode().expect("encode")), &mut out).expect("frame");
    s.write_all(&out).await?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = codec.decode(&mut buf).expect("frame") {
            return Ok(Message::decode(Spec::builtin("network").expect("spec"), f.payload).expect("decode"));
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut chunk))
            .await
            .expect("in time")?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_listener_and_issuer_link() {
    // Node B: the "issuer" end, a TLS listener requiring client certificates, issuer unreachable
    // behind it so that it authorizes in stand-in.
    let dir_b = tempfile::tempdir().expect("tempdir");
    pki(dir_b.path());
    common::add_test_imk(dir_b.path());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let b_issuer = format!(
        "[[issuer]]\nname = \"nowhere\"\nconnect = [\"127.0.0.1:{dead}\"]\nconnections = 1\ntimeout_ms = 300\nimk_ac = \"issuer-a.imk-ac\"\n[issuer.stand_in]\nenabled = true\nmax_amount_minor = 50000\ncurrency = \"978\"\nmax_total_per_card_minor = 100000\ntransaction_types = [\"00\"]\n[[route]]\nprefix = \"4\"\nissuer = \"nowhere\"\n"
    );
    let b = start_in(dir_b, &node_config(MTLS, &b_issuer));
    let b_addr = b.addr("acquirer");

    // An acquirer without a client certificate is refused; with one it is served.
    let refused = match tls_client(&b_addr, b.dir.path(), false).await {
        Err(_) => true,
        Ok(mut s) => exchange(&mut s, &echo("network", 1)).await.is_err(),
    };
    assert!(refused, "a client without a certificate must not be served");
    let mut s = tls_client(&b_addr, b.dir.path(), true).await.expect("mutual TLS handshake");
    let a = exchange(&mut s, &echo("network", 2)).await.expect("echo over TLS");
    assert_eq!(a.text(39).as_deref(), Some("00"));

    // Node A: plain listener, issuer link to B over mutual TLS.
    let dir_a = tempfile::tempdir().expect("tempdir");
    for f in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(b.dir.path().join(f), dir_a.path().join(f)).expect("copy");
    }
    let a_issuer = format!(
        "[[issuer]]\nname = \"issuer-b\"\nconnect = [\"{b_addr}\"]\nconnections = 2\ntimeout_ms = 3000\n[issuer.tls]\nca = \"ca.pem\"\nserver_name = \"localhost\"\ncert = \"client.pem\"\nkey = \"client.key\"\n[[route]]\nprefix = \"476173\"\nissuer = \"issuer-b\"\n"
    );
    let a = start_in(dir_a, &node_config("", &a_issuer));
    let mut c = common::Client::connect(&a.addr("acquirer"), FramingKind::Binary2, "network").await;
    // The link signs on over TLS in the background; ask until it is up (at most ~10 s).
    let mut answer = None;
    for stan in 1..100u32 {
        let r = c.call(&purchase("network", stan, 1500)).await;
        if r.text(39).as_deref() == Some("00") {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = answer.expect("an approval through the TLS issuer link");
    assert!(r.text(38).expect("DE 38").starts_with('S'), "approved by node B's stand-in");
}
