//! The token service's one way to issuers: a narrow contract the switch implements over its issuer
//! links, route table and store-and-forward queues. ID&V and approval go out as 0100 (DE 3 900000,
//! OTP step-up 910000) and come back answered; completion and lifecycle notifications go out as
//! 0620 (DE 3 920000) and are kept and repeated until the issuer takes them
//! (docs/network-spec.md). Messages are in the network's spec; the switch translates them to the
//! issuer link's.

use std::future::Future;
use std::pin::Pin;

use codecs::iso8583::Message;

/// A boxed future, so that the gateway is usable as a trait object.
pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a request did not get the issuer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No issuer link is routed for the PAN, or the switch is stopping.
    #[error("no issuer link for this PAN")]
    NoRoute,
    /// The message does not fit the issuer link's spec.
    #[error("the message does not fit the issuer link")]
    Encode,
    /// The issuer did not answer (link down, timeout).
    #[error("the issuer did not answer")]
    Unavailable,
}

pub trait IssuerGateway: Send + Sync + 'static {
    /// Sends `msg` to the issuer of `pan` and waits for its answer.
    fn request<'a>(
        &'a self,
        pan: &'a str,
        msg: &'a Message,
    ) -> GatewayFuture<'a, Result<Message, GatewayError>>;

    /// Sends the notification `msg` to the issuer of `pan`: now when the issuer answers, otherwise
    /// kept in its store-and-forward queue and repeated until it does. False only when it could
    /// be neither delivered nor persisted.
    fn notify<'a>(&'a self, pan: &'a str, msg: &'a Message) -> GatewayFuture<'a, bool>;

    /// The name of the issuer `pan` routes to (its name in the switch configuration).
    fn issuer_of(&self, pan: &str) -> Option<String>;

    /// Whether an issuer with a link is routed for `pan` (token eligibility).
    fn routes(&self, pan: &str) -> bool;
}
