//! Server to client: what the server answers, revealed as the policy says.

pub(crate) mod copy_out;
pub mod reveal;
mod revealed;
mod server_errors;
pub(crate) mod shape;
pub(crate) mod tap;
mod unencrypted;
