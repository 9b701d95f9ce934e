//! `paynet tour`: the main job in one go — the switch and the issuer simulator start on
//! 127.0.0.1 with generated test cards (as `serve` starts them), a contactless terminal runs a
//! short session against the switch, and each transaction prints as a receipt line (PAN masked):
//! approvals whose ARPC the card accepts, a balance inquiry, and the declines the network knows.
//! Exits 0 when every answer is the one expected.

use anyhow::{Context, Result, bail};
use clap::Args;
use codecs::framing::{Frame, FrameCodec, FramingKind};
use codecs::iso8583::{Message, Spec};
use futures_util::{SinkExt, StreamExt};
use terminal_kit::pos::{TestCard, Tx, card_accepts_arpc, chip_request};
use tokio_util::codec::Framed;

#[derive(Args)]
pub struct TourArgs {}

struct Case {
    what: &'static str,
    card: usize,
    tx: Tx,
    expect: &'static str,
    tamper: bool,
}

pub fn run(_a: TourArgs) -> Result<()> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async {
        let dir = tempfile::Builder::new().prefix("paynet-tour-").tempdir().context("temporary folder")?;
        let net = paynet::network::start(paynet::network::Options::new(dir.path())).await?;
        let cards: Vec<TestCard> = net
            .ports
            .test_cards
            .iter()
            .map(|c| serde_json::to_value(c).and_then(serde_json::from_value))
            .collect::<Result<_, _>>()?;
        let spec = Spec::builtin("network").context("network spec")?.clone();
        println!(
            "switch {}:{} (network spec, 2-byte framing) -> issuer simulator {}; {} test cards",
            net.ports.acquirer.host,
            net.ports.acquirer.port,
            net.ports.issuer,
            cards.len()
        );
        let stream =
            tokio::net::TcpStream::connect((net.ports.acquirer.host.as_str(), net.ports.acquirer.port))
                .await?;
        let mut conn = Framed::new(stream, FrameCodec::new(FramingKind::Binary2));
        let last = cards.len() - 1;
        let cases = [
            Case { what: "purchase", card: 0, tx: Tx::purchase(1, 4_250, 1), expect: "00", tamper: false },
            Case { what: "purchase", card: 2, tx: Tx::purchase(2, 129_900, 1), expect: "00", tamper: false },
            Case {
                what: "balance inquiry",
                card: 0,
                tx: Tx { processing_code: "313000".into(), ..Tx::purchase(3, 0, 2) },
                expect: "00",
                tamper: false,
            },
            Case {
                what: "over the open-to-buy",
                card: last,
                tx: Tx::purchase(4, 900_000, 1),
                expect: "51",
                tamper: false,
            },
            Case {
                what: "replayed ATC",
                card: 0,
                tx: Tx::purchase(5, 1_000, 1),
                expect: "82",
                tamper: false,
            },
            Case {
                what: "tampered cryptogram",
                card: 1,
                tx: Tx::purchase(6, 1_000, 1),
                expect: "82",
                tamper: true,
            },
        ];
        let mut failures = 0;
        for case in &cases {
            let card = &cards[case.card];
            let mut req = chip_request(&spec, card, &case.tx)?;
            if case.tamper {
                let mut icc = req.icc_data()?.unwrap_or_default().to_vec();
                if let Some(p) = icc.windows(2).position(|w| w == [0x9F, 0x26]) {
                    icc[p + 3] ^= 1;
                }
                req.set_icc_data(&icc)?;
            }
            conn.send(Frame::new(req.encode()?)).await?;
            let frame = conn.next().await.context("the switch closed the connection")??;
            let rsp = Message::decode(&spec, frame.payload)?;
            let rc = rsp.text(39).map(|c| c.into_owned()).unwrap_or_default();
            let arpc = if card_accepts_arpc(card, &req, &rsp) { "ARPC ok" } else { "no valid ARPC" };
            let extra = match (rsp.text(38), rsp.text(54)) {
                (_, Some(bal)) => {
                    format!("open-to-buy {}.{:0>2}", bal[8..18].trim_start_matches('0'), &bal[18..])
                }
                (Some(code), None) => format!("auth {code}"),
                _ => String::new(),
            };
            let ok = rc == case.expect;
            if !ok {
                failures += 1;
            }
            println!(
                "{:<22} {}  EUR {:>8}.{:02}  {}  {:<12} {:<14} {}",
                case.what,
                codecs::iso8583::describe::mask_pan(&card.pan),
                case.tx.amount / 100,
                case.tx.amount % 100,
                rc,
                extra,
                arpc,
                if ok { "as expected" } else { "UNEXPECTED" }
            );
        }
        drop(conn);
        net.shutdown().await;
        if failures > 0 {
            bail!("{failures} answers were not the expected ones");
        }
        println!("all {} answers as expected", cases.len());
        Ok(())
    })
}
