//! The switch as the token service's issuer gateway ([`tsp::IssuerGateway`]): ID&V requests go to
//! the issuer the route table names for the PAN, over its link; notifications go the same way and
//! fall back to that issuer's store-and-forward queue.
//!
//! The gateway holds the engine weakly: the token service never keeps the engine (and through it
//! the journal writer) alive, so the node stops in one order whatever the token service still
//! holds (the node's shutdown). Once the engine is gone every call answers
//! as if no issuer were routed.

use std::sync::{Arc, Weak};

use codecs::iso8583::Message;
use tsp::gateway::{GatewayError, GatewayFuture, IssuerGateway};

use crate::engine::Engine;
use crate::issuer::LinkError;

pub struct EngineGateway {
    engine: Weak<Engine>,
}

impl EngineGateway {
    pub fn new(engine: &Arc<Engine>) -> Self {
        EngineGateway { engine: Arc::downgrade(engine) }
    }
}

impl IssuerGateway for EngineGateway {
    fn request<'a>(
        &'a self,
        pan: &'a str,
        msg: &'a Message,
    ) -> GatewayFuture<'a, Result<Message, GatewayError>> {
        Box::pin(async move {
            let engine = self.engine.upgrade().ok_or(GatewayError::NoRoute)?;
            if !engine.routes_pan(pan) {
                return Err(GatewayError::NoRoute);
            }
            engine.issuer_call(pan, msg).await.map_err(|e| match e {
                LinkError::Encode => GatewayError::Encode,
                _ => GatewayError::Unavailable,
            })
        })
    }

    fn notify<'a>(&'a self, pan: &'a str, msg: &'a Message) -> GatewayFuture<'a, bool> {
        Box::pin(async move {
            match self.engine.upgrade() {
                Some(engine) => engine.issuer_notify(pan, msg).await,
                None => false,
            }
        })
    }

    fn issuer_of(&self, pan: &str) -> Option<String> {
        self.engine.upgrade()?.issuer_of(pan)
    }

    fn routes(&self, pan: &str) -> bool {
        self.engine.upgrade().is_some_and(|e| e.routes_pan(pan))
    }
}
