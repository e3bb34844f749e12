//! Client to server: what a client sends, encrypted before it leaves.

mod audit;
pub mod bind;
mod copy_data;
pub(crate) mod copy_in;
mod encryptor;
mod extended;
mod query;
mod refusal;
mod statement;
pub(crate) mod tap;
