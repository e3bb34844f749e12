//! Text as the client and the server spell it: client encodings and bytea.

pub mod ascii;
pub mod bytea;
pub mod encoding;
