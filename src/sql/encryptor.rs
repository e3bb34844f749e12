//! The encryption the analysis calls for each value it encrypts:
//! [`Encryptor`], implemented by the protection layer, and its failure.

use thiserror::Error;

use crate::protect::policy::ColumnPolicy;

/// Encrypts values for protected columns.
pub trait Encryptor: Sync {
    /// The ciphertext of `plaintext` for a text `column`, as ASCII text
    /// made of `[A-Za-z0-9_:-]` only, so that it can be written as a plain
    /// SQL string literal.
    fn encrypt(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError>;

    /// The binary ciphertext of `plaintext` for a `bytea` `column`.
    fn encrypt_bytes(
        &self,
        column: &ColumnPolicy,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptError>;
}

/// An [`Encryptor`] failure. Its text must not contain the plaintext.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct EncryptError(pub String);
