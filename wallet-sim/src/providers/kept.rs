//! The providers' state in a kept network (`paynet serve --state`): each provider's state — the
//! SE operator's secure elements, their domains' keys and the OTA scripts queued for them, the
//! cloud platform's and the wallet server's devices and cards, the SP TSM's issuer SEs, every
//! registered credential — is written to a [`KeptStore`] after each request a provider answers,
//! and read back when the providers start on the same store. The store is the caller's: it
//! seals what it is given (keys and PANs are in it) and keeps it durably (SQLite in `paynet`).
//!
//! Not kept: provisionings waiting for a cardholder's one-time password (they expire in minutes;
//! the cardholder starts again).

use std::sync::Arc;

use axum::Router;
use axum::response::Response;

/// Where the providers' state goes: one body per provider name, replaced on each save.
pub trait KeptStore: Send + Sync {
    /// The last body saved under `name`.
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
    fn save(&self, name: &str, body: &[u8]) -> Result<(), String>;
}

/// A provider whose state can be kept.
pub trait Snapshot: Send + Sync + 'static {
    fn snapshot(&self) -> Result<Vec<u8>, String>;
}

/// `router` saving `state` under `name` after every request it answers (when there is a store).
pub fn saving<S: Snapshot>(
    router: Router,
    name: &'static str,
    state: Arc<S>,
    store: Option<Arc<dyn KeptStore>>,
) -> Router {
    let Some(store) = store else { return router };
    router.layer(axum::middleware::map_response(move |r: Response| {
        let (state, store) = (state.clone(), store.clone());
        async move {
            if let Err(e) = state.snapshot().and_then(|b| store.save(name, &b)) {
                // The answer stands; the next request's save tries again.
                tracing::error!(provider = name, error = %e, "provider state not saved");
            }
            r
        }
    }))
}

/// The body saved under `name`, parsed; `None` when nothing was saved.
pub fn load<T: serde::de::DeserializeOwned>(
    store: Option<&Arc<dyn KeptStore>>,
    name: &str,
) -> anyhow::Result<Option<T>> {
    let Some(store) = store else { return Ok(None) };
    match store.load(name).map_err(|e| anyhow::anyhow!("the {name} state: {e}"))? {
        Some(b) => {
            Ok(Some(serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("the {name} state: {e}"))?))
        }
        None => Ok(None),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}
