//! Computing on protected columns through pgveil: for every role of the
//! sample CRM, in the simple and the extended protocol, an expression that
//! computes on a protected value where a statement reads it is refused
//! with `0A000` and a message naming the column and the construct, no row
//! is returned, and the session goes on serving; values passed through as
//! they are stored are still revealed.

mod common;

use common::crm::{crm, USERS};
use common::{simple_rows, sqlstate};

/// A customer every form below reads, with every protected column set.
const EMAIL: &str = "computed.reader@example.com";
const NAME: &str = "Computed Reader";
const NATIONAL_ID: &str = "CR-123456789";
const SEGMENT: &str = "computed";

async fn customer() {
    // Once, whichever test comes first: two at once would both insert.
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(insert_customer).await;
}

async fn insert_customer() {
    let app = crm().connect("crm_user").await;
    let exists = app
        .simple_query(&format!("select id from customers where email = '{EMAIL}'"))
        .await
        .unwrap();
    if simple_rows(&exists).is_empty() {
        app.simple_query(&format!(
            "insert into customers (full_name, email, phone, national_id, address, segment) \
             values ('{NAME}', '{EMAIL}', '+1 555 0100', '{NATIONAL_ID}', '1 Main St', '{SEGMENT}')"
        ))
        .await
        .unwrap();
    }
}

/// Statements computing on a protected column, with the construct and
/// the column their refusal must name.
const COMPUTED: &[(&str, &str, &str)] = &[
    (
        "select upper(full_name) from customers",
        "upper()",
        "full_name",
    ),
    ("select length(email) from customers", "length()", "email"),
    (
        "select substr(national_id, 1, 3) from customers",
        "substr()",
        "national_id",
    ),
    ("select md5(phone) from customers", "md5()", "phone"),
    ("select email || '' from customers", "operator ||", "email"),
    (
        "select concat(email, '!') from customers",
        "concat()",
        "email",
    ),
    (
        "select format('%s', address) from customers",
        "format()",
        "address",
    ),
    (
        "select email::bytea from customers",
        "a cast to bytea",
        "email",
    ),
    (
        "select email::char(3) from customers",
        "a cast to char(3)",
        "email",
    ),
    (
        "select email::varchar(5) from customers",
        "a cast to varchar(5)",
        "email",
    ),
    (
        "select greatest(email, 'a') from customers",
        "GREATEST()",
        "email",
    ),
    ("select max(email) from customers", "max()", "email"),
    (
        "select string_agg(email, ',') from customers",
        "string_agg()",
        "email",
    ),
    (
        "select array_agg(email) from customers",
        "array_agg()",
        "email",
    ),
    (
        "select jsonb_agg(email) from customers",
        "jsonb_agg()",
        "email",
    ),
    (
        "select json_agg(email) from customers",
        "json_agg()",
        "email",
    ),
    (
        "select to_jsonb(email) from customers",
        "to_jsonb()",
        "email",
    ),
    (
        "select jsonb_build_object('e', email) from customers",
        "jsonb_build_object()",
        "email",
    ),
    (
        "select row(email) from customers",
        "a row constructor",
        "email",
    ),
    (
        "select (email, phone) from customers",
        "a row constructor",
        "email",
    ),
    (
        "select array[email] from customers",
        "an ARRAY constructor",
        "email",
    ),
    ("select c from customers c", "a whole-row value", "address"),
    (
        "select to_jsonb(c) from customers c",
        "to_jsonb()",
        "address",
    ),
    (
        "select row_to_json(c) from customers c",
        "row_to_json()",
        "address",
    ),
    (
        "select coalesce(upper(email), '') from customers",
        "upper()",
        "email",
    ),
    (
        "select case when id > 0 then lower(email) end from customers",
        "lower()",
        "email",
    ),
    (
        "select id from customers order by lower(email)",
        "lower()",
        "email",
    ),
    (
        "select lower(email), count(*) from customers group by 1",
        "lower()",
        "email",
    ),
    (
        "select upper(e) from (select email as e from customers) s",
        "upper()",
        "email",
    ),
    (
        "with s as (select md5(email) as h from customers) select h from s",
        "md5()",
        "email",
    ),
    (
        "select upper((select email from customers limit 1))",
        "upper()",
        "email",
    ),
    (
        "update customers set segment = segment where false returning upper(email)",
        "upper()",
        "email",
    ),
    (
        "select * from customers c, lateral upper(c.email) u",
        "upper()",
        "email",
    ),
    (
        "values (upper((select email from customers limit 1)))",
        "upper()",
        "email",
    ),
];

/// Asserts `result` is pgveil's refusal naming `construct` and `column`,
/// quoting no value.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    sql: &str,
    construct: &str,
    column: &str,
) {
    let err = result.expect_err(sql);
    assert_eq!(sqlstate(&err), Some("0A000"), "{sql}: {err}");
    let message = err.as_db_error().unwrap().message();
    assert!(message.starts_with("pgveil: "), "{sql}: {message}");
    assert!(
        message.contains(&format!("public.customers.{column}")) && message.contains(construct),
        "{sql}: {message}"
    );
    assert!(!message.contains("condition"), "{sql}: {message}");
    for value in [EMAIL, NAME, NATIONAL_ID, "computed.reader"] {
        assert!(!message.contains(value), "{sql}: {message}");
    }
}

#[tokio::test]
async fn computing_on_a_protected_column_is_refused_for_every_role_in_both_protocols() {
    customer().await;
    for (user, _) in USERS {
        let client = crm().connect(user).await;
        for (sql, construct, column) in COMPUTED {
            let simple = client.simple_query(sql).await;
            assert_refused(simple, sql, construct, column);
            let extended = client.query(*sql, &[]).await;
            assert_refused(extended, sql, construct, column);
            let prepared = client.prepare(sql).await;
            assert_refused(prepared, sql, construct, column);
        }
        // The session goes on serving, in both protocols.
        let rows = simple_rows(&client.simple_query("select 'still serving'").await.unwrap());
        assert_eq!(rows, [[Some("still serving".to_owned())]], "{user}");
        let row = client
            .query_one("select $1::text", &[&"yes"])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "yes", "{user}");
    }
}

#[tokio::test]
async fn a_refusal_inside_a_transaction_aborts_it_like_an_error() {
    customer().await;
    let app = crm().connect("crm_user").await;
    app.batch_execute("begin").await.unwrap();
    assert_refused(
        app.simple_query("select md5(email) from customers").await,
        "md5",
        "md5()",
        "email",
    );
    let err = app.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("25P02"), "{err}");
    app.batch_execute("rollback").await.unwrap();
    let rows = simple_rows(&app.simple_query("select 2").await.unwrap());
    assert_eq!(rows, [[Some("2".to_owned())]]);
}

#[tokio::test]
async fn values_passed_through_as_stored_are_revealed_per_role() {
    customer().await;
    let condition = format!("email = '{EMAIL}'");
    for (user, expected) in [
        ("crm_user", Some(EMAIL.to_owned())),
        ("support_user", Some(crm().mask("email", EMAIL))),
    ] {
        let client = crm().connect(user).await;
        for sql in [
            format!("select email from customers where {condition}"),
            format!("select email::text from customers where {condition}"),
            format!("select email::varchar from customers where {condition}"),
            format!("select coalesce(email, 'none') from customers where {condition}"),
            format!("select case when id > 0 then email end from customers where {condition}"),
            format!("select nullif(email, 'other@example.com') from customers where {condition}"),
            format!("select lag(email, 0) over (order by id) from customers where {condition}"),
            format!("select (select email from customers where {condition})"),
        ] {
            let rows = simple_rows(&client.simple_query(&sql).await.unwrap());
            assert_eq!(rows, [[expected.clone()]], "{user}: {sql}");
            let rows = client.query(&sql, &[]).await.unwrap();
            assert_eq!(rows.len(), 1, "{user}: {sql}");
            assert_eq!(
                rows[0].get::<_, Option<String>>(0),
                expected,
                "{user}: {sql}"
            );
        }
        let sql = format!(
            "select count(email), count(distinct email), bool_and(email is not null) \
             from customers where {condition}"
        );
        let rows = simple_rows(&client.simple_query(&sql).await.unwrap());
        assert_eq!(
            rows,
            [[
                Some("1".to_owned()),
                Some("1".to_owned()),
                Some("t".to_owned())
            ]],
            "{user}"
        );
    }
}
