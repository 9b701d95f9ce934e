//! The parties that put cards into phones, each an HTTP server on 127.0.0.1 speaking JSON to the
//! others, to the phone, and to the token service's provisioning API — never a function call
//! into another party's state:
//!
//! * [`sp_tsm`] — the issuer's side: the SP TSM (real-PAN cards into SEs through the SE TSM) and
//!   the issuer's perso bureau for issuer-owned SEs (model 1, no OTA).
//! * [`se_tsm`] — the SE operator (issues SEs, reviews applications, verifies authentication
//!   data) and its SE TSM (security domains, OTA scripts; token requestor of kind `se-tsm`).
//! * [`requestor`] — the cloud (HCE) platform (requestor kind `cloud`; and, on the real PAN, the
//!   issuer's perso data on limited-use keys) and the DPSP wallet server (kind `wallet`).
//!
//! The issuer's perso data comes from the issuer's own system through [`IssuerPerso`] (the issuer
//! and its SP TSM are one organisation); what leaves it is sealed for the party that may read it.
//!
//! Every endpoint that acts for someone authenticates them ([`auth`]): the phone's owner with the
//! credential issued at registration, the issuer's perso bureau, the SP TSM at the SE TSM. No
//! answer carries a key in clear: keys leave sealed for the recipient's P-256 key.

pub mod auth;
pub mod http;
pub mod kept;
pub mod requestor;
pub mod se_tsm;
pub mod sp_tsm;
pub mod token;

use std::sync::Arc;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The context label the issuer seals perso data under (for the SE TSM's or the perso bureau's
/// P-256 key; `crypto::device`).
pub const PERSO_INFO: &[u8] = b"paynet perso data v1";

/// What the issuer's system is asked for: perso data for one card, sealed for a recipient.
pub struct PersoRequest<'a> {
    pub pan: &'a str,
    /// P-256 public key, SEC1.
    pub recipient_public_key: &'a [u8],
    /// Context label to seal under ([`PERSO_INFO`], or [`phone::hce::HCE_PERSO_INFO`] for
    /// a device's secure area).
    pub info: &'a [u8],
    /// What the sealed data carries.
    pub kind: PersoKind,
    /// The issuer's ID&V of cardholder and device first (the cloud platform's first request);
    /// `None` when the requester is already trusted for this card (the issuer's own SP TSM and
    /// perso bureau, a replenishment for a device the issuer verified).
    pub idv: Option<IdvRequest<'a>>,
}

/// The key material in the perso data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersoKind {
    /// The card's ICC master key (a secure element: models 1 and 2).
    CardProfile,
    /// The common session keys of ATCs `first_atc..first_atc+count` (an HCE device on the real
    /// PAN: model 3; it never holds the master key).
    LimitedUseKeys { first_atc: u16, count: u16 },
}

/// The issuer's ID&V before perso: the card's expiry as the cardholder typed it (YYMM), the
/// provisioning session, and — on the second request — the one-time password the issuer sent.
#[derive(Debug, Clone, Copy)]
pub struct IdvRequest<'a> {
    pub expiry: &'a str,
    pub session: &'a str,
    pub otp: Option<&'a str>,
    /// The card's CVV2 as the cardholder typed it, when the requestor asked for it.
    pub cvv2: Option<&'a str>,
    /// Who asks (the issuer counts failed attempts per requestor as well as per card).
    pub requestor: &'a str,
}

/// The issuer's answer.
pub enum PersoOutcome {
    /// The perso data, sealed for the recipient.
    Sealed(Vec<u8>),
    /// ID&V stepped up: a one-time password went to the cardholder; ask again with it.
    OtpRequired,
    /// ID&V declined, with the response code (14, 54, 05, 75).
    Declined { response_code: String },
}

/// The issuer's perso function: ID&V when asked, then the card's perso data (PAN, expiry, PSN,
/// CVN, AID, label and the key material its HSM derives from the IMK) sealed for the recipient,
/// or why not.
pub type IssuerPerso =
    Arc<dyn Fn(PersoRequest<'_>) -> std::result::Result<PersoOutcome, String> + Send + Sync>;

/// A token requestor's credentials at the token service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestorCredential {
    pub id: String,
    pub kind: String,
    pub secret: String,
}

/// Each provider's door: limits and TLS (certificate, key, optional client CA for mutual TLS,
/// `insecure_plaintext`). With TLS a provider's address is `https://`; callers then need its CA
/// ([`http::trust`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderDoors {
    pub sp_tsm: door::DoorConfig,
    pub se_operator: door::DoorConfig,
    pub cloud: door::DoorConfig,
    pub wallet: door::DoorConfig,
}

impl ProviderDoors {
    /// The same door (TLS and limits) for all four.
    pub fn all(door: door::DoorConfig) -> Self {
        ProviderDoors { sp_tsm: door.clone(), se_operator: door.clone(), cloud: door.clone(), wallet: door }
    }
}

/// What the providers need.
#[derive(Clone)]
pub struct ProvidersConfig {
    /// The token service's provisioning API, `http://host:port` or `https://host:port`.
    pub token_api: String,
    /// Requestor credentials; the providers take the ones of kind `se-tsm`, `cloud`, `wallet`.
    pub requestors: Vec<RequestorCredential>,
    /// The issuer's perso data (models 1 and 2, and model 3's hce-pan: the real PAN); those flows
    /// are refused without.
    pub issuer_perso: Option<IssuerPerso>,
    /// Where the providers keep their state ([`kept`]); `None`: in memory, for this run only.
    pub kept: Option<Arc<dyn kept::KeptStore>>,
    /// Their doors (limits, TLS).
    pub doors: ProviderDoors,
}

/// Where the providers listen (`http://127.0.0.1:port`, `https://` behind TLS); what a ports file
/// lists as `wallet_providers`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderAddrs {
    pub sp_tsm: String,
    pub se_operator: String,
    pub cloud: String,
    pub wallet: String,
    /// The issuer's perso bureau credential at the SP TSM (test material, like the ports file's
    /// `token_requestors`): model 1's issuer-owned SE is issued and personalised by the bureau.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bureau_token: Option<String>,
}

impl std::fmt::Debug for ProviderAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderAddrs")
            .field("sp_tsm", &self.sp_tsm)
            .field("se_operator", &self.se_operator)
            .field("cloud", &self.cloud)
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

/// The running providers.
pub struct Running {
    pub addrs: ProviderAddrs,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), door::Error>>>,
}

impl Running {
    /// Stops every server and waits for them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}

fn credential(cfg: &ProvidersConfig, kind: &str) -> Option<RequestorCredential> {
    cfg.requestors.iter().find(|r| r.kind == kind).cloned()
}

/// A listener on 127.0.0.1 for a provider behind `door`: on `before`'s port when given and free
/// (a kept network's providers come back where the phones know them: a phone keeps its
/// credentials by provider address), else on a port from the OS; its address, `https://` with
/// TLS. A door that cannot open (TLS files that do not load) is refused here, before anything
/// is served.
async fn bind(before: Option<&str>, door: &door::DoorConfig) -> Result<(tokio::net::TcpListener, String)> {
    let again = before
        .and_then(|b| b.strip_prefix("https://").or_else(|| b.strip_prefix("http://")))
        .map(str::to_string);
    let l = match again {
        Some(a) => match tokio::net::TcpListener::bind(&a).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::start("binding a provider", e))?,
        },
        None => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::start("binding a provider", e))?,
    };
    let addr = l.local_addr().map_err(|e| Error::start("a provider's address", e))?;
    door::open(addr, door).map_err(|e| Error::start("a provider's door", e))?;
    let scheme = if door.tls.is_some() { "https" } else { "http" };
    Ok((l, format!("{scheme}://{addr}")))
}

/// Starts the SP TSM, the SE operator with its SE TSM, the cloud platform and the wallet server.
pub async fn start(cfg: ProvidersConfig) -> Result<Running> {
    let stop = CancellationToken::new();
    let store = cfg.kept.as_ref();
    let before = kept::load::<ProviderAddrs>(store, "addresses")?;
    let d = &cfg.doors;
    let (se_l, se_addr) = bind(before.as_ref().map(|b| b.se_operator.as_str()), &d.se_operator).await?;
    let (sp_l, sp_addr) = bind(before.as_ref().map(|b| b.sp_tsm.as_str()), &d.sp_tsm).await?;
    let (cloud_l, cloud_addr) = bind(before.as_ref().map(|b| b.cloud.as_str()), &d.cloud).await?;
    let (wallet_l, wallet_addr) = bind(before.as_ref().map(|b| b.wallet.as_str()), &d.wallet).await?;
    let token = |kind: &str| credential(&cfg, kind).map(|c| token::TokenClient::new(&cfg.token_api, &c));
    // The bureau's and the SP TSM's credentials: the kept ones, or new ones (kept at once).
    let (bureau_token, sp_secret, restored) = match kept::load::<(String, String)>(store, "credentials")? {
        Some((b, s)) => (b, s, true),
        None => {
            let secret = |_| auth::new_secret().map_err(|e| Error::Random(e.2));
            let pair = (secret(0)?, secret(1)?);
            if let Some(st) = store {
                let body = kept::to_json(&pair).map_err(|e| Error::state("the providers' credentials", e))?;
                st.save("credentials", &body)
                    .map_err(|e| Error::state("saving the providers' credentials", e))?;
            }
            (pair.0, pair.1, false)
        }
    };
    let se_tsm = se_tsm::SeTsm::open(token("se-tsm"), store)?;
    if !restored {
        se_tsm
            .add_service_provider(sp_tsm::SP_ID, &sp_secret)
            .map_err(|e| Error::start("registering the SP TSM with the SE TSM", e.2))?;
    }
    let se = kept::saving(se_tsm::router(se_tsm.clone()), "se-tsm", se_tsm, cfg.kept.clone());
    let sp_tsm = sp_tsm::SpTsm::open(cfg.issuer_perso.clone(), &se_addr, &bureau_token, &sp_secret, store)?;
    let sp = kept::saving(sp_tsm::router(sp_tsm.clone()), "sp-tsm", sp_tsm, cfg.kept.clone());
    let cloud =
        requestor::Front::open("cloud", "cloud platform", token("cloud"), cfg.issuer_perso.clone(), store)?;
    let cloud = kept::saving(requestor::router(cloud.clone()), "cloud", cloud, cfg.kept.clone());
    let wallet = requestor::Front::open("wallet", "wallet server", token("wallet"), None, store)?;
    let wallet = kept::saving(requestor::router(wallet.clone()), "wallet", wallet, cfg.kept.clone());
    let tasks = vec![
        tokio::spawn(http::serve(se_l, se, d.se_operator.clone(), stop.clone())),
        tokio::spawn(http::serve(sp_l, sp, d.sp_tsm.clone(), stop.clone())),
        tokio::spawn(http::serve(cloud_l, cloud, d.cloud.clone(), stop.clone())),
        tokio::spawn(http::serve(wallet_l, wallet, d.wallet.clone(), stop.clone())),
    ];
    let addrs = ProviderAddrs {
        sp_tsm: sp_addr,
        se_operator: se_addr,
        cloud: cloud_addr,
        wallet: wallet_addr,
        bureau_token: Some(bureau_token),
    };
    if let Some(st) = store {
        let plain = ProviderAddrs { bureau_token: None, ..addrs.clone() };
        let body = kept::to_json(&plain).map_err(|e| Error::state("the providers' addresses", e))?;
        st.save("addresses", &body).map_err(|e| Error::state("saving the providers' addresses", e))?;
    }
    Ok(Running { addrs, stop, tasks })
}

/// The steps a provider took on its side, returned with its answer for the cardholder's log.
#[derive(Default)]
pub struct Steps(Vec<Value>);

impl Steps {
    pub fn push(&mut self, from: &str, to: &str, what: impl Into<String>) {
        self.0.push(json!({"from": from, "to": to, "what": what.into()}));
    }

    pub fn extend_from(&mut self, answer: &Value) {
        if let Some(a) = answer.get("steps").and_then(Value::as_array) {
            self.0.extend(a.iter().cloned());
        }
    }

    pub fn into_value(self) -> Value {
        Value::Array(self.0)
    }
}

/// 32 random bytes that are a valid P-256 scalar (a provider's HSM key for sealed transport).
pub(crate) fn p256_secret() -> Result<zeroize::Zeroizing<[u8; 32]>> {
    for _ in 0..8 {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut()).map_err(|e| Error::Random(e.to_string()))?;
        if crypto::device::public_key(b.as_ref()).is_ok() {
            return Ok(b);
        }
    }
    Err(Error::Random("no valid P-256 scalar drawn".into()))
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}
