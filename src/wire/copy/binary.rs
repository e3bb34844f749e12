//! PostgreSQL's binary COPY format, split into its pieces as its bytes
//! arrive, for revealing a binary `COPY ... TO STDOUT` (`copy_out`) and
//! encrypting a binary `COPY ... FROM STDIN` (`copy_in`).
//!
//! A stream is a header (the signature `PGCOPY\n\377\r\n\0`, a 32-bit flags
//! word, a 32-bit header extension length and that many bytes), tuples (a
//! 16-bit field count, then per field a 32-bit length, -1 for NULL, and
//! that many bytes: the layout of a DataRow's body, so
//! [`crate::wire::messages::data_row::Fields`] reads them), and a trailer (a field count of
//! -1). Integers are big-endian.
//!
//! The pieces need not line up with CopyData messages. PostgreSQL's COPY
//! TO sends one tuple per message, the header with the first tuple and the
//! trailer on its own (`CopySendEndOfRow` in `copyto.c`), but a client's
//! COPY FROM may cut the stream anywhere, so [`Splitter::next`] says when
//! a piece is not whole yet and the caller keeps its start.
//!
//! Like PostgreSQL, pgveil refuses a header whose flags have the OID bit
//! or any critical bit (16 to 31) set, ignores the other bits, and passes
//! the header extension on unread.

use thiserror::Error;

/// The first bytes of every binary COPY stream.
pub(crate) const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Signature, flags and extension length.
const HEADER_FIXED: usize = SIGNATURE.len() + 4 + 4;
/// Flag bits 16 (OIDs) to 31, which a reader must understand.
const CRITICAL_FLAGS: u32 = 0xffff_0000;

/// One whole piece of a binary COPY stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Header,
    /// A tuple: field count and fields.
    Tuple,
    Trailer,
}

/// A binary COPY stream pgveil cannot read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub(crate) enum FormatError {
    #[error("the binary COPY data does not start with the PGCOPY signature")]
    Signature,
    #[error("the binary COPY header has flags pgveil does not support (WITH OIDS?)")]
    Flags,
    #[error("the binary COPY data has a negative length")]
    Length,
    #[error("the binary COPY data goes on after its end marker")]
    AfterTrailer,
}

/// Where a stream is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Header,
    Tuples,
    Ended,
}

/// Finds the pieces of one binary COPY stream, in order.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Splitter {
    stage: Stage,
}

impl Splitter {
    /// The piece at the start of `data` and its length, or `None` if
    /// `data` does not hold all of it yet (then nothing is consumed).
    pub(crate) fn next(&mut self, data: &[u8]) -> Result<Option<(Piece, usize)>, FormatError> {
        let found = match self.stage {
            Stage::Header => header_len(data)?.map(|len| (Piece::Header, len)),
            Stage::Tuples => match data.first_chunk::<2>().map(|n| i16::from_be_bytes(*n)) {
                None => None,
                Some(-1) => Some((Piece::Trailer, 2)),
                Some(count) if count < 0 => return Err(FormatError::Length),
                Some(_) => tuple_len(data)?.map(|len| (Piece::Tuple, len)),
            },
            Stage::Ended if data.is_empty() => None,
            Stage::Ended => return Err(FormatError::AfterTrailer),
        };
        if let Some((piece, _)) = found {
            self.stage = match piece {
                Piece::Header | Piece::Tuple => Stage::Tuples,
                Piece::Trailer => Stage::Ended,
            };
        }
        Ok(found)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn header_len(data: &[u8]) -> Result<Option<usize>, FormatError> {
    let known = data.len().min(SIGNATURE.len());
    if data[..known] != SIGNATURE[..known] {
        return Err(FormatError::Signature);
    }
    let (Some(flags), Some(extension)) = (
        be_u32(data, SIGNATURE.len()),
        be_u32(data, SIGNATURE.len() + 4),
    ) else {
        return Ok(None);
    };
    if flags & CRITICAL_FLAGS != 0 {
        return Err(FormatError::Flags);
    }
    let extension = i32::try_from(extension).map_err(|_| FormatError::Length)?;
    let len = HEADER_FIXED + extension as usize;
    Ok((data.len() >= len).then_some(len))
}

/// The length of the tuple at the start of `data` (its field count is not
/// negative), if all of it is there.
fn tuple_len(data: &[u8]) -> Result<Option<usize>, FormatError> {
    let count = u16::from_be_bytes([data[0], data[1]]);
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = be_u32(data, at) else {
            return Ok(None);
        };
        at += 4;
        match len as i32 {
            -1 => {}
            len if len < 0 => return Err(FormatError::Length),
            len => at += len as usize,
        }
    }
    Ok((data.len() >= at).then_some(at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header without extension, then these tuples, then the trailer.
    pub(crate) fn stream(tuples: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend([0; 8]);
        for tuple in tuples {
            out.extend(tuple_bytes(tuple));
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    pub(crate) fn tuple_bytes(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as u16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                Some(value) => {
                    out.extend((value.len() as i32).to_be_bytes());
                    out.extend(*value);
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
        out
    }

    /// The pieces of `data` fed in chunks of `size` bytes, each with its
    /// bytes, as a caller keeping the unfinished tail would see them.
    fn pieces(data: &[u8], size: usize) -> Result<Vec<(Piece, Vec<u8>)>, FormatError> {
        let mut splitter = Splitter::default();
        let mut pending = Vec::new();
        let mut found = Vec::new();
        for chunk in data.chunks(size) {
            pending.extend_from_slice(chunk);
            while let Some((piece, len)) = splitter.next(&pending)? {
                found.push((piece, pending.drain(..len).collect()));
            }
        }
        assert!(pending.is_empty());
        Ok(found)
    }

    #[test]
    fn splits_at_any_cut() {
        let rows: [&[Option<&[u8]>]; 2] = [&[Some(b"ab"), None], &[Some(b""), Some(b"xyz")]];
        let data = stream(&rows);
        for size in 1..=data.len() {
            let got = pieces(&data, size).unwrap();
            let kinds: Vec<Piece> = got.iter().map(|(p, _)| *p).collect();
            assert_eq!(
                kinds,
                [Piece::Header, Piece::Tuple, Piece::Tuple, Piece::Trailer]
            );
            assert_eq!(got[1].1, tuple_bytes(rows[0]), "{size}");
            assert_eq!(got[2].1, tuple_bytes(rows[1]), "{size}");
        }
    }

    #[test]
    fn header_extension_is_passed_over() {
        let mut data = SIGNATURE.to_vec();
        data.extend(0x0000_ffffu32.to_be_bytes()); // non-critical flags
        data.extend(3u32.to_be_bytes());
        data.extend(b"ext");
        data.extend((-1i16).to_be_bytes());
        let got = pieces(&data, 5).unwrap();
        assert_eq!(got[0], (Piece::Header, data[..HEADER_FIXED + 3].to_vec()));
        assert_eq!(got[1].0, Piece::Trailer);
    }

    #[test]
    fn refuses_what_postgresql_refuses() {
        let mut oids = SIGNATURE.to_vec();
        oids.extend((1u32 << 16).to_be_bytes());
        oids.extend([0; 4]);
        assert_eq!(pieces(&oids, 64), Err(FormatError::Flags));
        assert_eq!(pieces(b"PGCOPX", 64), Err(FormatError::Signature));
        let mut negative = stream(&[]);
        negative.truncate(HEADER_FIXED);
        negative.extend(1u16.to_be_bytes());
        negative.extend((-2i32).to_be_bytes());
        assert_eq!(pieces(&negative, 64), Err(FormatError::Length));
        let mut after = stream(&[]);
        after.push(0);
        assert_eq!(pieces(&after, 64), Err(FormatError::AfterTrailer));
    }
}
