//! The demo's world: the running network (`network::start` with the phone's providers and
//! [`CARDS`] test cards) and what the demo keeps between steps — the POS/e-commerce acquirer's
//! connection to the switch, the ATM with its state folder (STAN, DUKPT counter, cassettes and
//! owed reversal advices survive an ATM restart), the STAN counter, the phones' folder. The
//! switch can be restarted under it; the terminals reconnect to the new ports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use atm_sim::atm::{Atm, AtmConfig, Fault, Outcome};
use atm_sim::state::StateDir;
use atm_sim::{Endpoint, SwitchLink};
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use crypto::pin::Pin;
use futures_util::{SinkExt, StreamExt};
use terminal_kit::pos::TestCard;
use tokio_util::codec::Framed;
use wallet_sim::providers::ProviderAddrs;

use super::CARDS;
use crate::network::{self, Network, Options};

/// The POS and e-commerce acquirer's connection to the switch (`network` spec, 2-byte framing).
struct PosLink {
    conn: Framed<tokio::net::TcpStream, FrameCodec>,
    spec: Arc<Spec>,
}

/// The running network and what the demo keeps between steps: its terminals' connections, the
/// ATM, the STAN counter, the folder of the phones' state files.
pub struct World {
    pub net: Network,
    pub providers: ProviderAddrs,
    pub dir: PathBuf,
    pub(super) spec: Arc<Spec>,
    pos: Option<PosLink>,
    atm: Option<Atm>,
    atm_link: Option<SwitchLink>,
    stan: u32,
}

impl World {
    /// Starts the network (with [`CARDS`] test cards and the phone's providers) in `dir`.
    pub async fn start(dir: &Path) -> Result<World> {
        let mut opts = Options::new(dir);
        opts.cards = CARDS;
        opts.wallet_providers = true;
        opts.twd_cards = super::TWD_CARDS.to_vec();
        let net = network::start(opts).await?;
        let providers =
            net.providers().ok_or_else(|| anyhow!("the phone's providers did not start"))?.addrs.clone();
        let phones = dir.join("phones");
        std::fs::create_dir_all(&phones)?;
        Ok(World {
            net,
            providers,
            dir: dir.to_path_buf(),
            spec: Spec::builtin("network").ok_or_else(|| anyhow!("network spec"))?.clone(),
            pos: None,
            atm: None,
            atm_link: None,
            stan: 0,
        })
    }

    /// Stops the switch and starts it again on the same store and keys (`Network::restart_switch`);
    /// the terminals reconnect to its new ports on their next transaction. The ATM keeps its state.
    pub async fn restart_switch(mut self) -> Result<World> {
        self.pos = None;
        self.atm_link = None;
        let World { net, providers, dir, spec, atm, stan, .. } = self;
        let net = net.restart_switch().await?;
        Ok(World { net, providers, dir, spec, pos: None, atm, atm_link: None, stan })
    }

    pub async fn shutdown(mut self) {
        self.pos = None;
        self.atm_link = None;
        self.atm = None;
        self.net.shutdown().await;
    }

    pub(super) fn next_stan(&mut self) -> u32 {
        self.stan = self.stan % 999_999 + 1;
        self.stan
    }

    /// Test card `i` of the ports file.
    pub fn card(&self, i: usize) -> Result<TestCard> {
        let c = self.net.ports.test_cards.get(i).ok_or_else(|| anyhow!("no test card {i}"))?;
        Ok(serde_json::from_value(serde_json::to_value(c)?)?)
    }

    /// The issuer's open-to-buy on test card `i`'s account.
    pub fn open_to_buy(&self, i: usize) -> Result<u64> {
        let pan = &self.net.ports.test_cards.get(i).ok_or_else(|| anyhow!("no test card {i}"))?.pan;
        self.net
            .issuer_state
            .issuer
            .lock()
            .map_err(|_| anyhow!("issuer state poisoned"))?
            .open_to_buy(pan)
            .ok_or_else(|| anyhow!("the issuer does not know test card {i}"))
    }

    /// The switch's acquirer listener as an ATM reads it from the ports file.
    pub fn atm_endpoint(&self) -> Endpoint {
        self.net.ports.acquirer.clone()
    }

    /// Test ATM `n` of the ports file with its state folder (`atm-state` in the demo's folder):
    /// STAN, DUKPT counter, cassettes and owed reversal advices survive a restart of the ATM.
    pub fn open_atm(&self, n: usize, cfg: impl FnOnce(&mut AtmConfig)) -> Result<Atm> {
        let t = self.net.ports.atm_terminals.get(n).ok_or_else(|| anyhow!("no test ATM {n}"))?;
        let ipek = crypto::keys::TdesKey::from_hex("ipek", &t.ipek)?;
        let ksn = crypto::dukpt::TdesKsn::from_hex(&t.ksn)?;
        let mut c = AtmConfig::new(&t.tid);
        cfg(&mut c);
        let dir = StateDir::open(&self.dir.join("atm-state"))?;
        Ok(Atm::open_tdes(&dir, c, &ipek, &ksn)?)
    }

    /// One request to the switch on the POS acquirer connection and its answer.
    pub async fn pos_call(&mut self, req: &Message) -> Result<Message> {
        if self.pos.is_none() {
            let a = &self.net.ports.acquirer;
            let stream = tokio::net::TcpStream::connect((a.host.as_str(), a.port))
                .await
                .with_context(|| format!("connecting to the switch at {}:{}", a.host, a.port))?;
            stream.set_nodelay(true)?;
            self.pos = Some(PosLink {
                conn: Framed::new(stream, FrameCodec::new(FramingKind::Binary2)),
                spec: self.spec.clone(),
            });
        }
        let link = self.pos.as_mut().ok_or_else(|| anyhow!("no switch connection"))?;
        let r = async {
            link.conn.send(Frame::new(req.encode()?)).await?;
            let frame = tokio::time::timeout(Duration::from_secs(15), link.conn.next())
                .await
                .map_err(|_| anyhow!("no answer from the switch in 15 s"))?
                .ok_or_else(|| anyhow!("the switch closed the connection"))??;
            Ok::<_, anyhow::Error>(Message::decode(&link.spec, frame.payload)?)
        }
        .await;
        if r.is_err() {
            self.pos = None;
        }
        r
    }

    /// The demo's ATM (test ATM 0) and its link to the switch, opened on first use.
    fn atm_and_link(&mut self) -> Result<(&mut Atm, &mut SwitchLink)> {
        if self.atm.is_none() {
            // A Taiwanese ATM: it dispenses TWD.
            self.atm = Some(self.open_atm(0, |c| {
                c.terminal.country = super::MERCHANT_COUNTRY;
                c.terminal.currency = super::MERCHANT_CURRENCY;
            })?);
        }
        if self.atm_link.is_none() {
            let ep = self.atm_endpoint();
            self.atm_link =
                Some(tokio::task::block_in_place(|| SwitchLink::connect(&ep, Duration::from_secs(5)))?);
        }
        match (self.atm.as_mut(), self.atm_link.as_mut()) {
            (Some(a), Some(l)) => Ok((a, l)),
            _ => bail!("the ATM is not open"),
        }
    }

    /// One cash advance at the demo's ATM, blocking I/O off the async workers.
    pub fn cash_advance(
        &mut self,
        card: &mut dyn emv::card::Contactless,
        amount: u64,
        pin: &Pin,
        fault: Fault,
    ) -> Result<(Outcome, Option<String>)> {
        let (atm, link) = self.atm_and_link()?;
        let from = atm.journal.entries.len();
        let o = tokio::task::block_in_place(|| atm.cash_advance(link, card, amount, pin, fault))?;
        // The PAN the ATM read, masked, from its journal's request line.
        let read =
            atm.journal.entries[from..].iter().find(|e| e.event == "request").and_then(|e| e.pan.clone());
        Ok((o, read))
    }
}
