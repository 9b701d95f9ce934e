//! A token requestor's client of the token service's provisioning API (docs/token-service.md):
//! provision, OTP step-up, confirm (the issuer is notified), replenish.

use crate::error::Result;
use serde_json::{Value, json};

use super::RequestorCredential;
use super::http::{self, Answer};

/// The POS entry modes (DE 22, first two digits) a phone's token may be used with.
pub const ENTRY_MODES: [&str; 2] = ["07", "10"];

/// One requestor's client.
#[derive(Clone)]
pub struct TokenClient {
    api: String,
    bearer: String,
    pub requestor_id: String,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("api", &self.api)
            .field("requestor_id", &self.requestor_id)
            .finish()
    }
}

impl TokenClient {
    pub fn new(api: &str, cred: &RequestorCredential) -> Self {
        TokenClient {
            api: api.trim_end_matches('/').to_string(),
            bearer: format!("{}:{}", cred.id, cred.secret),
            requestor_id: cred.id.clone(),
        }
    }

    /// `POST /v1/provision`: the answer as the token service gives it (status approved,
    /// otp_required, declined, not_eligible, issuer_unavailable). The token's domain: contactless
    /// (DE 22 `07`) and in-app with an online cryptogram (`10`). `cvv2`: the card's CVV2 as the
    /// cardholder typed it, when the app asked for it (the issuer verifies it; a requestor
    /// configured `cvv2 = "required"` is refused without it).
    pub async fn provision(
        &self,
        request_id: &str,
        pan: &str,
        expiry: &str,
        cvv2: Option<&str>,
        device_public_key: &str,
    ) -> Result<Answer> {
        let mut body = json!({"request_id": request_id, "pan": pan, "expiry": expiry,
                              "device_public_key": device_public_key,
                              "entry_modes": ENTRY_MODES});
        if let Some(c) = cvv2 {
            body["cvv2"] = json!(c);
        }
        http::post(&self.api, "/v1/provision", Some(&self.bearer), &body).await
    }

    /// `POST /v1/provision/{id}/otp`.
    pub async fn otp(&self, provisioning_id: &str, otp: &str) -> Result<Answer> {
        http::post(
            &self.api,
            &format!("/v1/provision/{provisioning_id}/otp"),
            Some(&self.bearer),
            &json!({"otp": otp}),
        )
        .await
    }

    /// `POST /v1/tokens/{ref}/confirm`: the token becomes active; the issuer gets the notice.
    pub async fn confirm(&self, token_ref: &str) -> Result<Value> {
        let a = http::post(
            &self.api,
            &format!("/v1/tokens/{token_ref}/confirm"),
            Some(&self.bearer),
            &Value::Null,
        )
        .await?;
        http::ok("token service", a)
    }

    /// `POST /v1/tokens/{ref}/replenish`: the next batch of limited-use keys, sealed.
    pub async fn replenish(&self, token_ref: &str) -> Result<Value> {
        let a = http::post(
            &self.api,
            &format!("/v1/tokens/{token_ref}/replenish"),
            Some(&self.bearer),
            &Value::Null,
        )
        .await?;
        http::ok("token service", a)
    }
}
