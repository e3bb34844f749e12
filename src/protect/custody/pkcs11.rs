//! The `pkcs11` provider: the master key is an AES-256 secret key inside a
//! PKCS#11 token (an HSM, or SoftHSM2 in the tests), created sensitive and
//! not extractable; pgveil finds it by its label and asks the token to
//! encrypt and decrypt with it, and never holds it.
//!
//! The mechanism is `CKM_AES_GCM` through `C_Encrypt`/`C_Decrypt`: a
//! 96-bit IV that pgveil draws from the OS and sends with the call, the
//! binding ([`Aad`]) as GCM's additional data, a 128-bit tag. A sealed key
//! is `IV || ciphertext || tag`, the layout of the local provider, and the
//! binding is checked by the token as the tag is. `CKM_AES_KEY_WRAP_PAD`
//! was set aside: it has no additional data, so the binding would have to
//! travel inside the wrapped bytes. A token that does not offer
//! `CKM_AES_GCM` is refused when the provider opens.
//!
//! `master_check` is the fixed check message sealed by the token under an
//! IV reserved for it (all zeros; the IVs of keys are random, so they meet
//! it with probability 2^-96 each): the same key seals it to the same
//! bytes, which pgveil compares. A comparison, not a decryption, because
//! SoftHSM2 (like other tokens) reports a GCM tag that does not verify as
//! `CKR_GENERAL_ERROR`, which cannot be told apart from a failing token;
//! once the check has matched, a key that does not open is taken to be a
//! damaged entry. A token that makes its own GCM IVs (some do in FIPS
//! mode) is refused when it seals the check.
//!
//! Keys of the `sm` suite are wrapped with the same AES key and
//! `CKM_AES_GCM`, their binding marked `|sm` (see the custody module doc):
//! PKCS#11 defines no SM4 mechanism and SoftHSM2 offers none.
//!
//! A module is loaded and initialized once per process and kept (PKCS#11
//! allows one `C_Initialize` per application); each provider opens its own
//! session, logged in as the user, closed when the provider is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::Deserialize;
use thiserror::Error;
use zeroize::Zeroizing;

use super::{Aad, CreateKey, Custody, CustodyError, CustodyKind, CHECK_MESSAGE};
use crate::protect::crypto::{fill_random, Suite};
use crate::protect::secret_file::{read_private, SecretFileError};

/// The environment variable holding the PIN when neither `pin_env` nor
/// `pin_file` is set.
const DEFAULT_PIN_ENV: &str = "PGVEIL_PKCS11_PIN";

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The IV of `master_check` only.
const CHECK_IV: [u8; IV_LEN] = [0; IV_LEN];

/// `[master_key]` with `provider = "pkcs11"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (a shared library), e.g.
    /// `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The label of the AES-256 key in the token.
    pub key: String,
    /// The environment variable holding the user PIN
    /// (`PGVEIL_PKCS11_PIN` when neither this nor `pin_file` is set).
    #[serde(default)]
    pub pin_env: Option<String>,
    /// A file holding the user PIN, readable by its owner only.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
}

impl Pkcs11Config {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.pin_env.is_some() && self.pin_file.is_some() {
            return Err("pin_env and pin_file are both set; keep one".into());
        }
        if self.token.is_empty() || self.key.is_empty() {
            return Err("token and key must name the token and the key by their labels".into());
        }
        Ok(())
    }

    /// The module, token and key, for messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "module {}, token {:?}, key {:?}",
            self.module.display(),
            self.token,
            self.key
        )
    }

    fn pin(&self) -> Result<AuthPin, Pkcs11Error> {
        let text = match &self.pin_file {
            Some(path) => {
                let bytes = read_private(path, "PKCS#11 PIN")?;
                let text = std::str::from_utf8(&bytes).map_err(|_| Pkcs11Error::PinNotText)?;
                Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            None => {
                let var = self.pin_env.as_deref().unwrap_or(DEFAULT_PIN_ENV);
                let value =
                    std::env::var(var).map_err(|_| Pkcs11Error::PinNotSet { var: var.into() })?;
                Zeroizing::new(value)
            }
        };
        Ok(AuthPin::from(text.as_str()))
    }
}

/// A PKCS#11 token or key that cannot be used.
#[derive(Debug, Error)]
pub enum Pkcs11Error {
    /// The module cannot be loaded.
    #[error("cannot load the module: {0}")]
    Load(CkError),
    /// A call to the module failed.
    #[error("{call}: {source}")]
    Call {
        /// The PKCS#11 function.
        call: &'static str,
        /// What it returned.
        source: CkError,
    },
    /// No token has the label.
    #[error("no token is labelled {token:?} (tokens present: {})", list(found))]
    NoToken {
        /// The label asked for.
        token: String,
        /// The labels of the tokens present.
        found: Vec<String>,
    },
    /// The PIN variable is not set.
    #[error("no PIN: set {var} (or pin_env / pin_file in [master_key])")]
    PinNotSet {
        /// The variable.
        var: String,
    },
    /// The PIN file cannot be used.
    #[error(transparent)]
    PinFile(#[from] SecretFileError),
    /// The PIN file is not text.
    #[error("the PIN file is not UTF-8 text")]
    PinNotText,
    /// The token refused the PIN.
    #[error("the token refused the PIN (CKR_PIN_INCORRECT)")]
    WrongPin,
    /// The PIN is locked after too many wrong tries.
    #[error("the token's user PIN is locked (CKR_PIN_LOCKED); the security officer must reset it")]
    PinLocked,
    /// The token offers no AES-GCM.
    #[error("the token does not offer CKM_AES_GCM, which pgveil seals keys with")]
    NoGcm,
    /// No key has the label.
    #[error(
        "the token has no AES key labelled {key:?}; create it with \
         `pgveil keys init --create-key` (or the token's own tools), or fix the label"
    )]
    NoKey {
        /// The label.
        key: String,
    },
    /// Several keys have the label.
    #[error(
        "{count} AES keys in the token are labelled {key:?}; the master key's label must be unique"
    )]
    Ambiguous {
        /// The label.
        key: String,
        /// How many.
        count: usize,
    },
    /// The key is not one pgveil can use.
    #[error("the key labelled {key:?} {problem}")]
    Unusable {
        /// The label.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The token replaced the IV pgveil gave.
    #[error("the token makes its own AES-GCM IVs, so it cannot make pgveil's master_check")]
    OwnIv,
}

fn list(labels: &[String]) -> String {
    if labels.is_empty() {
        "none".into()
    } else {
        labels
            .iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn call(call: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error {
    move |source| Pkcs11Error::Call { call, source }
}

/// The module at `path`, loaded and initialized once per process.
fn context(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(path).map_err(Pkcs11Error::Load)?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => return Err(call("C_Initialize")(source)),
    }
    modules.insert(path.into(), context.clone());
    Ok(context)
}

/// An open, logged-in session and the master key's handle.
pub(super) struct Pkcs11Custody {
    describe: String,
    session: Mutex<Session>,
    key: ObjectHandle,
}

impl Pkcs11Custody {
    pub(super) fn open(config: &Pkcs11Config, create: CreateKey) -> Result<Self, Pkcs11Error> {
        let context = context(&config.module)?;
        let slot = find_token(&context, &config.token)?;
        match context.get_mechanism_info(slot, MechanismType::AES_GCM) {
            Ok(info) if info.encrypt() && info.decrypt() => {}
            Ok(_) | Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => {
                return Err(Pkcs11Error::NoGcm)
            }
            Err(source) => return Err(call("C_GetMechanismInfo")(source)),
        }
        let pin = config.pin()?;
        let session = match create {
            CreateKey::IfAbsent => context.open_rw_session(slot),
            CreateKey::No => context.open_ro_session(slot),
        }
        .map_err(call("C_OpenSession"))?;
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => return Err(Pkcs11Error::WrongPin),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => return Err(Pkcs11Error::PinLocked),
            Err(source) => return Err(call("C_Login")(source)),
        }
        let key = match (find_key(&session, &config.key)?, create) {
            (Some(key), _) => key,
            (None, CreateKey::IfAbsent) => create_key(&session, &config.key)?,
            (None, CreateKey::No) => {
                return Err(Pkcs11Error::NoKey {
                    key: config.key.clone(),
                })
            }
        };
        check_key(&session, key, &config.key)?;
        Ok(Self {
            describe: config.describe(),
            session: Mutex::new(session),
            key,
        })
    }

    /// `IV || AES-GCM(key, aad, plaintext) || tag`, by the token, with the
    /// IV the token leaves in the parameters (the one given, unless the
    /// token makes its own).
    fn seal_with(
        &self,
        mut iv: [u8; IV_LEN],
        aad: Aad<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CustodyError> {
        let aad = aad.to_bytes();
        let sealed = {
            let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())
                .map_err(|e| self.error(call("CK_GCM_PARAMS")(e)))?;
            self.session()
                .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
                .map_err(|e| self.error(call("C_Encrypt")(e)))?
        };
        Ok([&iv[..], &sealed].concat())
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, source: Pkcs11Error) -> CustodyError {
        CustodyError::Pkcs11 {
            provider: self.describe.clone(),
            source,
        }
    }
}

fn find_token(context: &Pkcs11, label: &str) -> Result<cryptoki::slot::Slot, Pkcs11Error> {
    let mut found = Vec::new();
    let mut matching = Vec::new();
    for slot in context
        .get_slots_with_initialized_token()
        .map_err(call("C_GetSlotList"))?
    {
        let info = context
            .get_token_info(slot)
            .map_err(call("C_GetTokenInfo"))?;
        let name = info.label().trim_end().to_owned();
        if name == label {
            matching.push(slot);
        }
        found.push(name);
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Pkcs11Error::NoToken {
            token: label.into(),
            found,
        }),
        [slot, ..] => {
            tracing::warn!("several PKCS#11 tokens are labelled {label:?}; using the first");
            Ok(*slot)
        }
    }
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let keys = session
        .find_objects(&key_template(label))
        .map_err(call("C_FindObjects"))?;
    match keys.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(Pkcs11Error::Ambiguous {
            key: label.into(),
            count: keys.len(),
        }),
    }
}

/// A new AES-256 token key: private, sensitive, never extractable, for
/// encryption and decryption only.
fn create_key(session: &Session, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
    let mut template = key_template(label);
    template.extend([
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]);
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(call("C_GenerateKey"))?;
    tracing::info!("created the AES-256 master key {label:?} in the PKCS#11 token");
    Ok(key)
}

/// Refuses a key that is not AES-256 or cannot encrypt and decrypt; warns
/// about one that could leave the token.
fn check_key(session: &Session, key: ObjectHandle, label: &str) -> Result<(), Pkcs11Error> {
    let wanted = [
        AttributeType::ValueLen,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Extractable,
        AttributeType::Sensitive,
    ];
    let unusable = |problem| Pkcs11Error::Unusable {
        key: label.into(),
        problem,
    };
    for attribute in session
        .get_attributes(key, &wanted)
        .map_err(call("C_GetAttributeValue"))?
    {
        match attribute {
            Attribute::ValueLen(len) if usize::from(len) != 32 => {
                return Err(unusable("is not an AES-256 key (32 bytes)"))
            }
            Attribute::Encrypt(false) | Attribute::Decrypt(false) => {
                return Err(unusable(
                    "is not allowed to encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT)",
                ))
            }
            Attribute::Extractable(true) | Attribute::Sensitive(false) => tracing::warn!(
                "the PKCS#11 master key {label:?} can leave the token (CKA_EXTRACTABLE or not \
                 CKA_SENSITIVE); a key made by `pgveil keys init --create-key` cannot"
            ),
            _ => {}
        }
    }
    Ok(())
}

impl Custody for Pkcs11Custody {
    fn kind(&self) -> CustodyKind {
        CustodyKind::Pkcs11
    }

    fn describe(&self) -> String {
        format!("pkcs11 {}", self.describe)
    }

    fn seal(&self, aad: Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let mut iv = [0; IV_LEN];
        fill_random(&mut iv).map_err(|_| self.error(Pkcs11Error::Random))?;
        self.seal_with(iv, aad, plaintext)
    }

    fn check_value(&self, suite: Suite) -> Result<Vec<u8>, CustodyError> {
        let check = self.seal_with(CHECK_IV, Aad::check(suite), CHECK_MESSAGE)?;
        if !check.starts_with(&CHECK_IV) {
            return Err(self.error(Pkcs11Error::OwnIv));
        }
        Ok(check)
    }

    fn check(&self, suite: Suite, check: &[u8]) -> Result<bool, CustodyError> {
        let expected = self.seal_with(CHECK_IV, Aad::check(suite), CHECK_MESSAGE)?;
        // Both are public: the check is stored in the keyring as it is.
        Ok(expected == check)
    }

    fn open(
        &self,
        aad: Aad<'_>,
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CustodyError> {
        let Some((iv, ciphertext)) = sealed.split_first_chunk::<IV_LEN>() else {
            return Ok(None);
        };
        if ciphertext.len() < TAG_LEN {
            return Ok(None);
        }
        let mut iv = *iv;
        let aad = aad.to_bytes();
        let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())
            .map_err(|e| self.error(call("CK_GCM_PARAMS")(e)))?;
        match self
            .session()
            .decrypt(&Mechanism::AesGcm(params), self.key, ciphertext)
        {
            Ok(plaintext) => Ok(Some(Zeroizing::new(plaintext))),
            // SoftHSM2 says CKR_GENERAL_ERROR for a tag that does not verify.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            )) => Ok(None),
            Err(e) => Err(self.error(call("C_Decrypt")(e))),
        }
    }
}
