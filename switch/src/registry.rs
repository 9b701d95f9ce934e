//! The acquirer registry (`[[acquirer]]` in the config): which acquirer a connection may speak
//! for, and which terminals (TID + MID) each acquirer may speak for. A connection proves who it
//! is by its source address (plain TCP) or its client certificate (mutual TLS); the request's
//! DE 41 must then be a terminal of an acquirer that connection proved to be. Nothing in the
//! message itself can establish an identity.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::cidr::Cidr;
use crate::config::AcquirerConfig;
use crate::macing::LinkMac;

/// What a connection showed when it connected.
#[derive(Clone, Default)]
pub struct Peer {
    pub addr: Option<IpAddr>,
    /// SHA-256 of the client certificate (mutual TLS), when one was presented and verified.
    pub cert_sha256: Option<[u8; 32]>,
    /// The client certificate's subject, RFC 4514 form.
    pub cert_subject: Option<String>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.addr)
            .field("cert_sha256", &self.cert_sha256.map(hex::encode))
            .field("cert_subject", &self.cert_subject)
            .finish()
    }
}

impl Peer {
    /// The peer of a plain TCP connection.
    pub fn tcp(addr: IpAddr) -> Peer {
        Peer { addr: Some(addr), cert_sha256: None, cert_subject: None }
    }

    /// The peer of a mutual-TLS connection: its address and its (verified) end-entity certificate.
    pub fn with_certificate(addr: IpAddr, der: &[u8]) -> Peer {
        use sha2::Digest;
        let sha: [u8; 32] = sha2::Sha256::digest(der).into();
        let subject = x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c.subject().to_string());
        Peer { addr: Some(addr), cert_sha256: Some(sha), cert_subject: subject }
    }
}

/// An acquirer as the registry holds it.
pub struct Acquirer {
    pub id: Arc<str>,
    listeners: Vec<String>,
    source: Vec<Cidr>,
    cert_sha256: Vec<[u8; 32]>,
    cert_subject: Vec<String>,
    pub require_mac: bool,
}

impl Acquirer {
    /// Whether a connection to `listener` from `peer` proves to be this acquirer.
    fn proven_by(&self, listener: &str, peer: &Peer) -> bool {
        if !self.listeners.iter().any(|l| l == listener) {
            return false;
        }
        let by_cert = peer.cert_sha256.is_some_and(|f| self.cert_sha256.contains(&f))
            || peer.cert_subject.as_ref().is_some_and(|s| self.cert_subject.iter().any(|c| c == s));
        // An acquirer registered by certificate is not proven by its address alone.
        let by_addr = self.cert_sha256.is_empty()
            && self.cert_subject.is_empty()
            && peer.addr.is_some_and(|a| self.source.iter().any(|c| c.contains(a)));
        by_cert || by_addr
    }
}

/// A registered terminal.
pub struct Terminal {
    pub tid: String,
    pub mid: String,
    /// Its MAC key, when it has one of its own.
    pub mac: Option<LinkMac>,
}

/// Who a request is from, once identified.
#[derive(Clone)]
pub struct Identity {
    pub acquirer: Arc<Acquirer>,
    pub terminal: Arc<Terminal>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}/{})", self.acquirer.id, self.terminal.tid)
    }
}

/// Why a request was not identified (for the log; the acquirer gets 58).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unidentified {
    /// No acquirer registered on this listener is proven by this connection.
    UnknownConnection,
    /// The TID is not a terminal of any acquirer this connection proved to be.
    UnregisteredTerminal,
    /// The TID is registered, with another merchant ID.
    WrongMerchant,
}

impl fmt::Display for Unidentified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unidentified::UnknownConnection => {
                "the connection proves no registered acquirer on this listener"
            }
            Unidentified::UnregisteredTerminal => "DE 41 is not a terminal of the connection's acquirer",
            Unidentified::WrongMerchant => "DE 42 is not the merchant registered for the terminal",
        })
    }
}

/// The registry, built once from the config (and again on reload).
#[derive(Default)]
pub struct Registry {
    acquirers: Vec<Arc<Acquirer>>,
    /// TID → (index into `acquirers`, terminal).
    terminals: HashMap<String, Vec<(usize, Arc<Terminal>)>>,
}

impl Registry {
    /// Builds the registry; `mac` turns a terminal's MAC config into its key (checked now).
    pub fn new(
        cfg: &[AcquirerConfig],
        mut mac: impl FnMut(&crate::config::MacConfig) -> crate::Result<LinkMac>,
    ) -> crate::Result<Registry> {
        let mut r = Registry::default();
        for a in cfg {
            let source = a
                .source
                .iter()
                .map(|s| Cidr::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| crate::Error::new(crate::ErrorKind::Config, "acquirer", e))?;
            let cert_sha256 = a
                .client_cert_sha256
                .iter()
                .map(|h| {
                    hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
                        crate::Error::new(
                            crate::ErrorKind::Config,
                            "acquirer",
                            "client_cert_sha256: 64 hex digits",
                        )
                    })
                })
                .collect::<crate::Result<Vec<_>>>()?;
            let idx = r.acquirers.len();
            r.acquirers.push(Arc::new(Acquirer {
                id: Arc::from(a.id.as_str()),
                listeners: a.listeners.clone(),
                source,
                cert_sha256,
                cert_subject: a.client_cert_subject.clone(),
                require_mac: a.require_mac,
            }));
            for t in &a.terminals {
                let key = t.mac.as_ref().map(&mut mac).transpose()?;
                let term = Arc::new(Terminal { tid: t.tid.clone(), mid: t.mid.clone(), mac: key });
                r.terminals.entry(t.tid.clone()).or_default().push((idx, term));
            }
        }
        Ok(r)
    }

    /// The identity of a request with terminal `tid` (DE 41) and merchant `mid` (DE 42, when
    /// present) arriving on `listener` from `peer`.
    pub fn identify(
        &self,
        listener: &str,
        peer: &Peer,
        tid: &str,
        mid: Option<&str>,
    ) -> Result<Identity, Unidentified> {
        let candidates = self.terminals.get(tid);
        let mut wrong_merchant = false;
        for (idx, term) in candidates.into_iter().flatten() {
            let acquirer = &self.acquirers[*idx];
            if !acquirer.proven_by(listener, peer) {
                continue;
            }
            if mid.is_some_and(|m| m.trim_end() != term.mid.trim_end()) {
                wrong_merchant = true;
                continue;
            }
            return Ok(Identity { acquirer: acquirer.clone(), terminal: term.clone() });
        }
        if wrong_merchant {
            return Err(Unidentified::WrongMerchant);
        }
        if self.acquirers.iter().any(|a| a.proven_by(listener, peer)) {
            Err(Unidentified::UnregisteredTerminal)
        } else {
            Err(Unidentified::UnknownConnection)
        }
    }

    /// Whether any acquirer could speak on `listener` from `peer` (checked when a connection is
    /// accepted, so that a stranger is turned away before it sends anything).
    pub fn admits(&self, listener: &str, peer: &Peer) -> bool {
        self.acquirers.iter().any(|a| a.proven_by(listener, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TerminalConfig;

    fn cfg() -> Vec<AcquirerConfig> {
        vec![
            AcquirerConfig {
                id: "400001".into(),
                listeners: vec!["pos".into()],
                source: vec!["127.0.0.0/8".into()],
                terminals: vec![TerminalConfig { tid: "T0000001".into(), mid: "M1".into(), mac: None }],
                ..AcquirerConfig::default()
            },
            AcquirerConfig {
                id: "400002".into(),
                listeners: vec!["pos".into(), "tls".into()],
                client_cert_sha256: vec![hex::encode([7u8; 32])],
                terminals: vec![TerminalConfig { tid: "T0000002".into(), mid: "M2".into(), mac: None }],
                ..AcquirerConfig::default()
            },
        ]
    }

    fn registry() -> Registry {
        Registry::new(&cfg(), |_| unreachable!("no MAC keys here")).expect("registry")
    }

    fn local() -> Peer {
        Peer::tcp("127.0.0.1".parse().expect("ip"))
    }

    #[test]
    fn cidr_ranges() {
        let c = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(c.contains("10.1.200.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")), "IPv4-mapped");
        let one = Cidr::parse("::1").expect("cidr");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
        assert!(Cidr::parse("0.0.0.0/0").expect("all").contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("10.1.2.128/25").expect("cidr").contains("10.1.2.200".parse().expect("ip")));
        assert!(!Cidr::parse("10.1.2.128/25").expect("cidr").contains("10.1.2.100".parse().expect("ip")));
    }

    #[test]
    fn a_connection_speaks_only_for_its_own_terminals() {
        let r = registry();
        let id = r.identify("pos", &local(), "T0000001", Some("M1")).expect("identified");
        assert_eq!(&*id.acquirer.id, "400001");
        assert!(r.identify("pos", &local(), "T0000001", None).is_ok(), "DE 42 absent");
        // Another acquirer's terminal, from an address that proves only the first.
        assert_eq!(
            r.identify("pos", &local(), "T0000002", Some("M2")).err(),
            Some(Unidentified::UnregisteredTerminal)
        );
        assert_eq!(
            r.identify("pos", &local(), "NOBODY01", None).err(),
            Some(Unidentified::UnregisteredTerminal)
        );
        assert_eq!(
            r.identify("pos", &local(), "T0000001", Some("M9")).err(),
            Some(Unidentified::WrongMerchant)
        );
        // The right terminal from elsewhere, or on a listener the acquirer may not use.
        let far = Peer::tcp("192.0.2.7".parse().expect("ip"));
        assert_eq!(r.identify("pos", &far, "T0000001", None).err(), Some(Unidentified::UnknownConnection));
        assert!(r.identify("tls", &local(), "T0000001", None).is_err());
        assert!(!r.admits("pos", &far));
    }

    #[test]
    fn a_certificate_acquirer_is_not_proven_by_its_address() {
        let r = registry();
        let with_cert = Peer {
            addr: Some("192.0.2.7".parse().expect("ip")),
            cert_sha256: Some([7; 32]),
            cert_subject: None,
        };
        assert!(r.identify("tls", &with_cert, "T0000002", Some("M2")).is_ok());
        let other_cert = Peer { cert_sha256: Some([8; 32]), ..with_cert };
        assert!(r.identify("tls", &other_cert, "T0000002", None).is_err());
    }
}
