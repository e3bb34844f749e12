//! The SM primitives against the standards' published examples.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, KeyInit, Nonce, Tag};
use sm3::Digest;
use sm4::cipher::{BlockCipherDecrypt, BlockCipherEncrypt};

use super::*;

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text.replace(char::is_whitespace, "")).unwrap()
}

/// GB/T 32907-2016, appendix A, example 1: key and plaintext
/// `0123456789abcdeffedcba9876543210`.
#[test]
fn sm4_gbt_32907_example_1() {
    let key = unhex("0123456789abcdeffedcba9876543210");
    let cipher = Sm4::new_from_slice(&key).unwrap();
    let mut block = sm4::cipher::Block::<Sm4>::try_from(key.as_slice()).unwrap();
    cipher.encrypt_block(&mut block);
    assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
    cipher.decrypt_block(&mut block);
    assert_eq!(block.as_slice(), key.as_slice());
}

/// GB/T 32907-2016, appendix A, example 2: the same block encrypted
/// 1,000,000 times (about 1.5 s in a debug build).
#[test]
fn sm4_gbt_32907_example_2_million_times() {
    let key = unhex("0123456789abcdeffedcba9876543210");
    let cipher = Sm4::new_from_slice(&key).unwrap();
    let mut block = sm4::cipher::Block::<Sm4>::try_from(key.as_slice()).unwrap();
    for _ in 0..1_000_000 {
        cipher.encrypt_block(&mut block);
    }
    assert_eq!(hex::encode(block), "595298c7c6fd271f0402f804c33d3f66");
}

/// GB/T 32905-2016, appendix A: "abc" and "abcd" × 16.
#[test]
fn sm3_gbt_32905_examples() {
    assert_eq!(
        hex::encode(Sm3::digest(b"abc")),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
    assert_eq!(
        hex::encode(Sm3::digest(b"abcd".repeat(16))),
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    );
}

/// RFC 8998, appendix A.1: SM4-GCM, as `Sm4Gcm` (the generic GCM over
/// SM4) computes it, and the same with one bit changed does not open.
#[test]
fn sm4_gcm_rfc_8998_a1() {
    let key = unhex("0123456789ABCDEFFEDCBA9876543210");
    let nonce = unhex("00001234567800000000ABCD");
    let aad = unhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
    let plaintext = unhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
         EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
    );
    let gcm = Sm4Gcm::new_from_slice(&key).unwrap();
    let nonce = Nonce::try_from(nonce.as_slice()).unwrap();
    let mut buf = plaintext.clone();
    let tag = gcm
        .encrypt_inout_detached(&nonce, &aad, InOutBuf::from(buf.as_mut_slice()))
        .unwrap();
    assert_eq!(
        hex::encode_upper(&buf),
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735\
         D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    );
    assert_eq!(hex::encode_upper(tag), "83DE3541E4C2B58177E065A9BF7B62EC");

    let mut opened = buf.clone();
    gcm.decrypt_inout_detached(&nonce, &aad, InOutBuf::from(opened.as_mut_slice()), &tag)
        .unwrap();
    assert_eq!(opened, plaintext);
    let mut damaged = buf.clone();
    damaged[63] ^= 1;
    let bad_tag: Tag = tag;
    assert!(gcm
        .decrypt_inout_detached(
            &nonce,
            &aad,
            InOutBuf::from(damaged.as_mut_slice()),
            &bad_tag
        )
        .is_err());
}

/// SM4-SIV round-trips, is deterministic, and authenticates its header.
#[test]
fn sm4_siv_is_deterministic_and_authenticated() {
    let mut siv = Sm4Siv::new_from_slice(&[7; 32]).unwrap();
    let a = siv.encrypt([b"header"], b"alice@example.com").unwrap();
    let b = siv.encrypt([b"header"], b"alice@example.com").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 16 + b"alice@example.com".len());
    assert_ne!(a, siv.encrypt([b"header2"], b"alice@example.com").unwrap());
    assert_eq!(
        siv.decrypt([b"header"], &a).unwrap(),
        b"alice@example.com".to_vec()
    );
    assert!(siv.decrypt([b"other"], &a).is_err());
    let mut other = Sm4Siv::new_from_slice(&[8; 32]).unwrap();
    assert!(other.decrypt([b"header"], &a).is_err());
}

/// GB/T 32918.5-2017 (GM/T 0003.5-2012) appendix A.2: the signature of
/// "message digest" under the recommended curve with the default user id
/// verifies with the example's public key, and the example's private key
/// gives that public key.
#[test]
fn sm2_gbt_32918_signature_example() {
    use sm2::dsa::signature::Verifier;
    use sm2::dsa::{Signature, SigningKey, VerifyingKey};

    let private = unhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8");
    let public = unhex(
        "04 09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
            CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13",
    );
    let signature = unhex(
        "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
         B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA",
    );
    let id = super::super::signing::SM2_DEFAULT_ID;
    assert_eq!(id, "1234567812345678");
    let signer = SigningKey::from_slice(id, &private).unwrap();
    assert_eq!(&*signer.verifying_key().to_sec1_bytes(), public.as_slice());
    let key = VerifyingKey::from_sec1_bytes(id, &public).unwrap();
    let sig = Signature::try_from(signature.as_slice()).unwrap();
    assert!(key.verify(b"message digest", &sig).is_ok());
    assert!(key.verify(b"message digesT", &sig).is_err());
    let other_id = VerifyingKey::from_sec1_bytes("ALICE123@YAHOO.COM", &public).unwrap();
    assert!(other_id.verify(b"message digest", &sig).is_err());
}

#[test]
fn suites_parse_and_print() {
    for suite in [Suite::Aes, Suite::Sm] {
        assert_eq!(suite.name().parse::<Suite>().unwrap(), suite);
    }
    assert!("sm4".parse::<Suite>().unwrap_err().contains("aes or sm"));
    assert_eq!(Suite::default(), Suite::Aes);
}

#[test]
fn hkdf_sm3_differs_by_label_and_from_sha256() {
    let a: Zeroizing<[u8; 32]> = hkdf_sm3(&[1; 32], b"a");
    let b: Zeroizing<[u8; 32]> = hkdf_sm3(&[1; 32], b"b");
    assert_ne!(*a, *b);
    assert_eq!(*a, *hkdf_sm3::<32>(&[1; 32], b"a"));
}
