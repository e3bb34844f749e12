//! Values for a protected column: a value written to it, an array of
//! values for it, a string literal replaced in the text by the literal of
//! its ciphertext, a `$n` parameter noted as a slot to encrypt at Bind.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{a_const, AConst, Node, Token};

use super::analyzer::{Analyzer, Edit};
use super::comparisons::Operand;
use crate::protect::policy::ColumnPolicy;
use crate::sql::array;
use crate::sql::columns::{ColumnRefId, Storage};
use crate::sql::encryptor::EncryptError;
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::Scope;
use crate::sql::targets::{storage, ParamSlot, Target};

/// Checks one element of an array for a protected column.
type ElementCheck<'a> =
    for<'s> fn(&mut Analyzer<'a>, &'a ColumnPolicy, &Node, &Scope<'s, 'a>) -> Result<()>;

impl<'a> Analyzer<'a> {
    /// A value written to a protected column.
    pub(super) fn write(
        &mut self,
        column: &'a ColumnPolicy,
        value: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        if matches!(value.node, Some(NodeEnum::SetToDefault(_))) {
            return Ok(());
        }
        let operand = self.operand(value, scope);
        if matches!(operand, Operand::Literal(..) | Operand::Param(_)) {
            self.note_written(column);
        }
        match operand {
            Operand::Literal(constant, text) => self.encrypt(column, constant, text),
            Operand::Param(number) => self.param(column, number),
            Operand::Null => Ok(()),
            Operand::Protected(_) | Operand::Other => Err(Reason::NotWritable(column.into())),
        }
    }

    /// Notes, for the audit log, that a value is written to `column`.
    fn note_written(&mut self, column: &ColumnPolicy) {
        let id = ColumnRefId::from(column);
        if !self.written.contains(&id) {
            self.written.push(id);
        }
    }

    /// An array of values for `column`: `ARRAY[...]`, each element
    /// checked by `element`; a string literal in array syntax or a `$n`,
    /// encrypted element by element; or NULL, possibly cast. Anything else
    /// is refused with `other`, and any array for a `bytea` column.
    pub(super) fn array(
        &mut self,
        column: &'a ColumnPolicy,
        node: &Node,
        scope: &Scope<'_, 'a>,
        element: ElementCheck<'a>,
        other: fn(ColumnRefId) -> Reason,
    ) -> Result<()> {
        if storage(self.columns, column)? == Storage::Bytea {
            return Err(Reason::ByteaArray(column.into()));
        }
        match &node.node {
            Some(NodeEnum::TypeCast(cast)) => match cast.arg.as_deref() {
                Some(arg) => self.array(column, arg, scope, element, other),
                None => Err(other(column.into())),
            },
            Some(NodeEnum::AArrayExpr(array)) => array
                .elements
                .iter()
                .try_for_each(|item| element(self, column, item, scope)),
            Some(NodeEnum::AConst(c)) if c.isnull => Ok(()),
            Some(NodeEnum::AConst(
                constant @ AConst {
                    val: Some(a_const::Val::Sval(text)),
                    ..
                },
            )) => self.encrypt_array(column, constant, &text.sval),
            Some(NodeEnum::ParamRef(p)) => match usize::try_from(p.number) {
                Ok(number) => self.slot(column, number, true),
                Err(_) => Err(other(column.into())),
            },
            _ => Err(other(column.into())),
        }
    }

    /// An array written to a protected column, element by element.
    pub(super) fn write_array(
        &mut self,
        column: &'a ColumnPolicy,
        node: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        self.note_written(column);
        self.array(column, node, scope, Self::write, Reason::NotWritable)
    }

    /// `$number` holds a value for `column`.
    pub(super) fn param(&mut self, column: &ColumnPolicy, number: usize) -> Result<()> {
        self.slot(column, number, false)
    }

    /// `$number` holds a value, or an array of values, for `column`.
    fn slot(&mut self, column: &ColumnPolicy, number: usize, array: bool) -> Result<()> {
        let slot = ParamSlot {
            number,
            target: Target::of(self.columns, column)?,
            array,
        };
        if !self.params.contains(&slot) {
            self.params.push(slot);
        }
        Ok(())
    }

    /// Replaces the literal token at the constant's location by the
    /// literal of its ciphertext.
    pub(super) fn encrypt(
        &mut self,
        column: &ColumnPolicy,
        constant: &AConst,
        plaintext: &str,
    ) -> Result<()> {
        let replacement = match storage(self.columns, column)? {
            Storage::Text => format!("'{}'", self.ciphertext(column, plaintext)?),
            Storage::Bytea => self.bytea_literal(column, plaintext)?,
        };
        self.replace_literal(constant, replacement)
    }

    /// Replaces a string literal in array syntax (`'{a,b}'`) by the array
    /// of its elements' ciphertexts.
    fn encrypt_array(
        &mut self,
        column: &ColumnPolicy,
        constant: &AConst,
        plaintext: &str,
    ) -> Result<()> {
        let mut failure = None;
        let encrypted = array::map_text(plaintext, |element| {
            self.ciphertext(column, element).map_err(|reason| {
                let message = reason.to_string();
                failure = Some(reason);
                message
            })
        });
        match (encrypted, failure) {
            (_, Some(reason)) => Err(reason),
            (Ok(encrypted), None) => self.replace_literal(constant, format!("'{encrypted}'")),
            (Err(error), None) => Err(Reason::Array {
                column: column.into(),
                error,
            }),
        }
    }

    /// The ciphertext of `plaintext` for a text `column`, checked to be
    /// plain ASCII text that needs no escaping in a literal.
    fn ciphertext(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String> {
        let ciphertext = self
            .enc
            .encrypt(column, plaintext)
            .map_err(|error| encrypt_error(column, error))?;
        if !ciphertext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
        {
            return Err(encrypt_error(
                column,
                EncryptError("the ciphertext is not plain ASCII text".into()),
            ));
        }
        Ok(ciphertext)
    }

    /// `E'\\x...'`: the hex form of the binary ciphertext of the bytes the
    /// literal stands for.
    fn bytea_literal(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String> {
        let bytes = crate::text::bytea::decode(plaintext.as_bytes())
            .ok_or_else(|| Reason::NotBytea(column.into()))?;
        let ciphertext = self
            .enc
            .encrypt_bytes(column, &bytes)
            .map_err(|error| encrypt_error(column, error))?;
        Ok(format!("E'\\\\x{}'", hex::encode(ciphertext)))
    }

    /// Replaces the literal token of `constant` by `replacement`.
    fn replace_literal(&mut self, constant: &AConst, replacement: String) -> Result<()> {
        let (start, end) = self
            .literal_extent(constant.location)
            .ok_or(Reason::Syntax)?;
        self.edits.push(Edit {
            start,
            end,
            replacement,
        });
        Ok(())
    }

    /// The byte range of the literal token starting at `location`, with
    /// its `UESCAPE '.'` clause if it has one.
    fn literal_extent(&self, location: i32) -> Option<(usize, usize)> {
        let i = self
            .tokens
            .binary_search_by_key(&location, |t| t.start)
            .ok()?;
        let mut end = self.tokens[i].end;
        if let [escape, char, ..] = &self.tokens[i + 1..] {
            if escape.token() == Token::Uescape && char.token() == Token::Sconst {
                end = char.end;
            }
        }
        Some((
            usize::try_from(self.tokens[i].start).ok()?,
            usize::try_from(end).ok()?,
        ))
    }
}

/// The refusal of an encryption that failed.
fn encrypt_error(column: &ColumnPolicy, error: EncryptError) -> Reason {
    Reason::Encrypt {
        column: column.into(),
        error,
    }
}
