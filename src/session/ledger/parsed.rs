//! Statements prepared with a protocol Parse, as the server has them: the
//! parameter slots whose Bind values go to protected columns, and whether
//! the statement is a `COPY ... FROM STDIN` into a protected table.
//!
//! A Parse does not always replace what the server has under its name:
//! the server refuses one that is malformed or names a statement that
//! exists (42P05), and skips every message after an error up to the
//! batch's Sync. Had pgveil replaced its slots when the Parse went out, a
//! later Bind of the statement the server kept would go out with its
//! values unencrypted. So each Parse is a *version* of its name, pending
//! until the server answers: ParseComplete confirms it (and retires the
//! versions before it), an error or the skip to Sync fails it. A Bind in
//! the same batch as the name's latest Parse uses that version alone (if
//! the Parse fails, the server skips the Bind too); a Bind in a later
//! batch, before the server answered, uses every version that may be the
//! server's: the last confirmed and those pending, merged (encrypting a
//! value too many is safe, one too few is not). A Close retires the
//! versions before it once the server completes it (CloseComplete).

use std::collections::HashMap;

use crate::sql::{merge_slots, CopyIn, ParamSlot};

/// What pgveil read of one Parse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Statement {
    /// The parameters whose values go to protected columns.
    pub slots: Vec<ParamSlot>,
    /// A `COPY ... FROM STDIN` into a protected table.
    pub copy: Option<CopyIn>,
}

impl Statement {
    fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.copy.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Confirmed,
}

#[derive(Debug)]
struct Version {
    id: u64,
    /// The client's batch (Syncs sent before it).
    batch: u64,
    state: State,
    statement: Statement,
}

/// The versions of every name, oldest first; a name whose only version
/// is a confirmed empty one is not kept.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    versions: HashMap<String, Vec<Version>>,
    next_id: u64,
}

impl Parsed {
    /// A Parse of `name` in the client's `batch`; its id, for the answer.
    pub(super) fn parse(&mut self, name: &str, batch: u64, statement: Statement) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.versions
            .entry(name.to_owned())
            .or_default()
            .push(Version {
                id,
                batch,
                state: State::Pending,
                statement,
            });
        id
    }

    /// The current id, for a Close: the versions up to it are closed.
    pub(super) fn close_id(&self) -> u64 {
        self.next_id
    }

    /// ParseComplete for the version `id` of `name`.
    pub(super) fn confirmed(&mut self, name: &str, id: u64) {
        let Some(versions) = self.versions.get_mut(name) else {
            return;
        };
        versions.retain(|v| v.id >= id);
        if let Some(version) = versions.iter_mut().find(|v| v.id == id) {
            version.state = State::Confirmed;
        }
        self.tidy(name);
    }

    /// The Parse `id` of `name` failed or was skipped.
    pub(super) fn failed(&mut self, name: &str, id: u64) {
        if let Some(versions) = self.versions.get_mut(name) {
            versions.retain(|v| v.id != id);
        }
        self.tidy(name);
    }

    /// CloseComplete of `name`, closed after the versions up to `id`.
    pub(super) fn closed(&mut self, name: &str, id: u64) {
        if let Some(versions) = self.versions.get_mut(name) {
            versions.retain(|v| v.id > id);
        }
        self.tidy(name);
    }

    /// `DEALLOCATE name`, or with `None` `DEALLOCATE ALL` and `DISCARD
    /// ALL`, completed: what was confirmed is gone.
    pub(super) fn deallocated(&mut self, name: Option<&str>) {
        let names: Vec<String> = match name {
            Some(name) => vec![name.to_owned()],
            None => self.versions.keys().cloned().collect(),
        };
        for name in names {
            if let Some(versions) = self.versions.get_mut(&name) {
                versions.retain(|v| v.state == State::Pending);
            }
            self.tidy(&name);
        }
    }

    /// What a Bind of `name` in the client's `batch` must assume.
    pub(super) fn statement(&self, name: &str, batch: u64) -> Statement {
        let Some(versions) = self.versions.get(name) else {
            return Statement::default();
        };
        match versions.last() {
            Some(last) if last.state == State::Pending && last.batch == batch => {
                last.statement.clone()
            }
            _ => {
                let confirmed = versions
                    .iter()
                    .rposition(|v| v.state == State::Confirmed)
                    .unwrap_or(0);
                let mut merged = Statement::default();
                for version in &versions[confirmed..] {
                    merge_slots(&mut merged.slots, &version.statement.slots);
                    if merged.copy.is_none() {
                        merged.copy.clone_from(&version.statement.copy);
                    }
                }
                merged
            }
        }
    }

    /// Whether any statement may have slots.
    pub(super) fn any_slots(&self) -> bool {
        self.versions
            .values()
            .flatten()
            .any(|v| !v.statement.slots.is_empty())
    }

    fn tidy(&mut self, name: &str) {
        let drop = self.versions.get(name).is_some_and(|versions| {
            versions.is_empty()
                || versions.len() == 1
                    && versions[0].state == State::Confirmed
                    && versions[0].statement.is_empty()
        });
        if drop {
            self.versions.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{ColumnRefId, Storage, Target};

    fn slots(numbers: &[usize]) -> Statement {
        let target = Target {
            column: std::sync::Arc::new(ColumnRefId {
                schema: "public".into(),
                table: "customers".into(),
                column: "email".into(),
            }),
            storage: Storage::Text,
        };
        Statement {
            slots: numbers
                .iter()
                .map(|&number| ParamSlot {
                    number,
                    target: target.clone(),
                    array: false,
                })
                .collect(),
            copy: None,
        }
    }

    fn numbers(statement: &Statement) -> Vec<usize> {
        statement.slots.iter().map(|s| s.number).collect()
    }

    #[test]
    fn a_parse_applies_in_its_batch_and_is_merged_until_answered() {
        let mut p = Parsed::default();
        let first = p.parse("s", 0, slots(&[1]));
        p.confirmed("s", first);
        let second = p.parse("s", 1, slots(&[2]));
        assert_eq!(numbers(&p.statement("s", 1)), [2], "same batch");
        assert_eq!(numbers(&p.statement("s", 2)), [1, 2], "later batch");
        p.failed("s", second);
        assert_eq!(numbers(&p.statement("s", 2)), [1], "refused: the old one");
        let third = p.parse("s", 3, slots(&[]));
        p.confirmed("s", third);
        assert!(p.statement("s", 4).slots.is_empty(), "replaced");
        assert!(p.versions.is_empty(), "nothing kept for it");
    }

    #[test]
    fn a_close_retires_what_came_before_once_completed() {
        let mut p = Parsed::default();
        let id = p.parse("s", 0, slots(&[1]));
        p.confirmed("s", id);
        let closing = p.close_id();
        let again = p.parse("s", 1, slots(&[]));
        assert_eq!(numbers(&p.statement("s", 2)), [1]);
        p.closed("s", closing);
        p.confirmed("s", again);
        assert!(p.statement("s", 2).slots.is_empty());
        assert!(!p.any_slots());
    }
}
