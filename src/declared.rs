//! What a session has declared about itself: `pgveil.purpose` and
//! `pgveil.actor`, with PostgreSQL's scoping.
//!
//! The client tap reports each `SET`, `SET LOCAL`, `RESET` and
//! `set_config` it sees ([`Declared::apply`]); the server tap reports how
//! transactions end ([`Declared::ready`], [`Declared::rolled_back`]). A
//! `SET LOCAL` lasts until the transaction ends; a plain `SET` is undone
//! if its transaction rolls back, explicit (`BEGIN ... ROLLBACK`, or a
//! failed transaction) or implicit (an error later in the same
//! multi-statement query), as in PostgreSQL. Since a statement's
//! transaction is known only once the server answers, every change keeps
//! the values before it until the next ReadyForQuery says idle.

use crate::rewrite::SettingChange;

/// The values in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values {
    pub purpose: Option<String>,
    pub actor: Option<String>,
}

impl Values {
    fn set(&mut self, change: &SettingChange) {
        let slot = match change.name.as_str() {
            "purpose" => &mut self.purpose,
            "actor" => &mut self.actor,
            _ => return,
        };
        *slot = change.value.clone().filter(|v| !v.is_empty());
    }
}

/// A session's declarations and their scopes.
#[derive(Debug, Default)]
pub struct Declared {
    session: Values,
    /// Set by `SET LOCAL`, until the transaction ends.
    local: Option<Values>,
    /// The session values before the first plain `SET` of the current
    /// transaction.
    before_tx: Option<Values>,
    rolled_back: bool,
}

impl Declared {
    /// The values in force now.
    pub fn current(&self) -> &Values {
        self.local.as_ref().unwrap_or(&self.session)
    }

    /// Applies a change the client sent.
    pub fn apply(&mut self, change: &SettingChange) {
        if change.local {
            self.local
                .get_or_insert_with(|| self.session.clone())
                .set(change);
            return;
        }
        if self.before_tx.is_none() {
            self.before_tx = Some(self.session.clone());
        }
        self.session.set(change);
        if let Some(local) = &mut self.local {
            local.set(change);
        }
    }

    /// Whether a rollback would have something to undo, so the server tap
    /// should watch for one.
    pub fn watching_rollback(&self) -> bool {
        self.before_tx.is_some()
    }

    /// The server completed a ROLLBACK (or a COMMIT of a failed
    /// transaction), or reported an error, which aborts the transaction.
    pub fn rolled_back(&mut self) {
        self.rolled_back = true;
    }

    /// The server is ready for a query, with this transaction status
    /// (`I` idle, `T` in a transaction, `E` in a failed transaction).
    pub fn ready(&mut self, status: u8) {
        if status == b'E' {
            // A failed transaction can only end by rolling back.
            self.rolled_back = true;
        }
        if status == b'I' {
            if let Some(before) = self.before_tx.take() {
                if self.rolled_back {
                    self.session = before;
                }
            }
            self.local = None;
            self.rolled_back = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: Option<&str>, local: bool) -> SettingChange {
        SettingChange {
            name: name.into(),
            value: value.map(Into::into),
            local,
        }
    }

    fn purpose(d: &Declared) -> Option<&str> {
        d.current().purpose.as_deref()
    }

    #[test]
    fn set_and_reset() {
        let mut d = Declared::default();
        d.apply(&set("purpose", Some("kyc"), false));
        d.apply(&set("actor", Some("alice@example.com"), false));
        assert_eq!(purpose(&d), Some("kyc"));
        d.ready(b'I');
        assert_eq!(d.current().actor.as_deref(), Some("alice@example.com"));
        d.apply(&set("purpose", None, false));
        assert_eq!(purpose(&d), None);
    }

    #[test]
    fn set_local_ends_with_the_transaction() {
        let mut d = Declared::default();
        d.apply(&set("purpose", Some("marketing"), false));
        d.ready(b'T');
        d.apply(&set("purpose", Some("kyc"), true));
        assert_eq!(purpose(&d), Some("kyc"));
        d.ready(b'T');
        assert_eq!(purpose(&d), Some("kyc"));
        d.ready(b'I');
        assert_eq!(purpose(&d), Some("marketing"));
    }

    #[test]
    fn an_error_in_the_same_query_undoes_a_set() {
        let mut d = Declared::default();
        d.apply(&set("purpose", Some("kyc"), false));
        d.rolled_back();
        d.ready(b'I');
        assert_eq!(purpose(&d), None);
    }

    #[test]
    fn rollback_undoes_a_set_inside_the_transaction() {
        let mut d = Declared::default();
        d.ready(b'T');
        d.apply(&set("purpose", Some("kyc"), false));
        assert!(d.watching_rollback());
        d.rolled_back();
        d.ready(b'I');
        assert_eq!(purpose(&d), None);
        // Committed: it stays.
        d.ready(b'T');
        d.apply(&set("purpose", Some("kyc"), false));
        d.ready(b'I');
        assert_eq!(purpose(&d), Some("kyc"));
    }
}
