//! What pgveil needs to protect columns: the policy and the keyring,
//! loaded once at start and shared read-only by every session.
//!
//! Loading fails closed: a policy without a keyring, a missing or wrong
//! master key, a master key provider that cannot be reached, or a policy
//! column whose key domain has no key stops pgveil from starting, with a
//! message that says which and how to fix it.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

use crate::protect::crypto::KeyRef;
use crate::protect::custody::{CreateKey, CustodyConfig, CustodyError};
use crate::protect::keyring::{Keyring, KeyringError};
use crate::protect::policy::{Action, ColumnPolicy, Policy, PolicyError};

/// Why protection could not be set up.
#[derive(Debug, Error)]
pub enum ProtectionError {
    /// The policy cannot be read.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// The master key's provider cannot be reached or used.
    #[error("{0}")]
    Custody(#[from] CustodyError),
    /// The keyring cannot be opened, or lacks a domain of the policy.
    #[error("keyring: {0}")]
    Keyring(#[from] KeyringError),
}

/// The policy and its keys.
pub struct Protection {
    /// The column policy.
    pub policy: Policy,
    /// The data keys, unwrapped.
    pub keyring: Keyring,
    /// Key id to the columns of its domain, to decide what a reader sees
    /// of a value whose ciphertext names only its key.
    columns_by_key: HashMap<u32, Vec<ColumnPolicy>>,
    /// A random value marking the errors pgveil has the server raise.
    refusal_marker: String,
}

impl Protection {
    /// Loads the policy (a file or a directory of them) and the keyring,
    /// opened with the master key of `master` (the configuration's
    /// `[master_key]`).
    pub fn load(
        policy_path: &Path,
        keyring_path: &Path,
        master: &CustodyConfig,
    ) -> Result<Protection, ProtectionError> {
        let policy = load_policy(policy_path)?;
        let keyring = load_keyring(keyring_path, master)?;
        keyring.require_domains(&policy.domains())?;
        Ok(Protection::new(policy, keyring))
    }

    /// Joins a policy with a keyring that holds all its domains.
    pub fn new(policy: Policy, keyring: Keyring) -> Protection {
        let mut columns_by_key: HashMap<u32, Vec<ColumnPolicy>> = HashMap::new();
        for column in policy.columns() {
            for key in keyring.key_refs(&column.domain) {
                columns_by_key
                    .entry(key.id)
                    .or_default()
                    .push(column.clone());
            }
        }
        Protection {
            policy,
            keyring,
            columns_by_key,
            refusal_marker: random_marker(),
        }
    }

    /// The marker of refusals (see `encrypt.rs`).
    pub(crate) fn refusal_marker(&self) -> &str {
        &self.refusal_marker
    }

    /// What a reader with `roles`, `purpose` and `ticket` sees of a value
    /// encrypted under `key`, and the column whose rule decided it. When a domain is
    /// shared by several columns the most restrictive of their decisions
    /// applies, since the ciphertext alone does not say which column it
    /// came from. `None` when no policy column uses the key.
    pub fn decide(
        &self,
        key: KeyRef,
        roles: &[String],
        purpose: Option<&str>,
        ticket: Option<&str>,
    ) -> Option<(Action, &ColumnPolicy)> {
        self.columns_by_key
            .get(&key.id)?
            .iter()
            .map(|column| (column.decide(roles, purpose, ticket), column))
            .min_by_key(|(action, _)| *action)
    }
}

/// 128 random bits as hex. Falls back to the clock if the system has no
/// randomness to give: the marker only needs to be unguessable by clients
/// in practice, it protects no secret.
fn random_marker() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = now.as_nanos().to_be_bytes();
    }
    format!("pgveil-{}", hex::encode(bytes))
}

/// Loads the keyring at `path` with the master key of `master`, whose
/// provider is reached for the time of the load only.
pub(crate) fn load_keyring(
    path: &Path,
    master: &CustodyConfig,
) -> Result<Keyring, ProtectionError> {
    let master = master.open(CreateKey::No)?;
    Ok(Keyring::load(path, master.as_ref())?)
}

/// Loads a policy file, or every `*.toml` of a directory.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyError> {
    if path.is_dir() {
        Policy::load_dir(path)
    } else {
        Policy::load(&[path.to_path_buf()])
    }
}

impl From<crate::protect::policy::Encryption> for crate::protect::crypto::Mode {
    fn from(encryption: crate::protect::policy::Encryption) -> Self {
        match encryption {
            crate::protect::policy::Encryption::Randomized => {
                crate::protect::crypto::Mode::Randomized
            }
            crate::protect::policy::Encryption::Deterministic => {
                crate::protect::crypto::Mode::Deterministic
            }
        }
    }
}
