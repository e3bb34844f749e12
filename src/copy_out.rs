//! Reveals protected values in `COPY ... TO STDOUT` data, as `reveal`
//! does for rows.
//!
//! PostgreSQL sends each row of a COPY TO in a CopyData message of its
//! own. In text and CSV format the row is split into fields with the
//! COPY's options (which the client tap read from the statement); a field
//! holding pgveil's ciphertext (always written unquoted and unescaped,
//! since its alphabet needs neither) is replaced by what the reader may
//! see, escaped or quoted for the format. Binary COPY output is passed on
//! as it is: its protected values stay ciphertext.

use crate::reveal::{Denial, Memo, Reader, Revealed};
use crate::rewrite::{CopyFormat, CopyOptions};
use crate::veil::Veil;

/// A revealed row, or the value withheld.
pub type RowResult = Result<Option<Vec<u8>>, Denial>;

/// Reveals one row of COPY data; `Ok(None)` when it is unchanged.
pub fn reveal_row<'v>(
    veil: &'v Veil,
    reader: &Reader<'_>,
    memo: &mut Memo<'v>,
    options: &CopyOptions,
    row: &[u8],
) -> RowResult {
    if options.format == CopyFormat::Binary || !contains(row, crate::crypto::TEXT_PREFIX.as_bytes())
    {
        return Ok(None);
    }
    let [delimiter] = options.delimiter.as_bytes() else {
        return Ok(None);
    };
    let (line, ending) = split_ending(row);
    let csv = options.format == CopyFormat::Csv;
    let mut out = Vec::with_capacity(row.len() + 64);
    let mut changed = false;
    for (i, field) in fields(line, *delimiter, csv, options.quote.as_bytes()).enumerate() {
        if i > 0 {
            out.push(*delimiter);
        }
        match memo.reveal(veil, reader, field) {
            Revealed::Keep => out.extend_from_slice(field),
            Revealed::Null => {
                changed = true;
                out.extend_from_slice(options.null.as_bytes());
            }
            Revealed::Value(value) => {
                changed = true;
                if csv {
                    put_csv(&mut out, value, *delimiter, options);
                } else {
                    put_text(&mut out, value, *delimiter);
                }
            }
            Revealed::Denied(denial) => return Err(denial),
        }
    }
    out.extend_from_slice(ending);
    Ok(changed.then_some(out))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn split_ending(row: &[u8]) -> (&[u8], &[u8]) {
    let cut = if row.ends_with(b"\r\n") {
        2
    } else {
        usize::from(row.ends_with(b"\n"))
    };
    row.split_at(row.len() - cut)
}

/// The raw fields of a line: a CSV field keeps its quotes.
fn fields<'l>(
    line: &'l [u8],
    delimiter: u8,
    csv: bool,
    quote: &[u8],
) -> impl Iterator<Item = &'l [u8]> {
    let quote = quote.first().copied().filter(|_| csv);
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut in_quotes = false;
        for (i, &b) in current.iter().enumerate() {
            if Some(b) == quote {
                in_quotes = !in_quotes;
            } else if b == delimiter && !in_quotes {
                rest = Some(&current[i + 1..]);
                return Some(&current[..i]);
            }
        }
        rest = None;
        Some(current)
    })
}

/// Text format: backslash escapes for backslash, line breaks, tab and the
/// delimiter.
fn put_text(out: &mut Vec<u8>, value: &[u8], delimiter: u8) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ if b == delimiter => out.extend_from_slice(&[b'\\', b]),
            _ => out.push(b),
        }
    }
}

/// CSV: quoted when it holds the delimiter, a quote, a line break, or
/// could be read as NULL; quotes inside are escaped.
fn put_csv(out: &mut Vec<u8>, value: &[u8], delimiter: u8, options: &CopyOptions) {
    let quote = options.quote.as_bytes().first().copied().unwrap_or(b'"');
    let escape = options.escape.as_bytes().first().copied().unwrap_or(quote);
    let needs_quotes = value == options.null.as_bytes()
        || value
            .iter()
            .any(|&b| b == delimiter || b == quote || b == b'\n' || b == b'\r');
    if !needs_quotes {
        return out.extend_from_slice(value);
    }
    out.push(quote);
    for &b in value {
        if b == quote || b == escape {
            out.push(escape);
        }
        out.push(b);
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_csv_fields_keeping_quotes() {
        let got: Vec<&[u8]> = fields(b"a,\"b,c\",pgv1:x", b',', true, b"\"").collect();
        assert_eq!(got, vec![&b"a"[..], b"\"b,c\"", b"pgv1:x"]);
        let got: Vec<&[u8]> = fields(b"a\tb\t", b'\t', false, b"\"").collect();
        assert_eq!(got, vec![&b"a"[..], b"b", b""]);
    }

    #[test]
    fn escapes_for_each_format() {
        let mut out = Vec::new();
        put_text(&mut out, b"a\tb\\c\nd", b'\t');
        assert_eq!(out, b"a\\tb\\\\c\\nd");
        let csv = crate::rewrite::copy_out_options("COPY t TO STDOUT (FORMAT csv)").remove(0);
        let mut out = Vec::new();
        put_csv(&mut out, b"Smith, \"Al\"", b',', &csv);
        assert_eq!(out, b"\"Smith, \"\"Al\"\"\"");
        let mut out = Vec::new();
        put_csv(&mut out, b"", b',', &csv);
        assert_eq!(out, b"\"\"", "an empty string is not NULL");
    }
}
