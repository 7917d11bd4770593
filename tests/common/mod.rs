#![allow(dead_code)]
pub mod docker;
