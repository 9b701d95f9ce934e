//! The token service alone, with no switch: an issuer gateway in memory approves ID&V and takes
//! notifications, the clock and the random source are fixed. Provisioning issues a token from the
//! configured range, sealed for the device; confirmation activates it and notifies the issuer
//! (0620, DE 3 920000) with the card's PAN, through the gateway only.

use std::sync::{Arc, Mutex};

use codecs::iso8583::Message;
use crypto::hsm::{Hsm, SoftHsm};
use crypto::keyblock::Header;
use crypto::keys::{AesKey, SymmetricKey, TdesKey};
use crypto::keystore::{KeyName, Keystore, Lmk};
use crypto::seal::Sealer;
use sha2::Digest;
use tsp::gateway::{GatewayError, GatewayFuture, IssuerGateway};
use tsp::service::{Environment, PROFILE_INFO};
use tsp::store::SqliteVaultStore;
use tsp::{
    Clock, Cvv2Policy, ProvisionOutcome, Requestor, TokenKeys, TokenRange, TokenService, TokenStatus,
    TokenVault, TspError,
};
use zeroize::Zeroizing;

const PAN: &str = "4761739001010010";
const DEVICE_SECRET: [u8; 32] = [0x2A; 32];

/// Approves every ID&V for card BIN 476173 and records what it was sent.
#[derive(Default)]
struct Issuer {
    requests: Mutex<Vec<(String, String)>>,
    notices: Mutex<Vec<(String, String)>>,
}

impl IssuerGateway for Issuer {
    fn request<'a>(
        &'a self,
        pan: &'a str,
        msg: &'a Message,
    ) -> GatewayFuture<'a, Result<Message, GatewayError>> {
        Box::pin(async move {
            let code = msg.text(3).map(|c| c.into_owned()).unwrap_or_default();
            self.requests.lock().expect("lock").push((pan.to_string(), code));
            let mut answer = msg.clone();
            answer.set_text(39, "00").map_err(|_| GatewayError::Encode)?;
            Ok(answer)
        })
    }

    fn notify<'a>(&'a self, pan: &'a str, msg: &'a Message) -> GatewayFuture<'a, bool> {
        Box::pin(async move {
            let code = msg.text(3).map(|c| c.into_owned()).unwrap_or_default();
            self.notices.lock().expect("lock").push((pan.to_string(), code));
            true
        })
    }

    fn issuer_of(&self, pan: &str) -> Option<String> {
        pan.starts_with("476173").then(|| "issuer-a".to_string())
    }

    fn routes(&self, pan: &str) -> bool {
        self.issuer_of(pan).is_some()
    }
}

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_795_000_000_000
    }
}

fn service(issuer: Arc<Issuer>) -> TokenService {
    let mut ks = Keystore::new(
        Lmk::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").expect("lmk"),
    );
    ks.import(
        KeyName::new("token.imk-ac").expect("name"),
        &Header::parse_template("D0000E0TX00N0000").expect("header"),
        &SymmetricKey::Tdes(TdesKey::from_hex("k", "0123456789ABCDEFFEDCBA9876543210").expect("key")),
        &[0x5A; 32],
    )
    .expect("import");
    let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new(ks, Box::new(|b: &mut [u8]| b.fill(7))));
    let vault = Arc::new(
        TokenVault::open(
            Arc::new(SqliteVaultStore::in_memory().expect("store")),
            Sealer::new(1, &AesKey::from_slice(&[3; 32]).expect("aes")).expect("sealer"),
            Zeroizing::new(vec![9; 32]),
        )
        .expect("vault"),
    );
    let range = TokenRange::new("489537", 16, ["476173"]).expect("range");
    let requestor = Requestor {
        id: "40010030273".into(),
        kind: "wallet".into(),
        secret_sha256: hex::encode(sha2::Sha256::digest(b"s3cret")),
        cvv2: Cvv2Policy::Optional,
    };
    // A wallet whose app always asks the cardholder for the CVV2.
    let strict: Requestor = serde_json::from_value(serde_json::json!({
        "id": "40010075001", "kind": "wallet", "cvv2": "required",
        "secret_sha256": hex::encode(sha2::Sha256::digest(b"s3cret2")),
    }))
    .expect("a requestor with cvv2 = required");
    let env = Environment {
        gateway: issuer,
        clock: Arc::new(FixedClock),
        entropy: Arc::new(testkit::TestRng::seeded(37)),
    };
    TokenService::new(
        env,
        vault,
        hsm,
        vec![TokenKeys { range, imk_ac: "token.imk-ac".into() }],
        vec![requestor, strict],
        Zeroizing::new(vec![5; 32]),
    )
}

#[tokio::test]
async fn provisions_and_notifies_through_the_gateway_alone() {
    let issuer = Arc::new(Issuer::default());
    let svc = service(issuer.clone());
    let r = svc.authenticate("40010030273", "s3cret").expect("requestor").clone();
    let req: tsp::ProvisionRequest = serde_json::from_value(serde_json::json!({
        "request_id": "r1", "pan": PAN, "expiry": "2912",
        "device_public_key": hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("key")),
    }))
    .expect("request");
    let ProvisionOutcome::Approved { token_ref, encrypted_token_data, .. } =
        svc.provision(&r, req.clone()).await.expect("provision")
    else {
        panic!("not approved");
    };
    assert_eq!(*issuer.requests.lock().expect("lock"), [(PAN.to_string(), "900000".to_string())], "ID&V");
    let sealed = hex::decode(&encrypted_token_data).expect("hex");
    let plain = crypto::device::open(&DEVICE_SECRET, PROFILE_INFO, &sealed).expect("opens on the device");
    let profile: serde_json::Value = serde_json::from_slice(&plain).expect("profile");
    let token = profile["token"].as_str().expect("token");
    assert!(token.starts_with("489537") && tsp::luhn_valid(token.as_bytes()), "{token}");
    // A repeated request id gets the first answer, with no second ID&V.
    assert!(matches!(svc.provision(&r, req).await, Ok(ProvisionOutcome::Approved { .. })));
    assert_eq!(issuer.requests.lock().expect("lock").len(), 1);

    assert_eq!(svc.confirm(&r, &token_ref).await.expect("confirm"), TokenStatus::Active);
    assert_eq!(*issuer.notices.lock().expect("lock"), [(PAN.to_string(), "920000".to_string())], "0620");
}

#[tokio::test]
async fn a_pan_no_issuer_is_routed_for_is_not_eligible() {
    let issuer = Arc::new(Issuer::default());
    let svc = service(issuer.clone());
    let r = svc.authenticate("40010030273", "s3cret").expect("requestor").clone();
    let req: tsp::ProvisionRequest = serde_json::from_value(serde_json::json!({
        "request_id": "r2", "pan": "5413330089010608", "expiry": "2912",
        "device_public_key": hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("key")),
    }))
    .expect("request");
    assert_eq!(svc.provision(&r, req).await.expect("answer"), ProvisionOutcome::NotEligible);
    assert!(issuer.requests.lock().expect("lock").is_empty(), "no ID&V for an unroutable PAN");
}

#[tokio::test]
async fn a_requestor_that_must_send_the_cvv2_is_refused_without_it_and_the_issuer_never_asked() {
    let issuer = Arc::new(Issuer::default());
    let svc = service(issuer.clone());
    let strict = svc.authenticate("40010075001", "s3cret2").expect("requestor").clone();
    assert_eq!(strict.cvv2, Cvv2Policy::Required);
    let dpk = hex::encode(crypto::device::public_key(&DEVICE_SECRET).expect("key"));
    let req = |id: &str, cvv2: Option<&str>| -> tsp::ProvisionRequest {
        let mut b =
            serde_json::json!({"request_id": id, "pan": PAN, "expiry": "2912", "device_public_key": dpk});
        if let Some(c) = cvv2 {
            b["cvv2"] = serde_json::json!(c);
        }
        serde_json::from_value(b).expect("request")
    };
    let e = svc.provision(&strict, req("c1", None)).await.expect_err("refused");
    assert_eq!(e, TspError::Cvv2Required);
    assert!(e.to_string().contains("CVV2") && !e.to_string().contains(PAN), "{e}");
    assert!(issuer.requests.lock().expect("lock").is_empty(), "nothing reached the issuer");
    // Malformed is a bad request, not a missing one.
    assert!(matches!(svc.provision(&strict, req("c2", Some("12"))).await, Err(TspError::BadRequest(_))));
    // With it, the ID&V goes to the issuer; the lenient requestor needs none.
    assert!(matches!(
        svc.provision(&strict, req("c3", Some("123"))).await,
        Ok(ProvisionOutcome::Approved { .. })
    ));
    let lenient = svc.authenticate("40010030273", "s3cret").expect("requestor").clone();
    assert!(matches!(svc.provision(&lenient, req("c4", None)).await, Ok(ProvisionOutcome::Approved { .. })));
    assert_eq!(issuer.requests.lock().expect("lock").len(), 2);
    // An unknown setting does not load.
    let bad = serde_json::from_value::<Requestor>(serde_json::json!({
        "id": "1", "kind": "wallet", "secret_sha256": "00", "cvv2": "sometimes"}));
    assert!(bad.is_err());
}
