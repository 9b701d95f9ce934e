//! The cardholder side of the network: contactless chip cards and phones, and the providers that
//! put cards into phones in the four operating models (docs/operating-models.md).
//!
//! * [`card`] — the EMV contactless card application every card and phone runs: it answers the
//!   APDUs a terminal's kernel sends (SELECT PPSE and AID, GET PROCESSING OPTIONS, READ RECORD,
//!   GENERATE AC, EXTERNAL AUTHENTICATE), over the [`card::Contactless`] interface that terminals
//!   and ATMs tap.
//! * [`phone`] — the phone: secure elements with security domains, the OS secure area for HCE, a
//!   state file; a [`card::Contactless`] device routing to its default card.
//! * [`ota`] — the SCP03-like secure channel that scripts reach a security domain through.
//! * [`providers`] — SP TSM, SE operator and SE TSM, cloud (HCE) platform, DPSP wallet server:
//!   HTTP servers speaking JSON to each other, to the phone and to the token service.
//! * [`flows`] — the cardholder's and phone's steps of each model.
//! * [`cli`] — the `wallet-sim` command line.

pub mod card;
pub mod cli;
pub mod flows;
pub mod ota;
pub mod phone;
pub mod providers;
