//! A terminal that sells in TWD, a test card billed in EUR, the network as `paynet serve` starts
//! it: the issuer is sent DE 6/10/51 and charges the converted amount, the terminal's answer shows
//! both amounts, a partial reversal gives back what the sale's rate makes of the difference, and a
//! currency with no rate to EUR is declined 13 without touching the card. Real switch and issuer
//! simulator on 127.0.0.1, driven over the wire.

mod common;

use common::{Tx, acquirer_client, card_accepts_arpc, chip_request, otb, rc};
use paynet::network::{self, Options};

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
