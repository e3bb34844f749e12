//! Result shapes: which fields of a result come straight from a protected
//! column, so that a value stored there that is not ciphertext pgveil can
//! open (rows written before pgveil was deployed, or a value merely shaped
//! like ciphertext) is revealed as the plaintext it may be, by that
//! column's rule, instead of passing as it is.
//!
//! Ciphertext names its own key (`reveal`), plaintext names nothing: the
//! field's column is what a RowDescription says, by table OID and column
//! number, for a plain column reference (a computed output has none, and
//! pgveil refuses computing on protected columns). A RowDescription comes
//! with the rows of each statement of a simple Query, and answers a
//! Describe of a portal or a prepared statement in the extended protocol,
//! whose Executes then send rows without one. So the shapes described are
//! kept by statement and portal name, each with the generation of the
//! name ([`Named`]), and an Execute's rows take the shape of its portal,
//! or else of the statement it was bound from, as the client tap noted
//! them in the session's queue ([`crate::session::ledger::Rows`]). Rows whose
//! statement was never described (a SQL cursor run by portal name) have
//! no shape: their ciphertext is still revealed, their other values pass.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protect::policy::{ColumnPolicy, Policy};
use crate::session::ledger::{Described, Named, Rows};

/// PostgreSQL's OID of `bytea`.
const BYTEA_OID: u32 = 17;

/// One field of a result that comes from a protected column.
#[derive(Clone, Copy, Debug)]
pub struct Field<'v> {
    /// The protected column it comes from.
    pub column: &'v ColumnPolicy,
    /// The field is `bytea` (else a text type).
    pub bytea: bool,
    /// In binary format (else text).
    pub binary: bool,
}

/// The protected fields of a result, by position; `None` where a field
/// is not a protected column.
pub(super) type Shape<'v> = Arc<[Option<Field<'v>>]>;

/// The shapes of a session's results.
#[derive(Default)]
pub(super) struct Shapes<'v> {
    /// Protected columns by table OID and column number.
    attributes: HashMap<(u32, i16), &'v ColumnPolicy>,
    /// The shape of the statement of a simple Query answering now.
    current: Option<Shape<'v>>,
    statements: HashMap<String, (u64, Option<Shape<'v>>)>,
    portals: HashMap<String, (u64, Option<Shape<'v>>)>,
}

impl<'v> Shapes<'v> {
    /// For a session whose catalog names these protected columns, by
    /// table OID and column number: `(schema, table, column)`.
    pub(super) fn new(
        policy: &'v Policy,
        attributes: &HashMap<(u32, i16), (String, String, String)>,
    ) -> Self {
        let attributes = attributes
            .iter()
            .filter_map(|(at, (schema, table, column))| {
                Some((*at, policy.column(schema, table, column)?))
            })
            .collect();
        Self {
            attributes,
            ..Self::default()
        }
    }

    /// Takes each protected field's column from `policy`, which a reload
    /// put in force: the same columns, under their new rules. A column
    /// `policy` no longer protects is no longer a protected field.
    pub(super) fn rebind(&mut self, policy: &'v Policy) {
        let same =
            |column: &ColumnPolicy| policy.column(&column.schema, &column.table, &column.column);
        self.attributes = self
            .attributes
            .iter()
            .filter_map(|(at, column)| Some((*at, same(column)?)))
            .collect();
        let rebind = |shape: &Shape<'_>| -> Shape<'v> {
            shape
                .iter()
                .map(|field| {
                    let field = field.as_ref()?;
                    Some(Field {
                        column: same(field.column)?,
                        ..*field
                    })
                })
                .collect()
        };
        self.current = self.current.as_ref().map(rebind);
        for (_, shape) in self
            .statements
            .values_mut()
            .chain(self.portals.values_mut())
        {
            *shape = shape.as_ref().map(rebind);
        }
    }

    /// Whether no result can have a protected field (no protected table
    /// exists): nothing to follow.
    pub(super) fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// A RowDescription (`frame`) or, with `None`, a NoData, answering
    /// `target` (a Describe) or else describing the rows of a simple
    /// Query's statement that follow.
    pub(super) fn described(&mut self, frame: Option<&[u8]>, target: Option<Described>) {
        let shape = frame.and_then(|frame| self.shape(frame));
        match target {
            Some(Described::Statement(Named { name, generation })) => {
                self.statements.insert(name, (generation, shape));
            }
            Some(Described::Portal(Named { name, generation })) => {
                self.portals.insert(name, (generation, shape));
            }
            None => self.current = shape,
        }
    }

    /// A statement ended (CommandComplete, EmptyQueryResponse,
    /// PortalSuspended, an error, ReadyForQuery).
    pub(super) fn ended(&mut self) {
        self.current = None;
    }

    /// The shape of rows arriving now: those of the Execute `rows`, or of
    /// a simple Query's statement.
    pub(super) fn of_rows(&self, rows: Option<&Rows>) -> Option<Shape<'v>> {
        let Some(rows) = rows else {
            return self.current.clone();
        };
        let known = |map: &HashMap<String, (u64, Option<Shape<'v>>)>, named: &Named| {
            map.get(&named.name)
                .filter(|(generation, _)| *generation == named.generation)
                .map(|(_, shape)| shape.clone())
        };
        known(&self.portals, &rows.portal)
            .or_else(|| known(&self.statements, rows.statement.as_ref()?))
            .flatten()
    }

    /// The shape a RowDescription gives, if any field is protected.
    fn shape(&self, frame: &[u8]) -> Option<Shape<'v>> {
        let body = frame.get(5..)?;
        let count = u16::from_be_bytes(*body.first_chunk::<2>()?) as usize;
        let mut rest = &body[2..];
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let name_end = rest.iter().position(|&b| b == 0)?;
            let (table, tail) = rest[name_end + 1..].split_first_chunk::<4>()?;
            let (attnum, tail) = tail.split_first_chunk::<2>()?;
            let (type_oid, tail) = tail.split_first_chunk::<4>()?;
            // Type length (2) and modifier (4), then the format code.
            let format = tail.get(6..8)?;
            rest = tail.get(8..)?;
            let at = (u32::from_be_bytes(*table), i16::from_be_bytes(*attnum));
            fields.push(self.attributes.get(&at).map(|column| Field {
                column,
                bytea: u32::from_be_bytes(*type_oid) == BYTEA_OID,
                binary: format == [0, 1],
            }));
        }
        fields.iter().any(Option::is_some).then(|| fields.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_description(fields: &[(u32, i16, u32, i16)]) -> Vec<u8> {
        let mut body = (fields.len() as u16).to_be_bytes().to_vec();
        for (table, attnum, type_oid, format) in fields {
            body.extend_from_slice(b"f\0");
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&attnum.to_be_bytes());
            body.extend_from_slice(&type_oid.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&format.to_be_bytes());
        }
        let mut frame = vec![b'T'];
        frame.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    fn shapes(policy: &Policy) -> Shapes<'_> {
        let mut attributes = HashMap::new();
        attributes.insert(
            (16_400, 3),
            (
                "public".to_owned(),
                "customers".to_owned(),
                "email".to_owned(),
            ),
        );
        Shapes::new(policy, &attributes)
    }

    fn policy() -> Policy {
        Policy::from_str(
            "p.toml",
            "[[column]]\ntable = \"customers\"\ncolumn = \"email\"\nencryption = \"deterministic\"\n",
        )
        .unwrap()
    }

    fn named(name: &str, generation: u64) -> Named {
        Named {
            name: name.into(),
            generation,
        }
    }

    #[test]
    fn protected_fields_are_found_by_table_and_column_number() {
        let policy = policy();
        let mut shapes = shapes(&policy);
        let frame = row_description(&[(16_400, 1, 20, 0), (16_400, 3, 17, 1), (0, 0, 25, 0)]);
        shapes.described(Some(&frame), None);
        let shape = shapes.of_rows(None).unwrap();
        assert!(shape[0].is_none() && shape[2].is_none());
        let field = shape[1].unwrap();
        assert_eq!(field.column.column, "email");
        assert!(field.bytea && field.binary);
        shapes.ended();
        assert!(shapes.of_rows(None).is_none());
        // No protected field: no shape.
        shapes.described(Some(&row_description(&[(16_400, 1, 20, 0)])), None);
        assert!(shapes.of_rows(None).is_none());
        assert!(shapes.shape(b"T\0\0\0\x06\0\x09").is_none(), "truncated");
    }

    #[test]
    fn executes_take_the_shape_of_their_portal_or_statement_of_the_same_generation() {
        let policy = policy();
        let mut shapes = shapes(&policy);
        let frame = row_description(&[(16_400, 3, 25, 0)]);
        shapes.described(Some(&frame), Some(Described::Statement(named("s", 4))));
        let rows = |portal: Named, statement: Option<Named>| Rows { portal, statement };
        assert!(shapes
            .of_rows(Some(&rows(named("", 5), Some(named("s", 4)))))
            .is_some());
        // Parsed again since it was described.
        assert!(shapes
            .of_rows(Some(&rows(named("", 7), Some(named("s", 6)))))
            .is_none());
        shapes.described(None, Some(Described::Portal(named("p", 8))));
        assert!(shapes
            .of_rows(Some(&rows(named("p", 8), Some(named("s", 4)))))
            .is_none());
    }

    #[test]
    fn a_reload_rebinds_described_shapes_to_the_new_rules() {
        use crate::protect::policy::Action;
        let old = policy();
        let new = Policy::from_str(
            "p.toml",
            "[[column]]\ntable = \"customers\"\ncolumn = \"email\"\ndefault = \"deny\"\n",
        )
        .unwrap();
        let none = Policy::from_str("p.toml", "").unwrap();
        let mut shapes = shapes(&old);
        let frame = row_description(&[(16_400, 3, 25, 0), (16_400, 1, 23, 0)]);
        shapes.described(Some(&frame), Some(Described::Statement(named("s", 4))));
        let rows = Rows {
            portal: named("", 5),
            statement: Some(named("s", 4)),
        };
        shapes.rebind(&new);
        let shape = shapes.of_rows(Some(&rows)).unwrap();
        let field = shape[0].unwrap();
        assert!(std::ptr::eq(field.column, new.columns().next().unwrap()));
        assert_eq!(field.column.default, Action::Deny);
        assert!(shape[1].is_none());
        // A column the new policy drops is no longer a protected field.
        shapes.rebind(&none);
        assert!(shapes.of_rows(Some(&rows)).unwrap()[0].is_none());
        assert!(shapes.is_empty());
    }
}
