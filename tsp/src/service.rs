//! The token service provider: provisioning for registered token requestors (wallet, SE TSM,
//! cloud platform, merchant) — eligibility, ID&V with the issuer over the issuer link (0100 with
//! DE 3 900000; OTP step-up 910000), token issuance into the vault, the card profile sealed for the
//! requestor's device, confirmation of installation and the completion notification to the issuer
//! (0620, DE 3 920000), and lifecycle (suspend, resume, delete) — idempotent on the requestor's
//! request id. Every call is authenticated with the requestor's secret (compared in constant time,
//! only its SHA-256 is configured).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use codecs::iso8583::{Message, Mti, Spec};
use codecs::tlv::{Tag, TlvBuilder};
use crypto::emv::{Cvn, PanDigits, Psn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::answered::{AnsweredBook, AnsweredStore};
use crate::clock::{Clock, Entropy};
use crate::gateway::IssuerGateway;
use crate::luk::LukRegistry;
use crate::number::luhn_valid;
use crate::pending::{Pending, PendingBook, PendingStore};
use crate::vault::{DomainControls, NewToken, TokenStatus, TokenVault};
use crate::vault_detokenizer::TokenKeys;

/// A registered token requestor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requestor {
    /// The 11-digit token requestor ID.
    pub id: String,
    /// `wallet`, `se-tsm`, `cloud` or `merchant`.
    pub kind: String,
    /// SHA-256 of the requestor's secret, hex.
    pub secret_sha256: String,
    /// Whether its provisioning requests must carry the card's CVV2 (`cvv2 = "required"`: the
    /// requestor's app always asks the cardholder for it) or may (`"optional"`, the default).
    #[serde(default, skip_serializing_if = "Cvv2Policy::is_optional")]
    pub cvv2: Cvv2Policy,
}

/// A requestor's CVV2 setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cvv2Policy {
    /// Sent when the requestor has it; the issuer verifies it then.
    #[default]
    Optional,
    /// Every provisioning must carry it: one without is refused before the issuer is asked.
    Required,
}

impl Cvv2Policy {
    pub fn is_optional(&self) -> bool {
        *self == Cvv2Policy::Optional
    }
}

/// An issuer's credential for the issuer-facing calls (lifecycle of its cardholders' tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerCredential {
    /// The issuer's name in the switch configuration (`[[issuer]] name`): it may act on the PANs
    /// the route table sends to that issuer, and on no other.
    pub name: String,
    /// SHA-256 of the issuer's secret, hex.
    pub secret_sha256: String,
}

/// A change of a token's state that its requestor has not initiated (issuer-initiated), for the
/// requestor to collect (`GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenEvent {
    /// Rising sequence number: ask for the events after the last one seen.
    pub seq: u64,
    pub token_ref: String,
    pub status: String,
    /// Who changed it: `issuer`.
    pub by: String,
    pub at_ms: u64,
    #[serde(skip)]
    pub requestor_id: String,
}

/// One token touched by an issuer's lifecycle call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IssuerTokenView {
    pub token_ref: String,
    pub token_last4: String,
    pub requestor_id: String,
    pub status: String,
    /// Why the state did not change (e.g. a deleted token cannot be resumed); absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Events kept for requestors to collect (the oldest go first).
const MAX_EVENTS: usize = 10_000;

/// A provisioning request. Its `Debug` masks the PAN and leaves the CVV2 and expiry out.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct ProvisionRequest {
    /// The requestor's id for this request: a repeat gets the first answer.
    pub request_id: String,
    pub pan: String,
    /// YYMM.
    pub expiry: String,
    /// The device's (or secure element's) P-256 public key, SEC1, hex.
    pub device_public_key: String,
    /// Allowed entry modes (DE 22 first two digits); default contactless (07).
    #[serde(default)]
    pub entry_modes: Vec<String>,
    /// The card's CVV2 as the cardholder typed it (3 or 4 digits), when the requestor's app asks
    /// for it: the issuer verifies it in ID&V (DE 48 subelement 92).
    #[serde(default)]
    pub cvv2: Option<String>,
}

impl std::fmt::Debug for ProvisionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionRequest")
            .field("request_id", &self.request_id)
            .field("pan", &codecs::iso8583::describe::mask_pan(&self.pan))
            .field("expiry", &"****")
            .field("device_public_key", &self.device_public_key)
            .field("entry_modes", &self.entry_modes)
            .field("cvv2", &self.cvv2.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What a provisioning call answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProvisionOutcome {
    Approved {
        token_ref: String,
        token_last4: String,
        token_expiry: String,
        par: String,
        /// The card profile (token, expiry, PSN, CVN, ICC master key) sealed for the device.
        encrypted_token_data: String,
    },
    OtpRequired {
        provisioning_id: String,
    },
    Declined {
        response_code: String,
    },
    NotEligible,
    IssuerUnavailable,
}

/// A refusal of the call itself (HTTP 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TspError {
    #[error("unknown requestor or wrong secret")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("no such token or provisioning session")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// The requestor must send the card's CVV2 (`cvv2 = "required"`) and did not.
    #[error("cvv2: this requestor must send the card's CVV2 with every provisioning request")]
    Cvv2Required,
}

/// How much the token service keeps in memory between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Answers kept for repeated request ids, and for how long.
    pub answered: usize,
    pub answered_ttl_ms: u64,
    /// OTP step-ups pending, and for how long (the issuer's OTP lives 5 minutes).
    pub pending: usize,
    pub pending_ttl_ms: u64,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            answered: 100_000,
            answered_ttl_ms: 24 * 60 * 60 * 1000,
            pending: 10_000,
            pending_ttl_ms: 15 * 60 * 1000,
        }
    }
}

/// What the token service runs on besides its own state: the way to issuers, time and randomness.
#[derive(Clone)]
pub struct Environment {
    pub gateway: Arc<dyn IssuerGateway>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
}

pub struct TokenService {
    gateway: Arc<dyn IssuerGateway>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    vault: Arc<TokenVault>,
    /// HMAC-SHA256 key of token references (`tsp.token-ref`).
    token_ref_key: Zeroizing<Vec<u8>>,
    hsm: Arc<dyn crypto::hsm::Hsm>,
    ranges: Vec<TokenKeys>,
    requestors: HashMap<String, Requestor>,
    spec: Arc<Spec>,
    /// Answers to repeat for a repeated request id: bounded, for a day.
    answered: AnsweredBook,
    /// Step-ups waiting for the cardholder's OTP: bounded, for a quarter of an hour.
    pending: PendingBook,
    refs: Mutex<HashMap<String, String>>,
    stan: AtomicU32,
    cvn: Cvn,
    luks: Option<Arc<LukRegistry>>,
    issuers: HashMap<String, IssuerCredential>,
    events: Mutex<std::collections::VecDeque<TokenEvent>>,
    event_seq: std::sync::atomic::AtomicU64,
}

/// A requestor's reference to a token: HMAC-SHA256 of the token under the token-reference key
/// (`tsp.token-ref`, never the vault's PAN-index key), so it says nothing of the token and cannot
/// be matched against the vault's index.
fn token_ref_of(key: &[u8], token: &str) -> String {
    format!("tr_{}", hex::encode(&crypto::mac::hmac_sha256(key, token.as_bytes())[..8]))
}

/// The context label of sealed card profiles.
pub const PROFILE_INFO: &[u8] = b"paynet token profile v1";

fn bad(s: impl Into<String>) -> TspError {
    TspError::BadRequest(s.into())
}

impl TokenService {
    pub fn new(
        env: Environment,
        vault: Arc<TokenVault>,
        hsm: Arc<dyn crypto::hsm::Hsm>,
        ranges: Vec<TokenKeys>,
        requestors: Vec<Requestor>,
        token_ref_key: Zeroizing<Vec<u8>>,
    ) -> Self {
        // Requestors name tokens by reference; the references of tokens issued before a restart
        // are derived again from the vault.
        let refs = vault.tokens().into_iter().map(|t| (token_ref_of(&token_ref_key, &t), t)).collect();
        TokenService {
            token_ref_key,
            gateway: env.gateway,
            clock: env.clock,
            entropy: env.entropy,
            vault,
            hsm,
            ranges,
            requestors: requestors.into_iter().map(|r| (r.id.clone(), r)).collect(),
            spec: Spec::builtin("network").cloned().unwrap_or_else(|| unreachable!("built-in spec")),
            answered: AnsweredBook::in_memory(
                StateLimits::default().answered,
                StateLimits::default().answered_ttl_ms,
            ),
            pending: PendingBook::in_memory(
                StateLimits::default().pending,
                StateLimits::default().pending_ttl_ms,
            ),
            refs: Mutex::new(refs),
            stan: AtomicU32::new(1),
            cvn: Cvn::Visa18,
            luks: None,
            issuers: HashMap::new(),
            events: Mutex::new(std::collections::VecDeque::new()),
            event_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Cloud (HCE) requestors get limited-use keys from this registry instead of the master key.
    pub fn with_luks(mut self, luks: Arc<LukRegistry>) -> Self {
        self.luks = Some(luks);
        self
    }

    /// Step-ups kept in a store every node shares (any node completes them), sealed with the
    /// vault's data key.
    pub fn with_shared_pending(mut self, store: Arc<dyn PendingStore>) -> Self {
        let l = StateLimits::default();
        self.pending = PendingBook::shared(store, self.vault.clone(), l.pending, l.pending_ttl_ms);
        self
    }

    /// Answers to repeated request ids kept in a store every node shares (a requestor retrying
    /// on another node gets the same answer), sealed with the vault's data key.
    pub fn with_shared_answered(mut self, store: Arc<dyn AnsweredStore>) -> Self {
        let l = StateLimits::default();
        self.answered = AnsweredBook::shared(store, self.vault.clone(), l.answered, l.answered_ttl_ms);
        self
    }

    /// Issuers allowed to change the state of their cardholders' tokens.
    pub fn with_issuers(mut self, issuers: Vec<IssuerCredential>) -> Self {
        self.issuers = issuers.into_iter().map(|i| (i.name.clone(), i)).collect();
        self
    }

    /// Checks an issuer's name and secret.
    pub fn authenticate_issuer(&self, name: &str, secret: &str) -> Result<&IssuerCredential, TspError> {
        let i = self.issuers.get(name).ok_or(TspError::Unauthorized)?;
        let given = hex::encode(Sha256::digest(secret.as_bytes()));
        if bool::from(given.as_bytes().ct_eq(i.secret_sha256.to_ascii_lowercase().as_bytes())) {
            Ok(i)
        } else {
            Err(TspError::Unauthorized)
        }
    }

    /// The issuer changes the state of every token of one of its PANs (card lost: suspend; found:
    /// resume; closed: delete). Each token's requestor gets an event. A PAN routed to another
    /// issuer is "not found" (nothing is said about it).
    pub fn issuer_lifecycle(
        &self,
        issuer: &IssuerCredential,
        pan: &str,
        to: TokenStatus,
    ) -> Result<Vec<IssuerTokenView>, TspError> {
        if pan.len() < 12
            || pan.len() > 19
            || !pan.bytes().all(|b| b.is_ascii_digit())
            || !luhn_valid(pan.as_bytes())
        {
            return Err(bad("pan: 12 to 19 digits with a valid check digit expected"));
        }
        if self.gateway.issuer_of(pan).as_deref() != Some(issuer.name.as_str()) {
            return Err(TspError::NotFound);
        }
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for rec in self.vault.tokens_of(pan) {
            let token_ref = self.token_ref(&rec.token);
            let requestor_id = rec.domain.requestor_id.clone();
            let last4 = rec.token[rec.token.len().saturating_sub(4)..].to_string();
            match self.vault.set_status(&rec.token, to) {
                Ok(new) => {
                    if new.status != rec.status {
                        self.push_event(TokenEvent {
                            seq: 0,
                            token_ref: token_ref.clone(),
                            status: new.status.as_str().into(),
                            by: "issuer".into(),
                            at_ms: now,
                            requestor_id: requestor_id.clone(),
                        });
                    }
                    out.push(IssuerTokenView {
                        token_ref,
                        token_last4: last4,
                        requestor_id,
                        status: new.status.as_str().into(),
                        refused: None,
                    });
                }
                Err(e) => out.push(IssuerTokenView {
                    token_ref,
                    token_last4: last4,
                    requestor_id,
                    status: rec.status.as_str().into(),
                    refused: Some(e.to_string()),
                }),
            }
        }
        Ok(out)
    }

    fn push_event(&self, mut e: TokenEvent) {
        e.seq = self.event_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// The requestor's events after `after` (at most 500).
    pub fn events(&self, requestor: &Requestor, after: u64) -> Vec<TokenEvent> {
        let q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().filter(|e| e.seq > after && e.requestor_id == requestor.id).take(500).cloned().collect()
    }

    /// Checks `requestor_id` and its secret.
    pub fn authenticate(&self, requestor_id: &str, secret: &str) -> Result<&Requestor, TspError> {
        let r = self.requestors.get(requestor_id).ok_or(TspError::Unauthorized)?;
        let given = hex::encode(Sha256::digest(secret.as_bytes()));
        if bool::from(given.as_bytes().ct_eq(r.secret_sha256.to_ascii_lowercase().as_bytes())) {
            Ok(r)
        } else {
            Err(TspError::Unauthorized)
        }
    }

    /// Changes how much is kept in memory between requests (entries over the new bounds go,
    /// oldest first).
    pub fn limit_state(&self, l: StateLimits) {
        let now_ms = self.clock.now_ms();
        if let Err(e) = self.answered.set_limits(l.answered, l.answered_ttl_ms, now_ms) {
            tracing::error!(error = %e, "answers to repeat could not be trimmed");
        }
        if let Err(e) = self.pending.set_limits(l.pending, l.pending_ttl_ms, now_ms) {
            tracing::error!(error = %e, "pending step-ups could not be trimmed");
        }
    }

    /// Entries kept now: (answers to repeat, step-ups pending).
    pub fn state_sizes(&self) -> (usize, usize) {
        (
            self.answered.len(self.clock.now_ms()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "answers to repeat could not be counted");
                0
            }),
            self.pending.len(self.clock.now_ms()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "pending step-ups could not be counted");
                0
            }),
        )
    }

    fn random(&self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.entropy.fill(&mut b);
        b
    }

    fn idv_message(
        &self,
        pan: &str,
        expiry: &str,
        code: &str,
        session: &str,
        requestor: &Requestor,
        otp: Option<&str>,
    ) -> Result<Message, TspError> {
        let mut m = Message::new(self.spec.clone(), Mti::AUTHORIZATION_REQUEST);
        let stan = format!("{:06}", self.stan.fetch_add(1, Ordering::Relaxed) % 999_999 + 1);
        let now = self.clock.now_ms() / 1000;
        let tt = format!("{:010}", now % 10_000_000_000);
        let set = |m: &mut Message, de: u16, v: &str| m.set_text(de, v).map_err(|e| bad(e.to_string()));
        set(&mut m, 2, pan)?;
        set(&mut m, 3, code)?;
        set(&mut m, 4, "000000000000")?;
        set(&mut m, 7, &tt)?;
        set(&mut m, 11, &stan)?;
        set(&mut m, 14, expiry)?;
        set(&mut m, 22, "010")?;
        set(&mut m, 37, session)?;
        set(&mut m, 41, "TSP00001")?;
        set(&mut m, 49, "978")?;
        let mut t = TlvBuilder::new();
        let _ = t.primitive(Tag::new(0x9F19), requestor.id.as_bytes());
        let _ = t.primitive(Tag::new(0xDF8105), requestor.kind.as_bytes());
        if let Some(otp) = otp {
            let _ = t.primitive(Tag::new(0xDF8110), otp.as_bytes());
        }
        m.set_bytes(123, t.finish().to_vec()).map_err(|e| bad(e.to_string()))?;
        Ok(m)
    }

    /// Provisioning: validation, eligibility, ID&V with the issuer, issuance.
    pub async fn provision(
        &self,
        requestor: &Requestor,
        req: ProvisionRequest,
    ) -> Result<ProvisionOutcome, TspError> {
        let key = (requestor.id.clone(), req.request_id.clone());
        let now_ms = self.clock.now_ms();
        match self.answered.get(&key.0, &key.1, now_ms) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            // Provisioning again could issue a second token for one request: the requestor retries.
            Err(e) => {
                tracing::error!(error = %e, "answers to repeat could not be read");
                return Err(TspError::Conflict("the request could not be checked: try again".into()));
            }
        }
        if req.request_id.is_empty() || req.request_id.len() > 64 {
            return Err(bad("request_id: 1 to 64 characters"));
        }
        if !(13..=19).contains(&req.pan.len()) || !luhn_valid(req.pan.as_bytes()) {
            return Err(bad("pan: 13 to 19 digits with a valid check digit"));
        }
        if req.expiry.len() != 4 || !req.expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expiry: YYMM"));
        }
        let device_key = hex::decode(&req.device_public_key).map_err(|_| bad("device_public_key: hex"))?;
        if crypto::device::seal(&device_key, &[1; 32], [0; 12], b"check", b"").is_err() {
            return Err(bad("device_public_key: not a P-256 public key in SEC1 form"));
        }
        let entry_modes =
            if req.entry_modes.is_empty() { vec!["07".to_string()] } else { req.entry_modes.clone() };
        if entry_modes.iter().any(|m| m.len() != 2 || !m.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad("entry_modes: two digits each (DE 22)"));
        }
        match &req.cvv2 {
            Some(c) if !((3..=4).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit())) => {
                return Err(bad("cvv2: 3 or 4 digits"));
            }
            None if requestor.cvv2 == Cvv2Policy::Required => return Err(TspError::Cvv2Required),
            _ => {}
        }
        if self.ranges.iter().any(|r| r.range.contains(&req.pan)) || !self.gateway.routes(&req.pan) {
            return self.remember(key, ProvisionOutcome::NotEligible);
        }
        let session = format!(
            "{:012}",
            u64::from_be_bytes(self.random(8).try_into().unwrap_or([0; 8])) % 1_000_000_000_000
        );
        let mut msg = self.idv_message(&req.pan, &req.expiry, "900000", &session, requestor, None)?;
        if let Some(c) = &req.cvv2 {
            msg.set_text(48, &format!("92{:02}{c}", c.len())).map_err(|e| bad(e.to_string()))?;
        }
        let answer = match self.gateway.request(&req.pan, &msg).await {
            Ok(a) => a,
            Err(_) => return Ok(ProvisionOutcome::IssuerUnavailable),
        };
        let rc = answer.text(39).map(|c| c.into_owned()).unwrap_or_default();
        let pan = Zeroizing::new(req.pan.clone());
        let outcome = match rc.as_str() {
            "00" => self.issue(requestor, &pan, &req.expiry, &device_key, entry_modes).await?,
            "1A" => {
                let now_ms = self.clock.now_ms();
                let nonce: [u8; 12] = self.random(12).try_into().unwrap_or([0; 12]);
                let p = Pending {
                    requestor: requestor.id.clone(),
                    pan,
                    expiry: req.expiry.clone(),
                    device_key,
                    entry_modes,
                    request_id: req.request_id.clone(),
                };
                self.pending.insert(session.clone(), p, now_ms, nonce).map_err(|e| {
                    tracing::error!(error = %e, "step-up could not be recorded");
                    TspError::Conflict("the step-up could not be recorded: try again".into())
                })?;
                ProvisionOutcome::OtpRequired { provisioning_id: session }
            }
            other => ProvisionOutcome::Declined { response_code: other.to_string() },
        };
        self.remember(key, outcome)
    }

    fn remember(&self, key: (String, String), o: ProvisionOutcome) -> Result<ProvisionOutcome, TspError> {
        let now_ms = self.clock.now_ms();
        let nonce: [u8; 12] = self.random(12).try_into().unwrap_or([0; 12]);
        // What was done stays done: the answer leaves even when it could not be kept (a retry
        // then provisions anew).
        if let Err(e) = self.answered.insert(&key.0, &key.1, &o, now_ms, nonce) {
            tracing::error!(error = %e, "answer to repeat could not be recorded");
        }
        Ok(o)
    }

    /// The OTP step-up of a pending provisioning.
    pub async fn verify_otp(
        &self,
        requestor: &Requestor,
        provisioning_id: &str,
        otp: &str,
    ) -> Result<ProvisionOutcome, TspError> {
        let p = match self.pending.get(provisioning_id, self.clock.now_ms()) {
            Ok(Some(p)) if p.requestor == requestor.id => p,
            Ok(_) => return Err(TspError::NotFound),
            Err(e) => {
                tracing::error!(error = %e, "step-up could not be read");
                return Err(TspError::Conflict("the step-up could not be read: try again".into()));
            }
        };
        if otp.len() != 6 || !otp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("otp: six digits"));
        }
        let msg = self.idv_message(&p.pan, &p.expiry, "910000", provisioning_id, requestor, Some(otp))?;
        let answer = match self.gateway.request(&p.pan, &msg).await {
            Ok(a) => a,
            Err(_) => return Ok(ProvisionOutcome::IssuerUnavailable),
        };
        let rc = answer.text(39).map(|c| c.into_owned()).unwrap_or_default();
        let outcome = match rc.as_str() {
            "00" => self.issue(requestor, &p.pan, &p.expiry, &p.device_key, p.entry_modes.clone()).await?,
            "05" => return Ok(ProvisionOutcome::Declined { response_code: rc }),
            other => ProvisionOutcome::Declined { response_code: other.to_string() },
        };
        if let Err(e) = self.pending.remove(provisioning_id) {
            tracing::error!(error = %e, "completed step-up could not be forgotten");
        }
        self.remember((p.requestor.clone(), p.request_id.clone()), outcome)
    }

    async fn issue(
        &self,
        requestor: &Requestor,
        pan: &str,
        expiry: &str,
        device_key: &[u8],
        entry_modes: Vec<String>,
    ) -> Result<ProvisionOutcome, TspError> {
        let keys =
            self.ranges.first().ok_or_else(|| TspError::Conflict("no token range configured".into()))?;
        let token = (0..16)
            .map(|_| keys.range.candidate(&self.random(64)))
            .find(|t| self.vault.get(t).is_none())
            .ok_or_else(|| TspError::Conflict("no free token number".into()))?;
        let par = self.vault.par_for(pan, "V001", &self.random(128));
        let domain = DomainControls {
            entry_modes,
            // A device token (wallet, SE, HCE) may also take cash at an ATM and ask for the
            // balance there (docs/network-spec.md §4: 01, 31); a merchant's card-on-file token
            // only buys.
            transaction_types: if requestor.kind == "merchant" {
                vec!["00".into()]
            } else {
                vec!["00".into(), "01".into(), "31".into()]
            },
            requestor_id: requestor.id.clone(),
        };
        let nonce: [u8; 12] = self.random(12).try_into().unwrap_or([0; 12]);
        self.vault
            .insert(
                NewToken { token: &token, pan, pan_expiry: expiry, par: &par, expiry, domain },
                self.clock.now_ms(),
                nonce,
            )
            .map_err(|e| TspError::Conflict(e.to_string()))?;
        let profile =
            serde_json::json!({"token": token, "expiry": expiry, "psn": "00", "cvn": self.cvn.name()})
                .to_string();
        let token_pan = PanDigits::new(&token).map_err(|e| TspError::Conflict(e.to_string()))?;
        let psn = Psn::new(0).map_err(|e| TspError::Conflict(e.to_string()))?;
        let card = crypto::hsm::CardKey { imk: &keys.imk_ac, cvn: self.cvn, pan: &token_pan, psn };
        let sealed = match (&self.luks, requestor.kind.as_str()) {
            (Some(luks), "cloud") => {
                let batch = luks
                    .issue(&token, device_key, self.clock.now_ms())
                    .map_err(|e| TspError::Conflict(e.to_string()))?
                    .ok_or_else(|| TspError::Conflict("no ATCs left for limited-use keys".into()))?;
                self.hsm.seal_luk_profile(&card, batch, &profile, device_key, PROFILE_INFO)
            }
            _ => self.hsm.seal_card_profile(&card, &profile, device_key, PROFILE_INFO),
        }
        .map_err(|e| TspError::Conflict(e.to_string()))?;
        let token_ref = self.token_ref(&token);
        self.refs.lock().unwrap_or_else(|p| p.into_inner()).insert(token_ref.clone(), token.clone());
        Ok(ProvisionOutcome::Approved {
            token_last4: token[token.len() - 4..].to_string(),
            token_ref,
            token_expiry: expiry.to_string(),
            par,
            encrypted_token_data: hex::encode_upper(sealed),
        })
    }

    fn token_ref(&self, token: &str) -> String {
        token_ref_of(&self.token_ref_key, token)
    }

    fn token_of(&self, requestor: &Requestor, token_ref: &str) -> Result<String, TspError> {
        let token = self
            .refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token_ref)
            .cloned()
            .ok_or(TspError::NotFound)?;
        let rec = self.vault.get(&token).ok_or(TspError::NotFound)?;
        if rec.domain.requestor_id != requestor.id {
            return Err(TspError::NotFound);
        }
        Ok(token)
    }

    /// A new batch of limited-use keys for a cloud token, sealed for its device (hex).
    pub async fn replenish(&self, requestor: &Requestor, token_ref: &str) -> Result<String, TspError> {
        let token = self.token_of(requestor, token_ref)?;
        let luks = self
            .luks
            .as_ref()
            .filter(|l| l.is_cloud(&token))
            .ok_or_else(|| TspError::Conflict("not a cloud token: it holds its own keys".into()))?;
        let rec = self.vault.get(&token).ok_or(TspError::NotFound)?;
        if rec.status != TokenStatus::Active {
            return Err(TspError::Conflict(format!("the token is {}", rec.status.as_str())));
        }
        let device = luks.device_key(&token).ok_or(TspError::NotFound)?;
        let keys = self.ranges.iter().find(|k| k.range.contains(&token)).ok_or(TspError::NotFound)?;
        let batch = luks
            .issue(&token, &device, self.clock.now_ms())
            .map_err(|e| TspError::Conflict(e.to_string()))?
            .ok_or_else(|| TspError::Conflict("no ATCs left for limited-use keys".into()))?;
        let pan = PanDigits::new(&token).map_err(|e| TspError::Conflict(e.to_string()))?;
        let psn = Psn::new(0).map_err(|e| TspError::Conflict(e.to_string()))?;
        let profile =
            serde_json::json!({"token": token, "expiry": rec.expiry, "psn": "00", "cvn": self.cvn.name()})
                .to_string();
        let sealed = self
            .hsm
            .seal_luk_profile(
                &crypto::hsm::CardKey { imk: &keys.imk_ac, cvn: self.cvn, pan: &pan, psn },
                batch,
                &profile,
                &device,
                PROFILE_INFO,
            )
            .map_err(|e| TspError::Conflict(e.to_string()))?;
        Ok(hex::encode_upper(sealed))
    }

    /// The requestor confirms installation: the token becomes active and the issuer is told.
    pub async fn confirm(&self, requestor: &Requestor, token_ref: &str) -> Result<TokenStatus, TspError> {
        self.lifecycle(requestor, token_ref, TokenStatus::Active).await
    }

    /// Suspend, resume (active), delete.
    pub async fn lifecycle(
        &self,
        requestor: &Requestor,
        token_ref: &str,
        to: TokenStatus,
    ) -> Result<TokenStatus, TspError> {
        let token = self.token_of(requestor, token_ref)?;
        let rec = self.vault.set_status(&token, to).map_err(|e| TspError::Conflict(e.to_string()))?;
        self.notify(requestor, &token, to).await;
        Ok(rec.status)
    }

    /// The 0620 notification to the issuer (DE 3 920000, the token data in DE 123).
    async fn notify(&self, requestor: &Requestor, token: &str, status: TokenStatus) {
        let Some(rec) = self.vault.get(token) else { return };
        let Ok(pan) = self.vault.pan(&rec) else { return };
        let mut m = Message::new(
            self.spec.clone(),
            Mti::from_digits(b"0620").unwrap_or(Mti::NETWORK_MANAGEMENT_REQUEST),
        );
        let stan = format!("{:06}", self.stan.fetch_add(1, Ordering::Relaxed) % 999_999 + 1);
        let _ = m.set_text(2, pan.as_str());
        let _ = m.set_text(3, "920000");
        let _ = m.set_text(11, &stan);
        let _ = m.set_text(41, "TSP00001");
        let mut t = TlvBuilder::new();
        let _ = t.primitive(Tag::new(0xDF8101), token.as_bytes());
        let _ = t.primitive(Tag::new(0xDF8102), rec.expiry.as_bytes());
        let _ = t.primitive(Tag::new(0x9F19), requestor.id.as_bytes());
        let _ = t.primitive(Tag::new(0x9F24), rec.par.as_bytes());
        let _ = t.primitive(Tag::new(0xDF8104), status.as_str().as_bytes());
        let _ = t.primitive(Tag::new(0xDF8105), requestor.kind.as_bytes());
        let _ = m.set_bytes(123, t.finish().to_vec());
        if !self.gateway.notify(&pan, &m).await {
            tracing::error!("token notification neither delivered to the issuer nor queued");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioning_request_never_debugs_its_pan_expiry_or_cvv2() {
        let r = ProvisionRequest {
            request_id: "r1".into(),
            pan: "4761739001010010".into(),
            expiry: "2812".into(),
            device_public_key: "04AB".into(),
            entry_modes: vec!["07".into()],
            cvv2: Some("123".into()),
        };
        let d = format!("{r:?}");
        for secret in ["4761739001010010", "2812", "123"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(d.contains("476173") && d.contains("0010"), "the masked PAN is kept: {d}");
    }
}
