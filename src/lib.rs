//! The paynet network assembled: what the `paynet` binary's `serve` and `demo` run, and what
//! the end-to-end tests start ([`demo`]: the mission's runs, shared by the binary and `tests/e2e.rs`).
#![forbid(unsafe_code)]

pub mod demo;
pub mod network;
pub mod private_file;
