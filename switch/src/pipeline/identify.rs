//! Identify: which acquirer the connection proves to be, and whether the request's terminal
//! (DE 41, with DE 42) is one it may speak for; the terminal's MAC when it has a key or its
//! acquirer requires MACs. Nothing the message says can establish an identity: only the
//! connection (source address or client certificate) and the registry.

use codecs::iso8583::{Message, ResponseCode};

use super::{Decline, ListenerCtx, Stage};
use crate::registry::{Identity, Peer, Registry};

pub fn identify(
    registry: &Registry,
    listener: &ListenerCtx,
    peer: &Peer,
    raw: &[u8],
    msg: &Message,
) -> Result<Identity, Decline> {
    let Some(tid) = msg.text(41) else {
        return Err(Decline::new(ResponseCode::FORMAT_ERROR, Stage::Identify, "no terminal ID (DE 41)"));
    };
    let mid = msg.text(42);
    let id = registry.identify(&listener.name, peer, &tid, mid.as_deref()).map_err(|why| {
        Decline::new(ResponseCode::NOT_PERMITTED_TERMINAL, Stage::Identify, format!("terminal {tid}: {why}"))
    })?;
    match &id.terminal.mac {
        Some(mac) if !mac.verify(raw, msg) => {
            return Err(Decline::new(
                ResponseCode::SECURITY_VIOLATION,
                Stage::Identify,
                format!("terminal {tid}: MAC (DE 64/128) missing or wrong"),
            ));
        }
        Some(_) => {}
        None if id.acquirer.require_mac => {
            return Err(Decline::new(
                ResponseCode::SECURITY_VIOLATION,
                Stage::Identify,
                format!("terminal {tid}: the acquirer requires a MAC and the terminal has no key"),
            ));
        }
        None => {}
    }
    Ok(id)
}
