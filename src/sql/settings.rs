//! What a statement does to pgveil's own session settings
//! (`pgveil.purpose`, `pgveil.actor`) and to the savepoints their scope
//! follows. The same [`Effect`]s carry what a statement does to the
//! session's SQL-prepared statements, which the statement analysis finds
//! ([`Declarations::and`]).
//!
//! PostgreSQL accepts these as custom settings and applies them as usual;
//! the session also needs to know them, exactly as the server has them.
//! The changes pgveil can resolve:
//!
//! - `SET [SESSION | LOCAL] pgveil.x = 'value' | TO DEFAULT`, `RESET
//!   pgveil.x`, `RESET ALL`, `DISCARD ALL`;
//! - `SELECT set_config('pgveil.x', value, is_local)` where the call is a
//!   column of a SELECT without FROM, WHERE, LIMIT or set operation (so it
//!   runs exactly once), each argument a constant or a `$n` parameter
//!   (possibly cast to text, or to boolean for `is_local`); parameters are
//!   read from the Bind ([`Declarations::resolve`]), in text or binary
//!   format;
//! - `SAVEPOINT`, `RELEASE` and `ROLLBACK TO`, which scope them.
//!
//! Anything else that may change them is refused ([`Reason::Undeclarable`],
//! `0A000`): a `set_config` call anywhere else (inside an expression, a
//! query with FROM, a view, `PREPARE`, `EXPLAIN ANALYZE`), with an argument
//! that is neither a constant nor a parameter or with a setting name that
//! is not a constant, `SET ... FROM CURRENT`, a `DO` block or function
//! body that mentions `pgveil.`, and (refused by the client tap) a
//! fast-path FunctionCall of `set_config`. A function defined directly in the
//! database that changes them when called cannot be seen in the statement
//! that calls it; that is the one change pgveil does not follow.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use pg_query::protobuf::{
    a_const, FuncCall, Node, RawStmt, SelectStmt, TransactionStmtKind, VariableSetKind,
    VariableSetStmt,
};
use serde_json::Value;

use pg_query::protobuf::node::Node as NodeEnum;

use super::cursors::{cursor_effect, mentions_cursor, CursorEffect};
use super::refusal::{Reason, Refusal};
use super::targets::Prepared;
use crate::text::encoding::ClientEncoding;

/// pgveil's settings are named `pgveil.<name>`.
const PREFIX: &str = "pgveil.";

/// A change of one of pgveil's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SettingChange {
    /// The name after `pgveil.`, such as `purpose` or `actor`.
    pub name: String,
    /// `None` resets the setting to its value at connection time.
    pub value: Option<String>,
    /// Only until the end of the transaction.
    pub local: bool,
}

/// What one statement does, once the server has run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// `SET`, `RESET` or `set_config` of one of pgveil's settings.
    Set(SettingChange),
    /// `RESET ALL`, `DISCARD ALL`.
    ResetAll,
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `PREPARE name`: the statement `name` is now this one, with these
    /// parameter slots (none: no argument goes to a protected column).
    Prepare(Prepared),
    /// `DEALLOCATE name`; `None` for `DEALLOCATE ALL` and `DISCARD ALL`.
    Deallocate(Option<String>),
    /// `DECLARE`, `FETCH` or `CLOSE` of a cursor.
    Cursor(CursorEffect),
}

/// An argument of `set_config`: known from the text (`None` for NULL), or
/// the value of a parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Arg {
    Known(Option<String>),
    Param(usize),
}

/// What one statement will do, its `set_config` calls not resolved yet.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Planned {
    Effect(Effect),
    SetConfig { name: Arg, value: Arg, local: Arg },
}

/// What a statement text does, statement by statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Declarations(Vec<Vec<Planned>>);

/// A Bind parameter's value as sent: `None` for NULL.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Param<'b> {
    /// The value's bytes; `None` for NULL.
    pub value: Option<&'b [u8]>,
    /// Sent in binary format, not text.
    pub binary: bool,
}

/// Words without which a statement text cannot change a setting or a
/// savepoint, in any case: texts without them (nor a cursor's words,
/// `cursors::mentions_cursor`) are not parsed.
const WORDS: [&str; 7] = [
    PREFIX,
    "set_config",
    "reset",
    "discard",
    "savepoint",
    "release",
    "rollback",
];

fn words() -> &'static AhoCorasick {
    static WORDS_AC: OnceLock<AhoCorasick> = OnceLock::new();
    WORDS_AC.get_or_init(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(WORDS)
            .expect("a valid word list")
    })
}

/// What `sql` does to pgveil's settings, or why pgveil refuses it.
pub(crate) fn declarations(sql: &str) -> Result<Declarations, Refusal> {
    if !words().is_match(sql) && !mentions_cursor(sql) {
        return Ok(Declarations::default());
    }
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        // The server cannot run it either; but text that names pgveil's
        // settings must be understood.
        if mentions_settings(sql) {
            return Err(Reason::Undeclarable("a statement that does not parse").into());
        }
        return Ok(Declarations::default());
    };
    let statements = parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| statement(sql, raw))
        .collect::<Result<_, Reason>>()?;
    Ok(Declarations(statements))
}

/// The refusal of a `set_config` call pgveil cannot follow (a fast-path
/// FunctionCall).
pub(crate) fn undeclarable_call() -> Refusal {
    Reason::Undeclarable("a set_config function call").into()
}

fn mentions_settings(text: &str) -> bool {
    crate::text::ascii::contains_ignore_case(text.as_bytes(), PREFIX.as_bytes())
}

impl Declarations {
    /// Whether no statement of the text changes anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }

    /// With `effects` added to those of each statement, in order.
    pub(crate) fn and(mut self, effects: Vec<Vec<Effect>>) -> Self {
        if self.0.len() < effects.len() {
            self.0.resize_with(effects.len(), Vec::new);
        }
        for (planned, effects) in self.0.iter_mut().zip(effects) {
            planned.extend(effects.into_iter().map(Planned::Effect));
        }
        self
    }

    /// The effects of each statement, with the values of `params` (the
    /// Bind's, in the client's `encoding`) for `$n`.
    pub(crate) fn resolve(
        &self,
        params: &[Param<'_>],
        encoding: ClientEncoding,
    ) -> Result<Vec<Vec<Effect>>, Refusal> {
        let param = |n: usize| {
            n.checked_sub(1)
                .and_then(|i| params.get(i))
                .ok_or(Reason::Undeclarable(NO_PARAMETER))
        };
        let text = |arg: &Arg| -> Result<Option<String>, Reason> {
            let value = match arg {
                Arg::Known(value) => return Ok(value.clone()),
                Arg::Param(n) => param(*n)?.value,
            };
            value
                .map(|v| encoding.decode(v).map(|v| v.into_owned()))
                .map_or(Ok(None), |v| v.map(Some).ok_or(Reason::UndecodableSetting))
        };
        // NULL is false; `None` for a value the server cannot read as a
        // boolean, which makes it refuse the call.
        let boolean = |arg: &Arg| -> Result<Option<bool>, Reason> {
            match arg {
                Arg::Param(n) if param(*n)?.binary => Ok(match param(*n)?.value {
                    None => Some(false),
                    Some(&[byte]) => Some(byte != 0),
                    Some(_) => None,
                }),
                arg => Ok(text(arg)?.map_or(Some(false), |v| parse_bool(&v))),
            }
        };
        let mut resolved = Vec::with_capacity(self.0.len());
        for planned in &self.0 {
            let mut effects = Vec::with_capacity(planned.len());
            for step in planned {
                match step {
                    Planned::Effect(effect) => effects.push(effect.clone()),
                    Planned::SetConfig { name, value, local } => {
                        // A NULL name or an unreadable boolean makes the
                        // server refuse the call: it changes nothing.
                        let (Some(name), Some(local)) = (text(name)?, boolean(local)?) else {
                            continue;
                        };
                        if let Some(name) = setting_name(&name) {
                            effects.push(Effect::Set(SettingChange {
                                name,
                                value: text(value)?,
                                local,
                            }));
                        }
                    }
                }
            }
            resolved.push(effects);
        }
        Ok(resolved)
    }
}

const NO_PARAMETER: &str = "a set_config call with a parameter that is not bound";

/// What one raw statement does.
fn statement(sql: &str, raw: &RawStmt) -> Result<Vec<Planned>, Reason> {
    let Some(node) = raw.stmt.as_deref().and_then(|s| s.node.as_ref()) else {
        return Ok(Vec::new());
    };
    let mut planned = Vec::new();
    let mut allowed = Vec::new();
    match node {
        NodeEnum::VariableSetStmt(set) => planned.extend(set_statement(set)?),
        NodeEnum::DiscardStmt(discard) if discard.target == DISCARD_ALL => planned.extend([
            Planned::Effect(Effect::ResetAll),
            Planned::Effect(Effect::Cursor(CursorEffect::Close(None))),
        ]),
        NodeEnum::TransactionStmt(tx) => {
            let name = tx.savepoint_name.clone();
            match tx.kind() {
                TransactionStmtKind::TransStmtSavepoint => {
                    planned.push(Planned::Effect(Effect::Savepoint(name)))
                }
                TransactionStmtKind::TransStmtRelease => {
                    planned.push(Planned::Effect(Effect::Release(name)))
                }
                TransactionStmtKind::TransStmtRollbackTo => {
                    planned.push(Planned::Effect(Effect::RollbackTo(name)))
                }
                _ => {}
            }
        }
        NodeEnum::SelectStmt(select) => {
            for call in runs_once(select).into_iter().flatten() {
                planned.extend(set_config(call)?);
                allowed.push(call.location);
            }
        }
        NodeEnum::DoStmt(block) => check_body(&block.args, "a DO block")?,
        NodeEnum::DeclareCursorStmt(_) | NodeEnum::FetchStmt(_) | NodeEnum::ClosePortalStmt(_) => {
            planned.extend(cursor_effect(node).map(|c| Planned::Effect(Effect::Cursor(c))))
        }
        NodeEnum::CreateFunctionStmt(function) => {
            check_body(&function.options, "a function body")?;
            if function.sql_body.is_some() && mentions_settings(statement_text(sql, raw)) {
                return Err(Reason::Undeclarable("a function body"));
            }
        }
        _ => {}
    }
    check_other_calls(statement_text(sql, raw), node, &allowed)?;
    Ok(planned)
}

/// `DISCARD ALL` in `DiscardMode`.
pub(super) const DISCARD_ALL: i32 = pg_query::protobuf::DiscardMode::DiscardAll as i32;

/// The text of one statement of `sql`.
fn statement_text<'s>(sql: &'s str, raw: &RawStmt) -> &'s str {
    let start = usize::try_from(raw.stmt_location).unwrap_or(0);
    let len = usize::try_from(raw.stmt_len).unwrap_or(0);
    let end = if len == 0 { sql.len() } else { start + len };
    sql.get(start..end).unwrap_or(sql)
}

/// `SET`, `SET LOCAL`, `RESET` of one of pgveil's settings, `RESET ALL`.
fn set_statement(set: &VariableSetStmt) -> Result<Option<Planned>, Reason> {
    if set.kind() == VariableSetKind::VarResetAll {
        return Ok(Some(Planned::Effect(Effect::ResetAll)));
    }
    let Some(name) = setting_name(&set.name) else {
        return Ok(None);
    };
    let value = match set.kind() {
        VariableSetKind::VarSetValue => {
            let [arg] = set.args.as_slice() else {
                return Err(Reason::Undeclarable("a SET with more than one value"));
            };
            Some(constant(arg).ok_or(Reason::Undeclarable("a SET to this value"))?)
        }
        VariableSetKind::VarSetDefault | VariableSetKind::VarReset => None,
        _ => return Err(Reason::Undeclarable("SET ... FROM CURRENT")),
    };
    Ok(Some(Planned::Effect(Effect::Set(SettingChange {
        name,
        value,
        local: set.is_local,
    }))))
}

/// The columns of a SELECT that runs once (no FROM, WHERE, GROUP BY,
/// HAVING, LIMIT, OFFSET, WITH, DISTINCT, window or set operation) that
/// are `set_config` calls; `None` for any other SELECT.
fn runs_once(select: &SelectStmt) -> Option<Vec<&FuncCall>> {
    let plain = select.from_clause.is_empty()
        && select.where_clause.is_none()
        && select.group_clause.is_empty()
        && select.having_clause.is_none()
        && select.limit_count.is_none()
        && select.limit_offset.is_none()
        && select.with_clause.is_none()
        && select.distinct_clause.is_empty()
        && select.window_clause.is_empty()
        && select.values_lists.is_empty()
        && select.into_clause.is_none()
        && select.larg.is_none();
    plain.then(|| {
        select
            .target_list
            .iter()
            .filter_map(|target| match target.node.as_ref()? {
                NodeEnum::ResTarget(res) => match res.val.as_deref()?.node.as_ref()? {
                    NodeEnum::FuncCall(call) if is_set_config(call) => Some(&**call),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    })
}

fn is_set_config(call: &FuncCall) -> bool {
    matches!(
        call.funcname.last().and_then(|n| n.node.as_ref()),
        Some(NodeEnum::String(s)) if s.sval == "set_config"
    )
}

/// `set_config(name, value, is_local)` with constant or parameter
/// arguments; `None` for a call that sets another setting.
fn set_config(call: &FuncCall) -> Result<Option<Planned>, Reason> {
    if call.args.first().is_some_and(names_another_setting) {
        return Ok(None);
    }
    let unknown =
        Reason::Undeclarable("a set_config call whose arguments are not constants or parameters");
    let [name, value, local] = call.args.as_slice() else {
        return Err(unknown);
    };
    match (
        argument(name, Kind::Text),
        argument(value, Kind::Text),
        argument(local, Kind::Bool),
    ) {
        (Some(name), Some(value), Some(local)) => {
            Ok(Some(Planned::SetConfig { name, value, local }))
        }
        _ => Err(unknown),
    }
}

/// Whether a setting name argument is a constant naming a setting that is
/// not pgveil's.
fn names_another_setting(name: &Node) -> bool {
    match argument(name, Kind::Text) {
        Some(Arg::Known(Some(name))) => setting_name(&name).is_none(),
        _ => false,
    }
}

/// The type `set_config` takes an argument as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
}

impl Kind {
    /// Whether a cast to `type_name` keeps the argument as it is.
    fn keeps(self, type_name: &str) -> bool {
        match self {
            Kind::Text => matches!(type_name, "text" | "varchar"),
            Kind::Bool => type_name == "bool",
        }
    }
}

/// A constant, NULL or `$n`, possibly cast to the type of `kind` (without
/// a type modifier).
fn argument(node: &Node, kind: Kind) -> Option<Arg> {
    match node.node.as_ref()? {
        NodeEnum::ParamRef(param) => Some(Arg::Param(usize::try_from(param.number).ok()?)),
        NodeEnum::AConst(c) if c.isnull => Some(Arg::Known(None)),
        NodeEnum::AConst(c) => match (c.val.as_ref()?, kind) {
            (a_const::Val::Sval(s), _) => Some(Arg::Known(Some(s.sval.clone()))),
            (a_const::Val::Boolval(b), Kind::Bool) => Some(Arg::Known(Some(b.boolval.to_string()))),
            _ => None,
        },
        NodeEnum::TypeCast(cast) => {
            let type_name = cast.type_name.as_ref()?;
            let last = match type_name.names.last()?.node.as_ref()? {
                NodeEnum::String(s) => s.sval.as_str(),
                _ => return None,
            };
            if !kind.keeps(last)
                || !type_name.typmods.is_empty()
                || !type_name.array_bounds.is_empty()
            {
                return None;
            }
            let arg = cast.arg.as_deref()?;
            // A number cast to text is its text.
            match (arg.node.as_ref()?, kind) {
                (NodeEnum::AConst(c), Kind::Text) => match c.val.as_ref()? {
                    a_const::Val::Ival(i) => Some(Arg::Known(Some(i.ival.to_string()))),
                    a_const::Val::Fval(f) => Some(Arg::Known(Some(f.fval.clone()))),
                    _ => argument(arg, kind),
                },
                _ => argument(arg, kind),
            }
        }
        _ => None,
    }
}

/// A `DO` block or function body (the `as` option) that mentions pgveil's
/// settings is refused: what it does when it runs cannot be followed.
fn check_body(options: &[Node], what: &'static str) -> Result<(), Reason> {
    let mentions = options.iter().any(|option| match option.node.as_ref() {
        Some(NodeEnum::DefElem(elem)) if elem.defname == "as" => strings(elem.arg.as_deref())
            .into_iter()
            .any(mentions_settings),
        _ => false,
    });
    if mentions {
        return Err(Reason::Undeclarable(what));
    }
    Ok(())
}

/// The strings of a String node or a List of them.
fn strings(arg: Option<&Node>) -> Vec<&str> {
    match arg.and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::String(s)) => vec![s.sval.as_str()],
        Some(NodeEnum::List(list)) => list
            .items
            .iter()
            .filter_map(|item| match item.node.as_ref()? {
                NodeEnum::String(s) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Refuses a `set_config` call anywhere in the statement but at the
/// `allowed` locations, unless its setting name is a constant that is not
/// one of pgveil's. The whole tree is searched (views, subqueries,
/// `PREPARE`, SQL function bodies): through its JSON form, which has every
/// node.
fn check_other_calls(text: &str, node: &NodeEnum, allowed: &[i32]) -> Result<(), Reason> {
    if !crate::text::ascii::contains_ignore_case(text.as_bytes(), b"set_config") {
        return Ok(());
    }
    let tree = serde_json::to_value(node).unwrap_or(Value::Null);
    let mut calls = Vec::new();
    func_calls(&tree, &mut calls);
    let elsewhere = calls.into_iter().filter(|call| {
        let location = call.get("location").and_then(Value::as_i64);
        !allowed.iter().any(|&a| Some(i64::from(a)) == location)
    });
    for call in elsewhere {
        let name = call
            .get("funcname")
            .and_then(Value::as_array)
            .and_then(|n| n.last());
        if string_node(name) != Some("set_config") {
            continue;
        }
        let first = call
            .get("args")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let harmless = constant_string(first).is_some_and(|name| setting_name(name).is_none());
        if !harmless {
            return Err(Reason::Undeclarable(
                "a set_config call inside another statement or expression",
            ));
        }
    }
    Ok(())
}

/// The `FuncCall` objects of a JSON tree.
fn func_calls<'v>(value: &'v Value, out: &mut Vec<&'v serde_json::Map<String, Value>>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| func_calls(item, out)),
        Value::Object(fields) => {
            for (key, field) in fields {
                if let (true, Value::Object(call)) = (key == "FuncCall", field) {
                    out.push(call);
                }
                func_calls(field, out);
            }
        }
        _ => {}
    }
}

/// The text of a JSON `{"node": {"String": {"sval": ...}}}`.
fn string_node(node: Option<&Value>) -> Option<&str> {
    node?.get("node")?.get("String")?.get("sval")?.as_str()
}

/// The text of a JSON string constant node, possibly cast.
fn constant_string(node: Option<&Value>) -> Option<&str> {
    let inner = node?.get("node")?;
    if let Some(cast) = inner.get("TypeCast") {
        return constant_string(cast.get("arg"));
    }
    inner
        .get("AConst")?
        .get("val")?
        .get("Sval")?
        .get("sval")?
        .as_str()
}

/// The name after `pgveil.`, if it is one of pgveil's settings.
fn setting_name(full: &str) -> Option<String> {
    let prefix = full.get(..PREFIX.len())?;
    prefix
        .eq_ignore_ascii_case(PREFIX)
        .then(|| full[PREFIX.len()..].to_ascii_lowercase())
}

/// The text of a constant, as `SET` takes it.
fn constant(node: &Node) -> Option<String> {
    match node.node.as_ref()? {
        NodeEnum::AConst(c) => match c.val.as_ref()? {
            a_const::Val::Sval(s) => Some(s.sval.clone()),
            a_const::Val::Ival(i) => Some(i.ival.to_string()),
            a_const::Val::Fval(f) => Some(f.fval.clone()),
            a_const::Val::Boolval(b) => Some(b.boolval.to_string()),
            a_const::Val::Bsval(_) => None,
        },
        _ => None,
    }
}

/// A boolean as PostgreSQL reads one (`parse_bool`): `true`, `yes`, `on`,
/// `1` and their opposites, any unique prefix, any case, around spaces.
fn parse_bool(text: &str) -> Option<bool> {
    let word = text.trim().to_ascii_lowercase();
    let prefix_of = |full: &str, min: usize| word.len() >= min && full.starts_with(&word);
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || word == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || word == "0" {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effects(sql: &str) -> Vec<Vec<Effect>> {
        declarations(sql)
            .unwrap()
            .resolve(&[], ClientEncoding::default())
            .unwrap()
    }

    fn set(name: &str, value: Option<&str>, local: bool) -> Effect {
        Effect::Set(SettingChange {
            name: name.into(),
            value: value.map(Into::into),
            local,
        })
    }

    fn refused(sql: &str) -> Refusal {
        declarations(sql)
            .and_then(|d| d.resolve(&[], ClientEncoding::default()))
            .expect_err(sql)
    }

    #[test]
    fn set_reset_and_set_config() {
        assert_eq!(
            effects(
                "SET pgveil.purpose = 'kyc'; SET LOCAL PGVEIL.Actor TO bob; RESET pgveil.purpose; \
                 SET pgveil.purpose TO DEFAULT; select 1; SET search_path = public"
            ),
            vec![
                vec![set("purpose", Some("kyc"), false)],
                vec![set("actor", Some("bob"), true)],
                vec![set("purpose", None, false)],
                vec![set("purpose", None, false)],
                vec![],
                vec![],
            ]
        );
        assert_eq!(
            effects(
                "select set_config('pgveil.purpose', 'kyc', false), \
                 pg_catalog.set_config('pgveil.actor', 'x'::text, 'tru'), \
                 set_config('pgveil.purpose', NULL, 'of'), set_config('search_path', 'a', false)"
            ),
            vec![vec![
                set("purpose", Some("kyc"), false),
                set("actor", Some("x"), true),
                set("purpose", None, false),
            ]]
        );
        assert_eq!(
            effects("RESET ALL; DISCARD ALL; DISCARD PLANS"),
            vec![
                vec![Effect::ResetAll],
                vec![Effect::ResetAll, Effect::Cursor(CursorEffect::Close(None))],
                vec![]
            ]
        );
        assert_eq!(
            effects("savepoint a; release savepoint a; rollback to b; rollback"),
            vec![
                vec![Effect::Savepoint("a".into())],
                vec![Effect::Release("a".into())],
                vec![Effect::RollbackTo("b".into())],
                vec![],
            ]
        );
        assert!(declarations("select 1").unwrap().is_empty());
        assert!(declarations("select 'pgveil.purpose' from t")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn parameters_are_read_from_the_bind() {
        let plan = declarations("select set_config('pgveil.purpose', $1::text, $2)").unwrap();
        let bind = |value: Option<&'static [u8]>, local: &'static [u8], binary| {
            plan.resolve(
                &[
                    Param { value, binary },
                    Param {
                        value: Some(local),
                        binary,
                    },
                ],
                ClientEncoding::from_pg_name("GBK"),
            )
            .unwrap()
        };
        assert_eq!(
            bind(Some(b"kyc"), b"t", false),
            vec![vec![set("purpose", Some("kyc"), true)]]
        );
        assert_eq!(
            bind(Some(b"kyc"), &[0], true),
            vec![vec![set("purpose", Some("kyc"), false)]]
        );
        assert_eq!(
            bind(Some(b"\xd5\xc5"), b"off", false),
            vec![vec![set("purpose", Some("张"), false)]]
        );
        assert_eq!(
            bind(None, b"no", false),
            vec![vec![set("purpose", None, false)]]
        );
        assert_eq!(
            bind(Some(b"kyc"), b"maybe", false),
            vec![vec![]],
            "the server refuses it"
        );
        let named = declarations("select set_config($1, $2, false)").unwrap();
        let params = |name: &'static [u8]| {
            [
                Param {
                    value: Some(name),
                    binary: true,
                },
                Param {
                    value: Some(b"v"),
                    binary: true,
                },
            ]
        };
        let resolve = |name| {
            named
                .resolve(&params(name), ClientEncoding::default())
                .unwrap()
        };
        assert_eq!(
            resolve(b"pgveil.actor"),
            vec![vec![set("actor", Some("v"), false)]]
        );
        assert_eq!(resolve(b"search_path"), vec![vec![]]);
    }

    #[test]
    fn changes_that_cannot_be_followed_are_refused() {
        for sql in [
            "select set_config('pgveil.purpose', lower('KYC'), false)",
            "select upper(set_config('pgveil.purpose', 'kyc', false))",
            "select set_config('pgveil.purpose', 'kyc', false) from customers",
            "select set_config('pgveil.purpose', 'kyc', false) where true",
            "select set_config('pgveil.purpose', 'kyc'::varchar(2), false)",
            "select set_config(name, 'kyc', false) from settings",
            "select set_config(current_setting('app.name'), 'kyc', false)",
            "select 1 where set_config('pgveil.purpose', 'kyc', false) is not null",
            "prepare p as select set_config('pgveil.purpose', $1, false)",
            "explain analyze select set_config('pgveil.purpose', 'kyc', false)",
            "create view v as select set_config('pgveil.purpose', 'kyc', false)",
            "with x as (select 1) select set_config('pgveil.purpose', 'kyc', false)",
            "do $$ begin set pgveil.purpose = 'kyc'; end $$",
            "DO LANGUAGE plpgsql $$ BEGIN PERFORM set_config('PGVEIL.purpose', 'kyc', false); END $$",
            "create function f() returns void language sql as $$ select set_config('pgveil.purpose', 'kyc', false) $$",
            "create function f() returns text language sql begin atomic select set_config('pgveil.purpose', 'kyc', false); end",
            "set pgveil.purpose from current",
            "select set_config('pgveil.purpose', $1, false)",
            "select set_config('pgveil.purpose' 'kyc', false) ((",
        ] {
            let refusal = refused(sql);
            assert!(
                ["0A000", "42601"].contains(&refusal.sqlstate),
                "{sql}: {refusal:?}"
            );
            assert!(refusal.message.starts_with("pgveil: "), "{}", refusal.message);
            assert!(!refusal.message.contains("kyc"), "{}", refusal.message);
        }
        // Harmless ones pass.
        for sql in [
            "select set_config('search_path', 'public', false) from generate_series(1, 2)",
            "select set_config('search_path', current_setting('search_path'), false)",
            "do $$ begin perform set_config('app.x', 'y', false); end $$",
            "alter role r set pgveil.purpose = 'kyc'",
            "create function f() returns int language sql set pgveil.purpose = 'kyc' as 'select 1'",
        ] {
            assert!(declarations(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn booleans_as_postgresql_reads_them() {
        for (text, value) in [
            ("t", Some(true)),
            (" TRUE ", Some(true)),
            ("y", Some(true)),
            ("on", Some(true)),
            ("1", Some(true)),
            ("f", Some(false)),
            ("No", Some(false)),
            ("off", Some(false)),
            ("o", None),
            ("2", None),
            ("truth", None),
        ] {
            assert_eq!(parse_bool(text), value, "{text}");
        }
    }
}
