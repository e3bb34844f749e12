//! Server to client: what the server answers, revealed as the policy says.
//!
//! - [`tap`]: `ServerTap`, the handler of every server message;
//! - [`shape`]: the shape of each result (which column each field comes
//!   from), from RowDescription;
//! - [`reveal`]: the revealer a session keeps, which decides and reveals
//!   each protected value of a row, for a recipient (roles, purpose);
//! - `revealed`: what a reader gets of one value, and the denial error;
//! - `unencrypted`: values stored unencrypted in a protected column,
//!   revealed by their column's rule;
//! - `meter`: plaintext rows counted against the columns' approval limits;
//! - [`copy_out`]: COPY TO data, revealed field by field;
//! - `server_errors`: the server's errors as the client should see them.

pub(crate) mod copy_out;
mod meter;
pub mod reveal;
mod revealed;
mod server_errors;
pub(crate) mod shape;
pub(crate) mod tap;
mod unencrypted;
