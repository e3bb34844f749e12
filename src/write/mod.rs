//! Client to server: what a client sends, encrypted before it leaves.

pub(crate) mod copy_in;
pub mod tap;
