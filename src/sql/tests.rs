use super::*;
use crate::protect::policy::{ColumnPolicy, Policy};
use crate::sql::objects::{CatalogObject, Kind, ServerObjects};
use crate::wire::copy::options::{ColumnSet, CopyFormat, CopyOptions};

const POLICY: &str = r#"
[[column]]
table = "customers"
column = "email"
encryption = "deterministic"

[[column]]
table = "customers"
column = "full_name"

[[column]]
table = "customers"
column = "national_id"

[[column]]
table = "customers"
column = "photo"
encryption = "deterministic"

[[column]]
table = "customers"
column = "visits"

[[column]]
table = "crm.contacts"
column = "mail"
encryption = "deterministic"
key_domain = "public.customers.email"
"#;

/// `pgv1:` + the hex of the plaintext + `:` + the column name; for bytes,
/// the column name, `:` and the bytes.
struct Fake;

impl Encryptor for Fake {
    fn encrypt(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError> {
        let hex: String = plaintext.bytes().map(|b| format!("{b:02x}")).collect();
        Ok(format!("pgv1:{hex}:{}", column.column))
    }

    fn encrypt_bytes(
        &self,
        column: &ColumnPolicy,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptError> {
        Ok([column.column.as_bytes(), b":", plaintext].concat())
    }
}

/// A catalog in which `customers.photo` is a `bytea` and
/// `customers.visits` an integer; the other columns are unknown.
struct Types(ColumnType);

impl Types {
    fn new() -> Self {
        Types(ColumnType::Other("integer".into()))
    }
}

impl Columns for Types {
    fn order(&self, _: &str, _: &str) -> Option<Vec<String>> {
        None
    }

    fn type_of(&self, _: &str, _: &str, column: &str) -> Option<&ColumnType> {
        match column {
            "photo" => Some(&ColumnType::Bytea),
            "visits" => Some(&self.0),
            _ => None,
        }
    }
}

pub(super) fn typed(sql: &str) -> Verdict {
    rewrite_in_session(
        sql,
        &policy(),
        &Fake,
        &Types::new(),
        ServerObjects::none(),
        &PreparedSlots::new(),
    )
    .verdict
}

pub(super) fn policy() -> Policy {
    Policy::from_str("t.toml", POLICY).unwrap()
}

pub(super) fn ct(plaintext: &str, column: &str) -> String {
    Fake.encrypt(
        &policy()
            .column("public", "customers", column)
            .unwrap()
            .clone(),
        plaintext,
    )
    .map(|c| format!("'{c}'"))
    .unwrap()
}

pub(super) fn run(sql: &str) -> Verdict {
    rewrite(sql, &policy(), &Fake)
}

pub(super) fn rewritten(sql: &str) -> Rewrite {
    match run(sql) {
        Verdict::Rewritten(r) => r,
        other => panic!("{sql}: {other:?}"),
    }
}

pub(super) fn sql_of(sql: &str) -> String {
    rewritten(sql).sql
}

/// Asserts a refusal with this SQLSTATE naming this column, without the
/// value `secret`; returns the message.
pub(super) fn refused(sql: &str, sqlstate: &str, column: &str) -> String {
    match run(sql) {
        Verdict::Refused(r) => {
            assert_eq!(r.sqlstate, sqlstate, "{sql}: {}", r.message);
            assert!(r.message.starts_with("pgveil: "), "{}", r.message);
            assert!(r.message.contains(column), "{sql}: {}", r.message);
            assert!(!r.message.contains("secret"), "{}", r.message);
            r.message
        }
        other => panic!("{sql}: {other:?}"),
    }
}

fn column_id(column: &str) -> ColumnRefId {
    ColumnRefId {
        schema: "public".into(),
        table: "customers".into(),
        column: column.into(),
    }
}

fn slot(number: usize, column: &str) -> ParamSlot {
    ParamSlot {
        number,
        target: Target {
            column: std::sync::Arc::new(column_id(column)),
            storage: Storage::Text,
        },
        array: false,
    }
}

pub(super) const EMAIL: &str = "public.customers.email";
pub(super) const FULL_NAME: &str = "public.customers.full_name";

#[test]
fn insert_encrypts_literals_of_protected_columns() {
    assert_eq!(
        sql_of("INSERT INTO customers (id, email, segment) VALUES (1, 'a@b.c', 'gold')"),
        format!(
            "INSERT INTO customers (id, email, segment) VALUES (1, {}, 'gold')",
            ct("a@b.c", "email")
        )
    );
    let sql = "insert into public.customers (full_name, email) values ('Ann', 'a@x'), \
               (NULL, DEFAULT), ('李小龙', $1)";
    let r = rewritten(sql);
    assert_eq!(
        r.sql,
        format!(
            "insert into public.customers (full_name, email) values ({}, {}), \
             (NULL, DEFAULT), ({}, $1)",
            ct("Ann", "full_name"),
            ct("a@x", "email"),
            ct("李小龙", "full_name")
        )
    );
    assert_eq!(r.params, [slot(1, "email")]);
}

#[test]
fn insert_encrypts_every_spelling_of_a_literal() {
    let sql = "INSERT INTO customers (email, full_name, national_id) \
               VALUES (E'a\\'b', $$x y$$, U&'d\\0061t\\+000061'), ('c'::text, CAST('n' AS varchar), $2::text)";
    let r = rewritten(sql);
    assert_eq!(
        r.sql,
        format!(
            "INSERT INTO customers (email, full_name, national_id) \
             VALUES ({}, {}, {}), ({}::text, CAST({} AS varchar), $2::text)",
            ct("a'b", "email"),
            ct("x y", "full_name"),
            ct("data", "national_id"),
            ct("c", "email"),
            ct("n", "full_name")
        )
    );
    assert_eq!(r.params, [slot(2, "national_id")]);
}

#[test]
fn insert_keeps_a_uescape_clause_inside_the_literal() {
    let sql = "INSERT INTO customers (email) VALUES (U&'d!0061' UESCAPE '!')";
    assert_eq!(
        sql_of(sql),
        format!(
            "INSERT INTO customers (email) VALUES ({})",
            ct("da", "email")
        )
    );
}

#[test]
fn insert_refuses_values_it_cannot_encrypt() {
    for sql in [
        "INSERT INTO customers (email) VALUES (lower('secret'))",
        "INSERT INTO customers (email) VALUES ((SELECT 'secret'))",
        "INSERT INTO customers (email) VALUES ('secret' || 'x')",
        "INSERT INTO customers (id, email) VALUES (1, segment)",
        "INSERT INTO customers (email) VALUES (42)",
    ] {
        let message = refused(sql, "0A000", EMAIL);
        assert!(
            message.contains("only string literals, NULL and parameters"),
            "{message}"
        );
    }
    refused(
        "INSERT INTO customers (full_name) SELECT name FROM people WHERE x = 'secret'",
        "0A000",
        FULL_NAME,
    );
    let message = refused("INSERT INTO customers VALUES (1, 'secret')", "0A000", EMAIL);
    assert!(message.contains("needs a column list"), "{message}");
    refused(
        "MERGE INTO customers c USING people p ON c.id = p.id \
         WHEN MATCHED THEN UPDATE SET email = 'secret'",
        "0A000",
        EMAIL,
    );
    refused(
        "MERGE INTO orders o USING customers c ON o.customer = c.id WHEN MATCHED THEN DELETE",
        "0A000",
        EMAIL,
    );
}

#[test]
fn insert_of_unprotected_columns_is_unchanged() {
    assert_eq!(
        run("INSERT INTO customers (id, segment) VALUES (1, 'x')"),
        Verdict::Unchanged
    );
    assert_eq!(
        run("INSERT INTO customers (id, segment) SELECT 1, 'x'"),
        Verdict::Unchanged
    );
    assert_eq!(
        run("INSERT INTO customers DEFAULT VALUES"),
        Verdict::Unchanged
    );
}

#[test]
fn on_conflict_do_update() {
    let sql = "INSERT INTO customers AS c (id, email) VALUES (1, 'a') \
               ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, full_name = 'N' \
               WHERE c.email = 'old' RETURNING email";
    assert_eq!(
        sql_of(sql),
        format!(
            "INSERT INTO customers AS c (id, email) VALUES (1, {}) \
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, full_name = {} \
             WHERE c.email = {} RETURNING email",
            ct("a", "email"),
            ct("N", "full_name"),
            ct("old", "email")
        )
    );
    refused(
        "INSERT INTO customers (id, email) VALUES (1, 'a') \
         ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.full_name",
        "0A000",
        EMAIL,
    );
}

#[test]
fn update_set_single_and_multiple() {
    let sql = "UPDATE customers SET email = 'n@x', segment = 'vip', full_name = $1 WHERE id = $2";
    let r = rewritten(sql);
    assert_eq!(
        r.sql,
        format!(
            "UPDATE customers SET email = {}, segment = 'vip', full_name = $1 WHERE id = $2",
            ct("n@x", "email")
        )
    );
    assert_eq!(r.params, [slot(1, "full_name")]);
    let sql =
        "UPDATE customers SET (email, segment, national_id) = ('e', 's', NULL) WHERE email = 'old'";
    assert_eq!(
        sql_of(sql),
        format!(
            "UPDATE customers SET (email, segment, national_id) = ({}, 's', NULL) WHERE email = {}",
            ct("e", "email"),
            ct("old", "email")
        )
    );
    refused(
        "UPDATE customers SET (email, segment) = (SELECT 'secret', 'x')",
        "0A000",
        EMAIL,
    );
    assert_eq!(
        sql_of("UPDATE customers SET segment = '中文', email = 'é' WHERE full_name IS NULL"),
        format!(
            "UPDATE customers SET segment = '中文', email = {} WHERE full_name IS NULL",
            ct("é", "email")
        )
    );
    refused("UPDATE customers SET email = upper(email)", "0A000", EMAIL);
    assert_eq!(
        run("UPDATE customers SET (segment, id) = (SELECT 'x', 1)"),
        Verdict::Unchanged
    );
}

#[test]
fn where_on_a_deterministic_column_is_encrypted() {
    let r = rewritten(
        "SELECT id FROM customers WHERE email = 'a' OR 'b' = email OR email <> 'c' \
         OR email != 'd' OR email IN ('e', 'f') OR email = $1 OR email IS NULL",
    );
    assert_eq!(
        r.sql,
        format!(
            "SELECT id FROM customers WHERE email = {} OR {} = email OR email <> {} \
             OR email != {} OR email IN ({}, {}) OR email = $1 OR email IS NULL",
            ct("a", "email"),
            ct("b", "email"),
            ct("c", "email"),
            ct("d", "email"),
            ct("e", "email"),
            ct("f", "email")
        )
    );
    assert_eq!(r.params, [slot(1, "email")]);
    assert_eq!(
        sql_of("DELETE FROM customers WHERE email = 'x' AND segment = 'y'"),
        format!(
            "DELETE FROM customers WHERE email = {} AND segment = 'y'",
            ct("x", "email")
        )
    );
}

#[test]
fn randomized_columns_only_test_for_null() {
    for sql in [
        "SELECT id FROM customers WHERE full_name = 'secret'",
        "SELECT id FROM customers WHERE full_name IN ('secret')",
        "SELECT id FROM customers WHERE full_name <> $1",
        "DELETE FROM customers WHERE 'secret' = full_name",
        "SELECT full_name, count(*) FROM customers GROUP BY full_name",
    ] {
        let message = refused(sql, "0A000", FULL_NAME);
        assert!(message.contains("randomized"), "{message}");
    }
    assert_eq!(
        run("SELECT id FROM customers WHERE full_name IS NULL OR national_id IS NOT NULL"),
        Verdict::Unchanged
    );
    assert_eq!(
        run("SELECT email, count(*) FROM customers GROUP BY email"),
        Verdict::Unchanged
    );
}

#[test]
fn like_ranges_and_order_by_are_refused() {
    for sql in [
        "SELECT id FROM customers WHERE email LIKE 'secret%'",
        "SELECT id FROM customers WHERE email ILIKE 'secret%'",
        "SELECT id FROM customers WHERE email NOT LIKE 'secret%'",
        "SELECT id FROM customers WHERE email SIMILAR TO 'secret'",
        "SELECT id FROM customers WHERE email > 'secret'",
        "SELECT id FROM customers WHERE email BETWEEN 'a' AND 'secret'",
        "SELECT id, email FROM customers ORDER BY email",
        "SELECT id, email AS e FROM customers ORDER BY e DESC",
        "SELECT email FROM customers ORDER BY 1",
        // Through the exact outputs of subqueries, CTEs, set operations.
        "SELECT * FROM (SELECT email AS e FROM customers) s WHERE s.e LIKE 'secret%'",
        "WITH s AS (SELECT email AS e FROM customers) SELECT * FROM s WHERE s.e > 'secret'",
        "SELECT * FROM (SELECT email AS e FROM customers) s ORDER BY s.e",
        "SELECT * FROM customers UNION SELECT * FROM customers ORDER BY email",
    ] {
        let message = refused(sql, "0A000", EMAIL);
        assert!(message.contains("ORDER BY / LIKE / range"), "{message}");
    }
    refused(
        "SELECT id FROM customers WHERE lower(email) = 'secret'",
        "0A000",
        EMAIL,
    );
    refused(
        "SELECT id FROM customers WHERE email = segment",
        "0A000",
        EMAIL,
    );
}

#[test]
fn joins_resolve_aliases() {
    let sql = "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id \
               WHERE c.email = 'x' AND o.note = 'y'";
    assert_eq!(
        sql_of(sql),
        format!(
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE c.email = {} AND o.note = 'y'",
            ct("x", "email")
        )
    );
    let sql = "SELECT 1 FROM customers c JOIN crm.contacts k ON k.mail = c.email \
               WHERE public.customers.email = 'z'";
    // An aliased table is not reachable by its own name: no rewrite there.
    assert_eq!(run(sql), Verdict::Unchanged);
    let sql = "SELECT 1 FROM customers JOIN crm.contacts k ON k.mail = customers.email \
               WHERE public.customers.email = 'z'";
    assert_eq!(
        sql_of(sql),
        format!(
            "SELECT 1 FROM customers JOIN crm.contacts k ON k.mail = customers.email \
             WHERE public.customers.email = {}",
            ct("z", "email")
        )
    );
    refused(
        "SELECT 1 FROM customers a JOIN customers b ON a.email = b.national_id",
        "0A000",
        EMAIL,
    );
    refused(
        "SELECT 1 FROM customers a JOIN customers b ON a.full_name = b.full_name",
        "0A000",
        FULL_NAME,
    );
}

#[test]
fn subqueries_and_ctes() {
    let sql = "SELECT * FROM orders WHERE customer_id IN \
               (SELECT id FROM customers WHERE email = 'a')";
    assert_eq!(
        sql_of(sql),
        format!(
            "SELECT * FROM orders WHERE customer_id IN \
             (SELECT id FROM customers WHERE email = {})",
            ct("a", "email")
        )
    );
    let sql = "WITH c AS (SELECT id, email AS mail FROM customers) \
               SELECT id FROM c WHERE c.mail = 'b'";
    assert_eq!(
        sql_of(sql),
        format!(
            "WITH c AS (SELECT id, email AS mail FROM customers) \
             SELECT id FROM c WHERE c.mail = {}",
            ct("b", "email")
        )
    );
    let sql = "SELECT s.id FROM (SELECT * FROM customers) s WHERE s.full_name = 'secret'";
    refused(sql, "0A000", FULL_NAME);
    let sql = "SELECT id FROM customers c WHERE EXISTS \
               (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND c.email = $3)";
    assert_eq!(rewritten(sql).params, [slot(3, "email")]);
}

/// Asserts that each text is rewritten with its literal `'x@y'` encrypted
/// for the email column, and nothing else changed.
fn assert_encrypts_email(texts: &[&str]) {
    let encrypted = ct("x@y", "email");
    for sql in texts {
        assert_eq!(sql_of(sql), sql.replace("'x@y'", &encrypted), "{sql}");
    }
}

#[test]
fn exact_outputs_of_subqueries_and_ctes_are_the_protected_column() {
    assert_encrypts_email(&[
        "SELECT * FROM (SELECT email AS e FROM customers) s WHERE s.e = 'x@y'",
        "WITH s AS (SELECT email AS e FROM customers) SELECT * FROM s WHERE s.e = 'x@y'",
        "SELECT * FROM (SELECT * FROM (SELECT c.email FROM customers c) a) b WHERE b.email = 'x@y'",
        "SELECT * FROM (SELECT customers.* FROM customers) s WHERE email = 'x@y'",
        "SELECT * FROM (SELECT email FROM customers) AS s(e) WHERE s.e = 'x@y'",
        "WITH s(e) AS (SELECT email FROM customers) SELECT * FROM s WHERE e = 'x@y'",
        "WITH s AS (SELECT email FROM customers) SELECT * FROM s AS t(e) WHERE t.e = 'x@y'",
        "SELECT * FROM (SELECT email FROM customers UNION SELECT mail FROM crm.contacts) s \
         WHERE s.email = 'x@y'",
        "SELECT * FROM customers c JOIN LATERAL (SELECT c.email AS e) s ON true WHERE s.e = 'x@y'",
        "SELECT id FROM orders WHERE 'x@y' IN (SELECT email FROM customers)",
        "SELECT id FROM orders WHERE 'x@y' = ANY (SELECT e FROM (SELECT email AS e FROM customers) s)",
    ]);
}

#[test]
fn comparing_computed_outputs_of_subqueries_and_ctes_is_refused() {
    for sql in [
        "SELECT * FROM (SELECT lower(email) AS e FROM customers) s WHERE s.e = 'secret'",
        "WITH s AS (SELECT email AS e FROM customers) SELECT * FROM s WHERE lower(s.e) = 'secret'",
        "WITH s AS (SELECT lower(email) AS e FROM customers) SELECT * FROM s WHERE s.e = $1",
        "SELECT * FROM (SELECT email::varchar(5) AS e FROM customers) s WHERE e = 'secret'",
        "SELECT * FROM (SELECT lower(email) FROM customers) s WHERE s.lower = 'secret'",
        "SELECT * FROM (SELECT email::text FROM customers) s WHERE s.email = 'secret'",
        "SELECT * FROM (SELECT coalesce(email, '') FROM customers) s WHERE coalesce IN ('secret')",
        "SELECT * FROM (SELECT CASE WHEN id > 1 THEN email END FROM customers) s WHERE s.case = 'secret'",
        "SELECT * FROM (SELECT email || '' AS e FROM customers) s WHERE s.e = 'secret'",
        "SELECT * FROM (SELECT max(email) AS e FROM customers GROUP BY id) s WHERE s.e = 'secret'",
        "SELECT * FROM (SELECT count(email) AS n FROM customers) s WHERE s.n = 3",
        "SELECT * FROM (SELECT * FROM (SELECT lower(email) AS e FROM customers) a) b WHERE b.e = 'secret'",
        "SELECT * FROM (SELECT a.* FROM (SELECT lower(email) AS e FROM customers) a) b WHERE e = 'secret'",
        "SELECT * FROM (SELECT lower(email) FROM customers) AS s(e) WHERE s.e = 'secret'",
        "WITH s(e) AS (SELECT lower(email) FROM customers) SELECT * FROM s WHERE e = 'secret'",
        "SELECT * FROM (SELECT email AS e FROM customers UNION SELECT note FROM orders) s WHERE s.e = 'secret'",
        "SELECT * FROM (SELECT note AS e FROM orders UNION ALL SELECT email FROM customers) s WHERE s.e = 'secret'",
        "SELECT * FROM (SELECT email AS e FROM customers UNION SELECT full_name FROM customers) s WHERE s.e = 'secret'",
        "SELECT * FROM (SELECT * FROM customers UNION SELECT * FROM customers) s WHERE s.email = 'secret'",
        "SELECT * FROM (SELECT email AS e FROM customers EXCEPT SELECT lower(email) FROM customers) s WHERE e = 'secret'",
        "WITH s AS (SELECT lower(email) AS e FROM customers) SELECT * FROM orders WHERE note IN (SELECT e FROM s) AND 'secret' IN (SELECT e FROM s)",
        "SELECT id FROM orders WHERE 'secret' IN (SELECT lower(email) FROM customers)",
        "SELECT * FROM ((SELECT email AS e FROM customers) a JOIN orders o ON true) AS j(x) WHERE j.x = 'secret'",
        "SELECT * FROM (SELECT lower(email) AS e FROM customers) s WHERE s.e",
    ] {
        refused(sql, "0A000", EMAIL);
    }
    // A subquery reading a protected table, a data-modifying CTE over
    // one: named by the table.
    for sql in [
        "SELECT * FROM (SELECT (SELECT coalesce(email, '') FROM customers LIMIT 1) AS e) s \
         WHERE s.e = 'secret'",
        "WITH m AS (UPDATE customers SET segment = 'a' RETURNING email) \
         SELECT * FROM m WHERE m.email = 'secret'",
    ] {
        refused(
            sql,
            "0A000",
            "is computed from protected table public.customers",
        );
    }
    // The refusal names the column compared and the protected one.
    let message = refused(
        "SELECT * FROM (SELECT coalesce(email, '') AS e FROM customers) s WHERE s.e = 'secret'",
        "0A000",
        EMAIL,
    );
    assert!(
        message.contains("column s.e is computed from protected column"),
        "{message}"
    );
    // Reading, and testing for NULL, still work; plain outputs are plain.
    // (Computing on a protected column is refused wherever it is read:
    // `super::computed`.)
    for sql in [
        "SELECT s.e FROM (SELECT coalesce(email, '') AS e FROM customers) s",
        "SELECT * FROM (SELECT coalesce(email, '') AS e FROM customers) s WHERE s.e IS NULL",
        "SELECT * FROM (SELECT id, email::text AS e FROM customers) s WHERE s.id = 1",
        "SELECT * FROM (SELECT id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) AS n \
         FROM customers c) s WHERE s.n > 3",
        "SELECT * FROM (SELECT note AS e FROM orders UNION SELECT 'x') s WHERE s.e = 'x'",
    ] {
        assert_eq!(run(sql), Verdict::Unchanged, "{sql}");
    }
}

#[test]
fn scalar_subqueries_compare_as_their_output() {
    assert_encrypts_email(&[
        "SELECT id FROM orders o WHERE (SELECT email FROM customers c WHERE c.id = o.customer_id) = 'x@y'",
        "SELECT id FROM orders o WHERE 'x@y' IS DISTINCT FROM (SELECT email FROM customers LIMIT 1)",
        "SELECT (SELECT email FROM customers LIMIT 1) = 'x@y'",
        "SELECT id FROM orders WHERE customer_id = (SELECT id FROM customers WHERE email = 'x@y')",
    ]);
    for sql in [
        "SELECT id FROM orders WHERE (SELECT email FROM customers LIMIT 1) LIKE 'secret%'",
        "SELECT id FROM orders WHERE (SELECT email FROM customers LIMIT 1) BETWEEN 'a' AND 'secret'",
        "SELECT id FROM orders WHERE (SELECT email FROM customers LIMIT 1) IN ('secret')",
        "SELECT id FROM orders WHERE 'secret' = ANY (ARRAY(SELECT email FROM customers))",
        "SELECT id FROM orders WHERE (SELECT lower(email) FROM customers LIMIT 1) = 'secret'",
        "SELECT id FROM orders WHERE lower((SELECT email FROM customers LIMIT 1)) = 'secret'",
        "SELECT id FROM orders WHERE (SELECT email FROM customers LIMIT 1) = lower('secret')",
    ] {
        refused(sql, "0A000", EMAIL);
    }
    assert_eq!(
        run("SELECT id FROM orders WHERE (SELECT count(*) FROM customers) > 3"),
        Verdict::Unchanged
    );
}

#[test]
fn statements_not_mentioning_protected_tables_are_not_parsed() {
    assert_eq!(
        run("SELECT * FROM orders WHERE note LIKE 'x%'"),
        Verdict::Unchanged
    );
    assert_eq!(run("THIS IS NOT SQL ((("), Verdict::Unchanged);
    let message = refused("SELECT * FROM customers WHERE (((", "42601", "");
    assert_eq!(
        message,
        "pgveil: cannot parse the statement, so it cannot check it for protected columns"
    );
}

#[test]
fn only_the_statement_touching_the_table_changes() {
    let sql = "SELECT 1; UPDATE orders SET note = 'n'; DELETE FROM customers WHERE email = 'q';";
    assert_eq!(
        sql_of(sql),
        format!(
            "SELECT 1; UPDATE orders SET note = 'n'; DELETE FROM customers WHERE email = {};",
            ct("q", "email")
        )
    );
}

#[test]
fn copy_from_stdin_reports_the_columns() {
    let outcome = run("COPY customers (id, email, segment, full_name) FROM STDIN WITH (FORMAT csv, HEADER, NULL 'NA')");
    let Verdict::CopyIn(copy) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(copy.table, ("public".into(), "customers".into()));
    assert_eq!(
        copy.columns,
        [
            None,
            Some(slot(0, "email").target),
            None,
            Some(slot(0, "full_name").target)
        ]
    );
    assert_eq!(
        copy.options,
        CopyOptions {
            format: CopyFormat::Csv,
            delimiter: ",".into(),
            null: "NA".into(),
            quote: "\"".into(),
            escape: "\"".into(),
            header: true,
            force_not_null: ColumnSet::None,
            force_null: ColumnSet::None,
            encoding: None,
            protected: Vec::new(),
        }
    );
    let Verdict::CopyIn(copy) = run(
        "COPY customers (email, phone) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (email, phone), FORCE_NULL *)",
    ) else {
        panic!("not a CopyIn");
    };
    assert_eq!(
        copy.options.force_not_null,
        ColumnSet::Named(vec!["email".into(), "phone".into()])
    );
    assert_eq!(copy.options.force_null, ColumnSet::All);
    let Verdict::CopyIn(copy) =
        run("COPY customers (email) FROM STDIN WITH CSV FORCE NOT NULL email")
    else {
        panic!("not a CopyIn");
    };
    assert!(copy.options.force_not_null.contains("email"));
    assert!(!copy.options.force_null.contains("email"));
    let Verdict::CopyIn(copy) = run("COPY customers (email) FROM STDIN") else {
        panic!("not a CopyIn");
    };
    assert_eq!(copy.options.format, CopyFormat::Text);
    assert_eq!(copy.options.delimiter, "\t");
    assert_eq!(copy.options.null, "\\N");
    assert!(!copy.options.header);
}

#[test]
fn copy_from_a_file_or_without_columns_is_refused() {
    refused(
        "COPY customers (email) FROM '/tmp/secret.csv'",
        "0A000",
        EMAIL,
    );
    refused(
        "COPY customers (email) FROM PROGRAM 'cat secret'",
        "0A000",
        EMAIL,
    );
    let message = refused("COPY customers FROM STDIN", "0A000", EMAIL);
    assert!(message.starts_with("pgveil: COPY into public.customers needs a column list"));
    refused(
        "COPY customers (email) FROM STDIN; SELECT 1",
        "0A000",
        EMAIL,
    );
    assert_eq!(run("COPY customers TO STDOUT"), Verdict::Unchanged);
    assert_eq!(
        run("COPY (SELECT email FROM customers) TO STDOUT"),
        Verdict::Unchanged
    );
}

/// A text analysed in a session whose SQL-prepared statements are
/// `prepared`.
fn in_session(sql: &str, prepared: &PreparedSlots) -> Analysis {
    rewrite_in_session(
        sql,
        &policy(),
        &Fake,
        &NoCatalog,
        ServerObjects::none(),
        prepared,
    )
}

fn prepare(name: &str, params: Vec<ParamSlot>) -> Effect {
    Effect::Prepare(Prepared {
        name: name.into(),
        params,
    })
}

#[test]
fn prepare_reports_slots_and_execute_encrypts_them() {
    let sql = "PREPARE find (text, int) AS SELECT id FROM customers WHERE email = $1 AND id = $2";
    let analysis = in_session(sql, &PreparedSlots::new());
    assert_eq!(analysis.verdict, Verdict::Unchanged);
    assert_eq!(
        analysis.effects,
        [vec![prepare("find", vec![slot(1, "email")])]]
    );
    let session = PreparedSlots::from([("find".to_owned(), vec![slot(1, "email")])]);
    let execute = |sql| in_session(sql, &session).verdict;
    let expected = |sql: String| {
        Verdict::Rewritten(Rewrite {
            sql,
            params: Vec::new(),
            written: vec![column_id("email")],
        })
    };
    let encrypted = ct("a@b", "email");
    assert_eq!(
        execute("EXECUTE find('a@b', 7)"),
        expected(format!("EXECUTE find({encrypted}, 7)"))
    );
    // Wherever the EXECUTE is: after another statement, under EXPLAIN or
    // CREATE TABLE AS.
    for sql in [
        "SELECT 1; EXECUTE find('a@b', 7)",
        "EXPLAIN ANALYZE EXECUTE find('a@b', 7)",
        "CREATE TABLE t AS EXECUTE find('a@b', 7)",
    ] {
        assert_eq!(
            execute(sql),
            expected(sql.replace("'a@b'", &encrypted)),
            "{sql}"
        );
    }
    assert_eq!(execute("EXECUTE other('a@b')"), Verdict::Unchanged);
    let outcome = execute("EXECUTE find(lower('secret'), 7)");
    assert!(matches!(outcome, Verdict::Refused(r) if r.sqlstate == "0A000"));
}

#[test]
fn execute_after_prepare_in_the_same_text_is_encrypted() {
    let sql = "PREPARE add (text) AS INSERT INTO customers (email) VALUES ($1); \
               EXECUTE add('a@b'); INSERT INTO customers (email) VALUES ('c@d'); EXECUTE add('e@f')";
    let analysis = in_session(sql, &PreparedSlots::new());
    let Verdict::Rewritten(r) = analysis.verdict else {
        panic!("{sql}: {:?}", analysis.verdict);
    };
    assert_eq!(
        r.sql,
        sql.replace("'a@b'", &ct("a@b", "email"))
            .replace("'c@d'", &ct("c@d", "email"))
            .replace("'e@f'", &ct("e@f", "email"))
    );
    assert_eq!(
        analysis.effects,
        [
            vec![prepare("add", vec![slot(1, "email")])],
            vec![],
            vec![],
            vec![]
        ]
    );
}

#[test]
fn prepare_deallocate_and_discard_all_report_their_effects_by_statement() {
    let session = PreparedSlots::from([("p".to_owned(), vec![slot(1, "email")])]);
    // A PREPARE that mentions no protected table is parsed while the
    // session has prepared statements: it replaces the slots of its name.
    let sql = "DEALLOCATE p; PREPARE p (text) AS INSERT INTO notes (note) VALUES ($1); \
               EXECUTE p('a note'); DEALLOCATE PREPARE ALL; DISCARD ALL; DISCARD PLANS";
    let analysis = in_session(sql, &session);
    assert_eq!(
        analysis.verdict,
        Verdict::Unchanged,
        "the note is not encrypted"
    );
    assert_eq!(
        analysis.effects,
        [
            vec![Effect::Deallocate(Some("p".into()))],
            vec![prepare("p", vec![])],
            vec![],
            vec![Effect::Deallocate(None)],
            vec![Effect::Deallocate(None)],
            vec![],
        ]
    );
    // Parsed for that alone, code that mentions no protected table is not
    // refused as code pgveil cannot see run.
    for sql in [
        "DO $$ BEGIN EXECUTE 'DISCARD PLANS'; END $$",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'SELECT 1'; END $$",
    ] {
        assert_eq!(
            in_session(sql, &session).verdict,
            Verdict::Unchanged,
            "{sql}"
        );
    }
    // Without prepared statements in the session, such a text is not
    // parsed: it has nothing to forget.
    assert_eq!(
        in_session(sql, &PreparedSlots::new()),
        Analysis {
            verdict: Verdict::Unchanged,
            effects: Vec::new()
        }
    );
}

#[test]
fn code_pgveil_cannot_see_run_is_refused() {
    for sql in [
        "DO $$ BEGIN INSERT INTO customers (email) VALUES ('a@b.c'); END $$",
        "CALL load_customers()  -- customers",
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'UPDATE customers SET email = ''x'''",
        "CREATE RULE r AS ON INSERT TO customers DO ALSO NOTIFY x",
    ] {
        let Verdict::Refused(refusal) = run(sql) else {
            panic!("not refused: {sql}");
        };
        assert_eq!(refusal.sqlstate, "0A000", "{sql}");
        assert!(!refusal.message.contains("a@b.c"));
    }
}

#[test]
fn the_query_of_copy_to_is_checked() {
    let sql = sql_of("COPY (SELECT id FROM customers WHERE email = 'a@b.c') TO STDOUT");
    assert_eq!(
        sql,
        format!(
            "COPY (SELECT id FROM customers WHERE email = {}) TO STDOUT",
            ct("a@b.c", "email")
        )
    );
    refused(
        "COPY (SELECT id FROM customers ORDER BY full_name) TO STDOUT",
        "0A000",
        "public.customers.full_name",
    );
}

#[test]
fn an_unqualified_name_may_mean_a_protected_table_in_another_schema() {
    let policy = Policy::from_str(
        "crm.toml",
        "[[column]]\ntable = \"crm.clients\"\ncolumn = \"email\"\nencryption = \"deterministic\"\n",
    )
    .unwrap();
    // With search_path = crm, `clients` is crm.clients: it must be encrypted.
    let Verdict::Rewritten(r) = rewrite(
        "INSERT INTO clients (email) VALUES ('a@b.c')",
        &policy,
        &Fake,
    ) else {
        panic!("not rewritten");
    };
    assert!(!r.sql.contains("'a@b.c'"), "{}", r.sql);
}

#[test]
fn written_columns_are_reported() {
    let r =
        rewritten("INSERT INTO customers (email, full_name, national_id) VALUES ($1, 'x', NULL)");
    assert_eq!(r.written, vec![column_id("email"), column_id("full_name")]);
    let r = rewritten("SELECT id FROM customers WHERE email = 'a@b.c'");
    assert!(r.written.is_empty(), "a search writes nothing");
}

/// `E'\\x...'` of what [`Fake`] makes of these bytes for `photo`.
fn bytea_ct(bytes: &[u8]) -> String {
    format!("E'\\\\x{}'", hex::encode([&b"photo:"[..], bytes].concat()))
}

#[test]
fn bytea_literals_are_decoded_and_encrypted_as_bytes() {
    let sql = "INSERT INTO customers (photo, email) VALUES ('\\x00ff', 'a@b')";
    let Verdict::Rewritten(r) = typed(sql) else {
        panic!("{sql}");
    };
    assert_eq!(
        r.sql,
        format!(
            "INSERT INTO customers (photo, email) VALUES ({}, {})",
            bytea_ct(b"\x00\xff"),
            ct("a@b", "email")
        )
    );
    // The escape form and E'' spellings stand for the same bytes, so a
    // search on the deterministic column finds them.
    let Verdict::Rewritten(r) =
        typed("SELECT id FROM customers WHERE photo = E'ab\\\\\\\\c\\\\001'::bytea")
    else {
        panic!("search");
    };
    assert_eq!(
        r.sql,
        format!(
            "SELECT id FROM customers WHERE photo = {}::bytea",
            bytea_ct(b"ab\\c\x01")
        )
    );
    let r = match typed("UPDATE customers SET photo = $1 WHERE id = $2") {
        Verdict::Rewritten(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.params[0].target.storage, Storage::Bytea);
    let Verdict::Refused(refusal) = typed("INSERT INTO customers (photo) VALUES ('\\xzz secret')")
    else {
        panic!("invalid bytea accepted");
    };
    assert_eq!(refusal.sqlstate, "22P02");
    assert_eq!(
        refusal.message,
        "pgveil: the value for bytea column public.customers.photo is not valid bytea input"
    );
}

#[test]
fn a_protected_column_of_another_type_cannot_be_written() {
    for sql in [
        "INSERT INTO customers (visits) VALUES ('3')",
        "UPDATE customers SET visits = $1",
        "COPY customers (id, visits) FROM STDIN",
    ] {
        let Verdict::Refused(refusal) = typed(sql) else {
            panic!("{sql}");
        };
        assert_eq!(refusal.sqlstate, "42804", "{sql}");
        assert_eq!(
            refusal.message,
            "pgveil: column public.customers.visits is protected but has type integer, \
             which cannot hold its ciphertext; a protected column must be of a text type \
             or bytea"
        );
    }
    assert_eq!(
        typed("INSERT INTO customers (visits) VALUES (NULL)"),
        Verdict::Unchanged
    );
    let Verdict::CopyIn(copy) = typed("COPY customers (photo) FROM STDIN") else {
        panic!("COPY of a bytea column");
    };
    assert_eq!(copy.columns[0].as_ref().unwrap().storage, Storage::Bytea);
}

#[test]
fn arrays_for_a_bytea_column_are_refused() {
    for sql in [
        "SELECT id FROM customers WHERE photo = ANY($1)",
        "SELECT id FROM customers WHERE photo = ANY('{\"\\\\x01\"}')",
        "INSERT INTO customers (photo) SELECT * FROM UNNEST($1::bytea[])",
    ] {
        let Verdict::Refused(refusal) = typed(sql) else {
            panic!("{sql}");
        };
        assert_eq!(refusal.sqlstate, "0A000", "{sql}");
        assert!(
            refusal
                .message
                .contains("arrays of values for bytea column public.customers.photo"),
            "{sql}: {}",
            refusal.message
        );
    }
}

/// A view, a table with a rule, one with a trigger, and a function over
/// customers, as the catalog would list them.
fn server_objects() -> ServerObjects {
    let object = |kind, name: &str, definition: Option<&str>| CatalogObject {
        kind,
        schema: "public".into(),
        name: name.into(),
        table: "public.customers".into(),
        definition: definition.map(String::from),
    };
    ServerObjects::new(
        &policy(),
        vec![
            object(
                Kind::View,
                "people",
                Some(
                    " SELECT customers.id, customers.email, customers.full_name, \
                     lower(customers.email) AS low, customers.segment FROM customers;",
                ),
            ),
            object(Kind::Rule("to_customers".into()), "inbox", None),
            object(Kind::Trigger("copy_over".into()), "staging", None),
            object(Kind::Function, "add_customer", None),
        ],
    )
}

pub(super) fn run_known(sql: &str) -> Verdict {
    let objects = server_objects();
    rewrite_in_session(
        sql,
        &policy(),
        &Fake,
        &NoCatalog,
        &objects,
        &PreparedSlots::new(),
    )
    .verdict
}

/// Asserts a 0A000 refusal naming `object` and the protected table.
pub(super) fn refused_known(sql: &str, object: &str) {
    match run_known(sql) {
        Verdict::Refused(r) => {
            assert_eq!(r.sqlstate, "0A000", "{sql}: {}", r.message);
            assert!(
                r.message.contains(object) && r.message.contains("public.customers"),
                "{sql}: {}",
                r.message
            );
            assert!(!r.message.contains("secret"), "{}", r.message);
        }
        other => panic!("{sql}: {other:?}"),
    }
}

#[test]
fn writes_through_server_side_objects_are_refused() {
    for sql in [
        "INSERT INTO people (email, segment) VALUES ('secret@example.com', 'view')",
        "insert into public.PEOPLE (email) values ($1)",
        "UPDATE people SET segment = 'x' WHERE id = 1",
        "DELETE FROM people WHERE id = 1 RETURNING email",
        "MERGE INTO people p USING orders o ON o.id = p.id WHEN MATCHED THEN DELETE",
        "COPY people (email) FROM STDIN",
        "PREPARE p AS INSERT INTO people (email) VALUES ($1)",
        "WITH moved AS (DELETE FROM orders RETURNING id) UPDATE people SET segment = 's'",
    ] {
        refused_known(sql, "public.people");
    }
    for sql in [
        "INSERT INTO inbox (address) VALUES ('secret@example.com')",
        "WITH x AS (INSERT INTO staging VALUES ('secret') RETURNING 1) SELECT * FROM x",
    ] {
        let object = if sql.contains("inbox") {
            "rule to_customers"
        } else {
            "trigger copy_over"
        };
        refused_known(sql, object);
    }
    assert_eq!(
        run_known("DELETE FROM people WHERE id = 1"),
        Verdict::Unchanged
    );
    assert_eq!(run_known("COPY people TO STDOUT"), Verdict::Unchanged);
}

#[test]
fn calls_of_functions_over_protected_tables_with_values_are_refused() {
    for sql in [
        "SELECT add_customer('secret@example.com')",
        "SELECT * FROM public.add_customer($1)",
        "CALL add_customer(E'secret')",
        "SELECT Add_Customer(lower('secret'))",
        "SELECT \"add_customer\"(name => 'secret')",
        "INSERT INTO orders (note) VALUES (add_customer ( $1 ))",
        "SELECT add_customer(ARRAY['secret'])",
    ] {
        refused_known(sql, "public.add_customer");
    }
    for sql in [
        "SELECT add_customer()",
        "SELECT add_customer(42)",
        "CALL add_customer()",
        "SELECT add_customer FROM orders WHERE note = 'x'",
        "EXECUTE add_customer ('a prepared statement', $1)",
    ] {
        assert_eq!(run_known(sql), Verdict::Unchanged, "{sql}");
    }
}

#[test]
fn views_map_exact_columns_and_refuse_comparing_derived_ones() {
    let Verdict::Rewritten(r) = run_known("SELECT full_name FROM people WHERE email = 'a@b.c'")
    else {
        panic!("not rewritten");
    };
    assert_eq!(
        r.sql,
        format!(
            "SELECT full_name FROM people WHERE email = {}",
            ct("a@b.c", "email")
        )
    );
    for sql in [
        "SELECT id FROM people p WHERE p.low = 'secret'",
        "SELECT id FROM people WHERE low IN ('secret')",
        "SELECT id FROM people WHERE $1 = low::text",
        "SELECT id FROM people WHERE id IN (SELECT id FROM orders WHERE note = people.low)",
    ] {
        refused_known(sql, "public.people");
    }
    refused_known(
        "SELECT id FROM people WHERE email LIKE 'secret%'",
        "public.customers.email",
    );
    for sql in [
        "SELECT id FROM people WHERE segment = 'x'",
        "SELECT low FROM people WHERE low IS NULL",
        "SELECT * FROM people",
    ] {
        assert_eq!(run_known(sql), Verdict::Unchanged, "{sql}");
    }
}
