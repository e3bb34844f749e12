//! The access review over a log written by the real writer (the one of
//! `tests.rs`, with policy roles, a failed login and a refusal on no
//! protected column added): who did what under which role, refusals
//! listed, reads and writes apart, alerts per statement, the time axis
//! fit to the data, the verification at the head and the digest of the
//! data.

use std::sync::Arc;

use ring::signature::Ed25519KeyPair;
use sha2::{Digest, Sha256};

use super::filter::{self, EventKind, OutcomeFilter};
use super::report::{Activity, Count, IncidentKind};
use super::tests::{
    at, first_day, log, peer, second_day, select, selected, write_log_keyed, MAC_KEY, UNDECLARED,
};
use super::time::{parse_since, parse_until, Series};
use super::verified::{hex, verify_dir, Status, Verification, VerifyKeys};
use super::*;
use crate::audit::format::Bodies;
use crate::audit::writer::LogWriter;
use crate::audit::{AuditConfig, AuditKeys, AuditRecord, Decision, Login, Outcome, SqlState};

/// The records of `tests.rs`'s first day, with the 10:00 read decided
/// under two policy roles (e-mail under `support`, name under
/// `crm_app`), a failed login at 09:02 and a statement refused at 11:20
/// that touched no protected column.
fn first_day_with_roles() -> Vec<AuditRecord> {
    let mut records = first_day();
    for record in &mut records {
        if let AuditRecord::Statement(s) = record {
            if s.time == at("2026-11-25T10:00:00Z") {
                s.columns[0].policy_role = Some("support".into());
                s.columns[1].policy_role = Some("crm_app".into());
            }
        }
    }
    let failed_login = AuditRecord::Authentication {
        time: at("2026-11-25T09:02:00Z"),
        peer: peer(),
        login: Login {
            database: "shop".into(),
            role: "mallory".into(),
        },
        outcome: Outcome::Error(SqlState::new("28P01").unwrap()),
    };
    records.insert(2, failed_login);
    let mut unsupported = select("2026-11-25T11:20:00Z", "analyst", UNDECLARED, &[], 0);
    unsupported.outcome = Outcome::Error(SqlState::new("0A000").unwrap());
    let after = records
        .iter()
        .position(|r| filter::time_of(r) == at("2026-11-25T11:15:00Z"))
        .unwrap();
    records.insert(after + 1, AuditRecord::Statement(Box::new(unsupported)));
    records
}

fn report_log() -> (tempfile::TempDir, Vec<u8>) {
    write_log_keyed(&first_day_with_roles(), &second_day())
}

fn built(dir: &tempfile::TempDir, period: Period) -> Report {
    Report::build(
        Records::open(dir.path()).unwrap(),
        period,
        Verification::not_run(),
    )
    .unwrap()
}

/// The report of [`first_day_with_roles`] and the second day, from the
/// records themselves: the writer of this branch does not write policy
/// roles into statement lines yet.
fn whole() -> Report {
    let records = first_day_with_roles().into_iter().chain(second_day());
    Report::build(records.map(Ok), Period::default(), Verification::not_run()).unwrap()
}

fn head() -> Head {
    Head {
        generated: at("2026-12-01T08:00:00Z"),
        digest: "d1e5".into(),
    }
}

fn written(report: &Report, format: ReportFormat) -> String {
    let mut out = Vec::new();
    write_report(report, &head(), format, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn count(statements: u64, rows: u64) -> Count {
    Count { statements, rows }
}

#[test]
fn totals() {
    let report = whole();
    let t = &report.totals;
    assert_eq!(
        (t.records, t.statements, t.protected, t.reads, t.writes),
        (15, 10, 8, 7, 1)
    );
    assert_eq!(
        (t.reads_without_purpose, t.refused, t.errors),
        (3, 2, 3),
        "11:00, 11:15 and 13:01 read undeclared; 11:15 and 11:20 refused; and 12:30 failed"
    );
    assert_eq!((t.connections, t.failed_logins, t.alerts), (1, 1, 1));
    let decisions = &t.read_decisions;
    assert_eq!(decisions.get(Decision::Plaintext), count(3, 5021));
    assert_eq!(decisions.get(Decision::Masked), count(3, 4));
    assert_eq!(decisions.get(Decision::Pseudonym), count(1, 100));
    assert_eq!(decisions.get(Decision::Null), count(0, 0));
    assert_eq!(
        decisions.get(Decision::Encrypted),
        count(0, 0),
        "the update wrote, it did not read"
    );
    assert_eq!(decisions.get(Decision::Denied), count(1, 0));
}

fn activity(
    role: &str,
    user: &str,
    [statements, reads, reads_without_purpose, writes, refused, errors, failed_logins]: [u64; 7],
) -> Activity {
    Activity {
        role: role.into(),
        user: user.into(),
        statements,
        reads,
        reads_without_purpose,
        writes,
        refused,
        errors,
        failed_logins,
    }
}

#[test]
fn statements_refusals_and_failed_logins_per_role_and_user() {
    let report = whole();
    assert_eq!(
        report.activity,
        [
            activity("<b>", "<b>", [1, 1, 1, 0, 0, 0, 0]),
            activity("analyst", "analyst", [4, 2, 2, 0, 2, 0, 0]),
            activity("app", "app", [4, 3, 0, 1, 0, 1, 0]),
            activity("crm_app", "app", [1, 1, 0, 0, 0, 0, 0]),
            activity("mallory", "mallory", [0, 0, 0, 0, 0, 0, 1]),
            activity("support", "app", [1, 1, 0, 0, 0, 0, 0]),
        ]
    );
    let refused: u64 = report.activity.iter().map(|a| a.refused).sum();
    assert_eq!(refused, report.totals.refused, "rows add up to the total");
}

#[test]
fn refused_statements_and_failed_logins_are_listed() {
    let report = whole();
    let listed: Vec<_> = report
        .incidents
        .iter()
        .map(|i| {
            (
                text::time_text(i.time),
                i.kind,
                i.user.as_str(),
                i.role.as_str(),
                i.sqlstate.as_str(),
                i.statement.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "2026-11-25T09:02:00Z".to_owned(),
                IncidentKind::FailedLogin,
                "mallory",
                "mallory",
                "28P01",
                "login to database shop"
            ),
            (
                "2026-11-25T11:15:00Z".to_owned(),
                IncidentKind::RefusedStatement,
                "analyst",
                "analyst",
                "42501",
                r#"SELECT "ssn", name FROM public.customers"#
            ),
            (
                "2026-11-25T11:20:00Z".to_owned(),
                IncidentKind::RefusedStatement,
                "analyst",
                "analyst",
                "0A000",
                "SELECT email, name FROM public.customers WHERE id = $1"
            ),
        ]
    );
}

#[test]
fn reads_and_writes_apart_per_role_user_actor_and_column() {
    let report = whole();
    let reads: Vec<_> = report
        .reads
        .iter()
        .map(|r| {
            (
                r.role.as_str(),
                r.user.as_str(),
                r.actor.as_deref(),
                r.column.trim_start_matches("public.customers."),
                r.statements,
                r.without_purpose,
            )
        })
        .collect();
    assert_eq!(
        reads,
        [
            ("<b>", "<b>", None, "email", 1, 1),
            ("analyst", "analyst", None, "email", 1, 1),
            ("analyst", "analyst", None, "ssn", 1, 1),
            ("app", "app", Some("alice"), "email", 2, 0),
            ("app", "app", Some("bob"), "email", 1, 0),
            ("crm_app", "app", Some("alice"), "name", 1, 0),
            ("support", "app", Some("alice"), "email", 1, 0),
        ]
    );
    let alice = &report.reads[3];
    assert_eq!(alice.decisions.get(Decision::Masked), count(2, 3));
    assert_eq!(alice.decisions.get(Decision::Encrypted), count(0, 0));
    assert_eq!(alice.purposes.iter().collect::<Vec<_>>(), ["support"]);
    assert_eq!(report.reads[2].decisions.get(Decision::Denied), count(1, 0));
    let writes: Vec<_> = report
        .writes
        .iter()
        .map(|w| {
            (
                w.role.as_str(),
                w.actor.as_deref(),
                w.column.as_str(),
                w.written,
            )
        })
        .collect();
    assert_eq!(
        writes,
        [("app", Some("alice"), "public.customers.email", count(1, 1))]
    );
    let email = report
        .columns
        .iter()
        .find(|c| c.column == "public.customers.email")
        .unwrap();
    assert_eq!(email.reads.get(Decision::Plaintext), count(2, 5020));
    assert_eq!(email.reads.statements(), 6);
    assert_eq!(email.writes, count(1, 1));
}

#[test]
fn an_alert_lists_its_columns_and_the_statement_that_raised_it() {
    let report = whole();
    assert_eq!(report.alerts.len(), 1);
    let alert = &report.alerts[0];
    assert_eq!(alert.record.role, "<b>");
    assert_eq!(alert.record.columns, ["public.customers.email"]);
    assert_eq!(
        alert.statement.as_deref(),
        Some("SELECT email, name FROM public.customers WHERE id = $1"),
        "the next statement of the alert's connection"
    );
}

#[test]
fn the_time_axis_fits_the_data() {
    let report = whole();
    let chart = report.plaintext.as_ref().unwrap();
    assert_eq!(
        (chart.bucket_secs, chart.buckets),
        (3_600, 25),
        "a day of data (09:00 to 09:00 the next day) in hours"
    );
    assert_eq!(chart.label(0), "2026-11-25 09:00");
    assert_eq!(chart.unit(), "hour");
    let per_role: Vec<(&str, Vec<(usize, u64)>)> = chart
        .roles
        .iter()
        .map(|r| {
            let rows = r.rows.iter().enumerate().filter(|(_, &n)| n > 0);
            (r.role.as_str(), rows.map(|(i, &n)| (i, n)).collect())
        })
        .collect();
    assert_eq!(
        per_role,
        [
            ("<b>", vec![(4, 5000)]),
            ("app", vec![(1, 20)]),
            ("crm_app", vec![(1, 1)])
        ]
    );
    // Asked for a week, the chart still covers only the data.
    let week = Period {
        since: Some(parse_since("2026-11-20").unwrap()),
        until: Some(parse_until("2026-11-26").unwrap()),
    };
    let (dir, _) = report_log();
    assert_eq!(built(&dir, week).plaintext.unwrap().buckets, 25);
}

#[test]
fn bucket_widths_follow_the_span() {
    let chart = |span_secs: u64| {
        let mut series = Series::default();
        let first = at("2026-11-25T10:00:00Z");
        let last = crate::audit::Timestamp(first.0 + std::time::Duration::from_secs(span_secs));
        series.add(first, "a", 1);
        series.add(last, "b", 2);
        let chart = series.chart(first, last);
        (chart.unit(), chart.buckets, chart.total(chart.buckets - 1))
    };
    assert_eq!(chart(30), ("second".into(), 31, 2));
    assert_eq!(chart(300), ("10 seconds".into(), 31, 2));
    assert_eq!(chart(3_000), ("minute".into(), 51, 2));
    assert_eq!(chart(86_400), ("hour".into(), 25, 2));
    assert_eq!(chart(5 * 86_400), ("6 hours".into(), 21, 2));
    assert_eq!(chart(20 * 86_400), ("day".into(), 21, 2));
    assert_eq!(chart(200 * 86_400), ("week".into(), 30, 2));
    let mut series = Series::default();
    let first = at("2026-11-25T00:00:00Z");
    for s in 0..60_000 {
        let time = crate::audit::Timestamp(first.0 + std::time::Duration::from_secs(s));
        series.add(time, "a", 1);
    }
    let last = crate::audit::Timestamp(first.0 + std::time::Duration::from_secs(59_999));
    let chart = series.chart(first, last);
    assert_eq!(
        (chart.unit(), chart.total(0) + chart.total(1)),
        ("hour".into(), 7_200),
        "many points are kept coarser, none lost"
    );
    assert_eq!(chart.roles[0].rows.iter().sum::<u64>(), 60_000);
}

#[test]
fn the_period_is_optional_and_kept_to() {
    let (dir, _) = report_log();
    let all = built(&dir, Period::default());
    assert_eq!(
        (all.first, all.last),
        (
            Some(at("2026-11-25T09:00:00Z")),
            Some(at("2026-11-26T09:00:00Z"))
        )
    );
    assert!(text::period_text(&all).starts_with("the whole log: records from"));
    let part = Period {
        since: Some(at("2026-11-25T10:30:00Z")),
        until: Some(at("2026-11-25T13:00:00Z")),
    };
    let report = built(&dir, part);
    assert_eq!(report.totals.statements, 6);
    assert!(report.alerts.is_empty());
    assert!(!report.reads.iter().any(|r| r.role == "<b>"));
    let since_only = Period {
        since: Some(at("2026-11-26T00:00:00Z")),
        until: None,
    };
    assert_eq!(built(&dir, since_only).totals.statements, 2);
    let empty = Period {
        since: part.until,
        until: part.since,
    };
    assert!(matches!(
        Report::build(
            Records::open(dir.path()).unwrap(),
            empty,
            Verification::not_run()
        ),
        Err(ReviewError::EmptyPeriod)
    ));
}

fn keys(public: &[u8], mac: bool, live: bool) -> VerifyKeys {
    VerifyKeys {
        mac: mac.then_some(MAC_KEY),
        public: public.to_vec(),
        live,
    }
}

#[test]
fn the_verification_heads_the_report() {
    let (dir, public) = report_log();
    let full = verify_dir(dir.path(), &keys(&public, true, true));
    assert_eq!(full.status, Status::Ok, "{full:?}");
    assert_eq!((full.files, full.records), (Some(2), Some(15)));
    assert_eq!(
        full.key_fingerprint.as_deref(),
        Some(hex(&Sha256::digest(&public)).as_str())
    );
    assert!(full.detail.contains("every record's MAC"), "{full:?}");

    let public_only = verify_dir(dir.path(), &keys(&public, false, true));
    assert_eq!(
        public_only.status,
        Status::Unverified,
        "an unsealed file without the keyring: {public_only:?}"
    );
    assert!(public_only.detail.contains("not sealed yet"));

    let sealed_only = verify_dir(dir.path(), &keys(&public, true, false));
    assert_eq!(sealed_only.status, Status::Failed);
    assert!(
        sealed_only.detail.contains("without a seal"),
        "{sealed_only:?}"
    );
    assert_eq!(sealed_only.files, None);

    let other = ring::signature::KeyPair::public_key(
        &Ed25519KeyPair::from_pkcs8(
            Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap()
                .as_ref(),
        )
        .unwrap(),
    )
    .as_ref()
    .to_vec();
    let wrong = verify_dir(dir.path(), &keys(&other, false, true));
    assert_eq!(wrong.status, Status::Failed, "{wrong:?}");

    let report =
        Report::build(Records::open(dir.path()).unwrap(), Period::default(), full).unwrap();
    let text = written(&report, ReportFormat::Text);
    let first: Vec<&str> = text.lines().take(8).collect();
    assert!(
        first[2].starts_with("verification     ok: every record's MAC"),
        "{text}"
    );
    assert!(first[3].ends_with("2 file(s), 15 record(s)"), "{text}");
    assert!(first[4].contains(&hex(&Sha256::digest(&public))), "{text}");
    assert!(first[6].ends_with("2026-12-01T08:00:00Z"), "{text}");
    assert!(first[7].contains("d1e5"), "{text}");
    let html = written(&report, ReportFormat::Html);
    assert!(html.contains(
        "<div class=\"verification s-ok\" id=\"verification\"><span class=\"status\">ok</span>"
    ));
    let csv = written(&report, ReportFormat::Csv);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[1], "report,,,,,,,,,,,,,,verification,ok");
    assert!(lines[3].ends_with("verified_files,2"));
    assert!(lines.contains(&"report,,,,,,,,,,,,,,data_sha256,d1e5"));
}

#[test]
fn the_digest_is_the_sha256_of_the_json_data() {
    let (dir, _) = report_log();
    let report = built(&dir, Period::default());
    let json = written(&report, ReportFormat::Json);
    assert_eq!(json, report.json());
    assert_eq!(report.digest(), hex(&Sha256::digest(json.as_bytes())));
    assert_eq!(
        built(&dir, Period::default()).json(),
        json,
        "the same log gives the same data"
    );
    let data: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(data["verification"]["status"], "unverified");
    assert_eq!(data["totals"]["refused"], 2);
    assert_eq!(data["totals"]["read_decisions"]["plaintext"]["rows"], 5021);
    assert_eq!(data["alerts"][0]["columns"][0], "public.customers.email");
    assert_eq!(data["incidents"][0]["kind"], "failed_login");
    assert_eq!(data["plaintext"]["bucket_secs"], 3600);
    let head = Head::of(&report, at("2026-12-01T08:00:00Z"));
    assert_eq!(head.digest, report.digest());
}

#[test]
fn csv_rows_carry_their_section() {
    let out = written(&whole(), ReportFormat::Csv);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "section,time,role,user,actor,column,access,decision,sqlstate,statement,\
         statements,rows,threshold,window_secs,name,value"
    );
    for expected in [
        "totals,,,,,,,,,,,,,,refused,2",
        "activity,,analyst,analyst,,,,,,,,,,,refused,2",
        "activity,,mallory,mallory,,,,,,,,,,,failed_logins,1",
        "read,,app,app,alice,public.customers.email,read,masked,,,2,3,,,,",
        "read,,analyst,analyst,,public.customers.email,read,,,,1,,,,without_purpose,",
        "write,,app,app,alice,public.customers.email,write,,,,1,1,,,refused,0",
        "failed_login,2026-11-25T09:02:00Z,mallory,mallory,,,,,28P01,login to database shop,,,,,connection,1",
        "refused_statement,2026-11-25T11:20:00Z,analyst,analyst,,,,,0A000,\
         \"SELECT email, name FROM public.customers WHERE id = $1\",,,,,connection,1",
        "alert,2026-11-25T13:00:00Z,,<b>,,public.customers.email,,,,\
         \"SELECT email, name FROM public.customers WHERE id = $1\",,5000,1000,60,connection,1",
        "plaintext_rows,2026-11-25 13:00,<b>,,,,,,,,,5000,,,bucket_secs,3600",
    ] {
        assert!(lines.contains(&expected), "{expected}\n{out}");
    }
}

#[test]
fn text_has_every_section_and_flags() {
    let out = written(&whole(), ReportFormat::Text);
    for expected in [
        "pgveil access review\n",
        "verification     UNVERIFIED: not verified: give --config",
        "\nTotals\n",
        "\nStatements by role and user\n",
        "\nRefused statements and failed logins\n",
        "2026-11-25T09:02:00Z  failed login       mallory  mallory  28P01     login to database shop",
        "\nReads of protected columns (rows by decision)\n",
        "\nWrites of protected columns\n",
        "\nRows read in plaintext per hour and role\n",
        "2026-11-25 13:00  <b>      5000",
        "\nAlerts\n",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("refused statements ") && l.ends_with(" 2")),
        "{out}"
    );
    let analyst = out
        .lines()
        .find(|l| l.starts_with("analyst  analyst  4"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        analyst.split_whitespace().collect::<Vec<_>>(),
        ["analyst", "analyst", "4", "2", "2", "0", "2", "0", "0"]
    );
    let ssn = out
        .lines()
        .find(|l| l.contains("public.customers.ssn"))
        .unwrap();
    assert!(
        ssn.contains("denied in 1 statement(s)") && ssn.contains("! 1 of 1"),
        "without a purpose, flagged: {ssn}"
    );
}

#[test]
fn html_is_one_offline_page_grouped_by_role_with_flags() {
    let out = written(&whole(), ReportFormat::Html);
    assert!(out.starts_with("<!DOCTYPE html>\n"));
    assert_eq!(out.matches("<html").count(), 1);
    assert!(out.trim_end().ends_with("</html>"));
    assert_eq!(out.matches("<svg").count(), 2);
    for forbidden in ["<script", "http://", "https://", "<link", "@import", "url("] {
        assert!(!out.contains(forbidden), "{forbidden}");
    }
    assert!(!out.contains("<b>") && out.contains("&lt;b&gt;"));
    assert!(out.contains("<title>&lt;b&gt;: 5000 rows, 2026-11-25 13:00</title>"));
    assert!(out.contains("<tr class=\"group\"><th colspan=\"8\">role support</th></tr>"));
    assert!(out.contains("<td class=\"flag\">⚠ 1 of 1</td>"));
    assert!(
        out.contains("<td class=\"n bad\">2</td>"),
        "analyst's refusals"
    );
    assert!(out.contains("<span class=\"status\">UNVERIFIED</span>"));
}

#[test]
fn gap_records_are_counted_shown_and_searched() {
    let gap = AuditRecord::Gap(crate::audit::GapRecord {
        time: at("2026-11-25T12:00:00Z"),
        lost: 7,
        cause: crate::audit::GapCause::WriteFailed,
    });
    let report = Report::build(
        [Ok(gap.clone())],
        Period::default(),
        Verification::not_run(),
    )
    .unwrap();
    assert_eq!(report.totals.lost, 7);
    let text = written(&report, ReportFormat::Text);
    assert!(
        text.lines()
            .any(|l| l.contains("records lost (not written)") && l.trim_end().ends_with('7')),
        "{text}"
    );
    let filter = Filter {
        event: Some(EventKind::Gap),
        ..Filter::default()
    };
    assert!(filter.matches(&gap));
    assert_eq!(
        search::detail(&gap),
        "7 records lost (write_failed)",
        "what a search prints"
    );
}

#[test]
fn migration_records_are_searched_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let signing = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let keys = Arc::new(AuditKeys::new(&[9; 32], signing));
    let config = AuditConfig {
        dir: dir.path().into(),
        retention_days: 0,
        compress: false,
        ..AuditConfig::default()
    };
    let migration = crate::audit::record::tests::migration();
    let time = filter::time_of(&migration);
    let mut writer = LogWriter::open(&config, keys, time.0).unwrap();
    writer.append(&Bodies::of(&[migration]), time.0).unwrap();
    writer.close(time.0).unwrap();

    let filter = Filter {
        event: Some(EventKind::Migration),
        column: Some("customers.email".into()),
        table: Some("public.customers".into()),
        role: Some("pgveil_migrate".into()),
        outcome: Some(OutcomeFilter::Error),
        ..Filter::default()
    };
    assert_eq!(selected(&dir, &filter).len(), 1);
    let table = super::tests::searched(&dir, &filter, SearchFormat::Csv);
    assert!(
        table.contains(
            "migration,,pgveil_migrate,,,re_encrypt,XX001,120,public.customers.email,\
             \"re_encrypt key version 1,2 -> key version 3 (deterministic), \
             domain public.customers.email, 1 undecryptable, resumed\""
        ),
        "{table}"
    );
    let report = built(&dir, Period::default());
    assert_eq!(
        (report.totals.migrated, report.totals.undecryptable),
        (120, 1)
    );
    assert!(written(&report, ReportFormat::Text).contains("rows migrated (pgveil migrate)"));
}

#[test]
fn the_log_of_tests_rs_reports_too() {
    let report = built(&log(), Period::default());
    assert_eq!(report.totals.statements, 9);
}

#[test]
fn a_log_that_lost_records_is_incomplete() {
    let mut first = first_day();
    first.insert(
        3,
        AuditRecord::Gap(crate::audit::GapRecord {
            time: at("2026-11-25T09:30:00Z"),
            lost: 4,
            cause: crate::audit::GapCause::QueueFull,
        }),
    );
    let (dir, public) = write_log_keyed(&first, &second_day());
    let verification = verify_dir(dir.path(), &keys(&public, true, true));
    assert_eq!(verification.status, Status::Incomplete, "{verification:?}");
    assert!(
        verification
            .detail
            .starts_with("the log says 4 record(s) were lost (never written), in 1 gap record(s)"),
        "{verification:?}"
    );
    let report = Report::build(
        Records::open(dir.path()).unwrap(),
        Period::default(),
        verification,
    )
    .unwrap();
    assert_eq!(report.totals.lost, 4);
    assert!(written(&report, ReportFormat::Html)
        .contains("<div class=\"verification s-incomplete\" id=\"verification\"><span class=\"status\">INCOMPLETE</span>"));
}

#[test]
fn a_period_without_records_is_reported_as_such() {
    let (dir, _) = report_log();
    let period = Period {
        since: Some(at("2027-01-01T00:00:00Z")),
        until: None,
    };
    let report = built(&dir, period);
    assert_eq!((report.totals.records, report.plaintext.clone()), (0, None));
    assert!(text::period_text(&report).ends_with(": no records"));
    let html = written(&report, ReportFormat::Html);
    assert!(html.contains("<p>No records in the period.</p>"));
    assert!(
        written(&report, ReportFormat::Text).contains("2027-01-01T00:00:00Z to the last record")
    );
}
