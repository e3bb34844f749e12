//! Which protection a session applies, as reloads replace it.
//!
//! The server keeps the protection in force in a [`ProtectionSlot`];
//! SIGHUP (`ops/cli/serve.rs`) loads a new one into it. A session starts
//! with what the slot holds ([`Adopted::first`]) and, at each statement
//! boundary, each of its taps asks for the newest ([`Adopted::newest`]):
//! the protections a session has used form a chain that only grows, so a
//! reference to any of them lives as long as the session, and both taps
//! walk the same chain. Checking costs two atomic loads when nothing
//! changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crate::protect::protection::Protection;

/// The protection in force, which a reload replaces, and how many times
/// it has been replaced.
#[derive(Clone, Default)]
pub struct ProtectionSlot(Arc<Slot>);

#[derive(Default)]
struct Slot {
    /// The protection and its generation, replaced together.
    current: RwLock<(u64, Option<Arc<Protection>>)>,
    /// The generation, readable without the lock.
    generation: AtomicU64,
}

impl ProtectionSlot {
    /// A slot holding `protection`, or nothing when no column is protected.
    pub(crate) fn new(protection: Option<Protection>) -> Self {
        let slot = Slot {
            current: RwLock::new((0, protection.map(Arc::new))),
            generation: AtomicU64::new(0),
        };
        Self(Arc::new(slot))
    }

    /// The protection in force and its generation.
    fn current(&self) -> (u64, Option<Arc<Protection>>) {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether columns are protected now.
    pub fn is_protecting(&self) -> bool {
        self.current().1.is_some()
    }

    /// Makes `protection` the one in force: sessions starting from now on
    /// use it, and open sessions adopt it at their next statement.
    pub fn replace(&self, protection: Protection) {
        let mut current = self.0.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = current.0 + 1;
        *current = (generation, Some(Arc::new(protection)));
        self.0.generation.store(generation, Ordering::Release);
    }
}

/// A protection a session has applied, and the ones it adopted after.
pub(crate) struct Adopted {
    protection: Arc<Protection>,
    generation: u64,
    next: OnceLock<Box<Adopted>>,
}

impl Adopted {
    /// What a session starting now protects with; `None` without a
    /// policy. A session that starts without one stays a plain relay: it
    /// has read no catalog to protect with.
    pub(crate) fn first(slot: &ProtectionSlot) -> Option<Adopted> {
        let (generation, protection) = slot.current();
        Some(Adopted {
            protection: protection?,
            generation,
            next: OnceLock::new(),
        })
    }

    /// The protection.
    pub(crate) fn protection(&self) -> &Protection {
        &self.protection
    }

    /// Moves `adopted` on to the newest protection ([`Adopted::newest`]);
    /// that protection when it is another one than before, for a tap to
    /// switch to.
    pub(crate) fn follow<'s>(
        adopted: &mut Option<&'s Adopted>,
        slot: &ProtectionSlot,
    ) -> Option<&'s Protection> {
        let current = (*adopted)?;
        let newest = current.newest(slot);
        if std::ptr::eq(newest, current) {
            return None;
        }
        *adopted = Some(newest);
        Some(newest.protection())
    }

    /// The newest protection: this one if the slot has not changed since,
    /// else the one adopted after it, adopting what the slot holds now if
    /// no tap of the session has yet.
    pub(crate) fn newest<'s>(&'s self, slot: &ProtectionSlot) -> &'s Adopted {
        let mut adopted = self;
        loop {
            if let Some(next) = adopted.next.get() {
                adopted = next;
                continue;
            }
            if slot.0.generation.load(Ordering::Acquire) == adopted.generation {
                return adopted;
            }
            let (generation, Some(protection)) = slot.current() else {
                return adopted;
            };
            adopted = adopted.next.get_or_init(|| {
                Box::new(Adopted {
                    protection,
                    generation,
                    next: OnceLock::new(),
                })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protect::keyring::Keyring;
    use crate::protect::policy::Policy;

    fn protection(dir: &std::path::Path, rule: &str) -> Protection {
        let policy = Policy::from_str(
            "p.toml",
            &format!("[[column]]\ntable = \"t\"\ncolumn = \"c\"\ndefault = \"{rule}\"\n"),
        )
        .unwrap();
        let path = dir.join("keyring.toml");
        let master = crate::protect::crypto::MasterKey::generate().unwrap().0;
        let _ = std::fs::remove_file(&path);
        Keyring::init(&path, &master, &policy.domains()).unwrap();
        Protection::new(policy.clone(), Keyring::load(&path, &master).unwrap())
    }

    fn default_of(adopted: &Adopted) -> crate::protect::policy::Action {
        adopted
            .protection()
            .policy
            .columns()
            .next()
            .unwrap()
            .default
    }

    #[test]
    fn sessions_follow_the_slot_through_every_reload() {
        use crate::protect::policy::Action;
        let dir = tempfile::tempdir().unwrap();
        let slot = ProtectionSlot::new(Some(protection(dir.path(), "masked")));
        let first = Adopted::first(&slot).unwrap();
        assert!(std::ptr::eq(first.newest(&slot), &first), "nothing changed");
        slot.replace(protection(dir.path(), "null"));
        slot.replace(protection(dir.path(), "deny"));
        let newest = first.newest(&slot);
        assert_eq!(default_of(newest), Action::Deny, "skips to the newest");
        assert!(std::ptr::eq(first.newest(&slot), newest), "adopted once");
        assert_eq!(
            default_of(&first),
            Action::Masked,
            "the first stays as it was"
        );
        // A session starting now starts from the newest.
        assert_eq!(default_of(&Adopted::first(&slot).unwrap()), Action::Deny);
        assert!(Adopted::first(&ProtectionSlot::new(None)).is_none());
    }
}
