//! Audit files of the `sm` suite: HMAC-SM3 chain, SM3 file hash, SM2
//! seals; written, verified, reviewed, and tampered with.

use std::fs;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sm3::Digest;

use super::record::tests::statement;
use super::*;
use crate::protect::crypto::{SealSigner, SealVerifier, Suite};

const MAC_KEY: [u8; 32] = [42; 32];

fn keys(suite: Suite) -> Arc<AuditKeys> {
    let secret = SealSigner::generate(suite).unwrap();
    let signer = SealSigner::from_secret(suite, &secret).unwrap();
    Arc::new(AuditKeys::with_signer(&MAC_KEY, signer))
}

async fn write(dir: &std::path::Path, keys: &Arc<AuditKeys>, n: u64) {
    let config = AuditConfig {
        dir: dir.into(),
        fsync_interval_ms: 0,
        compress: false,
        ..AuditConfig::default()
    };
    let (handle, task) = AuditSink::start(&config, keys.clone()).unwrap();
    for i in 0..n {
        handle.record(statement(i)).unwrap();
    }
    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
}

fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    files.pop().unwrap()
}

#[tokio::test]
async fn sm_files_say_their_suite_and_verify_with_the_sm2_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(Suite::Sm);
    write(dir.path(), &keys, 10).await;
    let path = only_file(dir.path());
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("\"suite\":\"sm\""), "{}", lines[0]);
    let seal = lines.last().unwrap();
    assert!(
        seal.contains("\"suite\":\"sm\"") && seal.contains("\"sm3\":\""),
        "{seal}"
    );
    assert!(!seal.contains("sha256"), "{seal}");
    // The seal's hash is SM3 of every byte before it.
    let before = &text[..text.len() - seal.len() - 1];
    assert!(seal.contains(&hex::encode(sm3::Sm3::digest(before.as_bytes()))));

    let report = verify(dir.path(), Some(&MAC_KEY), keys.public_key()).unwrap();
    assert_eq!((report.records, report.macs_checked), (10, true));
    // Through the public key's text form, as `audit verify --public-key`.
    let parsed = format!("sm2:{}", STANDARD.encode(keys.public_key()));
    assert!(matches!(
        SealVerifier::parse(&parsed),
        Ok(SealVerifier::Sm2(_))
    ));
    verify(dir.path(), None, keys.public_key()).unwrap();
}

#[tokio::test]
async fn an_edited_sm_record_or_seal_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(Suite::Sm);
    write(dir.path(), &keys, 10).await;
    let path = only_file(dir.path());
    let good = fs::read_to_string(&path).unwrap();

    let edited = good.replacen("\"rows\":1,", "\"rows\":9,", 1);
    assert_ne!(edited, good);
    fs::write(&path, &edited).unwrap();
    let err = verify(dir.path(), Some(&MAC_KEY), keys.public_key()).unwrap_err();
    assert!(matches!(err, VerifyError::MacMismatch { .. }), "{err}");
    let err = verify(dir.path(), None, keys.public_key()).unwrap_err();
    assert!(matches!(err, VerifyError::HashMismatch { .. }), "{err}");

    // A seal whose signed text changed no longer verifies.
    let edited = good.replacen("\"recovered\":false", "\"recovered\":true", 1);
    fs::write(&path, &edited).unwrap();
    let err = verify(dir.path(), None, keys.public_key()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");

    // Another SM2 key does not verify the file.
    fs::write(&path, &good).unwrap();
    let other = self::keys(Suite::Sm);
    let err = verify(dir.path(), None, other.public_key()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
}

/// A file of one suite checked with a key of the other says so, whichever
/// way round.
#[tokio::test]
async fn a_key_of_the_other_suite_is_refused_by_name() {
    for (written, checked) in [(Suite::Sm, Suite::Aes), (Suite::Aes, Suite::Sm)] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &keys(written), 3).await;
        let other = keys(checked);
        let err = verify(dir.path(), Some(&MAC_KEY), other.public_key()).unwrap_err();
        assert!(
            matches!(err, VerifyError::Suite { file, key, .. } if file == written && key == checked),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("HMAC-SM3, SM3, SM2"), "{message}");
    }
}

/// A header edited to claim the other suite fails: the file's hash covers
/// the header, and the key still is of its own suite.
#[tokio::test]
async fn a_header_that_drops_its_suite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(Suite::Sm);
    write(dir.path(), &keys, 3).await;
    let path = only_file(dir.path());
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen(",\"suite\":\"sm\"", "", 1)).unwrap();
    let err = verify(dir.path(), Some(&MAC_KEY), keys.public_key()).unwrap_err();
    assert!(matches!(err, VerifyError::Suite { .. }), "{err}");
}

/// `audit search` reads SM files as it reads AES ones.
#[tokio::test]
async fn review_reads_sm_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &keys(Suite::Sm), 4).await;
    let filter = review::Filter::default();
    let mut out = Vec::new();
    review::search(dir.path(), &filter, review::SearchFormat::Json, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
}
