//! The parameters of a batch's compare-and-set `UPDATE` (see
//! [`sql::update`]): per key column an array of the rows' keys as text,
//! per migrated column an array of old values and one of new values (NULL
//! where the row keeps the column), then the batch's first and last key.
//! Old values are borrowed from the rows read, new ones from the verdicts.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::plan::{Form, TablePlan, Walk};
use super::sql;
use super::value::{New, Verdict};

/// The parameters of an update.
pub(super) struct Params<'r> {
    arrays: Vec<Param<'r>>,
    bounds: Vec<&'r str>,
}

enum Param<'r> {
    Text(Vec<Option<&'r str>>),
    Bytes(Vec<Option<&'r [u8]>>),
}

impl<'r> Params<'r> {
    pub(super) fn new(
        table: &TablePlan,
        rows: &'r [Row],
        judged: &'r [Vec<Option<Verdict>>],
        subset: &[usize],
    ) -> Self {
        let keys = sql::key_len(table);
        let mut arrays: Vec<Param<'r>> = (0..keys)
            .map(|k| {
                Param::Text(
                    subset
                        .iter()
                        .map(|&i| Some(rows[i].get::<_, &str>(k)))
                        .collect(),
                )
            })
            .collect();
        for (c, column) in table.columns.iter().enumerate() {
            let new = |i: usize| judged[i][c].as_ref().and_then(Verdict::new_value);
            let changed = |i: usize| new(i).is_some();
            match column.form {
                Form::Text => {
                    let old = subset
                        .iter()
                        .map(|&i| changed(i).then(|| rows[i].get::<_, &str>(keys + c)))
                        .collect();
                    let new = subset
                        .iter()
                        .map(|&i| match new(i) {
                            Some(New::Text(text)) => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    arrays.push(Param::Text(old));
                    arrays.push(Param::Text(new));
                }
                Form::Bytes => {
                    let old = subset
                        .iter()
                        .map(|&i| changed(i).then(|| rows[i].get::<_, &[u8]>(keys + c)))
                        .collect();
                    let new = subset
                        .iter()
                        .map(|&i| match new(i) {
                            Some(New::Bytes(bytes)) => Some(bytes.as_slice()),
                            _ => None,
                        })
                        .collect();
                    arrays.push(Param::Bytes(old));
                    arrays.push(Param::Bytes(new));
                }
            }
        }
        let bounds = match &table.walk {
            Walk::Key(_) => {
                let (first, last) = (subset[0], subset[subset.len() - 1]);
                (0..keys)
                    .map(|k| rows[first].get::<_, &str>(k))
                    .chain((0..keys).map(|k| rows[last].get::<_, &str>(k)))
                    .collect()
            }
            Walk::Ctid => Vec::new(),
        };
        Params { arrays, bounds }
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        let arrays = self.arrays.iter().map(|p| match p {
            Param::Text(values) => values as &(dyn ToSql + Sync),
            Param::Bytes(values) => values as &(dyn ToSql + Sync),
        });
        arrays
            .chain(self.bounds.iter().map(|b| b as &(dyn ToSql + Sync)))
            .collect()
    }
}
