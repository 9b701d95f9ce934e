//! The paynet network assembled: what the `paynet` binary's `serve` (and later `demo`) run, and
//! what the end-to-end tests start.
#![forbid(unsafe_code)]

pub mod demo;
pub mod network;
