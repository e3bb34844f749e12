//! Typed views of the messages pgveil reads, one file a message: each
//! reads the fields it needs from a whole frame (tag and length included)
//! without copying them, and says when a frame is malformed.

pub(crate) mod command_complete;
pub(crate) mod data_row;
pub(crate) mod parameter_status;
