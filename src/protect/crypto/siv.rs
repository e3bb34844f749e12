//! SM4-SIV for the data path: RFC 5297's SIV over SM4 (S2V with CMAC-SM4,
//! then SM4-CTR), built from RustCrypto's `cmac`, `ctr` and `dbl`, as
//! `aes-siv`'s generic `Siv<Sm4, Cmac<Sm4>>` builds it, with two costs
//! paid once instead of per value:
//!
//! - the keyed CMAC and the SM4 key schedule of CTR are kept and copied
//!   per value (`aes-siv` schedules the CTR key on every call);
//! - S2V's work on the associated data, `dbl(CMAC(0^128)) xor CMAC(AD)`,
//!   depends only on the key and the associated data, which for a
//!   deterministic envelope is the same for every value of a key and
//!   domain (the header names the mode and key); it is kept for the last
//!   associated data seen, and computed afresh for any other.
//!
//! A software SM4 block costs about as much as a whole short value's AES
//! work, and for a 20-byte value this leaves four blocks of SM4 out of
//! nine. The output is `aes-siv`'s, byte for byte: the tests compare them
//! on every length around the block size, so this is the same
//! construction, evaluated with less repeated work. Only one header
//! string is supported (the associated data), as pgveil uses it.

use std::sync::Mutex;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::inout::InOutBuf;
use cmac::digest::{CtOutput, Mac};
use cmac::{Cmac, KeyInit};
use ctr::cipher::array::Array;
use ctr::cipher::{InnerIvInit, StreamCipherCore};
use dbl::Dbl;
use sm4::Sm4;
use zeroize::Zeroizing;

/// A block, as CMAC outputs it.
type Block = Array<u8, U16>;

/// SM4-SIV keyed with a 256-bit key: its first half keys CMAC, its
/// second CTR, as in RFC 5297 and `aes-siv`.
pub(crate) struct Sm4SivCached {
    mac: Cmac<Sm4>,
    ctr: Sm4,
    /// The associated data last seen and its share of S2V.
    prefix: Mutex<Option<(Zeroizing<Vec<u8>>, Block)>>,
}

impl Sm4SivCached {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let (mac_key, ctr_key) = key.split_at(16);
        Self {
            mac: <Cmac<Sm4> as KeyInit>::new_from_slice(mac_key).expect("a 128-bit CMAC key"),
            ctr: <Sm4 as KeyInit>::new_from_slice(ctr_key).expect("a 128-bit SM4 key"),
            prefix: Mutex::new(None),
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
        if CtOutput::<Cmac<Sm4>>::new(computed) == CtOutput::new(iv) {
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

    /// `dbl(CMAC(0^128)) xor CMAC(aad)`: kept for the last `aad`.
    fn prefix_of(&self, aad: &[u8]) -> Block {
        if let Ok(kept) = self.prefix.try_lock() {
            if let Some((seen, prefix)) = kept.as_ref() {
                if seen.as_slice() == aad {
                    return *prefix;
                }
            }
        }
        let zero = self
            .mac
            .clone()
            .chain_update([0; 16])
            .finalize()
            .into_bytes();
        let mut prefix = zero.dbl();
        xor(
            &mut prefix,
            &self.mac.clone().chain_update(aad).finalize().into_bytes(),
        );
        if let Ok(mut kept) = self.prefix.try_lock() {
            *kept = Some((Zeroizing::new(aad.to_vec()), prefix));
        }
        prefix
    }

    /// XORs `buf` with SM4-CTR's keystream from `iv`, whose bits 63 and 31
    /// are cleared first (RFC 5297, section 2.5).
    fn xor_keystream(&self, iv: &Block, buf: &mut [u8]) {
        let mut counter = *iv;
        counter[8] &= 0x7f;
        counter[12] &= 0x7f;
        ctr::CtrCore::<Sm4, ctr::flavors::Ctr128BE>::inner_iv_init(self.ctr.clone(), &counter)
            .apply_keystream_partial(InOutBuf::from(buf));
    }
}

fn xor(into: &mut Block, bytes: &[u8]) {
    for (a, b) in into.iter_mut().zip(bytes) {
        *a ^= b;
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::KeyInit as _;

    use super::*;
    use crate::protect::crypto::suite::Sm4Siv;

    /// Byte for byte what `aes-siv`'s generic `Siv<Sm4, Cmac<Sm4>>` makes,
    /// for every length from 0 to 70 (around one, two and four blocks) and
    /// associated data that changes, repeats and comes back.
    #[test]
    fn the_same_as_aes_sivs_generic_siv_over_sm4() {
        let mut key = [0u8; 32];
        crate::protect::crypto::fill_random(&mut key).unwrap();
        let ours = Sm4SivCached::new(&key);
        let mut theirs = Sm4Siv::new_from_slice(&key).unwrap();
        let aads: [&[u8]; 4] = [b"header one", b"", b"header one", &[7; 40]];
        for len in 0..70 {
            for aad in aads {
                let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                let expected = theirs.encrypt([aad], &plaintext).unwrap();
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
        let siv = Sm4SivCached::new(&[3; 32]);
        let mut buf = b"alice@example.com".to_vec();
        let iv = siv.seal(b"aad", &mut buf);
        let sealed = buf.clone();
        let mut bad_iv = iv;
        bad_iv[0] ^= 1;
        assert!(!siv.open(b"aad", &mut buf, &bad_iv));
        assert_eq!(buf, sealed);
        assert!(!siv.open(b"other", &mut buf, &iv));
        assert_eq!(buf, sealed);
        assert!(!Sm4SivCached::new(&[4; 32]).open(b"aad", &mut buf, &iv));
        assert_eq!(buf, sealed);
        let mut flipped = sealed.clone();
        flipped[3] ^= 0x80;
        assert!(!siv.open(b"aad", &mut flipped, &iv));
        assert!(siv.open(b"aad", &mut buf, &iv));
        assert_eq!(buf, b"alice@example.com");
    }
}
