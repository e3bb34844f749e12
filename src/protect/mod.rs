//! What protects a column.
//!
//! - [`policy`]: the column policies (`policies/*.toml`): who sees what, for
//!   which purpose, under which mask.
//! - [`crypto`]: the master key, data keys, the ciphers and the envelope
//!   of a stored value.
//! - [`keyring`]: the data keys, wrapped under the master key, on disk.
//! - [`custody`]: where the master key is kept (`env`, `file`, a PKCS#11
//!   token, AWS KMS), which seals and opens the keyring's keys.
//! - [`guard`]: the CHECK constraints that keep plaintext out of protected
//!   columns in the database itself.
//! - [`protection`]: the policy and keyring loaded together, as every
//!   session uses them.
//! - [`secret_file`]: files holding secrets, refused if others may read them.

pub mod crypto;
pub mod custody;
pub mod guard;
pub mod keyring;
pub mod policy;
pub mod protection;
pub mod secret_file;
