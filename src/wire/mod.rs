//! The PostgreSQL frontend/backend protocol, version 3, as pgveil needs it.
//!
//! pgveil forwards the protocol as raw bytes and decodes only what it must
//! look at. [`frame`] finds message boundaries and checks each header
//! against the limits PostgreSQL itself applies; [`startup`] reads the
//! untyped packets a connection opens with; [`reply`] builds the few
//! messages pgveil writes itself (errors, the SSL refusal, the SASL
//! mechanism list with channel binding removed).

pub mod frame;
pub mod reply;
pub(crate) mod startup;

pub use frame::{read_message, Chunk, FrameError, Framer, ReadError, Side};
pub(crate) mod command_complete;
pub(crate) mod copy;
pub(crate) mod data_row;
pub(crate) mod parameter_status;
pub mod sqlstate;
pub mod tags;
