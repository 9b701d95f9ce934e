//! `paytool cvv` (INTERFACES.md §2): CVV/CVC from the CVK, PAN, expiry (YYMM) and service code —
//! iCVV with service code 999, CVV2 with 000.

use clap::Args;
use crypto::keys::TdesKey;

use crate::output::{Answer, BadInput, CmdResult, crypto_arg};

#[derive(Args)]
pub struct CvvArgs {
    /// The card verification key pair CVK A ‖ CVK B (32 hex digits).
    #[arg(long)]
    cvk: String,
    #[arg(long)]
    pan: String,
    /// Expiry, YYMM.
    #[arg(long)]
    exp: String,
    /// Service code, 3 digits (999 for iCVV, 000 for CVV2).
    #[arg(long)]
    service: String,
}

pub fn run(a: CvvArgs) -> CmdResult {
    let cvk = TdesKey::from_hex("--cvk", &a.cvk).map_err(crypto_arg("--cvk"))?;
    let cvv = crypto::cvv::cvv(&cvk, &a.pan, &a.exp, &a.service).map_err(|e| {
        let arg = match e.what {
            "pan" => "--pan",
            "exp" => "--exp",
            "service" => "--service",
            _ => "--cvk",
        };
        BadInput::new(arg, e.detail)
    })?;
    Ok(Answer::line("cvv", cvv))
}
