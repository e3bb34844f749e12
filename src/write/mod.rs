//! Client to server: what a client sends, encrypted before it leaves.
//!
//! - [`tap`]: `ClientTap`, the handler of every client message, and its
//!   dispatch by message type;
//! - `query`: the simple Query protocol (and FunctionCall);
//! - `extended`: Parse, Bind, Describe, Execute and Close;
//! - `statement`: what both protocols do with a statement text (rewrite,
//!   conform its literals, the prepared statements it may name);
//! - [`bind`]: encrypting Bind parameters, text and binary, arrays too;
//! - `copy_data`, [`copy_in`]: COPY FROM STDIN data, encrypted field by
//!   field in the text, CSV and binary formats;
//! - `refusal`: refusing a statement in order, through the server;
//! - `audit`: what the client side notes for the audit trail;
//! - `encryptor`: the protection as the SQL analysis's encryptor.

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
