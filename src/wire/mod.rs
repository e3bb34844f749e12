//! The PostgreSQL frontend/backend protocol, version 3, as pgveil needs it.
//!
//! pgveil forwards the protocol as raw bytes and decodes only what it must
//! look at. [`frame`] finds message boundaries and checks each header
//! against the limits PostgreSQL itself applies; [`tags`] names the message
//! type bytes of each direction; [`messages`] holds a typed view of each
//! message pgveil reads; [`startup`] reads the untyped packets a connection
//! opens with; [`copy`] reads and writes COPY data; [`reply`] builds the
//! few messages pgveil writes itself (errors, the SSL refusal, the SASL
//! mechanism list with channel binding removed), with the codes of
//! [`sqlstate`].

pub(crate) mod copy;
pub mod frame;
pub(crate) mod messages;
pub mod reply;
pub mod sqlstate;
pub(crate) mod startup;
pub mod tags;

pub use frame::{Chunk, Framer, Side};

pub(crate) use frame::{read_message, FrameError, ReadError};
