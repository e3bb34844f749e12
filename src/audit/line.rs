//! The statement record's JSON, written by hand.
//!
//! Every statement through pgveil writes one, on the session's thread, so
//! its body is written straight from what the session holds
//! ([`StatementLine`], borrowed: nothing is cloned or boxed for it) with
//! the same bytes serde would give the [`StatementRecord`]: the same
//! members in the same order, strings escaped by `serde_json` whenever
//! they hold anything to escape. The time's date and second are formatted
//! once per second and thread. The other records are rare and go through
//! serde.

use std::cell::Cell;
use std::time::{Duration, UNIX_EPOCH};

use super::record::{
    ColumnAccess, Login, NormalizedStatement, Outcome, Peer, StatementRecord, Timestamp,
};

/// A statement record, borrowed from where its parts live.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatementLine<'a> {
    pub(crate) time: Timestamp,
    pub(crate) peer: &'a Peer,
    pub(crate) login: &'a Login,
    pub(crate) actor: Option<&'a str>,
    pub(crate) purpose: Option<&'a str>,
    pub(crate) ticket: Option<&'a str>,
    pub(crate) kind: &'a str,
    pub(crate) statement: &'a NormalizedStatement,
    pub(crate) tables: &'a [String],
    pub(crate) columns: &'a [ColumnAccess],
    pub(crate) rows: u64,
    pub(crate) outcome: Outcome,
    pub(crate) duration_us: u64,
}

impl StatementRecord {
    /// The record, borrowed as a line.
    pub(crate) fn line(&self) -> StatementLine<'_> {
        StatementLine {
            time: self.time,
            peer: &self.session.peer,
            login: &self.session.login,
            actor: self.session.actor.as_deref(),
            purpose: self.session.purpose.as_deref(),
            ticket: self.session.ticket.as_deref(),
            kind: &self.kind,
            statement: &self.statement,
            tables: &self.tables,
            columns: &self.columns,
            rows: self.rows,
            outcome: self.outcome,
            duration_us: self.duration_us,
        }
    }
}

impl StatementLine<'_> {
    /// Appends the record's JSON object (the body of its line).
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"event":"statement","time":""#);
        time(out, self.time);
        out.extend_from_slice(br#"","connection":"#);
        number(out, self.peer.connection);
        member(out, "client", &self.peer.client);
        member(out, "database", &self.login.database);
        member(out, "role", &self.login.role);
        for (name, value) in [
            ("actor", self.actor),
            ("purpose", self.purpose),
            ("ticket", self.ticket),
        ] {
            if let Some(value) = value {
                member(out, name, value);
            }
        }
        member(out, "kind", self.kind);
        member(out, "statement", self.statement.as_str());
        out.extend_from_slice(br#","tables":["#);
        for (i, table) in self.tables.iter().enumerate() {
            comma(out, i);
            string(out, table);
        }
        out.extend_from_slice(br#"],"columns":["#);
        for (i, column) in self.columns.iter().enumerate() {
            comma(out, i);
            column_access(out, column);
        }
        out.extend_from_slice(br#"],"rows":"#);
        number(out, self.rows);
        member(out, "outcome", self.outcome.as_str());
        out.extend_from_slice(br#","duration_us":"#);
        number(out, self.duration_us);
        out.push(b'}');
    }
}

fn column_access(out: &mut Vec<u8>, column: &ColumnAccess) {
    out.extend_from_slice(br#"{"column":"#);
    string(out, &column.column);
    member(out, "access", column.access.name());
    member(out, "decision", column.decision.name());
    if let Some(role) = &column.policy_role {
        member(out, "policy_role", role);
    }
    if column.unencrypted {
        out.extend_from_slice(br#","unencrypted":true"#);
    }
    out.push(b'}');
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

/// `,"name":"value"`; `name` needs no escaping.
fn member(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    string(out, value);
}

/// A JSON string: as it is when nothing in it needs escaping, else as
/// `serde_json` escapes it.
fn string(out: &mut Vec<u8>, value: &str) {
    if !value.bytes().any(|b| ESCAPED[usize::from(b)]) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, value).expect("a string serializes");
    }
}

/// The bytes a JSON string escapes: quote, backslash and controls.
const ESCAPED: [bool; 256] = {
    let mut escaped = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        escaped[b] = true;
        b += 1;
    }
    escaped[b'"' as usize] = true;
    escaped[b'\\' as usize] = true;
    escaped
};

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

thread_local! {
    /// The last whole second formatted on this thread, and its
    /// `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<Option<(u64, [u8; SECOND_LEN])>> = const { Cell::new(None) };
}

/// The length of `YYYY-MM-DDTHH:MM:SS`.
const SECOND_LEN: usize = 19;

/// The time as [`Timestamp`] displays it (RFC 3339, UTC, microseconds),
/// without its quotes.
fn time(out: &mut Vec<u8>, time: Timestamp) {
    let Ok(since_epoch) = time.0.duration_since(UNIX_EPOCH) else {
        // Not a time this clock gives; formatted the slow way.
        out.extend_from_slice(time.to_string().as_bytes());
        return;
    };
    let secs = since_epoch.as_secs();
    let second = match SECOND.get() {
        Some((cached, text)) if cached == secs => text,
        _ => {
            let whole = UNIX_EPOCH + Duration::from_secs(secs);
            let mut text = [0; SECOND_LEN];
            let formatted = humantime::format_rfc3339_seconds(whole).to_string();
            text.copy_from_slice(&formatted.as_bytes()[..SECOND_LEN]);
            SECOND.set(Some((secs, text)));
            text
        }
    };
    out.extend_from_slice(&second);
    let mut fraction = *b".000000Z";
    let mut micros = since_epoch.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&fraction);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::record::tests::statement;
    use crate::audit::record::{Access, AuditRecord, Decision, SqlState};

    fn by_serde(record: &StatementRecord) -> Vec<u8> {
        serde_json::to_vec(&AuditRecord::Statement(Box::new(record.clone()))).unwrap()
    }

    fn by_hand(record: &StatementRecord) -> Vec<u8> {
        let mut out = Vec::new();
        record.line().write(&mut out);
        out
    }

    fn a_statement() -> StatementRecord {
        match statement(7) {
            AuditRecord::Statement(record) => *record,
            _ => unreachable!(),
        }
    }

    #[test]
    fn lines_are_what_serde_writes() {
        let mut variants = vec![a_statement()];
        let mut r = a_statement();
        r.session.actor = None;
        r.session.purpose = None;
        r.session.ticket = None;
        r.columns.clear();
        r.tables = Arc::new([]);
        r.outcome = Outcome::Error(SqlState::new("42P01").unwrap());
        variants.push(r);
        let mut r = a_statement();
        r.session.actor = Some("quote \" backslash \\ newline \n tab \t nul \0 é 中".into());
        r.session.purpose = Some("\u{1f}\u{7f}".into());
        r.session.ticket = Some("CASE \"1\"".into());
        r.statement = NormalizedStatement::from_normalized("SELECT \"a\"\nFROM t -- $1".into());
        r.tables = Arc::new(["s.\"T\"".into(), "u".into()]);
        r.columns.push(ColumnAccess {
            column: "public.customers.phone".into(),
            access: Access::Write,
            decision: Decision::Encrypted,
            policy_role: Some("default".into()),
            unencrypted: false,
        });
        r.columns.push(ColumnAccess {
            column: "public.customers.national_id".into(),
            access: Access::Read,
            decision: Decision::Masked,
            policy_role: Some("kyc \"officer\"".into()),
            unencrypted: true,
        });
        r.columns.push(ColumnAccess {
            column: "public.customers.address".into(),
            access: Access::Read,
            decision: Decision::Null,
            policy_role: None,
            unencrypted: false,
        });
        r.rows = u64::MAX;
        r.duration_us = 0;
        variants.push(r);
        for decision in [
            Decision::Plaintext,
            Decision::Pseudonym,
            Decision::Null,
            Decision::Denied,
        ] {
            let mut r = a_statement();
            r.columns[0].decision = decision;
            variants.push(r);
        }
        for record in &variants {
            let hand = by_hand(record);
            assert_eq!(
                String::from_utf8(hand.clone()).unwrap(),
                String::from_utf8(by_serde(record)).unwrap()
            );
            let back: AuditRecord = serde_json::from_slice(&hand).unwrap();
            assert_eq!(back, AuditRecord::Statement(Box::new(record.clone())));
        }
    }

    #[test]
    fn times_match_their_display_across_seconds_and_days() {
        let mut out = Vec::new();
        for micros in [
            0,
            1,
            999_999,
            1_764_064_799_999_999,
            1_764_064_800_000_000,
            1_764_064_800_000_001,
            1_764_064_800_123_456,
            1_764_064_800_123_456,
            4_102_444_800_500_000,
        ] {
            out.clear();
            let t = Timestamp(UNIX_EPOCH + Duration::from_micros(micros));
            time(&mut out, t);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), t.to_string());
        }
    }
}
