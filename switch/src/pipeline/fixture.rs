//! The pipeline the switch's tests and benches build, in one place: one acquirer (`400001` on the
//! listener `pos`, from the loopback network, terminals `TERM0001` and `TERM0002` of
//! `MERCHANT0000001`, no MAC keys) and one issuer (`issuer-a` on the network spec, stand-in on for
//! purchases in euros), the decision state on the store given. What differs between them — keys,
//! tokens, routes, bounds — is a field of [`Fixture`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use codecs::iso8583::Spec;

use super::{IssuerRules, ListenerCtx, Pipeline};
use crate::config::{AcquirerConfig, StandInConfig, TerminalConfig};
use crate::dedupe::DuplicateCache;
use crate::detokenize::Detokenizer;
use crate::registry::{Peer, Registry};
use crate::route::RouteTable;
use crate::standin::StandIn;
use crate::state::{StateBook, StateWriter};

/// The name of the fixture's one issuer.
pub const ISSUER: &str = "issuer-a";

pub struct Fixture {
    pub hsm: Arc<dyn crypto::hsm::Hsm>,
    pub detokenizer: Arc<dyn Detokenizer>,
    /// The issuer's IMK-AC (keystore name) when the switch verifies cryptograms on its behalf.
    pub imk_ac: Option<String>,
    /// PAN prefixes routed to the issuer.
    pub routes: Vec<&'static str>,
    /// Stand-in's most per transaction and per card, in euro cents.
    pub stand_in_max_minor: (u64, u64),
    /// The duplicate cache's window (ms) and bound.
    pub dedupe: (u64, usize),
    /// The pipeline's randomness (stand-in authorization codes).
    pub entropy: Arc<dyn crate::clock::Entropy>,
    /// Every byte of the PAN fingerprint key.
    pub fingerprint_key: u8,
}

impl Fixture {
    /// The pipeline over `store`, and its state writer (the state is committed while it lives).
    pub fn build(self, store: Arc<dyn crate::store::Store>) -> crate::Result<(Pipeline, StateWriter)> {
        let terminal =
            |tid: &str| TerminalConfig { tid: tid.into(), mid: "MERCHANT0000001".into(), mac: None };
        let acquirers = [AcquirerConfig {
            id: "400001".into(),
            listeners: vec!["pos".into()],
            source: vec!["127.0.0.0/8".into()],
            terminals: vec![terminal("TERM0001"), terminal("TERM0002")],
            ..AcquirerConfig::default()
        }];
        let registry = Registry::new(&acquirers, |_| unreachable!("no terminal MAC keys"))?;
        let name: Arc<str> = Arc::from(ISSUER);
        let (per_transaction, per_card) = self.stand_in_max_minor;
        let rules = IssuerRules {
            name: name.clone(),
            spec: network_spec(),
            zpk: None,
            imk_ac: self.imk_ac,
            atc_window: crate::records::WINDOW,
            stand_in: StandIn::new(StandInConfig {
                enabled: true,
                max_amount_minor: per_transaction,
                currency: "978".into(),
                max_total_per_card_minor: per_card,
                transaction_types: vec!["00".into()],
            }),
        };
        let routes = RouteTable::new(self.routes.iter().map(|p| (*p, ISSUER)))
            .map_err(|e| crate::Error::new(crate::ErrorKind::Config, "routes", e.to_string()))?;
        let (state, writer) = StateBook::open(store)?;
        let pipeline = Pipeline {
            registry: RwLock::new(Arc::new(registry)),
            routes: RwLock::new(Arc::new(routes)),
            issuers: HashMap::from([(name, rules)]),
            dedupe: DuplicateCache::new(self.dedupe.0, self.dedupe.1),
            state,
            detokenizer: self.detokenizer,
            hsm: self.hsm,
            entropy: self.entropy,
            fingerprint_key: crypto::mac::HmacSha256Key::new(&[self.fingerprint_key; 32]),
        };
        Ok((pipeline, writer))
    }
}

fn network_spec() -> Arc<Spec> {
    Spec::builtin("network").expect("the built-in network spec").clone()
}

/// The fixture's listener (`pos`, the network spec, no DUKPT terminals).
pub fn listener() -> ListenerCtx {
    ListenerCtx { name: Arc::from("pos"), spec: network_spec(), bdk: None }
}

/// A connection from the loopback network.
pub fn local() -> Peer {
    Peer::tcp(std::net::Ipv4Addr::LOCALHOST.into())
}
