//! The sample CRM (`policies/crm.sql`, `policies/crm.toml`) behind a pgveil
//! with a fresh keyring, and login users for each policy role.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pgveil::audit::{AuditConfig, AuditKeys};

use pgveil::crypto::MasterKey;
use pgveil::keyring::Keyring;
use pgveil::policy::Policy;
use pgveil::veil::Veil;

use super::{test_config, Cluster, Proxy};

/// Login users and the group role each belongs to; every password is `pw`.
pub const USERS: &[(&str, &str)] = &[
    ("crm_user", "crm_app"),
    ("support_user", "support"),
    ("analyst_user", "analyst"),
    ("kyc_user", "kyc_officer"),
];

pub struct Crm {
    pub proxy: Proxy,
    pub policy: Policy,
    pub keyring: Keyring,
}

fn project_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The CRM of this test binary, set up once.
pub fn crm() -> &'static Crm {
    static CRM: OnceLock<Crm> = OnceLock::new();
    CRM.get_or_init(|| setup(None))
}

/// Sets the CRM up (once per test binary), behind a pgveil that records to
/// the audit log `audit` describes, if given.
pub fn setup(audit: Option<AuditConfig>) -> Crm {
    let cluster = Cluster::shared();
    cluster.psql_direct(&std::fs::read_to_string(project_file("policies/crm.sql")).unwrap());
    for (user, role) in USERS {
        cluster.psql_direct(&format!(
            "create role {user} login password 'pw' in role {role}"
        ));
    }
    let dir = std::env::temp_dir().join(format!("pgveil-crm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyring_path = dir.join("keyring.toml");
    let load_policy = || Policy::load(&[project_file("policies/crm.toml")]).unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    Keyring::init(&keyring_path, &master, &load_policy().domains()).unwrap();
    let veil = Veil::new(
        load_policy(),
        Keyring::load(&keyring_path, &master).unwrap(),
    );
    let config = pgveil::config::Config {
        upstream: cluster.addr(),
        ..test_config()
    };
    let audit = audit.map(|audit| {
        let keyring = Arc::new(Keyring::load(&keyring_path, &master).unwrap());
        (audit, Arc::new(AuditKeys::from_keyring(keyring).unwrap()))
    });
    Crm {
        proxy: Proxy::with_audit(config, Some(veil), audit),
        policy: load_policy(),
        keyring: Keyring::load(&keyring_path, &master).unwrap(),
    }
}

impl Crm {
    /// Ciphertext of `plaintext` for a customers column, as pgveil writes it.
    pub fn encrypt(&self, column: &str, plaintext: &str) -> String {
        let policy = self.policy.column("public", "customers", column).unwrap();
        self.keyring
            .encrypt_text(
                &policy.domain,
                policy.encryption.into(),
                plaintext.as_bytes(),
            )
            .unwrap()
    }

    /// What the column's mask makes of `plaintext`.
    pub fn mask(&self, column: &str, plaintext: &str) -> String {
        self.policy
            .column("public", "customers", column)
            .unwrap()
            .mask
            .apply(plaintext)
    }

    /// A connection through pgveil as one of [`USERS`].
    pub async fn connect(&self, user: &str) -> tokio_postgres::Client {
        super::try_connect(&self.proxy.url(user, "pw", "postgres"))
            .await
            .unwrap()
    }
}
