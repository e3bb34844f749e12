//! Reveals protected values in `COPY ... TO STDOUT` data, as `reveal`
//! does for rows.
//!
//! PostgreSQL sends each row of a COPY TO in a CopyData message of its
//! own. In text and CSV format the row is split into fields with the
//! COPY's options (which the client tap read from the statement), in the
//! reader's encoding (`copy_syntax`). A field holding pgveil's ciphertext
//! (written unescaped, since its alphabet needs no escape, and quoted only
//! for `FORCE_QUOTE`) is replaced by what the reader may see, in the
//! reader's encoding, escaped or quoted for the format as PostgreSQL would
//! have written it: quoted again where FORCE_QUOTE quoted the ciphertext.
//! Binary COPY output is passed on as it is: its protected values stay
//! ciphertext.

use crate::copy_syntax::{Format, Syntax};
use crate::reveal::{reveal_value, Reader, Revealed};
use crate::rewrite::CopyOptions;
use crate::veil::Veil;

/// A revealed row, or the column whose value is denied.
pub type RowResult = Result<Option<Vec<u8>>, String>;

/// Reveals one row of COPY data; `Ok(None)` when it is unchanged.
pub fn reveal_row(
    veil: &Veil,
    reader: &Reader<'_>,
    options: &CopyOptions,
    row: &[u8],
) -> RowResult {
    if !contains(row, crate::crypto::TEXT_PREFIX.as_bytes()) {
        return Ok(None);
    }
    let Some(syntax) = Syntax::of(options, reader.encoding) else {
        return Ok(None);
    };
    let (line, ending) = split_ending(row);
    let null = reader.encoding.encode(&options.null);
    let fields = syntax.fields(line);
    let alone = fields.len() == 1;
    let mut out = Vec::with_capacity(row.len() + 64);
    let mut changed = false;
    let mut unquoted = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(syntax.delimiter);
        }
        let raw = &line[field.raw.clone()];
        let value: &[u8] = if field.quoted {
            unquoted.clear();
            syntax.field(line, field.raw.start, Some(&mut unquoted));
            &unquoted
        } else {
            raw
        };
        match reveal_value(veil, reader, value) {
            Revealed::Keep => out.extend_from_slice(raw),
            Revealed::Null => {
                changed = true;
                out.extend_from_slice(&null);
            }
            Revealed::Value(value) => {
                changed = true;
                match syntax.format {
                    Format::Csv { .. } => {
                        syntax.put_csv(&mut out, &value, field.quoted, &null, alone)
                    }
                    Format::Text => syntax.put_text(&mut out, &value),
                }
            }
            Revealed::Denied(column) => return Err(column),
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
