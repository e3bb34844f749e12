//! What protects a column: the policy, the ciphers, the keyring, the
//! database guard, and the loaded protection a session uses.

pub mod crypto;
pub mod guard;
pub mod keyring;
pub mod policy;
pub mod protection;
