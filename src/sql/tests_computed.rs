//! Values computed on protected columns where a statement reads them
//! (`super::computed`): refused, naming the construct and the column;
//! values passed through as they are stored still work.

use super::tests::{ct, refused, refused_known, run, run_known, sql_of, typed, EMAIL, FULL_NAME};
use super::Verdict;
use crate::wire::sqlstate::FEATURE_NOT_SUPPORTED as NOT_SUPPORTED;

const NATIONAL_ID: &str = "public.customers.national_id";

/// Asserts a `0A000` refusal naming `construct` and `column`, that is not
/// the message about conditions.
fn refused_computing(sql: &str, construct: &str, column: &str) {
    let message = refused(sql, NOT_SUPPORTED, column);
    assert!(message.contains(construct), "{sql}: {message}");
    assert!(
        message.contains("cannot be computed on"),
        "{sql}: {message}"
    );
    assert!(!message.contains("condition"), "{sql}: {message}");
}

#[test]
fn functions_operators_and_casts_on_a_protected_column_are_refused() {
    for (sql, construct, column) in [
        (
            "SELECT upper(full_name) FROM customers",
            "upper()",
            FULL_NAME,
        ),
        ("SELECT length(email) FROM customers", "length()", EMAIL),
        (
            "SELECT substr(national_id, 1, 3) FROM customers",
            "substr()",
            NATIONAL_ID,
        ),
        (
            "SELECT pg_catalog.md5(email) FROM customers",
            "md5()",
            EMAIL,
        ),
        (
            "SELECT concat(email, 'x') FROM customers",
            "concat()",
            EMAIL,
        ),
        (
            "SELECT format('%s', email) FROM customers",
            "format()",
            EMAIL,
        ),
        ("SELECT to_jsonb(email) FROM customers", "to_jsonb()", EMAIL),
        (
            "SELECT jsonb_build_object('e', email) FROM customers",
            "jsonb_build_object()",
            EMAIL,
        ),
        ("SELECT json_agg(email) FROM customers", "json_agg()", EMAIL),
        (
            "SELECT jsonb_agg(email) FROM customers",
            "jsonb_agg()",
            EMAIL,
        ),
        (
            "SELECT string_agg(email, ',') FROM customers",
            "string_agg()",
            EMAIL,
        ),
        (
            "SELECT array_agg(email) FROM customers",
            "array_agg()",
            EMAIL,
        ),
        ("SELECT min(email) FROM customers", "min()", EMAIL),
        (
            "SELECT max(full_name) FROM customers GROUP BY id",
            "max()",
            FULL_NAME,
        ),
        ("SELECT email || '' FROM customers", "operator ||", EMAIL),
        (
            "SELECT 'mailto:' || c.email FROM customers c",
            "operator ||",
            EMAIL,
        ),
        ("SELECT email ~ 'x' FROM customers", "operator ~", EMAIL),
        (
            "SELECT email::bytea FROM customers",
            "a cast to bytea",
            EMAIL,
        ),
        (
            "SELECT email::char(3) FROM customers",
            "a cast to char(3)",
            EMAIL,
        ),
        (
            "SELECT CAST(email AS varchar(5)) FROM customers",
            "a cast to varchar(5)",
            EMAIL,
        ),
        ("SELECT email::int FROM customers", "a cast to int4", EMAIL),
        (
            "SELECT email::text[] FROM customers",
            "a cast to text[]",
            EMAIL,
        ),
        ("SELECT email::name FROM customers", "a cast to name", EMAIL),
        (
            "SELECT GREATEST(email, 'a') FROM customers",
            "GREATEST()",
            EMAIL,
        ),
        (
            "SELECT LEAST(email, full_name) FROM customers",
            "LEAST()",
            EMAIL,
        ),
        (
            "SELECT coalesce(upper(email), '') FROM customers",
            "upper()",
            EMAIL,
        ),
        (
            "SELECT CASE WHEN id > 1 THEN lower(email) END FROM customers",
            "lower()",
            EMAIL,
        ),
        (
            "SELECT nullif(email, 'x') || 'y' FROM customers",
            "operator ||",
            EMAIL,
        ),
        (
            "SELECT xmlelement(name a, email) FROM customers",
            "an XML function",
            EMAIL,
        ),
        (
            "SELECT coalesce(email, '') = 'x' FROM customers",
            "operator =",
            EMAIL,
        ),
        (
            "SELECT CASE coalesce(email, '') WHEN 'x' THEN 1 END FROM customers",
            "CASE",
            EMAIL,
        ),
        (
            "SELECT lag(upper(email)) OVER (ORDER BY id) FROM customers",
            "upper()",
            EMAIL,
        ),
        ("SELECT rank(email) OVER () FROM customers", "rank()", EMAIL),
    ] {
        refused_computing(sql, construct, column);
    }
}

#[test]
fn rows_arrays_and_json_holding_a_protected_value_are_refused() {
    for (sql, construct, column) in [
        (
            "SELECT row(email) FROM customers",
            "a row constructor",
            EMAIL,
        ),
        (
            "SELECT (email, full_name) FROM customers",
            "a row constructor",
            EMAIL,
        ),
        (
            "SELECT ARRAY[email] FROM customers",
            "an ARRAY constructor",
            EMAIL,
        ),
        (
            "SELECT ARRAY(SELECT email FROM customers)",
            "ARRAY(subquery)",
            EMAIL,
        ),
        (
            "SELECT (ARRAY[email])[1] FROM customers",
            "an ARRAY constructor",
            EMAIL,
        ),
        ("SELECT c FROM customers c", "a whole-row value", EMAIL),
        ("SELECT to_jsonb(c) FROM customers c", "to_jsonb()", EMAIL),
        (
            "SELECT row_to_json(c.*) FROM customers c",
            "row_to_json()",
            EMAIL,
        ),
        (
            "SELECT (c).email FROM customers c",
            "a field selection",
            EMAIL,
        ),
        ("SELECT jsonb_agg(c) FROM customers c", "jsonb_agg()", EMAIL),
    ] {
        refused_computing(sql, construct, column);
    }
}

#[test]
fn computing_is_refused_wherever_a_statement_reads() {
    for (sql, construct) in [
        (
            "UPDATE customers SET segment = 'x' RETURNING upper(email)",
            "upper()",
        ),
        (
            "DELETE FROM customers WHERE id = 1 RETURNING md5(email)",
            "md5()",
        ),
        (
            "WITH s AS (SELECT upper(email) AS e FROM customers) SELECT 1 FROM s",
            "upper()",
        ),
        (
            "SELECT 1 FROM (SELECT length(email) AS n FROM customers) s",
            "length()",
        ),
        (
            "SELECT id FROM orders WHERE note IN (SELECT md5(email) FROM customers)",
            "md5()",
        ),
        (
            "SELECT id, (SELECT lower(email) FROM customers LIMIT 1) FROM orders",
            "lower()",
        ),
        (
            "SELECT upper((SELECT email FROM customers LIMIT 1))",
            "upper()",
        ),
        (
            "SELECT (SELECT email FROM customers LIMIT 1) || 'x'",
            "operator ||",
        ),
        (
            "COPY (SELECT upper(email) FROM customers) TO STDOUT",
            "upper()",
        ),
        (
            "VALUES (upper((SELECT email FROM customers LIMIT 1)))",
            "upper()",
        ),
        ("UPDATE customers SET segment = upper(email)", "upper()"),
        (
            "INSERT INTO orders (note) SELECT lower(email) FROM customers",
            "lower()",
        ),
        (
            "INSERT INTO orders (note) VALUES ((SELECT md5(email) FROM customers LIMIT 1))",
            "md5()",
        ),
        (
            "SELECT upper(s.e) FROM (SELECT coalesce(email, '') AS e FROM customers) s",
            "upper()",
        ),
        (
            "WITH s AS (SELECT email AS e FROM customers) SELECT length(e) FROM s",
            "length()",
        ),
        (
            "SELECT u FROM customers c, LATERAL upper(c.email) u",
            "upper()",
        ),
        (
            "SELECT * FROM customers c, LATERAL unnest(ARRAY[c.email]) u",
            "an ARRAY constructor",
        ),
        ("EXPLAIN SELECT upper(email) FROM customers", "upper()"),
        (
            "DECLARE c CURSOR FOR SELECT upper(email) FROM customers",
            "upper()",
        ),
        (
            "CREATE TABLE t AS SELECT upper(email) FROM customers",
            "upper()",
        ),
        (
            "PREPARE p AS SELECT upper(email) FROM customers WHERE id = $1",
            "upper()",
        ),
        ("SELECT 1 FROM customers GROUP BY lower(email)", "lower()"),
        ("SELECT id FROM customers ORDER BY lower(email)", "lower()"),
    ] {
        refused_computing(sql, construct, EMAIL);
    }
    // Sorting by what passes a protected value through, in an aggregate
    // or a window, is sorting by ciphertext.
    for sql in [
        "SELECT id FROM customers ORDER BY coalesce(email, '')",
        "SELECT string_agg(segment, ',' ORDER BY email) FROM customers",
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY email) FROM customers",
        "SELECT rank() OVER (ORDER BY email) FROM customers",
        "SELECT rank() OVER w FROM customers WINDOW w AS (ORDER BY email)",
    ] {
        let message = refused(sql, NOT_SUPPORTED, EMAIL);
        assert!(message.contains("ORDER BY"), "{sql}: {message}");
    }
    // Grouping or counting distinct randomized ciphertexts.
    for sql in [
        "SELECT count(DISTINCT full_name) FROM customers",
        "SELECT 1 FROM customers GROUP BY coalesce(full_name, '')",
        "SELECT row_number() OVER (PARTITION BY full_name) FROM customers",
        "SELECT count(*) FROM customers GROUP BY CUBE (full_name)",
    ] {
        let message = refused(sql, NOT_SUPPORTED, FULL_NAME);
        assert!(message.contains("randomized"), "{sql}: {message}");
    }
}

#[test]
fn values_passed_through_as_stored_are_still_read() {
    for sql in [
        "SELECT email, email AS e, c.full_name FROM customers c",
        "SELECT email::text, email::varchar, email::bpchar, CAST(email AS text) FROM customers",
        "SELECT email::pg_catalog.text, email COLLATE \"C\" FROM customers",
        "SELECT coalesce(email, 'none'), coalesce(email, full_name, '') FROM customers",
        "SELECT CASE WHEN id > 1 THEN email ELSE 'x' END FROM customers",
        "SELECT count(email), count(*), count(DISTINCT email), count(c), count(c.*) FROM customers c",
        "SELECT email IS NULL, full_name IS NOT NULL FROM customers",
        "SELECT (SELECT email FROM customers LIMIT 1), id FROM orders",
        "SELECT lag(email) OVER (ORDER BY id), lead(email, 1, full_name) OVER (ORDER BY id) \
         FROM customers",
        "SELECT first_value(email) OVER w, nth_value(full_name, 2) OVER w FROM customers \
         WINDOW w AS (PARTITION BY segment ORDER BY id)",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT e FROM (SELECT coalesce(email, '') AS e FROM customers) s",
        "SELECT email FROM customers GROUP BY email",
        "SELECT row_number() OVER (PARTITION BY email ORDER BY id) FROM customers",
        "UPDATE customers SET segment = 'x' RETURNING email, full_name",
        "COPY (SELECT email, coalesce(full_name, '') FROM customers) TO STDOUT",
        // Nothing protected is computed on.
        "SELECT upper(segment), length(note) FROM customers JOIN orders ON true",
        "SELECT upper((SELECT segment FROM customers LIMIT 1))",
        "SELECT row(id, segment), ARRAY[segment], to_jsonb(o) FROM customers, orders o",
        "SELECT CASE WHEN email IS NULL THEN 'none' ELSE upper(segment) END FROM customers",
        "SELECT array_agg(id ORDER BY id), string_agg(segment, ',') FROM customers",
        "SELECT email, count(*) FROM customers GROUP BY ROLLUP (email, segment)",
    ] {
        assert_eq!(run(sql), Verdict::Unchanged, "{sql}");
    }
    // Comparisons in a select list are comparisons: their literal is
    // encrypted, including NULLIF's and CASE's.
    for (sql, expected) in [
        (
            "SELECT email = 'x' FROM customers",
            "SELECT email = {} FROM customers",
        ),
        (
            "SELECT nullif(email, 'x') FROM customers",
            "SELECT nullif(email, {}) FROM customers",
        ),
        (
            "SELECT CASE email WHEN 'x' THEN 1 END FROM customers",
            "SELECT CASE email WHEN {} THEN 1 END FROM customers",
        ),
    ] {
        assert_eq!(
            sql_of(sql),
            expected.replace("{}", &ct("x", "email")),
            "{sql}"
        );
    }
    refused(
        "SELECT CASE full_name WHEN 'secret' THEN 1 END FROM customers",
        NOT_SUPPORTED,
        FULL_NAME,
    );
}

#[test]
fn a_bytea_column_passes_through_only_as_bytea() {
    assert_eq!(
        typed("SELECT photo, photo::bytea, coalesce(photo, NULL) FROM customers"),
        Verdict::Unchanged
    );
    for (sql, construct) in [
        ("SELECT photo::text FROM customers", "a cast to text"),
        ("SELECT length(photo) FROM customers", "length()"),
        ("SELECT encode(photo, 'hex') FROM customers", "encode()"),
    ] {
        match typed(sql) {
            Verdict::Refused(r) => assert!(
                r.message.contains(construct) && r.message.contains("public.customers.photo"),
                "{sql}: {}",
                r.message
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn computing_on_a_view_column_derived_from_a_protected_table_is_refused() {
    refused_known("SELECT upper(low) FROM people", "view public.people");
    refused_known("SELECT upper(email) FROM people", "public.customers.email");
    assert_eq!(
        run_known("SELECT low, email FROM people"),
        Verdict::Unchanged
    );
}

#[test]
fn conditions_keep_their_own_refusals() {
    let message = refused(
        "SELECT id FROM customers WHERE upper(email) = 'secret'",
        NOT_SUPPORTED,
        EMAIL,
    );
    assert!(message.contains("a condition"), "{message}");
    let message = refused(
        "SELECT id FROM customers WHERE email || '' = 'secret'",
        NOT_SUPPORTED,
        EMAIL,
    );
    assert!(message.contains("a condition"), "{message}");
}
