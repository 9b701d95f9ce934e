//! `paytool tlv decode HEX` — EMV BER-TLV as JSON (INTERFACES.md §2).
//!
//! Prints a JSON array with one object per TLV object: `{"tag":"9F26","len":8,"value":"…"}`.
//! A constructed object (template) carries the same three keys — `value` is the hex of its whole
//! content — plus `"children":[…]`, its content decoded the same way. Decoding is lenient (EMV
//! Book 3 Annex B: `00`/`FF` padding between objects skipped, unknown and proprietary tags kept);
//! `--strict` refuses padding, non-minimal lengths and tags outside the dictionary. paytool is a
//! calculator for test material: values are printed as given, not masked.

use clap::{Args, Subcommand};
use codecs::tlv::{self, DecodeOptions, Node};
use serde_json::{Value, json};

use crate::output::{Answer, BadInput, CmdResult, hex_arg};

#[derive(Args)]
pub struct TlvCmd {
    #[command(subcommand)]
    action: TlvAction,
}

#[derive(Subcommand)]
enum TlvAction {
    /// Decode BER-TLV (e.g. DE 55, a GENERATE AC response) into a JSON array.
    Decode {
        /// The TLV data in hex (either case).
        #[arg(value_name = "HEX")]
        hex: String,
        /// Refuse padding, non-minimal lengths, unknown tags and lengths outside the dictionary.
        #[arg(long)]
        strict: bool,
    },
}

pub fn run(cmd: TlvCmd) -> CmdResult {
    match cmd.action {
        TlvAction::Decode { hex, strict } => decode(&hex, strict),
    }
}

fn decode(hex: &str, strict: bool) -> CmdResult {
    let bytes = hex_arg("HEX", hex)?;
    let opts = if strict { DecodeOptions::strict() } else { DecodeOptions::lenient() };
    let nodes = tlv::decode(&bytes, opts).map_err(|e| BadInput::new("HEX", e.to_string()))?;
    Ok(Answer::Json(to_json(&nodes)))
}

/// The JSON form of a decoded tree.
pub fn to_json(nodes: &[Node<'_>]) -> Value {
    Value::Array(
        nodes
            .iter()
            .map(|n| {
                let mut o = json!({
                    "tag": n.tag().to_string(),
                    "len": n.value().len(),
                    "value": crypto::keys::to_hex(n.value()),
                });
                if n.is_constructed()
                    && let Some(map) = o.as_object_mut()
                {
                    map.insert("children".into(), to_json(&n.children));
                }
                o
            })
            .collect(),
    )
}
