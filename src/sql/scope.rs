//! The relations a (sub)query can name, and what their columns are:
//! protected columns as they are, columns derived from protected values,
//! and plain ones (see [`super::outputs`]).

use pg_query::protobuf::ColumnRef;

use super::names::fields_of;
use super::outputs::{Origin, Output, Outputs};
use crate::protect::policy::ColumnPolicy;

/// Protected columns a relation exposes, by the name it exposes them as.
pub(super) type Protected<'a> = Vec<(String, &'a ColumnPolicy)>;

/// A table, view, subquery or CTE in a FROM list.
#[derive(Default)]
pub(super) struct Relation<'a> {
    /// The alias, or the table or CTE name.
    pub name: String,
    /// The schema of a table referred to without an alias.
    pub schema: Option<String>,
    /// Its protected columns as they are.
    pub columns: Protected<'a>,
    /// Its columns computed from protected values, by name (see
    /// [`super::outputs`]).
    pub derived: Vec<(String, Origin<'a>)>,
    /// Every column not in `columns` is derived from this: the names or
    /// positions of its derived columns are not all known.
    pub rest: Option<Origin<'a>>,
}

impl<'a> Relation<'a> {
    /// The relation over a query with these outputs.
    pub(super) fn of_outputs(name: String, outputs: Outputs<'a>) -> Self {
        let mut relation = Relation {
            name,
            rest: outputs.rest,
            ..Relation::default()
        };
        for (column, output) in outputs.columns {
            match output {
                Output::Exact(policy) => relation.columns.push((column, policy)),
                Output::Derived(origin) => relation.derived.push((column, origin)),
                Output::Plain => {}
            }
        }
        relation
    }

    /// Its columns as `SELECT *` outputs them.
    pub(super) fn outputs(&self) -> Outputs<'a> {
        let exact = self
            .columns
            .iter()
            .map(|(n, c)| (n.clone(), Output::Exact(c)));
        let derived = self.derived.iter();
        let derived = derived.map(|(n, origin)| (n.clone(), Output::Derived(*origin)));
        Outputs {
            columns: exact.chain(derived).collect(),
            positional: false,
            rest: self.rest,
        }
    }

    /// Where its column `name` is computed from, if it is derived.
    pub(super) fn derived(&self, name: &str) -> Option<Origin<'a>> {
        let listed = self.derived.iter().find(|(n, _)| n == name);
        let exact = || self.columns.iter().any(|(n, _)| n == name);
        listed
            .map(|(_, origin)| *origin)
            .or(self.rest.filter(|_| !exact()))
    }
}

/// The relations and CTEs visible in a (sub)query, and the enclosing
/// query's scope.
#[derive(Default)]
pub(super) struct Scope<'s, 'a> {
    pub relations: Vec<Relation<'a>>,
    pub ctes: Vec<(String, Outputs<'a>)>,
    pub parent: Option<&'s Scope<'s, 'a>>,
}

impl<'s, 'a> Scope<'s, 'a> {
    pub(super) fn child(parent: &'s Scope<'s, 'a>) -> Self {
        Scope {
            parent: Some(parent),
            ..Scope::default()
        }
    }

    pub(super) fn levels(&self) -> impl Iterator<Item = &Scope<'s, 'a>> {
        std::iter::successors(Some(self), |scope| scope.parent)
    }

    pub(super) fn visible(&self) -> impl Iterator<Item = &Relation<'a>> {
        self.levels().flat_map(|scope| &scope.relations)
    }

    pub(super) fn cte(&self, name: &str) -> Option<&Outputs<'a>> {
        self.levels()
            .flat_map(|scope| &scope.ctes)
            .find(|(cte, _)| cte == name)
            .map(|(_, outputs)| outputs)
    }

    /// The protected column a column reference names, if any.
    pub(super) fn resolve(&self, fields: &[String]) -> Option<&'a ColumnPolicy> {
        let find = |relation: &Relation<'a>, column: &str| {
            relation
                .columns
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, policy)| *policy)
        };
        match fields {
            [column] => self.visible().find_map(|relation| find(relation, column)),
            [table, column] => self
                .visible()
                .find(|relation| relation.name == *table)
                .and_then(|relation| find(relation, column)),
            [schema, table, column] => self
                .visible()
                .find(|r| r.name == *table && r.schema.as_deref() == Some(schema))
                .and_then(|relation| find(relation, column)),
            _ => None,
        }
    }

    /// Where the derived column a column reference names is computed
    /// from, if it names one: comparing it with a value is refused.
    pub(super) fn derived(&self, fields: &[String]) -> Option<Origin<'a>> {
        match fields {
            [column] => self.visible().find_map(|r| r.derived(column)),
            [.., table, column] => self
                .visible()
                .filter(|r| r.name == *table)
                .find_map(|r| r.derived(column)),
            [] => None,
        }
    }

    /// What a column reference in a computed output reads: a protected
    /// column, a derived one, or a whole row (`t`, `t.*`) with either.
    pub(super) fn reads(&self, column: &ColumnRef) -> Option<Origin<'a>> {
        let fields = fields_of(column);
        if let Some(policy) = self.resolve(&fields) {
            return Some(Origin::Column(policy));
        }
        let row = |relation: &Relation<'a>| relation.outputs().origin();
        self.derived(&fields).or_else(|| match fields.as_slice() {
            [] => self.visible().find_map(row),
            [table] => self.visible().filter(|r| r.name == *table).find_map(row),
            _ => None,
        })
    }

    /// What a select list's bare column reference outputs.
    pub(super) fn output(&self, column: &ColumnRef) -> Output<'a> {
        match self.resolve(&fields_of(column)) {
            Some(policy) => Output::Exact(policy),
            None => self.reads(column).map_or(Output::Plain, Output::Derived),
        }
    }

    /// Every protected column the relations of this level expose.
    pub(super) fn all_columns(&self) -> impl Iterator<Item = &(String, &'a ColumnPolicy)> {
        self.relations.iter().flat_map(|r| &r.columns)
    }
}
