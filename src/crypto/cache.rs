//! A bounded cache of decryptions, shared by every session.
//!
//! A CRM reads the same customers over and over (list views, lookups,
//! the record being edited), and each protected value costs an AEAD
//! opening every time it passes. The cache maps a field exactly as
//! PostgreSQL sent it (the ciphertext, in whichever form) to its
//! plaintext, so a value seen before is revealed with a hash and a copy.
//!
//! - Only values that decrypted and authenticated are stored: a field
//!   whose bytes equal a stored key is that ciphertext, which names its
//!   key and domain, so the plaintext is the one its decryption gives.
//! - Policy decisions are not cached here; every reader still gets what
//!   its own roles and purpose allow.
//! - Memory is bounded by a byte budget; entries are evicted by CLOCK
//!   (second chance), and every evicted or dropped plaintext is zeroized.
//! - Shards with their own locks keep sessions on different threads from
//!   waiting on each other; a lock is held for a lookup and a copy only.
//!
//! The hash is taken from the field's last 16 bytes, which are AEAD
//! output (tag or ciphertext, in whichever encoding): uniformly spread,
//! and unpredictable without the data key, so only pgveil's own
//! encryptions can place entries, and a field crafted to collide with one
//! only misses, since the full field is compared on every hit. They are
//! mixed with a per-process random seed.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Shards, each with its own lock and share of the budget.
const SHARDS: usize = 16;
/// Bookkeeping per entry beyond the key and value bytes (slot, index entry,
/// allocator headers), counted against the budget.
const ENTRY_OVERHEAD: usize = 96;

/// Decrypted values by ciphertext, within a byte budget.
pub struct DecryptCache {
    shards: Box<[Mutex<Shard>]>,
    seed: u64,
    shard_budget: usize,
}

impl DecryptCache {
    /// A cache holding at most about `budget` bytes; 0 stores nothing.
    pub fn new(budget: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            seed: RandomState::new().hash_one(0u8),
            shard_budget: budget / SHARDS,
        }
    }

    /// Copies the plaintext stored for `field` to the end of `out`; false
    /// when it is not stored.
    pub fn get_into(&self, field: &[u8], out: &mut Vec<u8>) -> bool {
        if self.shard_budget == 0 {
            return false;
        }
        let hash = self.hash(field);
        self.shard(hash).get_into(hash, field, out)
    }

    /// Stores the plaintext of `field`, evicting what it must.
    pub fn insert(&self, field: &[u8], plaintext: &[u8]) {
        let cost = field.len() + plaintext.len() + ENTRY_OVERHEAD;
        if cost > self.shard_budget {
            return;
        }
        let hash = self.hash(field);
        self.shard(hash)
            .insert(hash, field, plaintext, cost, self.shard_budget);
    }

    /// Mixes the field's last 16 bytes (fewer if it is shorter) with the
    /// seed.
    fn hash(&self, field: &[u8]) -> u64 {
        let mut tail = [0u8; 16];
        let take = field.len().min(16);
        tail[16 - take..].copy_from_slice(&field[field.len() - take..]);
        let (a, b) = tail.split_at(8);
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let mixed = (word(a) ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (word(b) ^ field.len() as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        mixed ^ (mixed >> 29)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // A shard's index uses the low bits (bucket) and the top seven
        // (tag) of the hash; the shard is picked by bits in between.
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One shard: slots in CLOCK order, and an index from hash to slot.
#[derive(Default)]
struct Shard {
    index: HashMap<u64, usize, BuildHasherDefault<Identity>>,
    slots: Vec<Slot>,
    /// The CLOCK hand: the next slot to consider for eviction.
    hand: usize,
    bytes: usize,
}

struct Slot {
    hash: u64,
    field: Box<[u8]>,
    plaintext: Zeroizing<Box<[u8]>>,
    cost: usize,
    /// Read since the hand last passed: spared once.
    referenced: bool,
}

impl Shard {
    fn get_into(&mut self, hash: u64, field: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(&at) = self.index.get(&hash) else {
            return false;
        };
        let slot = &mut self.slots[at];
        if *slot.field != *field {
            return false;
        }
        slot.referenced = true;
        out.extend_from_slice(&slot.plaintext);
        true
    }

    fn insert(&mut self, hash: u64, field: &[u8], plaintext: &[u8], cost: usize, budget: usize) {
        if self.index.contains_key(&hash) {
            // Already stored (another session was quicker), or a hash
            // collision: keep what is there.
            return;
        }
        let slot = Slot {
            hash,
            field: field.into(),
            plaintext: Zeroizing::new(plaintext.into()),
            cost,
            referenced: false,
        };
        while self.bytes + cost > budget && !self.slots.is_empty() {
            if let Some(at) = self.evict_one() {
                if self.bytes + cost <= budget {
                    return self.put(at, slot);
                }
                self.remove(at);
            }
        }
        self.bytes += cost;
        self.index.insert(hash, self.slots.len());
        self.slots.push(slot);
    }

    /// Advances the hand to a slot not referenced since it last passed,
    /// frees its entry and returns its position; `None` when it only
    /// cleared a reference bit.
    fn evict_one(&mut self) -> Option<usize> {
        let at = self.hand % self.slots.len();
        self.hand = at + 1;
        let slot = &mut self.slots[at];
        if std::mem::take(&mut slot.referenced) {
            return None;
        }
        self.index.remove(&slot.hash);
        self.bytes -= slot.cost;
        Some(at)
    }

    /// Puts `slot` at the freed position `at`; the old plaintext is
    /// zeroized as it drops.
    fn put(&mut self, at: usize, slot: Slot) {
        self.bytes += slot.cost;
        self.index.insert(slot.hash, at);
        self.slots[at] = slot;
    }

    /// Removes the freed slot at `at`, moving the last slot into its place.
    fn remove(&mut self, at: usize) {
        self.slots.swap_remove(at);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.hash, at);
        }
    }
}

/// The index's keys are already SipHash outputs: used as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(i: usize) -> Vec<u8> {
        format!("pgv1:{i:0>40}").into_bytes()
    }

    fn get(cache: &DecryptCache, field: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        cache.get_into(field, &mut out).then_some(out)
    }

    #[test]
    fn stores_and_returns_exact_fields_only() {
        let cache = DecryptCache::new(1 << 20);
        cache.insert(&field(1), b"alice");
        assert_eq!(get(&cache, &field(1)).as_deref(), Some(&b"alice"[..]));
        assert_eq!(get(&cache, &field(2)), None);
        let mut longer = field(1);
        longer.push(b'x');
        assert_eq!(get(&cache, &longer), None);
    }

    #[test]
    fn appends_to_what_the_buffer_holds() {
        let cache = DecryptCache::new(1 << 20);
        cache.insert(&field(1), b"bob");
        let mut out = b"x".to_vec();
        assert!(cache.get_into(&field(1), &mut out));
        assert_eq!(out, b"xbob");
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_read() {
        let per_entry = field(0).len() + 8 + ENTRY_OVERHEAD;
        let cache = DecryptCache::new(SHARDS * per_entry * 10);
        cache.insert(&field(0), b"hot00000");
        for i in 1..5_000 {
            cache.insert(&field(i), b"cold0000");
            // Read often, the hot entry gets its second chances.
            assert!(get(&cache, &field(0)).is_some(), "evicted at {i}");
        }
        for shard in cache.shards.iter() {
            let shard = shard.lock().unwrap();
            assert!(shard.bytes <= cache.shard_budget);
            assert_eq!(shard.index.len(), shard.slots.len());
            for (at, slot) in shard.slots.iter().enumerate() {
                assert_eq!(shard.index[&slot.hash], at);
            }
        }
        let kept = (1..5_000).filter(|&i| get(&cache, &field(i)).is_some());
        assert!(kept.count() <= SHARDS * 10);
    }

    #[test]
    fn a_zero_budget_stores_nothing() {
        let cache = DecryptCache::new(0);
        cache.insert(&field(1), b"alice");
        assert_eq!(get(&cache, &field(1)), None);
    }
}
