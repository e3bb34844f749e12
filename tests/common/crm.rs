//! The sample CRM (`policies/crm.sql`, `policies/crm.toml`) behind a pgveil
//! with a fresh keyring, and login users for each policy role.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pgveil::audit::{AuditConfig, AuditKeys};

use pgveil::protect::crypto::MasterKey;
use pgveil::protect::keyring::Keyring;
use pgveil::protect::policy::Policy;
use pgveil::protect::protection::Protection;

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

/// The files of the CRM's keys, made once per test binary.
pub struct KeyFiles {
    pub keyring: PathBuf,
    pub master_key: PathBuf,
    /// A directory of this run's own: a name reused from an earlier run
    /// (by process id) would hold another master key's keyring.
    _dir: tempfile::TempDir,
}

/// Sets the CRM up in the shared cluster, with its login users and a
/// fresh keyring, once per test binary.
pub fn prepared() -> &'static KeyFiles {
    static PREPARED: OnceLock<KeyFiles> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let cluster = Cluster::shared();
        cluster.psql_direct(&std::fs::read_to_string(project_file("policies/crm.sql")).unwrap());
        for (user, role) in USERS {
            cluster.psql_direct(&format!(
                "create role {user} login password 'pw' in role {role}"
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("pgveil-crm-")
            .tempdir()
            .unwrap();
        let files = KeyFiles {
            keyring: dir.path().join("keyring.toml"),
            master_key: dir.path().join("master.key"),
            _dir: dir,
        };
        let (master, text) = MasterKey::generate().unwrap();
        super::write_private(&files.master_key, text.as_bytes());
        Keyring::init(&files.keyring, &master, &load_policy().domains()).unwrap();
        files
    })
}

/// The sample policy.
pub fn policy_file() -> PathBuf {
    project_file("policies/crm.toml")
}

fn load_policy() -> Policy {
    Policy::load(&[policy_file()]).unwrap()
}

/// The CRM's keyring, loaded.
pub fn keyring() -> Keyring {
    let files = prepared();
    let master = MasterKey::from_file(&files.master_key).unwrap();
    Keyring::load(&files.keyring, &master).unwrap()
}

/// A pgveil in front of the CRM, recording to the audit log `audit`
/// describes, if given. The CRM is set up on first use.
pub fn setup(audit: Option<AuditConfig>) -> Crm {
    let veil = Protection::new(load_policy(), keyring());
    let config = pgveil::proxy::config::Config {
        upstream: Cluster::shared().addr(),
        ..test_config()
    };
    let audit = audit.map(|audit| {
        let keys = AuditKeys::from_keyring(Arc::new(keyring())).unwrap();
        (audit, Arc::new(keys))
    });
    Crm {
        proxy: Proxy::with_audit(config, Some(veil), audit),
        policy: load_policy(),
        keyring: keyring(),
    }
}

/// The CRM's roles and users (see [`prepared`]), then `schema` run as the
/// superuser, behind a pgveil protecting the columns of `policy` with a
/// keyring of their own. Once per test binary.
pub fn protect(schema: &str, policy: Policy) -> Crm {
    let path = prepared().keyring.with_file_name("protect-keyring.toml");
    Cluster::shared().psql_direct(schema);
    let (master, _) = MasterKey::generate().unwrap();
    Keyring::init(&path, &master, &policy.domains()).unwrap();
    let load = || Keyring::load(&path, &master).unwrap();
    let config = pgveil::proxy::config::Config {
        upstream: Cluster::shared().addr(),
        ..test_config()
    };
    Crm {
        proxy: Proxy::with_veil(config, Some(Protection::new(policy.clone(), load()))),
        policy,
        keyring: load(),
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
