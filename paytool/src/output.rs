//! What a paytool command answers, and how bad input is reported.
//!
//! The contract (INTERFACES.md §2): the answer alone on stdout, one line, unless `--json` (then one
//! JSON object); exit 0 on success, 2 on bad input with a one-line error on stderr naming the
//! argument and the reason.

use std::fmt;
use std::io::Write;

use serde_json::Value;

/// A command's successful answer.
pub enum Answer {
    /// One line of text; with `--json`, the given object instead.
    Line { text: String, json: Value },
    /// A JSON document (e.g. a decoded message): printed compact on one line in both modes.
    Json(Value),
    /// Exact bytes (e.g. an encoded message without `--hex`), written as they are, no newline.
    #[allow(dead_code)]
    Bytes(Vec<u8>),
}

impl Answer {
    /// A line whose JSON form is `{"<key>": "<text>"}`.
    pub fn line(key: &str, text: impl Into<String>) -> Self {
        let text = text.into();
        let json = serde_json::json!({ key: text.clone() });
        Answer::Line { text, json }
    }

    pub fn write(&self, json: bool, out: &mut impl Write) -> std::io::Result<()> {
        match self {
            Answer::Line { text, json: j } => {
                if json {
                    writeln!(out, "{j}")
                } else {
                    writeln!(out, "{text}")
                }
            }
            Answer::Json(v) => writeln!(out, "{v}"),
            Answer::Bytes(b) => out.write_all(b),
        }
    }
}

/// Bad input: which argument, and why. Rendered as one line; never contains a key or PIN value.
#[derive(Debug)]
pub struct BadInput {
    pub arg: String,
    pub reason: String,
}

impl BadInput {
    pub fn new(arg: impl Into<String>, reason: impl Into<String>) -> Self {
        BadInput { arg: arg.into(), reason: reason.into() }
    }
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, always: fold any newline an inner error may carry.
        let reason = self.reason.replace('\n', " ");
        write!(f, "{}: {}", self.arg, reason)
    }
}

/// Crypto errors already name what they are about; a command that knows the CLI argument
/// should prefer [`crypto_arg`] to name it.
impl From<crypto::Error> for BadInput {
    fn from(e: crypto::Error) -> Self {
        BadInput::new(e.what, e.detail)
    }
}

impl From<codecs::Error> for BadInput {
    fn from(e: codecs::Error) -> Self {
        BadInput::new("input", e.to_string())
    }
}

/// Maps a crypto error to the CLI argument it came from.
pub fn crypto_arg(arg: &'static str) -> impl FnOnce(crypto::Error) -> BadInput {
    move |e| BadInput::new(arg, e.detail)
}

/// Decodes a hex argument (either case), naming it on error.
pub fn hex_arg(arg: &'static str, value: &str) -> Result<Vec<u8>, BadInput> {
    crypto::keys::from_hex(arg, value).map_err(crypto_arg(arg))
}

pub type CmdResult = Result<Answer, BadInput>;
