//! Accepting connections and running each session: the outermost layer of
//! the data path.
//!
//! - [`server`] binds the listener, accepts connections, spawns one task a
//!   session and shuts down gracefully on a signal.
//! - `session` reads a connection's startup packets, relays authentication,
//!   reads the session's catalog, then runs the two relays with the client
//!   and server taps until either side ends.
//! - `relay` moves the messages of one direction, handing a tap the ones it
//!   asks for.
//! - [`tls`] is TLS on both legs: the certificates, the handshakes, and a
//!   leg that is plain or encrypted; its `TlsSlot` is what SIGHUP replaces.
//! - [`config`] is what it all runs with (`pgveil.toml`).
//! - `workers` are the session threads, one single-threaded runtime each,
//!   a session kept on one of them.
//! - `admin` serves the metrics and health checks over HTTP (`[admin]`).

pub(crate) mod admin;
pub mod config;
pub(crate) mod relay;
pub mod server;
pub(crate) mod session;
pub mod tls;
mod workers;
