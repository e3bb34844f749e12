//! SIV for the data path: RFC 5297's SIV (S2V with CMAC, then CTR) over
//! AES-256 (AES-256-SIV, a 512-bit key) and over SM4 (SM4-SIV, a 256-bit
//! key), built from RustCrypto's `cmac`, `ctr` and `dbl`, as `aes-siv`'s
//! generic `Siv<C, Cmac<C>>` builds it, with two costs paid once instead
//! of per value:
//!
//! - the keyed CMAC and the key schedule of CTR are kept and copied per
//!   value (`aes-siv` schedules the CTR key on every call);
//! - S2V's work on the associated data, `dbl(CMAC(0^128)) xor CMAC(AD)`,
//!   depends only on the key and the associated data, which for a
//!   deterministic envelope is the same for every value of a key and
//!   domain (the header names the mode and key); it is computed when the
//!   key is, for the key's domain, and afresh for any other (which does
//!   not authenticate).
//!
//! For a 20-byte value this leaves two CMAC blocks and two CTR blocks of
//! the nine `aes-siv` computes. A software SM4 block costs about as much
//! as a whole short value's AES work, which is where this began. The
//! output is `aes-siv`'s, byte for byte: the tests compare them, for both
//! ciphers, on every length around the block size, so this is the same
//! construction, evaluated with less repeated work. Only one header
//! string is supported (the associated data), as pgveil uses it.

use aes::Aes256Enc;
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::inout::InOutBuf;
use cmac::block_api::CmacCipher;
use cmac::digest::block_api::SmallBlockSizeUser;
use cmac::digest::{CtOutput, Mac};
use cmac::{Cmac, KeyInit};
use ctr::cipher::array::Array;
use ctr::cipher::{InnerIvInit, StreamCipherCore};
use dbl::Dbl;
use sm4::Sm4;

/// A block, as CMAC outputs it.
type Block = Array<u8, U16>;

/// AES-256-SIV, keyed with 512 bits.
pub(crate) type Aes256SivCached = SivCached<Aes256Enc>;
/// SM4-SIV, keyed with 256 bits.
pub(crate) type Sm4SivCached = SivCached<Sm4>;

/// SIV over the block cipher `C`, keyed with two keys of `C`: the first
/// keys CMAC, the second CTR, as in RFC 5297 and `aes-siv`.
pub(crate) struct SivCached<C: CmacCipher> {
    mac: Cmac<C>,
    ctr: C,
    /// The associated data given when keyed, and its share of S2V.
    kept: (Vec<u8>, Block),
}

impl<C> SivCached<C>
where
    C: CmacCipher + SmallBlockSizeUser<_BlockSize = U16> + KeyInit + Clone,
{
    /// Keys from `key`, two keys of `C` one after the other, with S2V's
    /// share of `aad`, the associated data of (nearly) every call, kept.
    pub(crate) fn new(key: &[u8], aad: &[u8]) -> Self {
        let (mac_key, ctr_key) = key.split_at(key.len() / 2);
        let mac = <Cmac<C> as KeyInit>::new_from_slice(mac_key).expect("a CMAC key of the cipher");
        let prefix = prefix(&mac, aad);
        Self {
            mac,
            ctr: <C as KeyInit>::new_from_slice(ctr_key).expect("a key of the cipher"),
            kept: (aad.to_vec(), prefix),
        }
    }

    /// Encrypts `buf` in place under `aad`; returns the synthetic IV.
    pub(crate) fn seal(&self, aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let iv = self.s2v(aad, buf);
        self.xor_keystream(&iv, buf);
        iv.into()
    }

    /// Decrypts `buf` in place if `iv` authenticates it under `aad`; else
    /// leaves it as it was and returns false.
    pub(crate) fn open(&self, aad: &[u8], buf: &mut [u8], iv: &[u8; 16]) -> bool {
        let iv = Block::from(*iv);
        self.xor_keystream(&iv, buf);
        let computed = self.s2v(aad, buf);
        // Compared in constant time, as `aes-siv` does.
        if CtOutput::<Cmac<C>>::new(computed) == CtOutput::new(iv) {
            true
        } else {
            // Encrypt again, so that no unauthenticated plaintext remains.
            self.xor_keystream(&iv, buf);
            false
        }
    }

    /// S2V(K, aad, message) of RFC 5297, section 2.4.
    fn s2v(&self, aad: &[u8], message: &[u8]) -> Block {
        let mut state = self.prefix_of(aad);
        let mut mac = self.mac.clone();
        match message.len().checked_sub(16) {
            Some(n) => {
                mac.update(&message[..n]);
                xor(&mut state, &message[n..]);
            }
            None => {
                state = state.dbl();
                xor(&mut state, message);
                state[message.len()] ^= 0x80;
            }
        }
        mac.update(&state);
        mac.finalize().into_bytes()
    }

    /// S2V's share of `aad`: kept for the associated data given when
    /// keyed, computed for any other.
    fn prefix_of(&self, aad: &[u8]) -> Block {
        match &self.kept {
            (kept, prefix) if kept.as_slice() == aad => *prefix,
            _ => prefix(&self.mac, aad),
        }
    }

    /// XORs `buf` with CTR's keystream from `iv`, whose bits 63 and 31
    /// are cleared first (RFC 5297, section 2.5).
    fn xor_keystream(&self, iv: &Block, buf: &mut [u8]) {
        let mut counter = *iv;
        counter[8] &= 0x7f;
        counter[12] &= 0x7f;
        ctr::CtrCore::<&C, ctr::flavors::Ctr128BE>::inner_iv_init(&self.ctr, &counter)
            .apply_keystream_partial(InOutBuf::from(buf));
    }
}

/// `dbl(CMAC(0^128)) xor CMAC(aad)`.
fn prefix<C>(mac: &Cmac<C>, aad: &[u8]) -> Block
where
    C: CmacCipher + SmallBlockSizeUser<_BlockSize = U16> + Clone,
{
    let mut prefix = mac
        .clone()
        .chain_update([0; 16])
        .finalize()
        .into_bytes()
        .dbl();
    xor(
        &mut prefix,
        &mac.clone().chain_update(aad).finalize().into_bytes(),
    );
    prefix
}

fn xor(into: &mut Block, bytes: &[u8]) {
    for (a, b) in into.iter_mut().zip(bytes) {
        *a ^= b;
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::KeyInit as _;
    use aes_siv::siv::Aes256Siv;

    use super::*;
    use crate::protect::crypto::suite::Sm4Siv;

    /// Byte for byte what `aes-siv`'s SIV makes (`Aes256Siv`, and the
    /// generic `Siv<Sm4, Cmac<Sm4>>`), for every length from 0 to 70
    /// (around one, two and four blocks) and associated data kept when
    /// keyed and not.
    #[test]
    fn the_same_as_aes_sivs_siv_over_aes_and_sm4() {
        let mut key = [0u8; 64];
        crate::protect::crypto::fill_random(&mut key).unwrap();
        let mut theirs = Aes256Siv::new_from_slice(&key).unwrap();
        same_as(&Aes256SivCached::new(&key, b"header one"), |aad, text| {
            theirs.encrypt([aad], text).unwrap()
        });
        let mut theirs = Sm4Siv::new_from_slice(&key[..32]).unwrap();
        same_as(
            &Sm4SivCached::new(&key[..32], b"header one"),
            |aad, text| theirs.encrypt([aad], text).unwrap(),
        );
    }

    fn same_as<C>(ours: &SivCached<C>, mut theirs: impl FnMut(&[u8], &[u8]) -> Vec<u8>)
    where
        C: CmacCipher + SmallBlockSizeUser<_BlockSize = U16> + KeyInit + Clone,
    {
        let aads: [&[u8]; 4] = [b"header one", b"", b"header one", &[7; 40]];
        for len in 0..70 {
            for aad in aads {
                let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                let expected = theirs(aad, &plaintext);
                let mut buf = plaintext.clone();
                let iv = ours.seal(aad, &mut buf);
                assert_eq!(expected, [&iv[..], &buf].concat(), "{len} {aad:?}");
                assert!(ours.open(aad, &mut buf, &iv));
                assert_eq!(buf, plaintext);
            }
        }
    }

    #[test]
    fn a_wrong_iv_associated_data_or_key_opens_nothing_and_leaves_no_plaintext() {
        wrong_opens_nothing(
            &Aes256SivCached::new(&[3; 64], b"aad"),
            &Aes256SivCached::new(&[4; 64], b"aad"),
        );
        wrong_opens_nothing(
            &Sm4SivCached::new(&[3; 32], b"aad"),
            &Sm4SivCached::new(&[4; 32], b"aad"),
        );
    }

    fn wrong_opens_nothing<C>(siv: &SivCached<C>, other_key: &SivCached<C>)
    where
        C: CmacCipher + SmallBlockSizeUser<_BlockSize = U16> + KeyInit + Clone,
    {
        let mut buf = b"alice@example.com".to_vec();
        let iv = siv.seal(b"aad", &mut buf);
        let sealed = buf.clone();
        let mut bad_iv = iv;
        bad_iv[0] ^= 1;
        assert!(!siv.open(b"aad", &mut buf, &bad_iv));
        assert_eq!(buf, sealed);
        assert!(!siv.open(b"other", &mut buf, &iv));
        assert_eq!(buf, sealed);
        assert!(!other_key.open(b"aad", &mut buf, &iv));
        assert_eq!(buf, sealed);
        let mut flipped = sealed.clone();
        flipped[3] ^= 0x80;
        assert!(!siv.open(b"aad", &mut flipped, &iv));
        assert!(siv.open(b"aad", &mut buf, &iv));
        assert_eq!(buf, b"alice@example.com");
    }
}
