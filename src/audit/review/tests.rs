//! Searches and reports over a small log written by the real writer:
//! two files (two UTC days), several roles, actors, purposes and
//! decisions, an error, a refusal, an alert and a partly written line.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::sync::Arc;

use ring::signature::Ed25519KeyPair;

use super::filter::{EventKind, OutcomeFilter};
use super::time::{parse_since, parse_until};
use super::*;
use crate::audit::format::Bodies;
use crate::audit::writer::LogWriter;
use crate::audit::{
    Access, AlertRecord, AuditConfig, AuditKeys, AuditRecord, ColumnAccess, Decision, Login,
    NormalizedStatement, Outcome, Peer, Session, SqlState, StatementRecord, Timestamp,
};

pub(super) fn at(time: &str) -> Timestamp {
    parse_since(time).unwrap()
}

pub(super) fn peer() -> Peer {
    Peer {
        connection: 1,
        client: "10.0.0.7:51234".into(),
    }
}

pub(super) fn column(name: &str, access: Access, decision: Decision) -> ColumnAccess {
    ColumnAccess {
        column: format!("public.customers.{name}"),
        access,
        decision,
        policy_role: None,
        unencrypted: false,
    }
}

/// A select by `role` reading `columns` (by name) and returning `rows`.
pub(super) fn select(
    time: &str,
    role: &str,
    declared: (Option<&str>, Option<&str>),
    columns: &[(&str, Decision)],
    rows: u64,
) -> StatementRecord {
    StatementRecord {
        time: at(time),
        session: Session {
            peer: peer(),
            login: Login {
                database: "shop".into(),
                role: role.into(),
            },
            actor: declared.0.map(Into::into),
            purpose: declared.1.map(Into::into),
            ticket: None,
        },
        kind: "select".into(),
        statement: NormalizedStatement::from_normalized(
            "SELECT email, name FROM public.customers WHERE id = $1".into(),
        ),
        tables: Arc::new(["public.customers".into()]),
        columns: columns
            .iter()
            .map(|&(name, decision)| column(name, Access::Read, decision))
            .collect(),
        rows,
        outcome: Outcome::Ok,
        duration_us: 250,
    }
}

pub(super) fn error(code: &str) -> Outcome {
    Outcome::Error(SqlState::new(code).unwrap())
}

pub(super) const ALICE_SUPPORT: (Option<&str>, Option<&str>) = (Some("alice"), Some("support"));
pub(super) const BOB_BILLING: (Option<&str>, Option<&str>) = (Some("bob"), Some("billing"));
pub(super) const UNDECLARED: (Option<&str>, Option<&str>) = (None, None);

/// The first day's records, in order.
pub(super) fn first_day() -> Vec<AuditRecord> {
    let statement = |s: StatementRecord| AuditRecord::Statement(Box::new(s));
    let mut refused = select("2026-11-25T11:15:00Z", "analyst", UNDECLARED, &[], 0);
    refused.statement =
        NormalizedStatement::from_normalized(r#"SELECT "ssn", name FROM public.customers"#.into());
    refused.columns = vec![column("ssn", Access::Read, Decision::Denied)];
    refused.outcome = error("42501");
    let mut update = select(
        "2026-11-25T12:00:00Z",
        "app",
        (Some("alice"), Some("fraud")),
        &[],
        1,
    );
    update.kind = "update".into();
    update.statement = NormalizedStatement::from_normalized(
        "UPDATE public.customers SET email = $1 WHERE id = $2".into(),
    );
    update.columns = vec![column("email", Access::Write, Decision::Encrypted)];
    let mut failed = select(
        "2026-11-25T12:30:00Z",
        "app",
        ALICE_SUPPORT,
        &[("email", Decision::Masked)],
        0,
    );
    failed.outcome = error("22P02");
    vec![
        AuditRecord::Connect {
            time: at("2026-11-25T09:00:00Z"),
            peer: peer(),
        },
        AuditRecord::Authentication {
            time: at("2026-11-25T09:01:00Z"),
            peer: peer(),
            login: Login {
                database: "shop".into(),
                role: "app".into(),
            },
            outcome: Outcome::Ok,
        },
        statement(select(
            "2026-11-25T10:00:00Z",
            "app",
            ALICE_SUPPORT,
            &[("email", Decision::Masked), ("name", Decision::Plaintext)],
            1,
        )),
        statement(select(
            "2026-11-25T10:30:00Z",
            "app",
            BOB_BILLING,
            &[("email", Decision::Plaintext)],
            20,
        )),
        statement(select(
            "2026-11-25T11:00:00Z",
            "analyst",
            UNDECLARED,
            &[("email", Decision::Pseudonym)],
            100,
        )),
        statement(refused),
        statement(update),
        statement(failed),
        AuditRecord::Alert(AlertRecord {
            time: at("2026-11-25T13:00:00Z"),
            role: "<b>".into(),
            actor: None,
            connection: Some(1),
            columns: vec!["public.customers.email".into()],
            rows: 5000,
            threshold: 1000,
            window_secs: 60,
        }),
        statement(select(
            "2026-11-25T13:01:00Z",
            "<b>",
            UNDECLARED,
            &[("email", Decision::Plaintext)],
            5000,
        )),
        AuditRecord::Disconnect {
            time: at("2026-11-25T14:00:00Z"),
            peer: peer(),
            statements: 7,
            rows: 5122,
        },
    ]
}

/// The second day's records, in order.
pub(super) fn second_day() -> Vec<AuditRecord> {
    let mut orders = select("2026-11-26T09:00:00Z", "analyst", UNDECLARED, &[], 7);
    orders.tables = Arc::new(["public.orders".into()]);
    orders.statement =
        NormalizedStatement::from_normalized("SELECT total FROM public.orders".into());
    vec![
        AuditRecord::Statement(Box::new(select(
            "2026-11-26T08:00:00Z",
            "app",
            ALICE_SUPPORT,
            &[("email", Decision::Masked)],
            3,
        ))),
        AuditRecord::Statement(Box::new(orders)),
    ]
}

/// A log of [`first_day`] in a sealed file, compressed, and
/// [`second_day`] in a file still open, ending in a partly written line.
pub(super) fn log() -> tempfile::TempDir {
    write_log(&first_day(), &second_day())
}

/// A log of `first` in a sealed file, compressed, and `second` in a file
/// still open, ending in a partly written line.
pub(super) fn write_log(first: &[AuditRecord], second: &[AuditRecord]) -> tempfile::TempDir {
    write_log_keyed(first, second).0
}

/// [`write_log`], and the log's public key (its MAC key is [`MAC_KEY`]).
pub(super) fn write_log_keyed(
    first: &[AuditRecord],
    second: &[AuditRecord],
) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let signing = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let keys = Arc::new(AuditKeys::new(&MAC_KEY, signing));
    let public = keys.public_key().to_vec();
    let config = AuditConfig {
        dir: dir.path().into(),
        retention_days: 0,
        ..AuditConfig::default()
    };
    let day = at("2026-11-25T15:00:00Z").0;
    let mut writer = LogWriter::open(&config, keys, day).unwrap();
    writer.append(&Bodies::of(first), day).unwrap();
    writer
        .append(&Bodies::of(second), at("2026-11-26T10:00:00Z").0)
        .unwrap();
    drop(writer);
    let open = dir.path().join("audit-20261126-0001.jsonl");
    let mut file = OpenOptions::new().append(true).open(open).unwrap();
    file.write_all(br#"{"seq":14,"event":"statement","time":"2026-11-26T1"#)
        .unwrap();
    (dir, public)
}

/// The MAC key of the logs [`write_log`] writes.
pub(super) const MAC_KEY: [u8; 32] = [9; 32];

/// The times of the records `filter` selects.
pub(super) fn selected(dir: &tempfile::TempDir, filter: &Filter) -> Vec<String> {
    Records::open(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .filter(|record| filter.matches(record))
        .map(|record| humantime::format_rfc3339_seconds(filter::time_of(&record).0).to_string())
        .map(|time| time[5..16].to_owned())
        .collect()
}

pub(super) fn searched(dir: &tempfile::TempDir, filter: &Filter, format: SearchFormat) -> String {
    let mut out = Vec::new();
    search(dir.path(), filter, format, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn reads_every_record_of_both_files_and_ignores_the_partial_line() {
    let dir = log();
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["audit-20261125-0001.jsonl.zst", "audit-20261126-0001.jsonl"]
    );
    let records: Vec<AuditRecord> = Records::open(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<AuditRecord> = first_day().into_iter().chain(second_day()).collect();
    assert_eq!(records, expected);
}

#[test]
fn an_unreadable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Records::open(dir.path()),
        Err(ReviewError::NoFiles(_))
    ));
    assert!(matches!(
        Records::open(&dir.path().join("missing")),
        Err(ReviewError::Read { .. })
    ));
}

#[test]
fn a_garbled_line_is_reported_with_its_location() {
    let dir = log();
    let path = dir.path().join("audit-20261126-0001.jsonl");
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(b"garbage\n").unwrap();
    let err = Records::open(dir.path())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("audit-20261126-0001.jsonl line 4: not an audit record"),
        "{err}"
    );
}

#[test]
fn no_filter_selects_everything() {
    assert_eq!(selected(&log(), &Filter::default()).len(), 13);
}

#[test]
fn each_filter_alone() {
    let dir = log();
    let check = |filter: Filter, expected: &[&str]| {
        assert_eq!(selected(&dir, &filter), expected, "{filter:?}");
    };
    let role = |r: &str| Some(String::from(r));
    check(
        Filter {
            role: role("analyst"),
            ..Filter::default()
        },
        &["11-25T11:00", "11-25T11:15", "11-26T09:00"],
    );
    check(
        Filter {
            actor: role("bob"),
            ..Filter::default()
        },
        &["11-25T10:30"],
    );
    check(
        Filter {
            purpose: role("fraud"),
            ..Filter::default()
        },
        &["11-25T12:00"],
    );
    check(
        Filter {
            table: role("orders"),
            ..Filter::default()
        },
        &["11-26T09:00"],
    );
    check(
        Filter {
            table: role("public.orders"),
            ..Filter::default()
        },
        &["11-26T09:00"],
    );
    check(
        Filter {
            column: role("public.customers.ssn"),
            ..Filter::default()
        },
        &["11-25T11:15"],
    );
    check(
        Filter {
            column: role("name"),
            ..Filter::default()
        },
        &["11-25T10:00"],
    );
    check(
        Filter {
            decision: Some(Decision::Plaintext),
            ..Filter::default()
        },
        &["11-25T10:00", "11-25T10:30", "11-25T13:01"],
    );
    check(
        Filter {
            outcome: Some(OutcomeFilter::Error),
            ..Filter::default()
        },
        &["11-25T11:15", "11-25T12:30"],
    );
    check(
        Filter {
            outcome: Some(OutcomeFilter::Code(SqlState::new("22P02").unwrap())),
            ..Filter::default()
        },
        &["11-25T12:30"],
    );
    check(
        Filter {
            outcome: Some(OutcomeFilter::Ok),
            role: role("analyst"),
            ..Filter::default()
        },
        &["11-25T11:00", "11-26T09:00"],
    );
    check(
        Filter {
            event: Some(EventKind::Alert),
            ..Filter::default()
        },
        &["11-25T13:00"],
    );
}

#[test]
fn filters_combine_with_and() {
    let dir = log();
    let filter = Filter {
        role: Some("app".into()),
        actor: Some("alice".into()),
        purpose: Some("support".into()),
        column: Some("email".into()),
        decision: Some(Decision::Masked),
        ..Filter::default()
    };
    assert_eq!(
        selected(&dir, &filter),
        ["11-25T10:00", "11-25T12:30", "11-26T08:00"]
    );
    let filter = Filter {
        outcome: Some(OutcomeFilter::Ok),
        since: Some(at("2026-11-26")),
        ..filter
    };
    assert_eq!(selected(&dir, &filter), ["11-26T08:00"]);
}

#[test]
fn column_and_decision_must_hold_for_the_same_column() {
    let filter = Filter {
        column: Some("email".into()),
        decision: Some(Decision::Plaintext),
        ..Filter::default()
    };
    assert_eq!(
        selected(&log(), &filter),
        ["11-25T10:30", "11-25T13:01"],
        "10:00 read name, not email, in plaintext"
    );
}

#[test]
fn since_is_included_and_until_excluded() {
    let dir = log();
    let filter = Filter {
        since: Some(at("2026-11-25T10:30:00Z")),
        until: Some(at("2026-11-25T11:15:00Z")),
        ..Filter::default()
    };
    assert_eq!(selected(&dir, &filter), ["11-25T10:30", "11-25T11:00"]);
    let whole_day = Filter {
        since: Some(parse_since("2026-11-26").unwrap()),
        until: Some(parse_until("2026-11-26").unwrap()),
        ..Filter::default()
    };
    assert_eq!(selected(&dir, &whole_day), ["11-26T08:00", "11-26T09:00"]);
}

#[test]
fn times_parse_as_rfc3339_or_dates() {
    assert_eq!(
        parse_since("2026-11-25").unwrap(),
        at("2026-11-25T00:00:00Z")
    );
    assert_eq!(
        parse_until("2026-11-25").unwrap(),
        at("2026-11-26T00:00:00Z")
    );
    assert_eq!(
        parse_until("2026-11-25T10:00:00Z").unwrap(),
        at("2026-11-25T10:00:00.000Z")
    );
    for bad in ["yesterday", "2026-13-01", "2026-11-25T25:00:00Z", ""] {
        assert!(parse_since(bad).is_err(), "{bad}");
    }
}

#[test]
fn json_lines_parse_back_as_stored_without_seq_and_mac() {
    let dir = log();
    let filter = Filter {
        role: Some("app".into()),
        ..Filter::default()
    };
    let out = searched(&dir, &filter, SearchFormat::Json);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6);
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            value.get("seq").is_none() && value.get("mac").is_none(),
            "{line}"
        );
        let record: AuditRecord = serde_json::from_value(value).unwrap();
        assert!(filter.matches(&record));
    }
    let compressed = fs::File::open(dir.path().join("audit-20261125-0001.jsonl.zst")).unwrap();
    let mut stored = String::new();
    zstd::Decoder::new(compressed)
        .unwrap()
        .read_to_string(&mut stored)
        .unwrap();
    let third = stored.lines().nth(3).unwrap();
    let without_seq = third.split_once(',').unwrap().1;
    assert!(
        without_seq.starts_with(&lines[1][1..lines[1].len() - 1]),
        "{third}\n{}",
        lines[1]
    );
}

#[test]
fn csv_has_a_header_and_quotes_commas_and_quotes() {
    let filter = Filter {
        outcome: Some(OutcomeFilter::Code(SqlState::new("42501").unwrap())),
        ..Filter::default()
    };
    let out = searched(&log(), &filter, SearchFormat::Csv);
    assert_eq!(
        out,
        "time,event,conn,role,actor,purpose,kind,outcome,rows,columns,statement\r\n\
         2026-11-25T11:15:00Z,statement,1,analyst,,,select,42501,0,\
         public.customers.ssn:denied,\"SELECT \"\"ssn\"\", name FROM public.customers\"\r\n"
    );
}

#[test]
fn the_table_aligns_columns_and_shortens_statements() {
    let filter = Filter {
        role: Some("app".into()),
        event: Some(EventKind::Statement),
        ..Filter::default()
    };
    let out = searched(&log(), &filter, SearchFormat::Table);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 + 5, "{out}");
    assert!(
        lines[0].starts_with("time                  event      conn  role"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("--------------------  ---------  ----  ----"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("2026-11-25T10:00:00Z  statement  1     app "),
        "{out}"
    );
    assert!(lines[2].contains(" public.customers.email:masked public.customers.name:plaintext "));
    assert!(lines[3].ends_with("SELECT email, name FROM public.customers WHERE id = $1"));
    let update = lines[4];
    assert!(update.ends_with("UPDATE public.customers SET email = $1 WHERE id = $2"));
}

#[test]
fn long_statements_are_cut_in_tables() {
    assert_eq!(layout::truncate("abcdef", 6), "abcdef");
    assert_eq!(layout::truncate("abcdefg", 6), "abcde…");
}

#[test]
fn html_escapes_markup_and_quotes() {
    assert_eq!(
        html::escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn searches_by_ticket_find_statements_and_approval_uses() {
    let mut ticketed = select(
        "2026-11-25T10:00:00Z",
        "support",
        (None, None),
        &[("national_id", Decision::Plaintext)],
        2,
    );
    ticketed.session.ticket = Some("CASE-1".into());
    let plain = select(
        "2026-11-25T10:01:00Z",
        "support",
        (None, None),
        &[("national_id", Decision::Masked)],
        2,
    );
    let used = AuditRecord::ApprovalUse(Box::new(crate::audit::ApprovalUseRecord {
        time: at("2026-11-25T10:02:00Z"),
        peer: peer(),
        login: Login {
            database: "shop".into(),
            role: "support".into(),
        },
        approval: "apr-0123456789abcdef".into(),
        policy_role: "support".into(),
        column: "public.customers.national_id".into(),
        ticket: "CASE-1".into(),
        rows: 1200,
        rows_left: 3800,
    }));
    let records = [
        AuditRecord::Statement(Box::new(ticketed)),
        AuditRecord::Statement(Box::new(plain)),
        used,
    ];
    let by = |filter: Filter| -> Vec<usize> {
        (0..records.len())
            .filter(|&i| filter.matches(&records[i]))
            .collect()
    };
    let ticket = |t: &str| Filter {
        ticket: Some(t.into()),
        ..Filter::default()
    };
    assert_eq!(by(ticket("CASE-1")), [0, 2]);
    assert_eq!(by(ticket("CASE-2")), [] as [usize; 0]);
    let approval_uses = Filter {
        event: Some(EventKind::ApprovalUse),
        column: Some("national_id".into()),
        ..Filter::default()
    };
    assert_eq!(by(approval_uses), [2]);
    assert!(search::detail(&records[2]).contains("apr-0123456789abcdef"));
}
