//! Server-side objects over protected tables, which a statement can use
//! without naming a protected table: views that expose one (directly or
//! through other views), tables with a rule whose action touches one or a
//! trigger whose function mentions one, and functions and procedures whose
//! body mentions one (or calls such a function). The session's catalog
//! lookup finds them at login (`catalog.rs`); this module decides what a
//! statement may do with them:
//!
//! - writes (`INSERT`, `UPDATE`, `DELETE ... RETURNING`, `MERGE`, `COPY
//!   FROM`) into such a view or table are refused: the values would reach
//!   the protected table unencrypted, by a path pgveil does not follow;
//! - a call of such a function with a string literal or a parameter among
//!   its arguments, anywhere in the text, is refused, for the same reason;
//!   calls without them pass, and their results are revealed as any;
//! - reads through a view work: the view's columns that are a protected
//!   column as it is (`customers.email`, possibly through other views) are
//!   that column for comparisons, so literals compared with them are
//!   encrypted; comparing a column computed from protected values
//!   (`lower(email)`) is refused ([`crate::sql::views`]).
//!
//! Their names extend the cheap pre-check: a statement that mentions none
//! of them nor a protected table is still relayed unparsed. Objects created
//! after a session logged in are unknown to it; the database's ciphertext
//! guards ([`crate::protect::guard`]) catch writes through them.

use pg_query::protobuf::{ScanToken, Token};

use super::columns::ColumnRefId;
use super::refusal::Reason;
use super::views::{self, KnownViews, ViewColumns};
use crate::protect::policy::{Policy, TableMentions};

/// What kind of object a catalog row describes, with the name of the rule
/// or trigger for those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A view that exposes a protected table.
    View,
    /// A rule, by its name, on a table, whose action touches a protected
    /// table.
    Rule(String),
    /// A trigger, by its name, on a table, whose function mentions a
    /// protected table.
    Trigger(String),
    /// A function or procedure whose body mentions a protected table.
    Function,
}

/// A server-side object over a protected table, as the catalog lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CatalogObject {
    /// What kind of object it is.
    pub kind: Kind,
    /// The schema of the view, function, or the table the rule or trigger
    /// is on.
    pub schema: String,
    /// The name of the view, function, or the table the rule or trigger is
    /// on.
    pub name: String,
    /// The protected table it exposes or may write, `schema.table`.
    pub table: String,
    /// A view's definition, as `pg_get_viewdef` prints it.
    pub definition: Option<String>,
}

impl CatalogObject {
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether a reference (`schema` empty when unqualified, since pgveil
    /// does not know the `search_path`) may name this object.
    fn named(&self, schema: &str, name: &str) -> bool {
        self.name == name && (schema.is_empty() || self.schema == schema)
    }
}

/// A view over a protected table and what its columns are.
#[derive(Debug)]
pub(super) struct View {
    pub object: CatalogObject,
    pub columns: ViewColumns,
}

impl View {
    pub(super) fn qualified(&self) -> String {
        self.object.qualified()
    }

    pub(super) fn table(&self) -> &str {
        &self.object.table
    }
}

/// The server-side objects a session knows of.
#[derive(Debug, Default)]
pub(crate) struct ServerObjects {
    views: Vec<View>,
    /// Tables with rules or triggers that may write a protected table.
    hooked: Vec<CatalogObject>,
    functions: Vec<CatalogObject>,
    mentions: TableMentions,
}

static NONE: std::sync::OnceLock<ServerObjects> = std::sync::OnceLock::new();

impl ServerObjects {
    /// No objects: statements are judged by the protected tables alone.
    pub(crate) fn none() -> &'static ServerObjects {
        NONE.get_or_init(ServerObjects::default)
    }

    /// The objects of the catalog rows, views ordered so that a view comes
    /// after those it reads.
    pub(crate) fn new(policy: &Policy, objects: Vec<CatalogObject>) -> Self {
        let mut known = ServerObjects::default();
        for object in objects {
            match object.kind {
                Kind::View => {
                    let columns = views::columns(object.definition.as_deref(), policy, &known);
                    known.views.push(View { object, columns });
                }
                Kind::Rule(_) | Kind::Trigger(_) => known.hooked.push(object),
                Kind::Function => known.functions.push(object),
            }
        }
        let names = known.views.iter().map(|v| &v.object);
        let names = names.chain(&known.hooked).chain(&known.functions);
        let names: Vec<&str> = names.map(|o| o.name.as_str()).collect();
        known.mentions = TableMentions::new(names);
        known
    }

    /// Whether `sql` may mention one of the objects (no false negatives,
    /// like [`Policy::mentions_protected_table`]).
    pub(crate) fn mentioned_in(&self, sql: &str) -> bool {
        self.mentions.in_sql(sql)
    }

    /// The protected column that `column` of the view `schema.name` is
    /// as it is (an exact column, see `views`), if any.
    pub(crate) fn exact_column(
        &self,
        schema: &str,
        name: &str,
        column: &str,
    ) -> Option<&ColumnRefId> {
        let view = self.view(schema, name)?;
        view.columns
            .exact
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, exact)| exact)
    }

    /// The view a table reference may name.
    pub(super) fn view(&self, schema: &str, name: &str) -> Option<&View> {
        self.views.iter().find(|v| v.object.named(schema, name))
    }

    /// Refuses a write into a view over a protected table, or into
    /// a table whose rules or triggers may write one.
    pub(super) fn check_write(&self, schema: &str, name: &str) -> Result<(), Reason> {
        if let Some(view) = self.view(schema, name) {
            return Err(Reason::ViewWrite {
                view: view.qualified(),
                table: view.table().to_owned(),
            });
        }
        match self.hooked.iter().find(|o| o.named(schema, name)) {
            Some(object) => Err(Reason::HookedWrite {
                target: object.qualified(),
                hook: object.kind.hook(),
                table: object.table.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses a call of a function over a protected table with a string
    /// literal or a parameter in its arguments, found in the tokens of the
    /// statement text `sql`: an identifier naming such a function (or a
    /// Unicode-escaped one, which may spell any name) followed by `(`.
    pub(super) fn check_calls(&self, sql: &str, tokens: &[ScanToken]) -> Result<(), Reason> {
        if self.functions.is_empty() {
            return Ok(());
        }
        for (i, token) in tokens.iter().enumerate() {
            let Some(function) = self.called(sql, token) else {
                continue;
            };
            if i > 0 && names_prepared(sql, &tokens[i - 1]) {
                continue;
            }
            let Some(args) = tokens.get(i + 1..).filter(|rest| is_open(rest.first())) else {
                continue;
            };
            if arguments(args).any(carries_value) {
                return Err(Reason::FunctionArguments {
                    function: function.qualified(),
                    table: function.table.clone(),
                });
            }
        }
        Ok(())
    }

    /// The function an identifier token may name.
    fn called(&self, sql: &str, token: &ScanToken) -> Option<&CatalogObject> {
        let text = sql.get(usize::try_from(token.start).ok()?..usize::try_from(token.end).ok()?)?;
        if token.token() == Token::Uident {
            return self.functions.first();
        }
        let name = text.trim_matches('"');
        self.functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

impl KnownViews for ServerObjects {
    fn view_columns(&self, schema: &str, name: &str) -> Option<&ViewColumns> {
        self.view(schema, name).map(|view| &view.columns)
    }
}

impl Kind {
    /// How a refusal says what the object does with a protected table.
    fn hook(&self) -> String {
        match self {
            Kind::Rule(rule) => format!("its rule {rule} touches"),
            Kind::Trigger(trigger) => {
                format!("its trigger {trigger} runs a function that mentions")
            }
            Kind::View => "it exposes".into(),
            Kind::Function => "its body mentions".into(),
        }
    }
}

/// `PREPARE` or `EXECUTE`, after which a name followed by `(` names a
/// prepared statement, not a function.
fn names_prepared(sql: &str, token: &ScanToken) -> bool {
    let text = usize::try_from(token.start)
        .ok()
        .zip(usize::try_from(token.end).ok())
        .and_then(|(start, end)| sql.get(start..end));
    text.is_some_and(|t| t.eq_ignore_ascii_case("prepare") || t.eq_ignore_ascii_case("execute"))
}

fn is_open(token: Option<&ScanToken>) -> bool {
    token.is_some_and(|t| t.token() == Token::Ascii40)
}

/// The tokens of a parenthesized argument list, from its `(` to its
/// matching `)` (or the end of the text).
fn arguments(tokens: &[ScanToken]) -> impl Iterator<Item = &ScanToken> {
    let mut depth = 0usize;
    tokens.iter().take_while(move |t| {
        match t.token() {
            Token::Ascii40 => depth += 1,
            Token::Ascii41 => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth > 0
    })
}

/// A string literal (any spelling) or a parameter.
fn carries_value(token: &ScanToken) -> bool {
    matches!(
        token.token(),
        Token::Sconst | Token::Usconst | Token::Bconst | Token::Xconst | Token::Param
    )
}
