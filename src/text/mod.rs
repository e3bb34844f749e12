//! Text as the client and the server spell it, the lowest layer.
//!
//! - [`encoding`]: the client encodings pgveil can read SQL in, and where
//!   they differ from what PostgreSQL accepts.
//! - [`bytea`]: bytea's hex and escape text forms.
//! - `ascii`: byte-level helpers for ASCII words in SQL.

pub(crate) mod ascii;
pub mod bytea;
pub mod encoding;
