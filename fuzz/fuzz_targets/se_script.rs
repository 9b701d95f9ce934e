//! Fuzzes the secure element's OTA script processing (`phone::se`). The first byte
//! picks the mode: raw wrapped commands straight from the input (the C-MAC check and the APDU
//! parsing face arbitrary bytes), or the input's plain commands sealed under the domain's real keys
//! (so INSTALL, PUT KEY and STORE DATA face arbitrary data past the MAC). Never panics; a refused
//! script leaves the element exactly as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phone::ota::{KeySet, OtaScript, PlainCommand, seal_script};
use phone::se::SecureElement;

const ISD: &str = "A000000151000000";

/// Length-prefixed chunks of the input.
fn chunks(mut d: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = d.split_first() {
        let n = usize::from(n).min(rest.len());
        out.push(&rest[..n]);
        d = &rest[n..];
        if out.len() > 16 {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let keys = KeySet::from_random(0x30, &[0x5A; 48]);
    let mut se = SecureElement::manufactured("SE1", "se-operator", ISD, keys.clone());
    let script = if mode & 1 == 0 {
        OtaScript {
            se_id: "SE1".into(),
            sd_aid: ISD.into(),
            kvn: 0x30,
            counter: 1,
            commands: chunks(rest).iter().map(hex::encode_upper).collect(),
        }
    } else {
        let cmds: Vec<PlainCommand> = chunks(rest)
            .iter()
            .filter_map(|c| {
                let [ins, p1, p2, body @ ..] = c else { return None };
                Some(PlainCommand { cla: 0x80, ins: *ins, p1: *p1, p2: *p2, data: body.to_vec() })
            })
            .collect();
        let Ok(s) = seal_script("SE1", &hex::decode(ISD).unwrap_or_default(), &keys, 1, &cmds) else { return };
        s
    };
    let before = se.clone();
    let r = se.run_script(&script);
    if r.sw != "9000" {
        assert_eq!(se, before, "a refused script left a trace");
    }
});
