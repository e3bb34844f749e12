//! What protects a column.
//!
//! - [`policy`]: the column policies (`policies/*.toml`): who sees what, for
//!   which purpose, under which mask.
//! - [`crypto`]: the master key, data keys, the ciphers and the envelope
//!   of a stored value.
//! - [`keyring`]: the data keys, wrapped under the master key, on disk.
//! - [`guard`]: the CHECK constraints that keep plaintext out of protected
//!   columns in the database itself.
//! - [`protection`]: the policy and keyring loaded together, as every
//!   session uses them.
//! - `secret_file`: the rule for files that hold secrets (the master key,
//!   TLS private keys): readable by their owner only.

pub mod crypto;
pub mod guard;
pub mod keyring;
pub mod policy;
pub mod protection;
pub(crate) mod secret_file;
