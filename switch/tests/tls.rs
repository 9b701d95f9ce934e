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

/// A CA, a server certificate for 127.0.0.1 / localhost, and client certificates all signed by
/// the CA, as PEM files: `client` (acquirer-1), `named` (subject `CN=acquirer-2,O=Bank B`) and
/// `stranger` (acquirer-x, which no acquirer registers).
fn pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, sans, subject) in [
        ("server", vec!["localhost".to_string(), "127.0.0.1".to_string()], None),
        ("client", vec!["acquirer-1".to_string()], None),
        ("named", vec!["acquirer-2".to_string()], Some(("acquirer-2", "Bank B"))),
        ("stranger", vec!["acquirer-x".to_string()], None),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        if let Some((cn, o)) = subject {
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, cn);
            dn.push(rcgen::DnType::OrganizationName, o);
            params.distinguished_name = dn;
        }
        let cert = params.signed_by(&key, &ca).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

/// The SHA-256 fingerprint (hex) of the certificate in `dir/name.pem`, as `client_cert_sha256`
/// takes it.
fn fingerprint(dir: &Path, name: &str) -> String {
    use sha2::Digest;
    let der = CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).expect("certificate");
    hex::encode(sha2::Sha256::digest(der.as_ref()))
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
    client: Option<&str>,
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
    let config = if let Some(name) = client {
        let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
            .expect("pem")
            .map(|c| c.expect("cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("key");
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
    let refused = match tls_client(&b_addr, b.dir.path(), None).await {
        Err(_) => true,
        Ok(mut s) => exchange(&mut s, &echo("network", 1)).await.is_err(),
    };
    assert!(refused, "a client without a certificate must not be served");
    let mut s = tls_client(&b_addr, b.dir.path(), Some("client")).await.expect("mutual TLS handshake");
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

/// A purchase of the test card from terminal `tid` (its merchant, `MERCHANT0000001`).
fn purchase_at(tid: &str, stan: u32) -> Message {
    let mut m = purchase("network", stan, 1_500);
    m.set_text(41, tid).expect("DE 41");
    m
}

/// Sends `m` over a fresh connection as `client`: its answer, or `None` when the switch closed the
/// connection instead.
async fn answer_as(addr: &str, dir: &Path, client: &str, m: &Message) -> Option<Message> {
    let mut s = tls_client(addr, dir, Some(client)).await.ok()?;
    exchange(&mut s, m).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquirer_is_proven_by_its_registered_certificate_not_by_any_the_ca_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path());
    common::add_test_imk(dir.path());
    // Acquirer 400001 by its certificate's fingerprint, 400002 by its subject; no address range,
    // so being on 127.0.0.1 proves nothing. The issuer is unreachable: a verified request is
    // approved in stand-in, which only an identified terminal's request reaches.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = format!(
        "[[issuer]]\nname = \"nowhere\"\nconnect = [\"127.0.0.1:{dead}\"]\nconnections = 1\ntimeout_ms = 300\nimk_ac = \"issuer-a.imk-ac\"\n[issuer.stand_in]\nenabled = true\nmax_amount_minor = 50000\ncurrency = \"978\"\nmax_total_per_card_minor = 1000000\ntransaction_types = [\"00\"]\n[[route]]\nprefix = \"4\"\nissuer = \"nowhere\"\n\
         [[acquirer]]\nid = \"400001\"\nlisteners = [\"acquirer\"]\nclient_cert_sha256 = [\"{}\"]\n[[acquirer.terminal]]\ntid = \"TERM0001\"\nmid = \"MERCHANT0000001\"\n\
         [[acquirer]]\nid = \"400002\"\nlisteners = [\"acquirer\"]\nclient_cert_subject = [\"CN=acquirer-2, O=Bank B\"]\n[[acquirer.terminal]]\ntid = \"TERM0002\"\nmid = \"MERCHANT0000001\"\n",
        fingerprint(dir.path(), "client")
    );
    let node = start_in(dir, &node_config(MTLS, &config));
    let addr = node.addr("acquirer");
    let path = node.dir.path();

    // The registered certificate is served: approved in stand-in once the link is known down.
    let mut approved = None;
    for stan in 1..100u32 {
        let r = answer_as(&addr, path, "client", &purchase_at("TERM0001", stan)).await.expect("served");
        if r.text(39).as_deref() == Some("00") {
            approved = Some(r);
            break;
        }
        assert_eq!(r.text(39).as_deref(), Some("91"), "only the issuer's absence may refuse it: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = approved.expect("an approval for the registered certificate");
    assert!(r.text(38).expect("DE 38").starts_with('S'), "by stand-in");
    // The same registered certificate speaking for another acquirer's terminal: 58.
    let r = answer_as(&addr, path, "client", &purchase_at("TERM0002", 200)).await.expect("answered");
    assert_eq!(r.text(39).as_deref(), Some("58"));
    // The acquirer registered by subject is served for its own terminal.
    let r = answer_as(&addr, path, "named", &purchase_at("TERM0002", 201)).await.expect("served");
    assert_eq!(r.text(39).as_deref(), Some("00"), "{r:?}");

    // A certificate the CA signed but no acquirer registered: its connection is closed, or its
    // request refused 58 — never served.
    for (stan, tid) in [(300, "TERM0001"), (301, "TERM0002")] {
        if let Some(r) = answer_as(&addr, path, "stranger", &purchase_at(tid, stan)).await {
            assert_eq!(r.text(39).as_deref(), Some("58"), "an unregistered certificate: {r:?}");
            assert!(!r.contains(38));
        }
    }
    // And one with no certificate at all: refused at the handshake or on its first request.
    let refused = match tls_client(&addr, path, None).await {
        Err(_) => true,
        Ok(mut s) => exchange(&mut s, &purchase_at("TERM0001", 302)).await.is_err(),
    };
    assert!(refused, "a client without a certificate must not be served");
}
