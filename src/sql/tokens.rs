//! PostgreSQL's tokens of a statement text, as its own scanner reads them.

/// PostgreSQL's tokens of `sql`, as `pg_query::scan_tokens` gives them,
/// but safe on text without any token (empty or white space), on which
/// pg_query 18 makes a slice from a null pointer (undefined behaviour; a
/// debug build aborts the process). Call this, never `scan_tokens`.
pub(crate) fn scan_tokens(
    sql: &str,
) -> Result<Vec<pg_query::protobuf::ScanToken>, pg_query::Error> {
    if sql
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b'))
    {
        return Ok(Vec::new());
    }
    pg_query::scan_tokens(sql)
}
