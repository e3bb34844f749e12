//! The record types' JSON: field names, what is left out, old logs.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

pub(crate) fn statement(connection: u64) -> AuditRecord {
    AuditRecord::Statement(Box::new(StatementRecord {
        time: Timestamp(SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_064_800_123_456)),
        session: Session {
            peer: Peer {
                connection,
                client: "10.0.0.7:51234".into(),
            },
            login: Login {
                database: "shop".into(),
                role: "app".into(),
            },
            actor: Some("alice".into()),
            purpose: Some("support".into()),
            ticket: Some("CASE-123".into()),
        },
        kind: "select".into(),
        statement: NormalizedStatement::from_normalized(
            "SELECT email FROM customers WHERE id = $1".into(),
        ),
        tables: Arc::new(["public.customers".into()]),
        columns: vec![ColumnAccess {
            column: "public.customers.email".into(),
            access: Access::Read,
            decision: Decision::Masked,
            policy_role: Some("support".into()),
            unencrypted: false,
        }],
        rows: 1,
        outcome: Outcome::Ok,
        duration_us: 412,
    }))
}

fn keys(record: &AuditRecord) -> BTreeSet<String> {
    match serde_json::to_value(record).unwrap() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn statement_record_has_only_metadata_fields() {
    assert_eq!(
        keys(&statement(7)),
        set(&[
            "event",
            "time",
            "connection",
            "client",
            "database",
            "role",
            "actor",
            "purpose",
            "ticket",
            "kind",
            "statement",
            "tables",
            "columns",
            "rows",
            "outcome",
            "duration_us",
        ])
    );
    let AuditRecord::Statement(s) = statement(7) else {
        unreachable!()
    };
    let column = serde_json::to_value(&s.columns[0]).unwrap();
    assert_eq!(
        column,
        serde_json::json!({
            "column": "public.customers.email",
            "access": "read",
            "decision": "masked",
            "policy_role": "support",
        })
    );
    assert_eq!(
        s.policy_roles().into_iter().collect::<Vec<_>>(),
        ["support"]
    );
    // A record written before policy roles were recorded still reads.
    let old = r#"{"column":"public.customers.email","access":"read","decision":"null"}"#;
    let old: ColumnAccess = serde_json::from_str(old).unwrap();
    assert_eq!(old.policy_role, None);
}

#[test]
fn records_round_trip() {
    let time = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_064_800));
    let peer = Peer {
        connection: 3,
        client: "[::1]:6000".into(),
    };
    let records = [
        statement(1),
        AuditRecord::Connect {
            time,
            peer: peer.clone(),
        },
        AuditRecord::Authentication {
            time,
            peer: peer.clone(),
            login: Login {
                database: "shop".into(),
                role: "app".into(),
            },
            outcome: Outcome::Error(SqlState::new("28P01").unwrap()),
        },
        AuditRecord::Disconnect {
            time,
            peer,
            statements: 10,
            rows: 200,
        },
        AuditRecord::Alert(AlertRecord {
            time,
            role: "app".into(),
            actor: None,
            connection: Some(3),
            columns: vec![
                "public.customers.email".into(),
                "public.customers.phone".into(),
            ],
            rows: 5000,
            threshold: 1000,
            window_secs: 60,
        }),
        AuditRecord::Gap(GapRecord {
            time,
            lost: 12,
            cause: GapCause::WriteFailed,
        }),
        AuditRecord::UncleanShutdown(UncleanShutdownRecord {
            time,
            file: "audit-20261125-0003.jsonl".into(),
            first_seq: 101,
            last_seq: 250,
            torn: true,
        }),
        migration(),
        AuditRecord::ApprovalUse(Box::new(ApprovalUseRecord {
            time,
            peer: Peer {
                connection: 4,
                client: "10.0.0.8:4000".into(),
            },
            login: Login {
                database: "shop".into(),
                role: "support_user".into(),
            },
            approval: "apr-0123456789abcdef".into(),
            policy_role: "support".into(),
            column: "public.customers.national_id".into(),
            ticket: "CASE-123".into(),
            rows: 1200,
            rows_left: 3800,
        })),
    ];
    for record in records {
        let json = serde_json::to_string(&record).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record, "{json}");
    }
}

pub(crate) fn migration() -> AuditRecord {
    AuditRecord::Migration(Box::new(MigrationRecord {
        time: Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_064_800)),
        login: Login {
            database: "shop".into(),
            role: "pgveil_migrate".into(),
        },
        table: "public.customers".into(),
        column: "public.customers.email".into(),
        action: MigrationAction::ReEncrypt,
        domain: "public.customers.email".into(),
        rows: 120,
        from_versions: vec![1, 2],
        to_version: Some(3),
        mode: Some(Mode::Deterministic),
        undecryptable: 1,
        refused: 0,
        resumed: true,
        outcome: Outcome::Error(SqlState::new("XX001").unwrap()),
    }))
}

#[test]
fn migration_records_name_columns_and_key_versions_only() {
    let json = serde_json::to_value(migration()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "event": "migration",
            "time": "2025-11-25T10:00:00.000000Z",
            "database": "shop",
            "role": "pgveil_migrate",
            "table": "public.customers",
            "column": "public.customers.email",
            "action": "re_encrypt",
            "domain": "public.customers.email",
            "rows": 120,
            "from_versions": [1, 2],
            "to_version": 3,
            "mode": "deterministic",
            "undecryptable": 1,
            "refused": 0,
            "resumed": true,
            "outcome": "XX001",
        })
    );
}

#[test]
fn times_are_rfc3339_utc() {
    let json = serde_json::to_string(&statement(1)).unwrap();
    assert!(
        json.contains(r#""time":"2025-11-25T10:00:00.123456Z""#),
        "{json}"
    );
}

#[test]
fn alerts_of_older_logs_name_one_column() {
    let old = r#"{"event":"alert","time":"2026-11-25T10:00:00.000000Z","role":"app",
        "column":"public.customers.email","rows":5000,"threshold":1000,"window_secs":60}"#;
    let AuditRecord::Alert(alert) = serde_json::from_str(old).unwrap() else {
        panic!("not an alert")
    };
    assert_eq!(alert.columns, ["public.customers.email"]);
    assert_eq!(alert.connection, None);
    let json = serde_json::to_value(AuditRecord::Alert(alert)).unwrap();
    assert_eq!(
        json["columns"],
        serde_json::json!(["public.customers.email"])
    );
    assert!(json.get("column").is_none() && json.get("connection").is_none());
}

#[test]
fn column_accesses_may_name_their_policy_role() {
    let json = r#"{"column":"public.customers.email","access":"read",
        "decision":"masked","policy_role":"support"}"#;
    let access: ColumnAccess = serde_json::from_str(json).unwrap();
    assert_eq!(access.policy_role.as_deref(), Some("support"));
}

#[test]
fn outcomes_are_ok_or_a_sqlstate() {
    let denied = Outcome::Error(SqlState::new("42501").unwrap());
    assert_eq!(serde_json::to_string(&denied).unwrap(), r#""42501""#);
    assert_eq!(serde_json::to_string(&Outcome::Ok).unwrap(), r#""ok""#);
    for bad in ["4250", "425011", "42 01", "abcde"] {
        assert!(SqlState::new(bad).is_err(), "{bad}");
        assert!(serde_json::from_str::<Outcome>(&format!("{bad:?}")).is_err());
    }
}
