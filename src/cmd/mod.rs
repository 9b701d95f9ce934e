pub mod demo;
pub mod keys;
pub mod serve;
pub mod tour;
