//! What of the issuer must outlive a restart of a kept test network (`paynet serve --state`):
//! the accounts' outstanding amounts, the bookings (so reversals and advices still find their
//! originals, at the rate the sale was booked with), and per card the ATCs seen, the PIN tries
//! left and the limited-use-key window. Cards are named by their account, bookings by their
//! original's TID, STAN and DE 7: no PAN, PIN or key is in it. [`crate::host::Issuer::kept`]
//! takes it, [`crate::host::Issuer::restore`] puts it back; where it is stored is the caller's.

use serde::{Deserialize, Serialize};

/// The issuer's changing state, in a stable order (two equal states serialise the same).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptIssuer {
    pub accounts: Vec<KeptAccount>,
    pub cards: Vec<KeptCard>,
    pub bookings: Vec<KeptBooking>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAccount {
    pub account: u32,
    pub outstanding_minor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCard {
    pub account: u32,
    /// Ascending.
    pub atcs_seen: Vec<u16>,
    pub pin_tries_left: u8,
    pub luk_issued_from: Option<u16>,
    pub luk_batch_first: u16,
    pub luk_next_atc: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBooking {
    /// The original's identity: `TID|STAN|DE 7`.
    pub original: String,
    pub account: u32,
    pub approved_minor: u64,
    pub standing_minor: u64,
    /// The sale's conversion: (sale currency, billing currency, DE 10), ISO 4217 numeric.
    pub conversion: Option<(String, String, String)>,
}
