//! Text as the client and the server spell it: client encodings and bytea.

pub(crate) mod ascii;
pub mod bytea;
pub mod encoding;
