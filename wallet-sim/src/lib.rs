//! The cardholder side of the network: contactless chip cards and phones, and (as the operating
//! models are built) the providers that put cards into phones.
//!
//! [`card`] is the EMV contactless card application every card and phone runs: it answers the
//! APDUs a terminal's kernel sends (SELECT PPSE and AID, GET PROCESSING OPTIONS, READ RECORD,
//! GENERATE AC, EXTERNAL AUTHENTICATE), over the [`card::Contactless`] interface that terminals and
//! ATMs tap.

pub mod card;
