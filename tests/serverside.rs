//! Writes by paths pgveil does not see as writes to a protected table:
//! views, functions, rules and triggers over `customers`. The database's
//! ciphertext guards (`pgveil guard`, installed by `policies/crm.sql`)
//! make them fail there with 23514 instead of storing plaintext, and
//! pgveil, which reads these objects from the catalog at login, refuses
//! them before they are sent, while reads through views and functions
//! are still revealed per role.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::crm::crm;
use common::{simple_rows, sqlstate, Cluster, SUPERUSER, SUPERUSER_PASSWORD};

/// A connection straight to the server as the superuser, to `database`.
async fn direct(database: &str) -> tokio_postgres::Client {
    let (host, port) = Cluster::shared()
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    common::try_connect(&format!(
        "host={host} port={port} user={SUPERUSER} password='{SUPERUSER_PASSWORD}' dbname={database}"
    ))
    .await
    .unwrap()
}

/// Customers of `segment`, read directly, with every protected value.
fn stored_in(segment: &str) -> String {
    Cluster::shared().psql_direct(&format!(
        "select concat_ws('|', count(*), string_agg(concat_ws(',', full_name, email, phone, \
         national_id, address), ';')) from customers where segment = '{segment}'"
    ))
}

/// Asserts nothing was written to `segment`.
fn nothing_in(segment: &str) {
    assert_eq!(stored_in(segment).trim(), "0", "rows stored in {segment}");
}

/// The leak paths of tests/orm/README.md, made directly by the DBA once
/// per test binary, before any session that must know them logs in: a
/// view, a function and a procedure that insert into customers, a table
/// whose rule inserts into customers instead, and one whose trigger copies
/// into customers; plus a function that only counts, one that reads, and
/// a trigger on customers itself that keeps a history (of ciphertext),
/// which must not stop writes to customers.
fn leak_paths() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        crm();
        Cluster::shared().psql_direct(
            "create view leak_view as select id, email, full_name, lower(email) as low_email, segment from customers;
             create function leak_add(text) returns bigint language plpgsql as
               $$ begin insert into customers (email, segment) values ($1, 'leak'); return 1; end $$;
             create procedure leak_proc(text) language sql
               begin atomic insert into customers (email, segment) values ($1, 'leak'); end;
             create table leak_inbox (address text, segment text);
             create rule leak_rule as on insert to leak_inbox do instead
               insert into customers (email, segment) values (new.address, new.segment);
             create table leak_staging (address text, segment text);
             create function leak_copy() returns trigger language plpgsql as
               $$ begin insert into public.CUSTOMERS (email, segment) values (new.address, new.segment); return new; end $$;
             create trigger leak_trigger after insert on leak_staging for each row execute function leak_copy();
             create table customers_history (email text);
             create function keep_history() returns trigger language plpgsql as
               $$ begin insert into customers_history values (new.email); return new; end $$;
             create trigger keep_history after insert on customers for each row execute function keep_history();
             create function leak_count() returns bigint language sql as 'select count(*) from customers';
             create function leak_emails() returns setof text language sql as
               $$ select email from customers where segment = 'view-read' $$;
             grant select, insert, update on leak_view to crm_app;
             grant select on leak_view to support;
             grant insert on leak_inbox, leak_staging, customers_history to crm_app;",
        );
    });
}

/// The writes through each leak path, with the plaintext `secret`.
fn leak_writes(secret: &str) -> Vec<(String, &'static str)> {
    vec![
        (
            format!("insert into leak_view (email, segment) values ('{secret}', 'leak')"),
            "public.leak_view",
        ),
        (format!("select leak_add('{secret}')"), "public.leak_add"),
        (format!("call leak_proc('{secret}')"), "public.leak_proc"),
        (
            format!("insert into leak_inbox values ('{secret}', 'leak')"),
            "leak_rule",
        ),
        (
            format!("insert into leak_staging values ('{secret}', 'leak')"),
            "leak_trigger",
        ),
    ]
}

#[tokio::test]
async fn writes_pgveil_does_not_see_fail_in_the_database() {
    leak_paths();
    let dba = direct("postgres").await;
    for (sql, _) in leak_writes("leak.direct@example.com") {
        let err = dba.simple_query(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("23514"), "{sql}: {err}");
        let constraint = err.as_db_error().unwrap().constraint();
        assert_eq!(constraint, Some("pgveil_guard_email"), "{sql}");
    }
    nothing_in("leak");
}

/// The guards on text columns check the envelope's head and alphabet with
/// a regular expression and its length apart (`octet_length`): written
/// directly, a value one character shorter than the mode's shortest
/// envelope, one with a character outside URL-safe base64, and one with
/// the other mode's head are refused; one of exactly the shortest length
/// is admitted (the guard cannot tell it from an envelope; pgveil's own
/// reads treat it as the forgery it is).
#[tokio::test]
async fn text_guards_check_head_alphabet_and_length() {
    leak_paths();
    let dba = direct("postgres").await;
    // email is deterministic: its shortest envelope has 43 characters;
    // address is randomized: 59.
    let cases = [
        ("email", format!("pgv1:UFYBAg{}", "A".repeat(32)), true),
        ("email", format!("pgv1:UFYBAg{}", "A".repeat(31)), false),
        ("email", format!("pgv1:UFYBAg{}!", "A".repeat(32)), false),
        ("email", format!("pgv1:UFYBAg{} ", "A".repeat(32)), false),
        ("email", format!("pgv1:UFYBAQ{}", "A".repeat(48)), false),
        ("address", format!("pgv1:UFYBAQ{}", "_".repeat(48)), true),
        ("address", format!("pgv1:UFYBAQ{}", "_".repeat(47)), false),
        ("address", format!("pgv1:UFYBAg{}", "A".repeat(48)), false),
        ("address", format!("pgv1:UFYBAQ{}é", "A".repeat(48)), false),
    ];
    for (column, value, admitted) in cases {
        let sql =
            format!("insert into customers ({column}, segment) values ('{value}', 'guard-length')");
        match dba.simple_query(&sql).await {
            Ok(_) => assert!(admitted, "{sql} was admitted"),
            Err(err) => {
                assert!(!admitted, "{sql}: {err}");
                assert_eq!(sqlstate(&err), Some("23514"), "{sql}: {err}");
                let constraint = err.as_db_error().unwrap().constraint();
                assert_eq!(
                    constraint,
                    Some(&*format!("pgveil_guard_{column}")),
                    "{sql}"
                );
            }
        }
    }
    dba.simple_query("delete from customers where segment = 'guard-length'")
        .await
        .unwrap();
}

/// Asserts pgveil refused `sql` with 0A000, naming `object` and the
/// protected table, quoting no value.
fn assert_refused(err: &tokio_postgres::Error, sql: &str, object: &str, secret: &str) {
    assert_eq!(sqlstate(err), Some("0A000"), "{sql}: {err}");
    let message = err.as_db_error().unwrap().message();
    assert!(message.starts_with("pgveil:"), "{message}");
    assert!(
        message.contains(object) && message.contains("public.customers"),
        "{sql}: {message}"
    );
    assert!(!message.contains(secret), "{message}");
}

#[tokio::test]
async fn pgveil_refuses_writes_through_server_side_objects_before_sending_them() {
    leak_paths();
    let app = crm().connect("crm_user").await;
    let secret = "leak.proxy@example.com";
    for (sql, object) in leak_writes(secret) {
        let err = app.simple_query(&sql).await.unwrap_err();
        assert_refused(&err, &sql, object, secret);
    }
    // The extended protocol: refused at Parse, with the value a parameter.
    for (sql, object) in [
        (
            "insert into leak_view (email, segment) values ($1, 'leak')",
            "public.leak_view",
        ),
        (
            "update leak_view set email = $1 where id = 0",
            "public.leak_view",
        ),
        ("select * from leak_add($1)", "public.leak_add"),
        (
            "insert into leak_staging (address) values ($1)",
            "leak_trigger",
        ),
    ] {
        let err = app.execute(sql, &[&secret]).await.unwrap_err();
        assert_refused(&err, sql, object, secret);
    }
    // COPY into the view: refused before any data is sent.
    let err = app
        .copy_in::<_, bytes::Bytes>("copy leak_view (email, segment) from stdin")
        .await
        .err();
    assert_refused(
        &err.expect("COPY into the view refused"),
        "copy",
        "public.leak_view",
        secret,
    );
    // The session goes on, and nothing of the refused statements ran.
    assert_eq!(
        app.query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    nothing_in("leak");
    let log = std::fs::read_to_string(Cluster::shared().dir().join("server.log")).unwrap();
    assert!(
        log.contains("ready to accept connections"),
        "the scan reads the server's log"
    );
    assert!(
        !log.contains(secret),
        "the refused value reached the server"
    );
}

#[tokio::test]
async fn reads_through_views_and_functions_are_revealed_per_role() {
    leak_paths();
    let crm = crm();
    let app = crm.connect("crm_user").await;
    app.simple_query(
        "insert into customers (full_name, email, segment) values ('View Reader', 'view.reader@example.com', 'view-read')",
    )
    .await
    .unwrap();
    let support = crm.connect("support_user").await;
    // A literal compared with an exact column of the view is encrypted.
    let by_email = "select full_name, email from leak_view where email = 'view.reader@example.com'";
    let row = |messages: Vec<tokio_postgres::SimpleQueryMessage>| {
        simple_rows(&messages).into_iter().next().expect("a row")
    };
    assert_eq!(
        row(app.simple_query(by_email).await.unwrap()),
        [
            Some("View Reader".to_owned()),
            Some("view.reader@example.com".to_owned())
        ]
    );
    assert_eq!(
        row(support.simple_query(by_email).await.unwrap()),
        [
            Some(crm.mask("full_name", "View Reader")),
            Some(crm.mask("email", "view.reader@example.com"))
        ]
    );
    // And a parameter, in the extended protocol.
    let rows = app
        .query(
            "select email from leak_view where email = $1",
            &[&"view.reader@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    // A column computed from a protected one cannot be compared.
    let err = app
        .simple_query("select id from leak_view where low_email = 'view.reader@example.com'")
        .await
        .unwrap_err();
    assert_refused(&err, "low_email", "public.leak_view", "view.reader");
    // The catalog lookup turned JIT off for its own query only.
    let jit = simple_rows(&app.simple_query("show jit").await.unwrap());
    assert_eq!(jit, [[Some("on".to_owned())]]);
    // Functions: without values they run; what they return is revealed.
    let count = app.query_one("select leak_count()", &[]).await.unwrap();
    assert!(count.get::<_, i64>(0) >= 1);
    for (client, expect) in [
        (&app, "view.reader@example.com".to_owned()),
        (&support, crm.mask("email", "view.reader@example.com")),
    ] {
        let rows = client
            .simple_query("select * from leak_emails()")
            .await
            .unwrap();
        assert_eq!(simple_rows(&rows), [[Some(expect)]]);
    }
}

#[tokio::test]
async fn writes_through_objects_made_after_login_fail_in_the_database_without_their_values() {
    leak_paths();
    let app = crm().connect("crm_user").await;
    // Made after the session logged in: pgveil does not know them.
    Cluster::shared().psql_direct(
        "create view late_view as select email, segment from customers;
         create function late_add(text) returns void language plpgsql as
           $$ begin execute format('insert into customers (email, segment) values (%L, ''late'')', $1); end $$;
         grant select, insert on late_view to crm_app;",
    );
    let secret = "late.leak@example.com";
    for sql in [
        format!("insert into late_view values ('{secret}', 'late')"),
        format!("select late_add('{secret}')"),
    ] {
        let err = app.simple_query(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("23514"), "{sql}: {err}");
        let db = err.as_db_error().unwrap();
        assert_eq!(db.constraint(), Some("pgveil_guard_email"));
        assert_eq!((db.detail(), db.where_()), (None, None), "{sql}");
        assert!(!format!("{db:?}").contains(secret), "{db:?}");
    }
    nothing_in("late");
    // Errors that are not a guard's keep their detail.
    let err = app
        .simple_query("insert into orders (customer_id, amount) values (-1, 1)")
        .await
        .unwrap_err();
    assert!(err.as_db_error().unwrap().detail().is_some(), "{err:?}");
}

#[tokio::test]
async fn pgveils_own_writes_pass_the_guards() {
    leak_paths();
    let guards = Cluster::shared().psql_direct(
        "select string_agg(conname || ':' || convalidated, ',' order by conname) from pg_constraint \
         where conrelid = 'public.customers'::regclass and conname like 'pgveil_guard_%'",
    );
    assert_eq!(
        guards.trim(),
        "pgveil_guard_address:true,pgveil_guard_email:true,pgveil_guard_full_name:true,\
         pgveil_guard_national_id:true,pgveil_guard_phone:true"
    );
    let app = crm().connect("crm_user").await;
    app.simple_query(
        "insert into customers (full_name, email, phone, national_id, address, segment) \
         values ('Guard Simple', 'simple@guard.example', '+1 555 0100', 'G-1', '1 Guard St', 'guarded')",
    )
    .await
    .unwrap();
    app.execute(
        "insert into customers (full_name, email, phone, national_id, address, segment) \
         values ($1, $2, $3, $4, $5, 'guarded')",
        &[
            &"Guard Extended",
            &"extended@guard.example",
            &"+1 555 0101",
            &"G-2",
            &"2 Guard St",
        ],
    )
    .await
    .unwrap();
    app.execute(
        "update customers set email = $1 where email = $2",
        &[&"updated@guard.example", &"extended@guard.example"],
    )
    .await
    .unwrap();
    let copied = common::copy_in(
        &app,
        "copy customers (full_name, email, phone, national_id, address, segment) from stdin",
        [&b"Guard Copy\tcopy@guard.example\t+1 555 0102\tG-3\t3 Guard St\tguarded\n"[..]],
    )
    .await;
    assert_eq!(copied.unwrap(), 1);
    let stored = stored_in("guarded");
    assert!(stored.starts_with("3|pgv1:"), "{stored}");
    let history = Cluster::shared()
        .psql_direct("select count(*) from customers_history where email like '%guard.example%'");
    assert_eq!(history.trim(), "0", "the history holds ciphertext only");
    assert!(
        !stored.contains("guard.example") && !stored.contains("Guard"),
        "{stored}"
    );
}

/// Runs `sql` directly in `database` with psql; its status and stderr.
fn psql_in(database: &str, sql: &str) -> (bool, String) {
    let out = common::psql(
        &Cluster::shared().addr(),
        SUPERUSER,
        SUPERUSER_PASSWORD,
        database,
    )
    .args(["-c", sql])
    .output()
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pgveil guard` for the sample policy, with `args`.
fn guard_sql(args: &[&str]) -> String {
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .arg("guard")
        .arg("--policy")
        .arg(policy)
        .args(args)
        .output()
        .unwrap();
    common::assert_success("pgveil guard", &out);
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn pgveil_guard_output_applies_twice_and_validates_once_old_rows_are_encrypted() {
    Cluster::shared().psql_direct("create database guard_apply");
    // An existing table with an old plaintext row, and e-mail as bytea.
    let (ok, err) = psql_in(
        "guard_apply",
        "create table customers (id int, full_name text, email bytea, phone text, national_id text, \
         address text, segment text); insert into customers (id, phone) values (1, '+1 555 0199')",
    );
    assert!(ok, "{err}");
    let install = guard_sql(&[]);
    for attempt in ["first", "second"] {
        let (ok, err) = psql_in("guard_apply", &install);
        assert!(ok, "{attempt} run: {err}");
    }
    let dba = direct("guard_apply").await;
    let guards = dba
        .query(
            "select conname::text, convalidated from pg_constraint where conname like 'pgveil_guard_%' order by 1",
            &[],
        )
        .await
        .unwrap();
    let guards: Vec<(String, bool)> = guards.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(guards.len(), 5, "{guards:?}");
    assert!(guards.iter().all(|(_, valid)| !valid), "{guards:?}");
    // New rows are checked at once, for text and bytea columns alike.
    for sql in [
        "insert into customers (id, phone) values (2, '+1 555 0198')",
        "insert into customers (id, email) values (3, 'plain@example.com'::bytea)",
        "insert into customers (id, email) values (4, decode('50560101', 'hex'))",
        // Randomized ciphertext in a deterministic column.
        "insert into customers (id, phone) values (5, 'pgv1:UFYBAQAAAAEAAAABhello')",
        // Headers shorter than any envelope of the mode.
        "insert into customers (id, phone) values (7, 'pgv1:UFYBAgAAAAEAAAABAAAA')",
        "insert into customers (id, email) values (8, decode('5056010200000001', 'hex'))",
    ] {
        let err = dba.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("23514"), "{sql}: {err}");
    }
    dba.simple_query(
        "insert into customers (id, email, phone) values \
         (6, decode('5056010200000001' || repeat('00', 20), 'hex'), \
         'pgv1:UFYBAgAAAAEAAAAB' || repeat('A', 22))",
    )
    .await
    .unwrap();
    // Validation fails while the old plaintext row is there.
    let validate = guard_sql(&["--validate"]);
    let (ok, err) = psql_in("guard_apply", &validate);
    assert!(!ok && err.contains("pgveil_guard_phone"), "{err}");
    dba.simple_query("update customers set phone = null where id = 1")
        .await
        .unwrap();
    let (ok, err) = psql_in("guard_apply", &validate);
    assert!(ok, "{err}");
    let valid: i64 = dba
        .query_one(
            "select count(*) from pg_constraint where conname like 'pgveil_guard_%' and convalidated",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(valid, 5);
    let (ok, err) = psql_in("guard_apply", &install);
    assert!(ok, "{err}");
}

/// What pgveil logs in this test binary.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(writer.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn missing_and_unvalidated_guards_are_warned_once_per_column() {
    let log = captured_log();
    Cluster::shared().psql_direct("create database unguarded");
    let (ok, err) = psql_in(
        "unguarded",
        &format!(
            "create table customers (id int, full_name text, email text, phone text, \
             national_id text, address text); {} \
             alter table customers drop constraint pgveil_guard_phone; \
             alter table customers validate constraint pgveil_guard_address",
            guard_sql(&[])
        ),
    );
    assert!(ok, "{err}");
    let crm = crm();
    for _ in 0..2 {
        let client =
            common::try_connect(&crm.proxy.url(SUPERUSER, SUPERUSER_PASSWORD, "unguarded"))
                .await
                .unwrap();
        client.simple_query("select 1").await.unwrap();
    }
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| log.matches(needle).count();
    assert_eq!(
        count("protected column public.customers.phone has no ciphertext guard"),
        1,
        "{log}"
    );
    assert!(log.contains("pgveil guard --policy"), "{log}");
    for column in ["email", "full_name", "national_id"] {
        let needle =
            format!("guard of protected column public.customers.{column} is not validated");
        assert_eq!(count(&needle), 1, "{log}");
    }
    assert_eq!(count("public.customers.address"), 0, "{log}");
}
