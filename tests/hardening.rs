//! Attacks on pgveil's own reading of a session: a client that changes
//! the session's settings so that pgveil and the server read things
//! differently must get no plaintext it is not granted, and must not get
//! a value past pgveil into the database unencrypted.
//!
//! - Escalation through the session's `search_path`: operators and
//!   functions in a schema the client controls must not change what
//!   pgveil's own catalog queries mean (roles, columns, guards, objects),
//!   whether the path comes from the startup options, `ALTER ROLE ...
//!   SET` or a superuser's `session_authorization`.

mod common;

use std::sync::OnceLock;

use common::crm::crm;
use common::{simple_rows, try_connect, Cluster};

/// A schema with operators that answer `true` for any two `name`s,
/// `oid`s and `text`s, and a login role that is a member of `support`
/// whose own `search_path` puts it first. Made once per test binary.
fn shadow_operators() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        crm();
        Cluster::shared().psql_direct(
            "create schema shadow authorization support_user;
             create function shadow.always(name, name) returns boolean
               language sql immutable as 'select true';
             create operator shadow.= (leftarg = name, rightarg = name, function = shadow.always);
             create function shadow.always(oid, oid) returns boolean
               language sql immutable as 'select true';
             create operator shadow.= (leftarg = oid, rightarg = oid, function = shadow.always);
             create function shadow.always(text, text) returns boolean
               language sql immutable as 'select true';
             create operator shadow.= (leftarg = text, rightarg = text, function = shadow.always);
             create function shadow.strpos(text, text) returns integer
               language sql immutable as 'select 0';
             create function public.add_customer(name text) returns void
               language sql as 'insert into customers (full_name) values (name)';
             grant execute on function public.add_customer(text) to public;
             grant usage on schema shadow to public;
             create role mallory login password 'pw' in role support;
             alter role mallory set search_path = shadow, pg_catalog, public;",
        );
    });
}

/// A customer written through pgveil by the CRM application; its id.
async fn customer(name: &str, national_id: &str) -> i64 {
    let app = crm().connect("crm_user").await;
    let rows = app
        .query_one(
            "insert into customers (full_name, email, national_id) values ($1, $2, $3) returning id",
            &[&name, &format!("{national_id}@example.com"), &national_id],
        )
        .await
        .unwrap();
    rows.get(0)
}

/// What `user` reads of customer `id`'s name and national ID through
/// pgveil, with `options` in the startup packet, declaring the `kyc`
/// purpose.
async fn read_as(user: &str, options: &str, id: i64) -> Vec<Option<String>> {
    let url = format!(
        "{} options='{options}'",
        crm().proxy.url(user, "pw", "postgres")
    );
    let client = try_connect(&url).await.unwrap();
    let rows = client
        .simple_query(&format!(
            "set pgveil.purpose = 'kyc'; select full_name, national_id from customers where id = {id}"
        ))
        .await
        .unwrap();
    simple_rows(&rows).pop().expect("the customer")
}

/// What support is granted: masks, never the values.
fn assert_masked(read: &[Option<String>], name: &str, national_id: &str) {
    let crm = crm();
    assert_eq!(
        read,
        [
            Some(crm.mask("full_name", name)),
            Some(crm.mask("national_id", national_id)),
        ],
        "support must see masks"
    );
}

#[tokio::test]
async fn operators_in_the_startup_search_path_do_not_widen_roles() {
    shadow_operators();
    let id = customer("Zhou Xun", "110101199001011234").await;
    for options in [
        "-c search_path=shadow,pg_catalog,public",
        "-c search_path=shadow,public,pg_catalog",
    ] {
        let read = read_as("support_user", options, id).await;
        assert_masked(&read, "Zhou Xun", "110101199001011234");
    }
}

#[tokio::test]
async fn operators_in_a_role_search_path_do_not_widen_roles() {
    shadow_operators();
    let id = customer("Chen Kun", "110101198502021111").await;
    let read = read_as("mallory", "", id).await;
    assert_masked(&read, "Chen Kun", "110101198502021111");
}

#[tokio::test]
async fn login_is_not_slowed_by_a_shadowed_oid_equality() {
    shadow_operators();
    let id = customer("Li Na", "110101197003033333").await;
    let started = std::time::Instant::now();
    let read = read_as(
        "support_user",
        "-c search_path=shadow,pg_catalog,public",
        id,
    )
    .await;
    assert_masked(&read, "Li Na", "110101197003033333");
    // A cross product of pg_roles and pg_auth_members would still run
    // in a backend after pgveil gave up; none is left behind.
    let busy = Cluster::shared().psql_direct(
        "select count(*) from pg_stat_activity where state = 'active' \
         and query like '%member_of%' and pid <> pg_backend_pid()",
    );
    assert_eq!(busy.trim(), "0", "a catalog query is still running");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn roles_are_those_of_the_login_whatever_the_session_becomes() {
    shadow_operators();
    let id = customer("Sun Li", "110101196004044444").await;
    let client = crm()
        .proxy
        .connect_as("postgres", common::SUPERUSER_PASSWORD)
        .await;
    let rows = client
        .simple_query(&format!(
            "set session authorization kyc_user; set pgveil.purpose = 'kyc'; \
             select session_user, national_id from customers where id = {id}"
        ))
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows),
        [[Some("kyc_user".to_owned()), None]],
        "the superuser logged in, and is granted nothing"
    );
}

#[tokio::test]
async fn functions_in_the_search_path_do_not_hide_server_side_objects() {
    shadow_operators();
    // `strpos` answering 0 would hide that add_customer writes customers.
    let url = format!(
        "{} options='-c search_path=shadow,pg_catalog,public'",
        crm().proxy.url("crm_user", "pw", "postgres")
    );
    let client = try_connect(&url).await.unwrap();
    let err = client
        .simple_query("select public.add_customer('Hidden Writer')")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err), Some("0A000"), "{err}");
    let stored = Cluster::shared()
        .psql_direct("select count(*) from customers where full_name = 'Hidden Writer'");
    assert_eq!(stored.trim(), "0");
}

/// The statement of the `standard_conforming_strings` attack: with the
/// setting on, one row with `segment` `a\` and no national ID (the rest
/// is a comment); with it off, `segment` is `a', null) -- ` and the
/// national ID is `secret`.
fn backslash_insert(secret: &str) -> String {
    format!(
        "insert into customers (segment, national_id) values ('a\\', null) -- ', '{secret}') --'\n"
    )
}

/// Every stored value of the customers whose segment starts with `a`
/// and that hold `secret` anywhere, as PostgreSQL stores them.
fn stored_with(secret: &str) -> String {
    Cluster::shared().psql_direct(&format!(
        "select concat_ws('|', segment, national_id) from customers \
         where concat_ws('|', full_name, email, phone, national_id, address, segment) like '%{secret}%'"
    ))
}

/// The national IDs of the customers of `segment`, as the CRM reads them
/// under the `kyc` purpose.
async fn national_ids(segment: &str) -> Vec<Option<String>> {
    let app = crm().connect("crm_user").await;
    app.simple_query("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    let rows = app
        .query(
            "select national_id from customers where segment = $1 order by id",
            &[&segment],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn backslashes_are_read_as_the_server_reads_them_once_it_has_said_so() {
    crm();
    // With backslash_quote off the server refuses `\'` itself, as it
    // would without pgveil.
    for (i, (settings, accepted)) in [
        ("set standard_conforming_strings = off", true),
        (
            "set standard_conforming_strings = off; set backslash_quote = on",
            true,
        ),
        (
            "set standard_conforming_strings = off; set escape_string_warning = off",
            true,
        ),
        (
            "set standard_conforming_strings = off; set backslash_quote = off",
            false,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let secret = format!("3701021980010{i}1111");
        for extended in [false, true] {
            let app = crm().connect("crm_user").await;
            app.simple_query(settings).await.unwrap();
            let sql = backslash_insert(&secret);
            let result = if extended {
                app.execute(sql.as_str(), &[]).await.map(|_| ())
            } else {
                app.simple_query(&sql).await.map(|_| ())
            };
            match result {
                Ok(()) => assert!(accepted, "{settings}: accepted"),
                Err(e) => assert!(!accepted, "{settings}: {e}"),
            }
        }
        assert_eq!(stored_with(&secret), "", "{settings}: plaintext stored");
        let stored = national_ids("a', null) -- ").await;
        let found = stored
            .iter()
            .filter(|v| v.as_deref() == Some(secret.as_str()));
        assert_eq!(
            found.count(),
            if accepted { 2 } else { 0 },
            "{settings}: the national ID the server read is stored encrypted"
        );
    }
}

#[tokio::test]
async fn backslashes_sent_before_the_server_has_said_so_read_as_pgveil_read_them() {
    crm();
    let secret = "440301199912129999";
    let app = crm().connect("crm_user").await;
    // The SET and the INSERT in one Query: pgveil reads the INSERT before
    // the server reports the new setting.
    app.simple_query(&format!(
        "set standard_conforming_strings = off; {}",
        backslash_insert(secret)
    ))
    .await
    .unwrap();
    // A function that turns the setting off, which pgveil never sees.
    Cluster::shared().psql_direct(
        "create or replace function public.loosen() returns text language sql \
         as $$ select set_config('standard_' || 'conforming_strings', 'off', false) $$",
    );
    let app = crm().connect("crm_user").await;
    app.simple_query(&format!(
        "select public.loosen(); {}",
        backslash_insert(secret)
    ))
    .await
    .unwrap();
    // Pipelined: the INSERT is sent before the SET's answer arrives.
    let app = crm().connect("crm_user").await;
    let insert = backslash_insert(secret);
    let (set, insert) = tokio::join!(
        app.simple_query("set standard_conforming_strings = off"),
        app.simple_query(&insert)
    );
    set.unwrap();
    insert.unwrap();
    assert_eq!(stored_with(secret), "", "plaintext stored");
    assert!(
        national_ids("a\\").await.len() >= 3,
        "read as pgveil read them"
    );
}

/// Whether the shared cluster's server log holds `text`.
fn server_log_holds(text: &str) -> bool {
    let log = std::fs::read(Cluster::shared().dir().join("server.log")).unwrap();
    log.windows(text.len()).any(|w| w == text.as_bytes())
}

/// COPY data that reads as two fields in UTF-8 and three in SJIS: in
/// SJIS `81 5C` is one character, in UTF-8 the `5C` is a backslash that
/// escapes the tab after it.
fn two_readings(secret: &str) -> Vec<u8> {
    let mut row = b"\xe4\xb8\x81\\\t".to_vec();
    row.extend_from_slice(secret.as_bytes());
    row.extend_from_slice(b"\tnone\n");
    row
}

#[tokio::test]
async fn copy_data_is_split_in_the_encoding_its_encoding_option_names() {
    crm();
    let secret = "sjis.secret@example.com";
    let app = crm().connect("crm_user").await;
    let data = two_readings(secret);
    let result = common::copy_in(
        &app,
        "copy customers (segment, email) from stdin with (encoding 'SJIS')",
        [&data[..]],
    )
    .await;
    assert!(
        result.is_err(),
        "three fields for two columns, as SJIS reads them"
    );
    assert_eq!(stored_with("sjis.secret"), "");
    assert!(!server_log_holds(secret), "the secret reached the server");
    // Read in the encoding it names, such data is encrypted.
    let app = crm().connect("crm_user").await;
    common::copy_in(
        &app,
        "copy customers (segment, email) from stdin with (encoding 'LATIN1')",
        [&b"caf\xe9\tlatin.one@example.com\n"[..]],
    )
    .await
    .unwrap();
    let rows = app
        .query(
            "select segment from customers where email = $1",
            &[&"latin.one@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, &str>(0), "café");
    assert_eq!(stored_with("latin.one"), "");
}

/// Read in UTF-8, a segment and a NULL email (the rest is a comment); in
/// GBK, where `81 5C` is one character and the backslash is gone, an
/// email holding `secret`.
fn gbk_insert(secret: &str) -> String {
    format!("insert into customers (segment, email) values (E'\u{4e01}\\', 'null) -- {secret}')")
}

#[tokio::test]
async fn statements_sent_before_a_change_of_client_encoding_is_answered_are_refused() {
    crm();
    let app = crm().connect("crm_user").await;
    let sql = gbk_insert("gbk.secret@example.com");
    let (set, insert) = tokio::join!(
        app.simple_query("set client_encoding = 'GBK'"),
        app.simple_query(&sql)
    );
    set.unwrap();
    let err = insert.unwrap_err();
    assert_eq!(common::sqlstate(&err), Some("0A000"), "{err}");
    let message = err.as_db_error().unwrap().message();
    assert!(message.contains("client_encoding"), "{message}");
    assert_eq!(stored_with("gbk.secret"), "");
    assert!(!server_log_holds("gbk.secret"));
    // Once the change is answered, pgveil reads the statement in GBK too,
    // and encrypts the email the server sees.
    let app = crm().connect("crm_user").await;
    app.simple_query("set client_encoding = 'GBK'")
        .await
        .unwrap();
    app.simple_query(&gbk_insert("gbk.later@example.com"))
        .await
        .unwrap();
    assert_eq!(stored_with("gbk.later"), "");
}

#[tokio::test]
async fn copy_after_something_ran_in_its_batch_is_refused() {
    use common::{extended, message, RawClient};
    let crm = crm();
    Cluster::shared().psql_direct("grant crm_app to trust_user");
    let (mut raw, _) = RawClient::login(crm.proxy.addr).await;
    // The SET and the COPY in one batch: the server reports the new
    // encoding only at its end, after the COPY's data.
    let set = extended("set client_encoding to 'GBK'", &[], &[]);
    let copy = extended("copy customers (full_name, segment) from stdin", &[], &[]);
    let without_sync = |m: &[u8]| m[..m.len() - 5].to_vec();
    raw.send(&[without_sync(&set), copy].concat()).await;
    let (_, error) = raw.rows_until_ready().await;
    let (code, text) = error.expect("an error");
    assert_eq!(code, "0A000", "{text}");
    assert!(text.contains("client_encoding"), "{text}");
    // The session goes on.
    raw.send(&message(b'Q', b"select 1\0")).await;
    let (rows, error) = raw.rows_until_ready().await;
    assert_eq!((rows.len(), error), (1, None));
}

/// Writes a customer straight to PostgreSQL, around pgveil, as rows
/// written before it was deployed are: the guards are dropped and added
/// again (`NOT VALID`) in the same transaction. Its id.
fn stored_around_pgveil(values: &str) -> i64 {
    let guards = ["full_name", "email", "phone", "national_id", "address"];
    let drop: String = guards
        .iter()
        .map(|c| format!("alter table customers drop constraint pgveil_guard_{c};"))
        .collect();
    let script = format!(
        "begin;\n{drop}\ninsert into customers (full_name, email, phone, national_id, address, segment) \
         values ({values}, 'legacy');\n{}commit;\n",
        pgveil::protect::guard::install_sql(&crm().policy)
    );
    Cluster::shared().psql_direct(&script);
    Cluster::shared()
        .psql_direct("select max(id) from customers where segment = 'legacy'")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn values_not_stored_encrypted_are_revealed_by_the_columns_rules() {
    let crm = crm();
    let name = "Legacy Lin";
    let email = "legacy.lin@example.com";
    let national_id = "pgv1:UFYBAR110101199001017777";
    let id = stored_around_pgveil(&format!(
        "'{name}', '{email}', '+86 138 0000 7777', '{national_id}', '1 Old Street'"
    ));
    // Its twin, written through pgveil, for the pseudonym.
    let app = crm.connect("crm_user").await;
    app.execute(
        "insert into customers (email, segment) values ($1, 'legacy-twin')",
        &[&email],
    )
    .await
    .unwrap();
    let twin = |user: &'static str| async move {
        let client = crm.connect(user).await;
        let row = client
            .query_one(
                "select email from customers where segment = 'legacy-twin'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, Option<String>>(0)
    };
    let sql =
        format!("select full_name, email, national_id, address from customers where id = {id}");
    for (user, expected) in [
        (
            "crm_user",
            [
                Some(name.to_owned()),
                Some(email.to_owned()),
                None,
                Some("1 Old Street".to_owned()),
            ],
        ),
        (
            "support_user",
            [
                Some(crm.mask("full_name", name)),
                Some(crm.mask("email", email)),
                Some(crm.mask("national_id", national_id)),
                Some(crm.mask("address", "1 Old Street")),
            ],
        ),
        (
            "analyst_user",
            [None, twin("analyst_user").await, None, None],
        ),
        ("kyc_user", [None, None, None, None]),
    ] {
        let client = crm.connect(user).await;
        // Simple protocol: a RowDescription with each result.
        let simple = simple_rows(&client.simple_query(&sql).await.unwrap());
        assert_eq!(simple, [expected.to_vec()], "{user}, simple protocol");
        // Extended: rows of a statement described before, in binary.
        let statement = client.prepare(&sql).await.unwrap();
        for _ in 0..2 {
            let row = client.query_one(&statement, &[]).await.unwrap();
            let got: Vec<Option<String>> = (0..4).map(|i| row.get(i)).collect();
            assert_eq!(got, expected.to_vec(), "{user}, extended protocol");
        }
    }
    // Under the purpose it is granted, the KYC officer reads the national
    // ID that was stored unencrypted as it is.
    let kyc = crm.connect("kyc_user").await;
    kyc.simple_query("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    let row = kyc
        .query_one("select national_id from customers where id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<&str>>(0), Some(national_id));
}

#[tokio::test]
async fn guards_refuse_values_merely_shaped_like_ciphertext() {
    let crm = crm();
    // Dynamic SQL hides the table from pgveil; the guard stops it.
    let app = crm.connect("crm_user").await;
    let err = app
        .simple_query(
            "do $$ begin execute 'insert into cust' || 'omers (national_id) \
             values (''pgv1:UFYBAR110101199001015555'')'; end $$",
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err), Some("23514"), "{err}");
    assert_eq!(stored_with("110101199001015555"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_values_not_stored_encrypted_are_recorded_as_such() {
    use pgveil::audit::AuditConfig;
    let dir = tempfile::tempdir().unwrap();
    let mut audited = common::crm::setup(Some(AuditConfig {
        dir: dir.path().to_owned(),
        ..AuditConfig::default()
    }));
    let id = stored_around_pgveil("'Audit Legacy', null, null, null, null");
    let support = audited.connect("support_user").await;
    let rows = support
        .simple_query(&format!("select full_name from customers where id = {id}"))
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows),
        [[Some(crm().mask("full_name", "Audit Legacy"))]]
    );
    drop(support);
    tokio::task::block_in_place(|| audited.proxy.shutdown());
    let (records, text) = common::audit_log(dir.path());
    assert!(!text.contains("Audit Legacy"), "a value in the audit log");
    let read = records
        .into_iter()
        .filter(|r| r["event"] == "statement" && r["role"] == "support_user")
        .flat_map(|r| r["columns"].as_array().cloned().unwrap_or_default())
        .find(|c| c["column"] == "public.customers.full_name")
        .expect("the read is recorded");
    assert_eq!(read["access"], "read");
    assert_eq!(read["decision"], "masked");
    assert_eq!(read["unencrypted"], true);
}

#[tokio::test]
async fn copy_of_values_not_stored_encrypted_reveals_them_by_the_columns_rules() {
    use tokio_postgres::types::Type;
    let crm = crm();
    let name = "Copy Legacy";
    stored_around_pgveil(&format!("'{name}', null, null, null, 'Copy Street'"));
    let support = crm.connect("support_user").await;
    // The legacy rows of this test only: by their masked name's initials
    // nobody else uses.
    let masked = crm.mask("full_name", name);
    for (sql, csv) in [
        (
            "copy customers (full_name, address, segment) to stdout",
            false,
        ),
        (
            "copy customers (full_name, address, segment) to stdout with (format csv)",
            true,
        ),
        ("copy customers to stdout", false),
    ] {
        let data = String::from_utf8(common::copy_out(&support, sql).await).unwrap();
        assert!(
            !data.contains(name) && !data.contains("Copy Street"),
            "{sql}: {data}"
        );
        let delimiter = if csv { ',' } else { '\t' };
        assert!(
            data.lines()
                .any(|l| l.split(delimiter).any(|f| f == masked)),
            "{sql}: the name masked"
        );
    }
    let rows = common::binary_copy_out(
        &support,
        "copy customers (full_name, address) to stdout with (format binary)",
        &[Type::TEXT, Type::TEXT],
    )
    .await
    .unwrap();
    let name_bytes = name.as_bytes().to_vec();
    assert!(rows.iter().all(|r| r[0].as_ref() != Some(&name_bytes)));
    assert!(rows
        .iter()
        .any(|r| r[0].as_deref() == Some(masked.as_bytes())));
}

#[tokio::test]
async fn views_of_values_not_stored_encrypted_reveal_them_by_the_columns_rules() {
    let crm = crm();
    static VIEW: OnceLock<()> = OnceLock::new();
    VIEW.get_or_init(|| {
        Cluster::shared().psql_direct(
            "create view public.customer_cards as select id, full_name as name, segment \
             from customers; grant select on public.customer_cards to support, crm_app",
        );
    });
    let name = "View Legacy";
    let id = stored_around_pgveil(&format!("'{name}', null, null, null, null"));
    let sql = format!("select name from customer_cards where id = {id}");
    let support = crm.connect("support_user").await;
    let simple = simple_rows(&support.simple_query(&sql).await.unwrap());
    assert_eq!(simple, [[Some(crm.mask("full_name", name))]]);
    let row = support.query_one(sql.as_str(), &[]).await.unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0),
        Some(crm.mask("full_name", name))
    );
    let app = crm.connect("crm_user").await;
    let row = app.query_one(sql.as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, Option<&str>>(0), Some(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pgveils_view_of_the_purpose_decides_and_is_recorded() {
    use pgveil::audit::AuditConfig;
    let id = customer("Purpose Pan", "110101198808088888").await;
    Cluster::shared().psql_direct(
        "create or replace function public.claim_kyc() returns text language sql \
         as $$ select set_config('pgv' || 'eil.purpose', 'kyc', false) $$; \
         grant execute on function public.claim_kyc() to public",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut audited = common::crm::setup(Some(AuditConfig {
        dir: dir.path().to_owned(),
        ..AuditConfig::default()
    }));
    let kyc = audited.connect("kyc_user").await;
    kyc.batch_execute("set pgveil.actor = 'purpose-test'")
        .await
        .unwrap();
    let rows = kyc
        .simple_query(&format!(
            "select public.claim_kyc(); select current_setting('pgveil.purpose'), national_id \
             from customers where id = {id}"
        ))
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows)[1],
        [Some("kyc".to_owned()), None],
        "the server believes kyc; pgveil does not, and reveals nothing"
    );
    let rows = kyc
        .simple_query(&format!(
            "set pgveil.purpose = 'kyc'; select national_id from customers where id = {id}"
        ))
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows),
        [[Some("110101198808088888".to_owned())]],
        "declared to pgveil"
    );
    drop(kyc);
    tokio::task::block_in_place(|| audited.proxy.shutdown());
    let (records, _) = common::audit_log(dir.path());
    let reads: Vec<(Option<&str>, &str)> = records
        .iter()
        .filter(|r| r["event"] == "statement" && r["actor"] == "purpose-test")
        .flat_map(|r| {
            let purpose = r["purpose"].as_str();
            r["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["column"] == "public.customers.national_id")
                .map(move |c| (purpose, c["decision"].as_str().unwrap_or("")))
        })
        .collect();
    assert_eq!(reads, [(None, "null"), (Some("kyc"), "plaintext")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_statements_are_answered_with_the_audit_log_on() {
    use pgveil::audit::AuditConfig;
    let dir = tempfile::tempdir().unwrap();
    let audited = common::crm::setup(Some(AuditConfig {
        dir: dir.path().to_owned(),
        ..AuditConfig::default()
    }));
    let app = audited.connect("crm_user").await;
    for sql in ["", " ", "\n\t", "-- nothing", "/* nothing */"] {
        app.simple_query(sql).await.unwrap();
        app.execute(sql, &[]).await.unwrap();
    }
    let rows = simple_rows(&app.simple_query("select 1").await.unwrap());
    assert_eq!(rows, [[Some("1".to_owned())]]);
}

/// A Parse of `sql` as the statement `name`, with no parameter types.
fn parse_message(name: &str, sql: &str) -> Vec<u8> {
    let mut body = format!("{name}\0{sql}\0").into_bytes();
    body.extend_from_slice(&[0, 0]);
    common::message(b'P', &body)
}

/// A Bind of the statement `name` to the unnamed portal with one text
/// value, an Execute of it, and a Sync.
fn bind_execute_sync(name: &str, value: &str) -> Vec<u8> {
    let mut bind = format!("\0{name}\0").into_bytes();
    bind.extend_from_slice(&[0, 0, 0, 1]);
    bind.extend_from_slice(&(value.len() as i32).to_be_bytes());
    bind.extend_from_slice(value.as_bytes());
    bind.extend_from_slice(&[0, 0]);
    [
        common::message(b'B', &bind),
        common::message(b'E', &[0, 0, 0, 0, 0]),
        common::message(b'S', &[]),
    ]
    .concat()
}

#[tokio::test]
async fn a_bind_encrypts_for_the_statement_the_server_kept() {
    use common::RawClient;
    let crm = crm();
    Cluster::shared().psql_direct("grant crm_app to trust_user");
    let insert = "insert into customers (email, segment) values ($1, 'kept-statement')";
    let sync = common::message(b'S', &[]);
    for (i, (name, between)) in [
        // The name exists: the server refuses the second Parse (42P05).
        ("kept", parse_message("kept", "select $1::text")),
        // An error first: the server skips the unnamed Parse after it.
        (
            "",
            [
                parse_message("bad", "select * from no_such_table"),
                parse_message("", "select $1::text"),
            ]
            .concat(),
        ),
        // A Parse PostgreSQL cannot read (a byte after its types).
        ("", {
            let mut body = b"\0select $1::text\0\0\0\0".to_vec();
            body.push(0);
            common::message(b'P', &body)
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut raw, _) = RawClient::login(crm.proxy.addr).await;
        let secret = format!("kept.{i}.secret@example.com");
        raw.send(&[parse_message(name, insert), sync.clone()].concat())
            .await;
        assert_eq!(raw.rows_until_ready().await.1, None);
        raw.send(&[between, sync.clone()].concat()).await;
        assert!(
            raw.rows_until_ready().await.1.is_some(),
            "the server refused"
        );
        // Pipelined with the next batch, and alone.
        raw.send(&bind_execute_sync(name, &secret)).await;
        let (_, error) = raw.rows_until_ready().await;
        assert_eq!(error, None, "case {i}: the INSERT ran, encrypted");
        assert_eq!(stored_with(&secret), "", "case {i}: plaintext stored");
    }
    let app = crm.connect("crm_user").await;
    let rows = app
        .query(
            "select email from customers where segment = 'kept-statement' order by id",
            &[],
        )
        .await
        .unwrap();
    let emails: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        emails,
        (0..3)
            .map(|i| format!("kept.{i}.secret@example.com"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn cursor_rows_executed_by_name_are_revealed_by_the_columns_rules() {
    use common::{message, query, RawClient};
    let crm = crm();
    Cluster::shared().psql_direct("grant crm_app to trust_user");
    let id = stored_around_pgveil("'Cursor Legacy', null, null, '110101199901019999', null");
    let (mut raw, _) = RawClient::login(crm.proxy.addr).await;
    raw.send(&query(&format!(
        "begin; declare c cursor for select national_id, full_name from customers where id = {id}"
    )))
    .await;
    assert_eq!(raw.rows_until_ready().await.1, None);
    // Execute of the cursor's portal, with no Describe: the CRM without
    // the kyc purpose gets no national ID.
    let mut execute = b"c\0".to_vec();
    execute.extend_from_slice(&0i32.to_be_bytes());
    raw.send(&[message(b'E', &execute), message(b'S', &[])].concat())
        .await;
    let mut rows = Vec::new();
    loop {
        let (tag, body) = raw.expect_message().await;
        assert_ne!(tag, b'T', "pgveil's own Describe is not passed on");
        match tag {
            b'D' => rows.push(body),
            b'E' => panic!("{}", String::from_utf8_lossy(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(rows.len(), 1);
    let text = String::from_utf8_lossy(&rows[0]);
    assert!(!text.contains("110101199901019999"), "{text}");
    assert!(text.contains("Cursor Legacy"), "the name, granted: {text}");
    raw.send(&query("rollback")).await;
    assert_eq!(raw.rows_until_ready().await.1, None);
}

#[tokio::test]
async fn values_passed_through_expressions_are_refused_while_legacy_rows_may_remain() {
    let crm = crm();
    let id = stored_around_pgveil("'Through Legacy', null, null, '110101197707077777', null");
    // The guards are NOT VALID again: the column may hold plaintext that
    // only a bare column reference can be checked for.
    let support = crm.connect("support_user").await;
    for sql in [
        format!("select coalesce(national_id, '') from customers where id = {id}"),
        format!("select case when id > 0 then national_id end from customers where id = {id}"),
        format!("select national_id::varchar from customers where id = {id}"),
        format!("select (select national_id from customers where id = {id})"),
        format!("select national_id from customers where id = {id} union all select 'x'"),
    ] {
        let err = support.simple_query(&sql).await.unwrap_err();
        assert_eq!(common::sqlstate(&err), Some("0A000"), "{sql}: {err}");
        let message = err.as_db_error().unwrap().message();
        assert!(
            message.contains("public.customers.national_id") && message.contains("guard"),
            "{message}"
        );
        assert!(!message.contains("110101197707077777"));
    }
    let rows = support
        .simple_query(&format!(
            "select national_id from customers where id = {id}"
        ))
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows),
        [[Some(crm.mask("national_id", "110101197707077777"))]]
    );
}
