pub mod keys;
pub mod serve;
