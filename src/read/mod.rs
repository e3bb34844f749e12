//! Server to client: what the server answers, revealed as the policy says.

pub(crate) mod copy_out;
pub(crate) mod shape;
pub mod tap;
