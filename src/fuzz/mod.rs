//! Property-based fuzzing of what pgveil reads from clients, run by
//! `cargo test` (unit tests, so that private items are reachable):
//!
//! - [`statements`]: generated SQL text (INSERT, UPDATE, SELECT, COPY,
//!   SET, PREPARE, EXECUTE, DO; every literal, comment and identifier
//!   form; backslashes, non-ASCII, parameters, arrays) and byte noise fed
//!   to the statement analysis: `rewrite`, `conform`, the declarations.
//! - [`messages`]: valid and corrupted client→server message streams fed
//!   through the [`Framer`](crate::wire::Framer) and the client tap,
//!   with a model of how PostgreSQL reads what pgveil sends on.
//!
//! Each property runs a fixed number of cases (a few seconds in a debug
//! build); `PROPTEST_CASES=N` runs N instead.

pub(crate) mod messages;
pub(crate) mod sql;
pub(crate) mod statements;

use std::sync::OnceLock;

use proptest::test_runner::Config;

use crate::protect::crypto::MasterKey;
use crate::protect::keyring::Keyring;
use crate::protect::policy::Policy;
use crate::protect::protection::Protection;
use crate::session::protection::ProtectionSlot;

/// The sample policy (`policies/crm.toml`).
const POLICY: &str = include_str!("../../policies/crm.toml");

/// The sample policy with a fresh keyring, made once.
fn veil() -> &'static Protection {
    static VEIL: OnceLock<Protection> = OnceLock::new();
    VEIL.get_or_init(sample)
}

/// The sample policy with a fresh keyring in a slot, as a server holds
/// it, made once.
fn slot() -> &'static ProtectionSlot {
    static SLOT: OnceLock<ProtectionSlot> = OnceLock::new();
    SLOT.get_or_init(|| ProtectionSlot::new(Some(sample())))
}

/// The sample policy with a fresh keyring.
fn sample() -> Protection {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.toml");
    let policy = Policy::from_str("crm.toml", POLICY).unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    Keyring::init(&path, &master, &policy.domains()).unwrap();
    Protection::new(policy, Keyring::load(&path, &master).unwrap())
}

/// `cases` cases, or `PROPTEST_CASES` if set; failures are not persisted
/// to files (proptest prints the shrunk input).
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
