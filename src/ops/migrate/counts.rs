//! What a migration found and did, per column: counts and key versions,
//! never a value. They are shown as it goes, printed at the end, kept in
//! the state file while a table is under way (so that a resumed run
//! reports the whole table) and written to the audit log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::value::Verdict;

/// One column's counts. In a run, `encrypted`, `old_key`, `other_mode`
/// and `decrypted` count values changed (committed); in a dry run, values
/// that would be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// Non-NULL values looked at.
    pub(crate) seen: u64,
    /// Already as the policy asks (or plaintext, in a column to decrypt).
    pub(crate) current: u64,
    /// Plaintext encrypted.
    pub(crate) encrypted: u64,
    /// Encrypted again: they were under another key version.
    pub(crate) old_key: u64,
    /// Encrypted again: they were in the other mode (under the current key).
    pub(crate) other_mode: u64,
    /// Decrypted (`--decrypt`).
    pub(crate) decrypted: u64,
    /// Key versions of the values encrypted again or decrypted.
    pub(crate) from_versions: BTreeMap<u32, u64>,
    /// Shaped like ciphertext that does not decrypt: left as they are.
    pub(crate) undecryptable: u64,
    /// Not written: the database refused the row, or the plaintext cannot
    /// be stored in the column.
    pub(crate) refused: u64,
    /// Not written: the row kept changing under the migration.
    pub(crate) busy: u64,
}

impl Counts {
    /// Counts a value whose verdict is final: kept, or changed (committed,
    /// or to be, in a dry run).
    pub(super) fn add(&mut self, verdict: &Verdict) {
        self.seen += 1;
        match verdict {
            Verdict::Keep => self.current += 1,
            Verdict::Encrypt(_) => self.encrypted += 1,
            Verdict::ReEncrypt {
                from, mode_changed, ..
            } => {
                if *mode_changed {
                    self.other_mode += 1;
                } else {
                    self.old_key += 1;
                }
                *self.from_versions.entry(from.version).or_default() += 1;
            }
            Verdict::Decrypt { from, .. } => {
                self.decrypted += 1;
                *self.from_versions.entry(from.version).or_default() += 1;
            }
            Verdict::Undecryptable => self.undecryptable += 1,
            Verdict::Unwritable => self.refused += 1,
        }
    }

    /// Values changed (or that would be).
    #[cfg(test)]
    pub(crate) fn changed(&self) -> u64 {
        self.encrypted + self.old_key + self.other_mode + self.decrypted
    }

    /// Values that are not as the policy asks and stay so.
    #[cfg(test)]
    pub(crate) fn left(&self) -> u64 {
        self.undecryptable + self.refused + self.busy
    }

    /// Forgets what a pass over a table found of its values as they are,
    /// keeping what it changed: a new pass over a table without a primary
    /// key sees every row again.
    pub(super) fn new_pass(&mut self) {
        *self = Counts {
            encrypted: self.encrypted,
            old_key: self.old_key,
            other_mode: self.other_mode,
            decrypted: self.decrypted,
            from_versions: std::mem::take(&mut self.from_versions),
            ..Counts::default()
        };
    }

    /// What these counts add to `earlier` (counts of the same column,
    /// from an earlier point of the same pass).
    pub(super) fn since(&self, earlier: &Counts) -> Counts {
        let mut from_versions = self.from_versions.clone();
        for (version, count) in &earlier.from_versions {
            if let Some(now) = from_versions.get_mut(version) {
                *now = now.saturating_sub(*count);
            }
        }
        from_versions.retain(|_, count| *count > 0);
        Counts {
            seen: self.seen.saturating_sub(earlier.seen),
            current: self.current.saturating_sub(earlier.current),
            encrypted: self.encrypted.saturating_sub(earlier.encrypted),
            old_key: self.old_key.saturating_sub(earlier.old_key),
            other_mode: self.other_mode.saturating_sub(earlier.other_mode),
            decrypted: self.decrypted.saturating_sub(earlier.decrypted),
            from_versions,
            undecryptable: self.undecryptable.saturating_sub(earlier.undecryptable),
            refused: self.refused.saturating_sub(earlier.refused),
            busy: self.busy.saturating_sub(earlier.busy),
        }
    }

    /// What the counts say, in a few words: `99 encrypted, 1 undecryptable`.
    pub(crate) fn describe(&self, dry_run: bool) -> String {
        let (encrypted, again, decrypted) = if dry_run {
            ("plaintext", "to re-encrypt", "to decrypt")
        } else {
            ("encrypted", "re-encrypted", "decrypted")
        };
        let mut parts = vec![format!("{} {encrypted}", self.encrypted)];
        if self.old_key > 0 || self.other_mode > 0 {
            parts.push(format!(
                "{} {again} ({} old key version, {} other mode)",
                self.old_key + self.other_mode,
                self.old_key,
                self.other_mode
            ));
        }
        for (count, what) in [
            (self.decrypted, decrypted),
            (self.undecryptable, "undecryptable"),
            (self.refused, "refused"),
            (self.busy, "kept changing"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::migrate::value::New;
    use crate::protect::crypto::KeyRef;

    #[test]
    fn verdicts_are_counted_and_a_new_pass_keeps_the_changes() {
        let mut counts = Counts::default();
        let from = KeyRef { id: 3, version: 1 };
        for verdict in [
            Verdict::Keep,
            Verdict::Encrypt(New::Text(String::new())),
            Verdict::ReEncrypt {
                from,
                mode_changed: false,
                new: New::Text(String::new()),
            },
            Verdict::ReEncrypt {
                from,
                mode_changed: true,
                new: New::Text(String::new()),
            },
            Verdict::Undecryptable,
            Verdict::Unwritable,
        ] {
            counts.add(&verdict);
        }
        assert_eq!((counts.seen, counts.changed(), counts.left()), (6, 3, 2));
        assert_eq!(counts.from_versions, BTreeMap::from([(1, 2)]));
        assert_eq!(
            counts.describe(false),
            "1 encrypted, 2 re-encrypted (1 old key version, 1 other mode), 1 undecryptable, 1 refused"
        );
        let before = counts.clone();
        counts.add(&Verdict::Encrypt(New::Text(String::new())));
        let since = counts.since(&before);
        assert_eq!((since.seen, since.encrypted, since.changed()), (1, 1, 1));
        assert!(since.from_versions.is_empty());
        counts.new_pass();
        assert_eq!((counts.seen, counts.changed(), counts.left()), (0, 4, 0));
        assert_eq!(
            counts.describe(true),
            "2 plaintext, 2 to re-encrypt (1 old key version, 1 other mode)"
        );
    }
}
