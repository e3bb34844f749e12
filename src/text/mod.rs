//! Text as the client and the server spell it: client encodings and bytea.

pub mod bytea;
pub mod encoding;
