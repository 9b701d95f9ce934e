//! Random ISO 8583 messages that obey a spec, from a seed: shared by the property tests and the
//! pyiso8583 oracle test. A message is generated as its JSON form (INTERFACES.md §1), the form
//! both implementations take as input.
#![allow(dead_code)]

use codecs::iso8583::{ContentType, Spec};
use serde_json::{Map, Value, json};

/// The tests' seeded source (testkit), one per property-test case, with the draws used here.
pub struct Rng(testkit::TestRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(testkit::TestRng::from_case(seed))
    }
    pub fn next(&mut self) -> u64 {
        self.0.u64()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick(&mut self, set: &[u8]) -> char {
        char::from(set[self.below(set.len())])
    }
}

const DIGITS: &[u8] = b"0123456789";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ALNUM_SPACE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ";
const NS: &[u8] = b"0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const HEX: &[u8] = b"0123456789ABCDEFabcdef";
const TRACK: &[u8] = b"0123456789=";

/// A value of `units` characters (bytes for binary) of content `c`, in its JSON text form.
pub fn value(rng: &mut Rng, c: ContentType, units: usize) -> String {
    (0..units)
        .map(|i| match c {
            ContentType::N => rng.pick(DIGITS),
            ContentType::A => rng.pick(LETTERS),
            ContentType::An | ContentType::Anp => rng.pick(ALNUM_SPACE),
            ContentType::Ans => char::from(0x20 + rng.below(95) as u8),
            ContentType::Ns => rng.pick(NS),
            ContentType::Z => rng.pick(TRACK),
            ContentType::XN if i == 0 => rng.pick(b"CD"),
            ContentType::XN => rng.pick(DIGITS),
            ContentType::Hex => rng.pick(HEX),
            ContentType::B => unreachable!("binary handled by the caller"),
        })
        .collect()
}

/// A random message of `spec` in JSON form: a random MTI and a random subset of its elements,
/// lengths from 0 to the maximum (short ones more likely).
pub fn message(spec: &Spec, seed: u64, max_fields: usize) -> Value {
    let mut rng = Rng::new(seed);
    let defined: Vec<u16> = spec.defined().collect();
    let n = 1 + rng.below(max_fields.min(defined.len()));
    let mut fields = Map::new();
    for _ in 0..n {
        let de = defined[rng.below(defined.len())];
        let f = spec.field(de).expect("defined");
        let max = usize::from(f.max_len);
        let units =
            if f.length.digits() == 0 || rng.below(8) == 0 { max } else { rng.below(max.min(40) + 1) };
        let text = if f.content == ContentType::B {
            let bytes: Vec<u8> = (0..units).map(|_| rng.next() as u8).collect();
            hex::encode_upper(bytes)
        } else {
            value(&mut rng, f.content, units)
        };
        fields.insert(de.to_string(), Value::String(text));
    }
    let mti = format!("0{}{}{}", 1 + rng.below(8), rng.below(4), rng.below(6));
    json!({"mti": mti, "fields": fields})
}
