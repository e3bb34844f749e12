//! Server to client: what the server answers, revealed as the policy says.

pub mod copy_out;
pub mod shape;
pub mod tap;
