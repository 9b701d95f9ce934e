pub mod demo;
pub mod keys;
pub mod node;
pub mod serve;
pub mod tour;
