//! Who may call a provider. Every provider endpoint that acts for someone authenticates them
//! first, with a bearer credential compared in constant time (`door::auth`):
//!
//! * the phone's owner, with the credential its provider issued it at registration (the SE
//!   operator when it issued the SE; the cloud platform and the wallet server when the device
//!   registered): `Authorization: Bearer <subject>:<secret>`, where the subject is the SE's or
//!   the device's id — a credential acts for its own SE or device only;
//! * the issuer's perso bureau at the SP TSM (one configured credential);
//! * a service provider's SP TSM at the SE TSM (`<sp_id>:<secret>`).
//!
//! 401 without a credential, 403 with a wrong one; neither says which part was wrong. The
//! registries are bounded ([`Registry::CAPACITY`]): registrations past it are refused (503)
//! rather than growing the process without limit.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};

use super::http::ApiError;

/// A credential refused, as an answer.
pub fn refused(r: door::auth::Refusal) -> ApiError {
    ApiError(r.status(), "unauthorized".into(), r.detail().into())
}

/// Checks a single configured bearer credential.
pub fn check_single(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    door::auth::check(headers, expected).map_err(refused)
}

/// A new random secret (32 hex digits).
pub fn new_secret() -> Result<String, ApiError> {
    let b: [u8; 16] = super::random()?;
    Ok(hex::encode(b))
}

/// Subjects (SE ids, device ids, service provider ids) and their secrets.
#[derive(Default)]
pub struct Registry {
    secrets: Mutex<HashMap<String, zeroize::Zeroizing<String>>>,
}

impl Registry {
    /// The most subjects one registry holds.
    pub const CAPACITY: usize = 100_000;

    /// Registers `subject` with a new secret; the credential to hand its owner
    /// (`subject:secret`). A subject already registered is refused (409): re-registering must
    /// not take over someone else's device.
    pub fn register(&self, subject: &str) -> Result<String, ApiError> {
        let secret = new_secret()?;
        self.insert(subject, &secret)?;
        Ok(format!("{subject}:{secret}"))
    }

    /// Adds a subject with a known secret.
    pub fn insert(&self, subject: &str, secret: &str) -> Result<(), ApiError> {
        if subject.is_empty() || subject.len() > 64 || subject.contains(':') {
            return Err(ApiError::bad("an id is 1 to 64 characters without ':'"));
        }
        let mut m = self.secrets.lock().map_err(|_| ApiError::refused("state"))?;
        if m.contains_key(subject) {
            return Err(ApiError::refused("already registered"));
        }
        if m.len() >= Self::CAPACITY {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "full".into(),
                "no more registrations accepted".into(),
            ));
        }
        m.insert(subject.to_string(), zeroize::Zeroizing::new(secret.to_string()));
        Ok(())
    }

    /// The authenticated subject of a request (`Bearer subject:secret`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        use door::auth::Refusal;
        let cred = door::auth::bearer(headers).ok_or_else(|| refused(Refusal::Missing))?;
        let (subject, secret) = cred.split_once(':').ok_or_else(|| refused(Refusal::Wrong))?;
        let m = self.secrets.lock().map_err(|_| ApiError::refused("state"))?;
        // An unknown subject still costs a comparison, so that timing does not tell them apart.
        let known = m.get(subject).map(|s| s.as_str()).unwrap_or("-unregistered-");
        if door::auth::same(secret, known) && m.contains_key(subject) {
            Ok(subject.to_string())
        } else {
            Err(refused(Refusal::Wrong))
        }
    }

    /// Authenticates and requires the subject to be `expected` (403 otherwise).
    pub fn authenticate_as(&self, headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
        let who = self.authenticate(headers)?;
        if door::auth::same(&who, expected) { Ok(()) } else { Err(refused(door::auth::Refusal::Wrong)) }
    }

    /// Every subject and its secret (a kept network seals them into its store).
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, String> {
        let m = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), v.as_str().to_string())).collect()
    }

    /// A registry with the subjects and secrets of [`Registry::snapshot`].
    pub fn restored(saved: &std::collections::BTreeMap<String, String>) -> Registry {
        let secrets = saved.iter().map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone()))).collect();
        Registry { secrets: Mutex::new(secrets) }
    }

    pub fn len(&self) -> usize {
        self.secrets.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seals `plain` for the holder of the P-256 public key `recipient` (SEC1, hex) under `info`:
/// the hex of the package (`crypto::device`).
pub fn seal_for(recipient_hex: &str, info: &[u8], plain: &[u8]) -> Result<String, ApiError> {
    let pk = hex::decode(recipient_hex).map_err(|_| ApiError::bad("public key: expected hex"))?;
    let eph = super::p256_secret()?;
    let nonce: [u8; 12] = super::random()?;
    let sealed = crypto::device::seal(&pk, &eph, nonce, info, plain)
        .map_err(|e| ApiError::bad(format!("public key: {e}")))?;
    Ok(hex::encode_upper(sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(axum::http::header::AUTHORIZATION, v.parse().expect("header"));
        m
    }

    #[test]
    fn a_credential_acts_for_its_own_subject_only() {
        let r = Registry::default();
        let cred = r.register("DEV1").expect("register");
        assert!(r.register("DEV1").is_err(), "no takeover by re-registering");
        assert_eq!(r.authenticate(&h(&format!("Bearer {cred}"))).expect("ok"), "DEV1");
        assert_eq!(r.authenticate(&HeaderMap::new()).err().map(|e| e.0), Some(StatusCode::UNAUTHORIZED));
        let (_, secret) = cred.split_once(':').expect("two parts");
        let other = format!("Bearer DEV2:{secret}");
        assert_eq!(r.authenticate(&h(&other)).err().map(|e| e.0), Some(StatusCode::FORBIDDEN));
        assert_eq!(r.authenticate(&h("Bearer DEV1:00")).err().map(|e| e.0), Some(StatusCode::FORBIDDEN));
        assert!(r.authenticate_as(&h(&format!("Bearer {cred}")), "DEV2").is_err());
        assert!(r.insert("a:b", "x").is_err());
    }
}
