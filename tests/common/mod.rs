//! Shared helpers for integration tests. Each `tests/*.rs` does `mod common;`.
#![allow(dead_code)]

pub mod docker;
pub mod gitrepo;
pub mod images;
pub mod load;
