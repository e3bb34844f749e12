//! Client to server: what a client sends, encrypted before it leaves.

pub mod copy_in;
pub mod tap;
