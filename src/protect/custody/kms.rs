//! The `aws-kms` provider: the master key is a symmetric KMS key; each
//! keyring key is sealed by KMS `Encrypt` and opened by `Decrypt`, with the
//! binding ([`Aad`]) as the EncryptionContext (`pgveil`, `domain`, `id`,
//! `version`), which KMS authenticates as additional data and records in
//! CloudTrail. `Decrypt` names the configured key, so a keyring sealed
//! under another key is refused rather than opened with it.
//!
//! Calls go through the official SDK (`aws-sdk-kms`) over rustls with ring;
//! credentials come from the standard variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the region from the
//! configuration or `AWS_REGION`. The SDK is asynchronous and the keyring
//! is not: each call runs on a runtime of the provider's own, on a thread
//! of its own, so it works inside and outside pgveil's runtime alike.
//!
//! A data key crosses the TLS connection to KMS in the clear of that
//! connection and passes through the SDK's buffers, which are not
//! zeroized; what pgveil itself keeps of it is.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use serde::Deserialize;
use thiserror::Error;
use zeroize::Zeroizing;

use super::{Aad, Custody, CustodyError, CustodyKind};

/// `[master_key]` with `provider = "aws-kms"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// The key: its id, ARN, alias name (`alias/…`) or alias ARN.
    pub key_id: String,
    /// The region; `AWS_REGION` (or `AWS_DEFAULT_REGION`) when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint than the region's, e.g. a VPC endpoint, or a local
    /// emulator in tests.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl KmsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.key_id.is_empty() {
            return Err("key_id is empty".into());
        }
        if let Some(endpoint) = &self.endpoint {
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                return Err(format!("endpoint {endpoint:?} is not an http(s):// URL"));
            }
        }
        Ok(())
    }

    /// The key, region and endpoint, for messages.
    pub(super) fn describe(&self) -> String {
        let mut text = format!("key {}", self.key_id);
        if let Some(region) = &self.region {
            text.push_str(&format!(", region {region}"));
        }
        if let Some(endpoint) = &self.endpoint {
            text.push_str(&format!(", endpoint {endpoint}"));
        }
        text
    }

    fn region(&self) -> Result<String, KmsError> {
        self.region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .ok_or(KmsError::NoRegion)
    }
}

/// KMS, or its key, that cannot be used.
#[derive(Debug, Error)]
pub enum KmsError {
    /// No region configured.
    #[error("no region: set region in [master_key] or AWS_REGION")]
    NoRegion,
    /// No credentials in the environment.
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)")]
    NoCredentials,
    /// The provider's runtime cannot start.
    #[error("cannot start the KMS client's runtime: {0}")]
    Runtime(std::io::Error),
    /// A call failed: KMS unreachable, access denied, key disabled...
    #[error("{call} failed: {message}")]
    Call {
        /// The KMS operation.
        call: &'static str,
        /// What the SDK says, with its causes.
        message: String,
    },
    /// KMS answered without the field pgveil needs.
    #[error("{call} answered without {field}")]
    Incomplete {
        /// The KMS operation.
        call: &'static str,
        /// The field.
        field: &'static str,
    },
}

/// A KMS client for one key.
pub(super) struct KmsCustody {
    describe: String,
    key_id: String,
    client: aws_sdk_kms::Client,
    /// Taken in `drop`, to shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
}

impl KmsCustody {
    pub(super) fn open(config: &KmsConfig) -> Result<Self, KmsError> {
        let region = config.region()?;
        let credentials = credentials_from_env()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KmsError::Runtime)?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            describe: config.describe(),
            key_id: config.key_id.clone(),
            client: aws_sdk_kms::Client::from_conf(builder.build()),
            runtime: Some(runtime),
        })
    }

    /// Runs `future` to its end on the provider's runtime, on a thread of
    /// its own.
    fn run<T: Send>(&self, future: impl Future<Output = T> + Send) -> T {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn error(&self, source: KmsError) -> CustodyError {
        CustodyError::Kms {
            provider: self.describe.clone(),
            source,
        }
    }
}

impl Drop for KmsCustody {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn credentials_from_env() -> Result<Credentials, KmsError> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        return Err(KmsError::NoCredentials);
    };
    Ok(Credentials::new(
        id,
        secret,
        var("AWS_SESSION_TOKEN"),
        None,
        "environment",
    ))
}

fn context(aad: Aad<'_>) -> HashMap<String, String> {
    aad.pairs()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// An error and its causes, `: `-separated.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// KMS's error code and message, or the SDK's error and its causes when
/// KMS was not reached.
fn call_failed<E, R>(call: &'static str, error: &SdkError<E, R>) -> KmsError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let message = match error {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("an unnamed error");
            match e.err().message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            }
        }
        other => causes(other),
    };
    KmsError::Call { call, message }
}

impl Custody for KmsCustody {
    fn kind(&self) -> CustodyKind {
        CustodyKind::AwsKms
    }

    fn describe(&self) -> String {
        format!("aws-kms {}", self.describe)
    }

    fn seal(&self, aad: Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let request = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext.to_vec()))
            .set_encryption_context(Some(context(aad)))
            .send();
        let output = self
            .run(request)
            .map_err(|e| self.error(call_failed("Encrypt", &e)))?;
        output.ciphertext_blob.map(Blob::into_inner).ok_or_else(|| {
            self.error(KmsError::Incomplete {
                call: "Encrypt",
                field: "CiphertextBlob",
            })
        })
    }

    fn open(
        &self,
        aad: Aad<'_>,
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CustodyError> {
        let request = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(sealed.to_vec()))
            .set_encryption_context(Some(context(aad)))
            .send();
        match self.run(request) {
            Ok(output) => output
                .plaintext
                .map(|p| Some(Zeroizing::new(p.into_inner())))
                .ok_or_else(|| {
                    self.error(KmsError::Incomplete {
                        call: "Decrypt",
                        field: "Plaintext",
                    })
                }),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    DecryptError::InvalidCiphertextException(_)
                        | DecryptError::IncorrectKeyException(_)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(call_failed("Decrypt", &e))),
        }
    }
}
