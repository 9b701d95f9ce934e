//! `paytool emv arqc|arpc|icc-mk` (INTERFACES.md §2): application cryptograms and ARPCs per CVN
//! from the issuer master key, and the ICC master key derivation. `--data` is the transaction data
//! already concatenated, without padding; paytool applies the CVN's key derivation, session key,
//! padding and MAC. `--aes` takes an AES issuer master key (`emv-csk` only).

use clap::{Args, Subcommand, ValueEnum};
use crypto::emv::{ArpcInput, Atc, CardInputs, Cvn, MasterKeyOption, PanDigits, Psn, UnpredictableNumber};
use crypto::keys::{AesKey, SymmetricKey, TdesKey, to_hex};

use crate::output::{Answer, BadInput, CmdResult, crypto_arg, hex_arg};

#[derive(Subcommand)]
pub enum EmvCmd {
    /// The 8-byte application cryptogram (ARQC, TC or AAC).
    Arqc {
        #[command(flatten)]
        card: CardArgs,
        /// The transaction data (hex), concatenated, unpadded.
        #[arg(long)]
        data: String,
    },
    /// The ARPC: 8 bytes (method 1, `--arc`) or 4 (method 2, `--csu`).
    Arpc {
        #[command(flatten)]
        card: CardArgs,
        /// The ARQC (8 bytes hex).
        #[arg(long)]
        arqc: String,
        /// Method 1: the 2-byte authorisation response code (hex, e.g. 3030 for "00").
        #[arg(long, conflicts_with = "csu")]
        arc: Option<String>,
        /// Method 2: the 4-byte card status update (hex).
        #[arg(long)]
        csu: Option<String>,
        /// Method 2: proprietary authentication data, 0 to 8 bytes (hex).
        #[arg(long, requires = "csu")]
        pad: Option<String>,
    },
    /// The ICC master key (16 bytes, odd parity).
    IccMk {
        /// The issuer master key (TDES, hex).
        #[arg(long)]
        imk: String,
        #[arg(long)]
        pan: String,
        #[arg(long)]
        psn: String,
        /// Option a (default) or b (EMV Book 2 §A1.4.2, for PANs over 16 digits).
        #[arg(long, value_enum, default_value = "a")]
        option: OptionArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OptionArg {
    A,
    B,
}

#[derive(Args)]
pub struct CardArgs {
    /// visa10, visa18, visa22, mc16, mc17, mc20, mc21 or emv-csk.
    #[arg(long)]
    cvn: String,
    /// The issuer master key for application cryptograms (hex).
    #[arg(long)]
    imk: String,
    #[arg(long)]
    pan: String,
    /// PAN sequence number, two digits.
    #[arg(long)]
    psn: String,
    /// Application transaction counter, 4 hex digits.
    #[arg(long)]
    atc: String,
    /// Unpredictable number, 8 hex digits (mc16 / mc17).
    #[arg(long)]
    un: Option<String>,
    /// The IMK is AES (emv-csk).
    #[arg(long)]
    aes: bool,
}

struct Card {
    cvn: Cvn,
    imk: SymmetricKey,
    pan: PanDigits,
    psn: Psn,
    atc: Atc,
    un: Option<UnpredictableNumber>,
}

impl Card {
    fn inputs(&self) -> CardInputs<'_> {
        CardInputs { pan: &self.pan, psn: self.psn, atc: self.atc, un: self.un }
    }
}

fn card(a: &CardArgs) -> Result<Card, BadInput> {
    let cvn: Cvn = a.cvn.parse().map_err(crypto_arg("--cvn"))?;
    let imk = if a.aes {
        SymmetricKey::Aes(AesKey::from_hex("--imk", &a.imk).map_err(crypto_arg("--imk"))?)
    } else {
        SymmetricKey::Tdes(TdesKey::from_hex("--imk", &a.imk).map_err(crypto_arg("--imk"))?)
    };
    let un = match (&a.un, cvn.needs_un()) {
        (Some(u), _) => Some(u.parse::<UnpredictableNumber>().map_err(crypto_arg("--un"))?),
        (None, true) => return Err(BadInput::new("--un", format!("{cvn} needs the unpredictable number"))),
        (None, false) => None,
    };
    Ok(Card {
        cvn,
        imk,
        pan: PanDigits::new(&a.pan).map_err(crypto_arg("--pan"))?,
        psn: a.psn.parse().map_err(crypto_arg("--psn"))?,
        atc: a.atc.parse().map_err(crypto_arg("--atc"))?,
        un,
    })
}

fn fixed<const N: usize>(arg: &'static str, hex: &str) -> Result<[u8; N], BadInput> {
    let v = hex_arg(arg, hex)?;
    v.as_slice().try_into().map_err(|_| BadInput::new(arg, format!("expected {N} bytes, found {}", v.len())))
}

pub fn run(cmd: EmvCmd) -> CmdResult {
    match cmd {
        EmvCmd::Arqc { card: a, data } => {
            let c = card(&a)?;
            let data = hex_arg("--data", &data)?;
            let ac = c
                .cvn
                .generate_ac(&c.imk, &c.inputs(), &data)
                .map_err(|e| BadInput::new("--imk", e.detail))?;
            Ok(Answer::line("arqc", to_hex(&ac)))
        }
        EmvCmd::Arpc { card: a, arqc, arc, csu, pad } => {
            let c = card(&a)?;
            let arqc = fixed::<8>("--arqc", &arqc)?;
            let input = match (arc, csu) {
                (Some(arc), None) => ArpcInput::Arc(fixed::<2>("--arc", &arc)?),
                (None, Some(csu)) => ArpcInput::Csu {
                    csu: fixed::<4>("--csu", &csu)?,
                    proprietary: pad.map(|p| hex_arg("--pad", &p)).transpose()?.unwrap_or_default(),
                },
                _ => return Err(BadInput::new("--arc", "give --arc (method 1) or --csu (method 2)")),
            };
            let arpc = c.cvn.generate_arpc(&c.imk, &c.inputs(), &arqc, &input).map_err(|e| {
                let arg = match e.what {
                    "proprietary authentication data" => "--pad",
                    "arpc" => {
                        if matches!(input, ArpcInput::Arc(_)) {
                            "--arc"
                        } else {
                            "--csu"
                        }
                    }
                    _ => "--imk",
                };
                BadInput::new(arg, e.detail)
            })?;
            Ok(Answer::line("arpc", to_hex(&arpc)))
        }
        EmvCmd::IccMk { imk, pan, psn, option } => {
            let imk = TdesKey::from_hex("--imk", &imk).map_err(crypto_arg("--imk"))?;
            let pan = PanDigits::new(&pan).map_err(crypto_arg("--pan"))?;
            let psn: Psn = psn.parse().map_err(crypto_arg("--psn"))?;
            let option = match option {
                OptionArg::A => MasterKeyOption::A,
                OptionArg::B => MasterKeyOption::B,
            };
            let mk = crypto::emv::derive_icc_mk(&imk, &pan, psn, option);
            Ok(Answer::line("icc_mk", to_hex(mk.expose())))
        }
    }
}
