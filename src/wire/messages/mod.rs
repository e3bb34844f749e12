//! Typed views of the messages pgveil reads, one file a message: each
//! reads the fields it needs from a whole frame (tag and length included)
//! without copying them, and says when a frame is malformed.

pub(crate) mod bind;
pub(crate) mod body;
pub(crate) mod close;
pub(crate) mod command_complete;
pub(crate) mod data_row;
pub(crate) mod describe;
pub(crate) mod execute;
pub(crate) mod function_call;
pub(crate) mod parameter_status;
pub(crate) mod parse;
pub(crate) mod query;
