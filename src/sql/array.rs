//! One-dimensional PostgreSQL arrays of text, element by element: how an
//! array of values for a protected column (`email = ANY($1)`, `SELECT *
//! FROM UNNEST($1::text[])` in an INSERT) is encrypted. Both forms a
//! client may send are handled: the text form (`{a,"b c",NULL}`, in a
//! string literal or a text-format parameter) and the binary form of a
//! `text[]` or `varchar[]` parameter. Anything else (more dimensions,
//! explicit bounds, other element types, malformed input) is an error, so
//! that no element can pass unencrypted.

use thiserror::Error;

/// Why an array value cannot be encrypted element by element. The text
/// never quotes the value.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ArrayError {
    #[error("the value is not a one-dimensional array of text")]
    NotAnArray,
    #[error("{0}")]
    Element(String),
}

/// Element types of a binary array whose elements are text: text, varchar.
const TEXT_ELEMENT_TYPES: [u32; 2] = [25, 1043];

/// Applies `f` to every non-NULL element of a text-form array, and
/// returns the array of the results (each quoted) in text form.
pub(crate) fn map_text(
    array: &str,
    mut f: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, ArrayError> {
    let mut out = String::from("{");
    for (i, element) in parse_text(array)?.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match element {
            None => out.push_str("NULL"),
            Some(value) => {
                let mapped = f(&value).map_err(ArrayError::Element)?;
                out.push('"');
                for c in mapped.chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    Ok(out)
}

/// The elements of a one-dimensional text-form array (`None` for NULL).
fn parse_text(array: &str) -> Result<Vec<Option<String>>, ArrayError> {
    let inner = array
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or(ArrayError::NotAnArray)?;
    let mut elements = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.trim().is_empty() {
        return Ok(elements);
    }
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let element = if chars.next_if_eq(&'"').is_some() {
            Some(quoted(&mut chars)?)
        } else {
            unquoted(&mut chars)?
        };
        elements.push(element);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some(',') => {}
            None => return Ok(elements),
            Some(_) => return Err(ArrayError::NotAnArray),
        }
    }
}

/// The rest of a `"..."` element, after its opening quote.
fn quoted(chars: &mut impl Iterator<Item = char>) -> Result<String, ArrayError> {
    let mut value = String::new();
    loop {
        match chars.next().ok_or(ArrayError::NotAnArray)? {
            '"' => return Ok(value),
            '\\' => value.push(chars.next().ok_or(ArrayError::NotAnArray)?),
            c => value.push(c),
        }
    }
}

/// An unquoted element, up to the next `,`; `NULL` in any case is NULL.
fn unquoted(
    chars: &mut std::iter::Peekable<impl Iterator<Item = char>>,
) -> Result<Option<String>, ArrayError> {
    let mut value = String::new();
    let mut escaped_to = 0;
    while let Some(c) = chars.next_if(|&c| c != ',') {
        match c {
            '{' | '}' | '"' => return Err(ArrayError::NotAnArray),
            '\\' => {
                value.push(chars.next().ok_or(ArrayError::NotAnArray)?);
                escaped_to = value.len();
            }
            c => value.push(c),
        }
    }
    // Trailing whitespace is not part of the element, unless escaped.
    let kept = value.trim_end().len().max(escaped_to);
    value.truncate(kept);
    if value.is_empty() {
        return Err(ArrayError::NotAnArray);
    }
    if escaped_to == 0 && value.eq_ignore_ascii_case("NULL") {
        return Ok(None);
    }
    Ok(Some(value))
}

/// Applies `f` to every non-NULL element of a binary-form array of text or
/// varchar, and returns the array of the results in binary form.
pub(crate) fn map_binary(
    array: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<String, String>,
) -> Result<Vec<u8>, ArrayError> {
    let mut reader = array;
    let dimensions = int(&mut reader)?;
    int(&mut reader)?; // whether there are NULLs: unchanged
    let element_type = int(&mut reader)? as u32;
    if !TEXT_ELEMENT_TYPES.contains(&element_type) || !(0..=1).contains(&dimensions) {
        return Err(ArrayError::NotAnArray);
    }
    let mut out = array[..12].to_vec();
    if dimensions == 0 {
        return if array.len() == 12 {
            Ok(out)
        } else {
            Err(ArrayError::NotAnArray)
        };
    }
    let count = int(&mut reader)?;
    let lower_bound = int(&mut reader)?;
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&lower_bound.to_be_bytes());
    for _ in 0..count.max(0) {
        let len = int(&mut reader)?;
        if len < 0 {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let value = take(&mut reader, len as usize)?;
        let mapped = f(value).map_err(ArrayError::Element)?;
        out.extend_from_slice(&(mapped.len() as i32).to_be_bytes());
        out.extend_from_slice(mapped.as_bytes());
    }
    if !reader.is_empty() {
        return Err(ArrayError::NotAnArray);
    }
    Ok(out)
}

/// The first `n` bytes of `reader`, which moves past them.
fn take<'b>(reader: &mut &'b [u8], n: usize) -> Result<&'b [u8], ArrayError> {
    let (head, tail) = reader.split_at_checked(n).ok_or(ArrayError::NotAnArray)?;
    *reader = tail;
    Ok(head)
}

/// A big-endian `i32` off the front of `reader`.
fn int(reader: &mut &[u8]) -> Result<i32, ArrayError> {
    take(reader, 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(v: &str) -> Result<String, String> {
        Ok(v.to_uppercase())
    }

    #[test]
    fn text_arrays_map_every_element() {
        assert_eq!(map_text("{a,b}", upper).unwrap(), r#"{"A","B"}"#);
        assert_eq!(
            map_text(r#" { "x, y" , NULL,"NULL", z\,w ,e\ } "#, upper).unwrap(),
            r#"{"X, Y",NULL,"NULL","Z,W","E "}"#
        );
        assert_eq!(map_text(r#"{"a\"b\\c"}"#, upper).unwrap(), r#"{"A\"B\\C"}"#);
        assert_eq!(map_text("{}", upper).unwrap(), "{}");
    }

    #[test]
    fn other_text_is_not_an_array() {
        for bad in [
            "a",
            "{a",
            "{{a}}",
            "[1:1]={a}",
            "{a,}",
            r#"{"a}"#,
            "{a\"b}",
            "{,}",
        ] {
            assert_eq!(map_text(bad, upper), Err(ArrayError::NotAnArray), "{bad}");
        }
    }

    fn binary(element_type: u32, elements: &[Option<&str>]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in [1, 1, element_type as i32, elements.len() as i32, 1] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for e in elements {
            match e {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn binary_arrays_map_every_element() {
        let mapped = map_binary(&binary(25, &[Some("ab"), None]), |v| {
            Ok(String::from_utf8_lossy(v).to_uppercase())
        });
        assert_eq!(mapped.unwrap(), binary(25, &[Some("AB"), None]));
        let mut truncated = binary(1043, &[Some("ab")]);
        truncated.pop();
        assert_eq!(
            map_binary(&truncated, |_| Ok(String::new())),
            Err(ArrayError::NotAnArray)
        );
        assert_eq!(
            map_binary(&binary(23, &[Some("1")]), |_| Ok(String::new())),
            Err(ArrayError::NotAnArray),
            "int4[] is not an array of text"
        );
    }
}
