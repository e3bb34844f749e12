//! Binary `COPY ... FROM STDIN` data: the header and trailer are passed
//! on, and in each tuple the bytes of a protected field are replaced by
//! their ciphertext.

use std::mem;

use bytes::BufMut;

use super::{check_length, Problem, Values, MAX_ROW};
use crate::protect::policy::ColumnPolicy;
use crate::sql::Storage;
use crate::wire::copy::binary::{Piece, Splitter};
use crate::wire::messages::data_row::{put_field, Fields};

/// Encrypts the protected fields of a binary COPY data stream.
pub(crate) struct TupleEncryptor<'a> {
    values: Values<'a>,
    splitter: Splitter,
    /// The start of a piece whose end has not arrived yet.
    pending: Vec<u8>,
    /// The tuple being read, counted from 1.
    tuple: usize,
    max_row: usize,
}

impl<'a> TupleEncryptor<'a> {
    pub(super) fn new(values: Values<'a>) -> Self {
        TupleEncryptor {
            values,
            splitter: Splitter::default(),
            pending: Vec::new(),
            tuple: 1,
            max_row: MAX_ROW,
        }
    }

    /// Consumes the payload of one CopyData message; returns the bytes to
    /// send on (zero or more whole pieces).
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, Problem> {
        let mut pending = mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut out = Vec::with_capacity(data.len());
        let mut start = 0;
        while let Some((piece, len)) = self
            .splitter
            .next(&pending[start..])
            .map_err(Problem::Binary)?
        {
            let bytes = &pending[start..start + len];
            match piece {
                Piece::Tuple => self.tuple(bytes, &mut out)?,
                Piece::Header | Piece::Trailer => out.extend_from_slice(bytes),
            }
            start += len;
        }
        pending.drain(..start);
        check_length(pending.len(), self.max_row, self.tuple)?;
        self.pending = pending;
        Ok(out)
    }

    /// At CopyDone: the stream may end after any whole tuple.
    pub(super) fn finish(&mut self) -> Result<Vec<u8>, Problem> {
        if self.pending.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Problem::UnfinishedTuple(self.tuple))
        }
    }

    /// Writes one whole tuple to `out`, protected fields encrypted.
    fn tuple(&mut self, tuple: &[u8], out: &mut Vec<u8>) -> Result<(), Problem> {
        let fields: Vec<Option<&[u8]>> = Fields::of_tuple(tuple).collect();
        let expected = self.values.columns.len();
        if fields.len() != expected {
            return Err(Problem::FieldCount {
                line: self.tuple,
                found: fields.len(),
                expected,
            });
        }
        out.put_u16(fields.len() as u16);
        for (index, field) in fields.into_iter().enumerate() {
            match (field, self.values.column(index)) {
                (Some(plain), Some((column, storage))) => {
                    let ciphertext = self.encrypt(column, storage, plain)?;
                    put_field(out, Some(&ciphertext));
                }
                (value, _) => put_field(out, value),
            }
        }
        self.tuple += 1;
        Ok(())
    }

    /// The ciphertext of a protected field's bytes: a text value's are in
    /// the client encoding (PostgreSQL's `textrecv` converts them), a
    /// `bytea` value's are its plaintext.
    fn encrypt(
        &self,
        column: &ColumnPolicy,
        storage: Storage,
        plain: &[u8],
    ) -> Result<Vec<u8>, Problem> {
        match storage {
            Storage::Text => {
                let text = self.values.decode(plain, column, self.tuple)?;
                self.values
                    .encrypt(column, storage, text.as_bytes(), self.tuple)
            }
            Storage::Bytea => self.values.encrypt(column, storage, plain, self.tuple),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{policy, Fake};
    use crate::sql::CopyIn;
    use crate::text::encoding::ClientEncoding;
    use crate::wire::copy::binary::tests::{stream, tuple_bytes};
    use crate::wire::copy::options::CopyFormat;
    use crate::write::copy_in::CopyEncryptor;

    fn binary_copy() -> CopyIn {
        super::super::tests::copy(CopyFormat::Binary, &["id", "email", "doc"])
    }

    fn run(chunks: &[&[u8]]) -> Result<Vec<u8>, crate::write::copy_in::CopyError> {
        run_in(ClientEncoding::default(), chunks)
    }

    fn run_in(
        encoding: ClientEncoding,
        chunks: &[&[u8]],
    ) -> Result<Vec<u8>, crate::write::copy_in::CopyError> {
        let policy = policy();
        let mut copy_enc = CopyEncryptor::new(&binary_copy(), &policy, &Fake, encoding)?;
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(copy_enc.feed(chunk)?);
        }
        out.extend(copy_enc.finish()?);
        Ok(out)
    }

    #[test]
    fn protected_fields_are_encrypted_in_every_cut() {
        let data = stream(&[
            &[Some(b"1"), Some(b"a@b"), Some(b"\x00\xff")],
            &[Some(b"2"), None, None],
        ]);
        let email = super::super::tests::ct("a@b");
        let expected = stream(&[
            &[Some(b"1"), Some(email.as_bytes()), Some(b"bytes:00ff")],
            &[Some(b"2"), None, None],
        ]);
        for size in 1..data.len() {
            let chunks: Vec<&[u8]> = data.chunks(size).collect();
            assert_eq!(run(&chunks).unwrap(), expected, "{size}");
        }
    }

    #[test]
    fn malformed_streams_fail_the_copy() {
        let short = tuple_bytes(&[Some(b"1"), Some(b"x")]);
        let mut data = stream(&[]);
        data.splice(19..19, short);
        let err = run(&[&data]).unwrap_err();
        assert_eq!(
            (err.sqlstate, err.message.as_str()),
            (
                "22P04",
                "pgveil: line 1 of the COPY data has 2 fields, expected 3"
            )
        );
        let err = run(&[&data[..22]]).unwrap_err();
        assert_eq!(
            err.message,
            "pgveil: line 1 of the binary COPY data ends before its last field"
        );
        let err = run(&[b"PGCOPX\n"]).unwrap_err();
        assert_eq!(err.sqlstate, "22P04");
        let mut after = stream(&[]);
        after.extend(tuple_bytes(&[Some(b"secret"), None, None]));
        let err = run(&[&after]).unwrap_err();
        assert!(err.message.contains("after its end marker"), "{err}");
        assert!(!err.message.contains("secret"));
    }

    #[test]
    fn text_plaintext_must_be_utf8() {
        let data = stream(&[&[Some(b"1"), Some(b"\xff"), None]]);
        let err = run(&[&data]).unwrap_err();
        assert_eq!(err.sqlstate, "22021");
        assert!(err.message.contains("public.customers.email"), "{err}");
    }

    #[test]
    fn text_is_read_in_the_client_encoding_and_bytea_is_not() {
        let gbk = ClientEncoding::from_pg_name("GBK");
        // 乗 is 81 5C in GBK; the bytea value is the same bytes, unconverted.
        let data = stream(&[&[Some(b"1"), Some(b"\x81\x5c"), Some(b"\x81\x5c")]]);
        let email = super::super::tests::ct("乗");
        let expected = stream(&[&[Some(b"1"), Some(email.as_bytes()), Some(b"bytes:815c")]]);
        assert_eq!(run_in(gbk, &[&data]).unwrap(), expected);
        let bad = stream(&[&[Some(b"1"), Some(b"\x81\t"), None]]);
        let err = run_in(gbk, &[&bad]).unwrap_err();
        assert_eq!(err.sqlstate, "22021");
    }
}
