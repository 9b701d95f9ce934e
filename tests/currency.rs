//! A terminal that sells in TWD, a test card billed in EUR, the network as `paynet serve` starts
//! it: the issuer is sent DE 6/10/51 and charges the converted amount, the terminal's answer shows
//! both amounts, a partial reversal gives back what the sale's rate makes of the difference (even
//! when the rate has changed since), an ATM that dispenses part of a TWD cash advance gives back
//! the rest at the advance's rate and its screen shows both amounts, and a currency with no rate to
//! EUR is declined 13 without touching the card. Real switch and issuer simulator on 127.0.0.1,
//! driven over the wire.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atm_sim::atm::{Atm, AtmConfig, Fault, ReversalKind};
use atm_sim::{Cassettes, PinPad, SwitchLink};
use common::{Tx, acquirer_client, card_accepts_arpc, chip_request, otb, rc};
use paynet::network::{self, Network, Options};

fn in_currency(currency: &str, stan: u32, amount: u64, atc: u16) -> Tx {
    Tx { currency: currency.into(), ..Tx::purchase(stan, amount, atc) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twd_terminal_charges_a_eur_card_the_converted_amount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    assert_eq!(card.currency, "978", "the test cards are billed in EUR");
    let mut c = acquirer_client(&net).await;
    let before = otb(&net, &card.pan);

    // TWD 1,000.00 at 0.0285714: EUR 28.57.
    let sale = chip_request("network", &card, &in_currency("901", 1, 100_000, 1));
    let rsp = c.call(&sale).await;
    assert_eq!(rc(&rsp), "00", "{rsp:?}");
    assert!(card_accepts_arpc(&card, &sale, &rsp), "the card checks the issuer's ARPC over the TWD data");
    for (de, v) in [(4, "000000100000"), (49, "901"), (6, "000000002857"), (10, "70285714"), (51, "978")] {
        assert_eq!(rsp.text(de).as_deref(), Some(v), "the answer's DE {de}");
    }
    assert_eq!(otb(&net, &card.pan), before - 2_857, "charged in EUR");

    // Today's rate is another (a reload of the rate table), not the sale's.
    set_rate(&net, "0.0312500");
    // The terminal gives back all but TWD 400.00: EUR 11.43 stays (at the sale's rate).
    let mut partial =
        terminal_kit::pos::reversal_advice(&sale, 2, &sale.text(7).expect("DE 7"), "22").expect("reversal");
    partial.set_text(95, &format!("{:012}{:012}C00000000C00000000", 40_000, 40_000)).expect("DE 95");
    let r = c.call(&partial).await;
    assert_eq!((r.mti().as_str(), rc(&r).as_str()), ("0430", "00"));
    common::until("the reversal reaches the issuer", || otb(&net, &card.pan) == before - 1_143).await;

    // No rate from JPY to EUR: 13 from the switch, the card untouched.
    let jpy = chip_request("network", &card, &in_currency("392", 3, 1_000, 3));
    assert_eq!(rc(&c.call(&jpy).await), "13");
    assert_eq!(otb(&net, &card.pan), before - 1_143);

    // In EUR, nothing converted.
    let eur = c.call(&chip_request("network", &card, &Tx::purchase(4, 500, 4))).await;
    assert_eq!(rc(&eur), "00");
    assert!(!eur.contains(6) && !eur.contains(51));
    net.shutdown().await;
}

/// The switch's TWD→EUR rate from now on, as a SIGHUP reload of `[[rate]]` sets it.
fn set_rate(net: &Network, rate: &str) {
    let cfg = switch::config::SwitchConfig {
        routes: vec![switch::config::RouteConfig {
            prefix: "476173".into(),
            issuer: "issuer-a".into(),
            billing_currency: Some("978".into()),
        }],
        rates: vec![switch::config::RateConfig { from: "901".into(), to: "978".into(), rate: rate.into() }],
        ..switch::config::SwitchConfig::default()
    };
    let table = cfg.route_table().expect("route table");
    *net.switch.engine.pipeline.routes.write().expect("routes") = Arc::new(table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twd_atm_that_dispenses_part_gives_back_the_rest_at_the_advance_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let card = net.ports.test_cards[0].clone();
    let before = otb(&net, &card.pan);
    let t = &net.ports.atm_terminals[0];
    let ipek = crypto::keys::TdesKey::from_hex("ipek", &t.ipek).expect("ipek");
    let ksn = crypto::dukpt::TdesKsn::from_hex(&t.ksn).expect("ksn");
    // A Taiwanese ATM: country 158, TWD.
    let mut cfg = AtmConfig::new(&t.tid);
    (cfg.terminal.country, cfg.terminal.currency) = (158, 901);
    let mut atm = Atm::in_memory(cfg, PinPad::tdes(&ipek, &ksn, 0).expect("PIN pad"), Cassettes::test_atm());
    let ep = atm_sim::Endpoint {
        host: net.ports.acquirer.host.clone(),
        port: net.ports.acquirer.port,
        spec: "network".into(),
        framing: "2-byte-binary".into(),
    };
    let mut link = SwitchLink::connect(&ep, Duration::from_secs(5)).expect("switch");
    let mut plastic = emv::card::EmvApplet::new(atm_sim::ports::card_profile(&common::card(&card), 0x0300));
    let pin = crypto::pin::Pin::new(&card.pin).expect("pin");

    // TWD 1,000.00 asked (EUR 28.57 at 0.0285714), TWD 400.00 dispensed: EUR 11.43 stays booked.
    let o =
        atm.cash_advance(&mut link, &mut plastic, 100_000, &pin, Fault::Partial(40_000)).expect("advance");
    assert_eq!(o.response_code.as_deref(), Some("00"));
    assert_eq!((o.dispensed, o.reversal, o.reversal_acknowledged), (40_000, ReversalKind::Partial, true));
    let b = o.billing.expect("the answer's DE 6/10/51");
    assert_eq!((b.amount_minor, b.currency.alpha, b.rate.de10()), (2_857, "EUR", "70285714".to_string()));
    common::until("the partial reversal reaches the issuer", || otb(&net, &card.pan) == before - 1_143).await;
    assert_eq!(o.available_after, Some(before - 1_143), "the screen's credit left, in EUR");
    assert_eq!(
        o.screen(&t.tid, 901),
        [
            format!("{}: please take your cash: TWD 400.00", t.tid),
            format!("{}: your card is charged EUR 11.43 (at 0.0285714 EUR per TWD)", t.tid),
            format!(
                "{}: credit available: EUR {}.{:02}",
                t.tid,
                (before - 1_143) / 100,
                (before - 1_143) % 100
            ),
        ]
    );
    net.shutdown().await;
}
