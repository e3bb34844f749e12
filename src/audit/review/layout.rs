//! Tables as aligned text and as CSV (RFC 4180), for searches and reports.

use std::io::{self, Write};

/// Writes `header` and `rows` as left-aligned columns separated by two
/// spaces, with a rule under the header.
pub(super) fn write_aligned(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in [&header, &rule].into_iter().chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

/// Writes one CSV record, ending in CRLF.
pub(super) fn write_csv_row<S: AsRef<str>>(out: &mut dyn Write, cells: &[S]) -> io::Result<()> {
    let cells: Vec<String> = cells.iter().map(|c| csv_field(c.as_ref())).collect();
    write!(out, "{}\r\n", cells.join(","))
}

/// A field quoted if it holds a comma, quote or line break, with quotes
/// doubled.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `text` cut to at most `max` characters, ending in `…` if cut.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max - 1).collect();
    format!("{kept}…")
}
