//! How pgveil encrypts a value for a protected column: the [`Encryptor`]
//! the rewriter and the COPY encryptor call, by the protection's keyring.

use crate::protect::policy::ColumnPolicy;
use crate::protect::protection::Protection;
use crate::sql::{EncryptError, Encryptor};

impl Encryptor for Protection {
    fn encrypt(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError> {
        self.keyring
            .encrypt_text(
                &column.domain,
                column.encryption.into(),
                plaintext.as_bytes(),
            )
            .map_err(|e| EncryptError(e.to_string()))
    }

    fn encrypt_bytes(
        &self,
        column: &ColumnPolicy,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptError> {
        self.keyring
            .encrypt_bytes(&column.domain, column.encryption.into(), plaintext)
            .map_err(|e| EncryptError(e.to_string()))
    }
}
