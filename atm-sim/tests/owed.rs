//! A reversal advice the switch does not acknowledge stays owed: kept sealed in the state folder
//! across a restart of the ATM, and delivered before its next transaction. The switch here is a
//! stand-in on a socket that approves every 0200 and answers 0420s only when told to; the STAN
//! and the KSN counter go on from where the ATM stopped.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atm_sim::atm::{Atm, AtmConfig, Fault, ReversalKind};
use atm_sim::state::StateDir;
use atm_sim::{Endpoint, SwitchLink};
use codecs::iso8583::{Message, Mti, Spec};
use emv::card::{CardKeys, CardProfile, EmvApplet};

/// What the stand-in switch saw: (MTI, DE 11, DE 53 hex).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

fn fake_switch(ack_reversals: Arc<AtomicBool>, seen: Seen) -> Endpoint {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let ack = ack_reversals.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let spec = Spec::builtin("network").expect("spec");
                loop {
                    let mut h = [0u8; 2];
                    if s.read_exact(&mut h).is_err() {
                        return;
                    }
                    let mut b = vec![0u8; usize::from(u16::from_be_bytes(h))];
                    if s.read_exact(&mut b).is_err() {
                        return;
                    }
                    let Ok(m) = Message::decode_slice(spec, &b) else { return };
                    let t = |de| m.text(de).map(|c| c.into_owned()).unwrap_or_default();
                    let ksn = m.field(53).map(|f| hex::encode_upper(f.data)).unwrap_or_default();
                    seen.lock().expect("seen").push((m.mti().to_string(), t(11), ksn));
                    if m.mti() == Mti::REVERSAL_ADVICE && !ack.load(Ordering::SeqCst) {
                        continue;
                    }
                    let mut r = Message::new(spec.clone(), m.mti().response().expect("request"));
                    for de in [2u16, 3, 4, 7, 11, 41, 49] {
                        let _ = r.copy_from(&m, de);
                    }
                    r.set_text(39, "00").expect("39");
                    let out = r.encode().expect("encode");
                    let mut f = (out.len() as u16).to_be_bytes().to_vec();
                    f.extend_from_slice(&out);
                    if s.write_all(&f).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Endpoint { host: "127.0.0.1".into(), port, spec: "network".into(), framing: "2-byte-binary".into() }
}

fn card() -> EmvApplet {
    EmvApplet::new(CardProfile {
        pan: "4761739001010010".into(),
        expiry: "2912".into(),
        psn: "00".into(),
        cvn: "visa18".into(),
        aid: "A0000000031010".into(),
        label: "TEST".into(),
        keys: CardKeys::Master { icc_mk: "0123456789ABCDEFFEDCBA9876543210".into() },
        atc: 0,
    })
}

#[test]
fn an_unacknowledged_reversal_survives_a_restart_and_is_delivered_first() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::open(d.path()).expect("state");
    let ack = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let ep = fake_switch(ack.clone(), seen.clone());
    // ANSI X9.24-1 Annex A test IPEK and KSN.
    let ipek = crypto::keys::TdesKey::from_hex("ipek", "6AC292FAA1315B4D858AB3A3D7D5933A").expect("ipek");
    let ksn = crypto::dukpt::TdesKsn::from_hex("FFFF9876543210E00000").expect("ksn");
    let mut cfg = AtmConfig::new("ATM00009");
    cfg.reversal_timeout = Duration::from_millis(200);
    cfg.reversal_attempts = 2;
    let pin = crypto::pin::Pin::new("1234").expect("pin");
    let mut c = card();
    {
        let mut atm = Atm::open_tdes(&dir, cfg.clone(), &ipek, &ksn).expect("ATM");
        let mut link = SwitchLink::connect(&ep, Duration::from_secs(2)).expect("link");
        let o = atm.cash_advance(&mut link, &mut c, 100_000, &pin, Fault::Partial(40_000)).expect("advance");
        assert_eq!(
            (o.dispensed, o.reversal, o.reversal_acknowledged),
            (40_000, ReversalKind::Partial, false)
        );
        assert_eq!(atm.owed(), 1);
        assert!(!o.settled());
    }
    // On disk: sealed, no clear PAN.
    let text = std::fs::read_to_string(d.path().join("atm-ATM00009.json")).expect("state");
    assert!(!text.contains("4761739001010010"));
    let journal = std::fs::read_to_string(d.path().join("atm-ATM00009.journal")).expect("journal");
    assert!(journal.contains("\"event\":\"owed\"") && !journal.contains("4761739001010010"));

    // Restart: the advice is owed still, and goes before the next 0200.
    ack.store(true, Ordering::SeqCst);
    let mut atm = Atm::open_tdes(&dir, cfg, &ipek, &ksn).expect("ATM again");
    assert_eq!(atm.owed(), 1);
    assert_eq!(atm.cassettes.total(), 10_000_000 - 40_000, "the cassettes remember");
    let mut link = SwitchLink::connect(&ep, Duration::from_secs(2)).expect("link");
    let o = atm.cash_advance(&mut link, &mut c, 20_000, &pin, Fault::None).expect("advance");
    assert_eq!((o.response_code.as_deref(), o.dispensed), (Some("00"), 20_000));
    assert_eq!(atm.owed(), 0);
    let seen = seen.lock().expect("seen").clone();
    let mtis: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(mtis, ["0200", "0420", "0420", "0420", "0200"], "{seen:?}");
    // STANs and KSNs never repeat across the restart.
    let stans: Vec<&str> = seen.iter().filter(|s| s.0 == "0200").map(|s| s.1.as_str()).collect();
    assert_eq!(stans, ["000001", "000003"]);
    let ksns: Vec<&str> = seen.iter().filter(|s| s.0 == "0200").map(|s| s.2.as_str()).collect();
    assert_eq!(ksns, ["FFFF9876543210E00001", "FFFF9876543210E00002"]);
}
