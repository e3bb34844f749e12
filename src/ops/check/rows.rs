//! What a protected column holds: how many of its values are plaintext,
//! under the current key, under an older version, in the other mode, or
//! under a key the domain does not have. Read from each value's envelope
//! header only, grouped in the database: no value leaves it, and nothing
//! is decrypted.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::Client;

use crate::protect::crypto::{header_of, KeyRef, Mode};
use crate::protect::policy::ColumnPolicy;

/// The values of a protected column, by what they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RowCounts {
    /// Values that are not NULL.
    pub(crate) values: i64,
    /// Values that are not pgveil's ciphertext.
    pub(crate) plaintext: i64,
    /// Values under the domain's current key, in the policy's mode.
    pub(crate) current: i64,
    /// Values under an older version of the domain's key, by version.
    pub(crate) old_versions: BTreeMap<u32, i64>,
    /// Values in the other mode (randomized ↔ deterministic).
    pub(crate) other_mode: i64,
    /// Values that start like ciphertext but under no key of the domain,
    /// or with a header that is not pgveil's.
    pub(crate) unknown: i64,
}

impl RowCounts {
    /// Values under an older key version.
    pub(crate) fn old(&self) -> i64 {
        self.old_versions.values().sum()
    }
}

/// Counts the values of `column` (whose type is of `kind`, `text` or
/// `bytea`), given the key refs of its domain and the current one.
pub(crate) async fn count(
    client: &Client,
    column: &ColumnPolicy,
    kind: &str,
    keys: &[KeyRef],
    current: Option<KeyRef>,
) -> Result<RowCounts, tokio_postgres::Error> {
    let col = quote(&column.column);
    let table = format!("{}.{}", quote(&column.schema), quote(&column.table));
    // The header in a form `header_of` reads: the text form's prefix and
    // 16 base64 characters, or a bytea's first 12 bytes in hex.
    let head = if kind == "bytea" {
        format!(
            "CASE WHEN pg_catalog.substr({col}, 1, 2) = '\\x5056'::pg_catalog.bytea \
             THEN '\\x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr({col}, 1, 12), 'hex') \
             ELSE '' END"
        )
    } else {
        format!(
            "CASE WHEN pg_catalog.starts_with({col}::pg_catalog.text, 'pgv1:') \
             THEN pg_catalog.substr({col}::pg_catalog.text, 1, 21) ELSE '' END"
        )
    };
    let sql = format!(
        "SELECT {head}, pg_catalog.count(*) FROM {table} WHERE {col} IS NOT NULL GROUP BY 1"
    );
    let mut counts = RowCounts::default();
    let mode = Mode::from(column.encryption);
    for row in client.query(&sql, &[]).await? {
        let head: String = row.get(0);
        let n: i64 = row.get(1);
        counts.values += n;
        if head.is_empty() {
            counts.plaintext += n;
            continue;
        }
        match header_of(head.as_bytes()) {
            Some((_, key)) if !keys.contains(&key) => counts.unknown += n,
            Some((m, _)) if m != mode => counts.other_mode += n,
            Some((_, key)) if Some(key) == current => counts.current += n,
            Some((_, key)) => *counts.old_versions.entry(key.version).or_default() += n,
            None => counts.unknown += n,
        }
    }
    Ok(counts)
}

/// `name` as a quoted identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
