//! pgveil's own session settings (`pgveil.purpose`, `pgveil.actor`), as
//! a session sets them: `SET [LOCAL] pgveil.x = ...`, `RESET pgveil.x`,
//! or `SELECT set_config('pgveil.x', ..., is_local)`.
//!
//! PostgreSQL accepts these as custom settings and relays them to the
//! server as usual; the session also needs to know them.

use pg_query::protobuf::{a_const, FuncCall, Node, VariableSetKind, VariableSetStmt};

use super::NodeEnum;

/// pgveil's settings are named `pgveil.<name>`.
const PREFIX: &str = "pgveil.";

/// A change of one of pgveil's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingChange {
    /// The name after `pgveil.`, such as `purpose` or `actor`.
    pub name: String,
    /// `None` resets the setting.
    pub value: Option<String>,
    /// Only until the end of the transaction.
    pub local: bool,
}

/// The changes of pgveil's settings a statement text makes, in order.
/// Call it only for text containing `pgveil.` (in any case). Text that
/// does not parse changes nothing. A `set_config` call counts only at the
/// top level of a SELECT list and with constant arguments.
pub fn session_settings(sql: &str) -> Vec<SettingChange> {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    for raw in &parsed.protobuf.stmts {
        match raw.stmt.as_deref().and_then(|s| s.node.as_ref()) {
            Some(NodeEnum::VariableSetStmt(set)) => changes.extend(set_statement(set)),
            Some(NodeEnum::SelectStmt(select)) => {
                let calls = select.target_list.iter().filter_map(|t| match &t.node {
                    Some(NodeEnum::ResTarget(res)) => match res.val.as_deref()?.node.as_ref()? {
                        NodeEnum::FuncCall(call) => set_config(call),
                        _ => None,
                    },
                    _ => None,
                });
                changes.extend(calls);
            }
            _ => {}
        }
    }
    changes
}

fn set_statement(set: &VariableSetStmt) -> Option<SettingChange> {
    let name = setting_name(&set.name)?;
    let value = match set.kind() {
        VariableSetKind::VarSetValue => {
            let values: Vec<String> = set.args.iter().filter_map(constant).collect();
            Some(values.join(", "))
        }
        VariableSetKind::VarSetDefault | VariableSetKind::VarReset => None,
        _ => return None,
    };
    Some(SettingChange {
        name,
        value,
        local: set.is_local,
    })
}

/// `set_config('pgveil.x', value, is_local)`, with constant arguments.
fn set_config(call: &FuncCall) -> Option<SettingChange> {
    let function = call.funcname.last()?;
    if !matches!(&function.node, Some(NodeEnum::String(s)) if s.sval == "set_config") {
        return None;
    }
    let [name, value, local] = call.args.as_slice() else {
        return None;
    };
    let value = match &value.node {
        Some(NodeEnum::AConst(c)) if c.isnull => None,
        _ => Some(constant(value)?),
    };
    Some(SettingChange {
        name: setting_name(&constant(name)?)?,
        value,
        local: matches!(
            constant(local)?.to_ascii_lowercase().as_str(),
            "true" | "t" | "on" | "yes" | "y" | "1"
        ),
    })
}

/// The name after `pgveil.`, if it is one of pgveil's settings.
fn setting_name(full: &str) -> Option<String> {
    let prefix = full.get(..PREFIX.len())?;
    prefix
        .eq_ignore_ascii_case(PREFIX)
        .then(|| full[PREFIX.len()..].to_ascii_lowercase())
}

/// The text of a constant, possibly cast.
fn constant(node: &Node) -> Option<String> {
    match node.node.as_ref()? {
        NodeEnum::TypeCast(cast) => constant(cast.arg.as_deref()?),
        NodeEnum::AConst(c) => match c.val.as_ref()? {
            a_const::Val::Sval(s) => Some(s.sval.clone()),
            a_const::Val::Ival(i) => Some(i.ival.to_string()),
            a_const::Val::Fval(f) => Some(f.fval.clone()),
            a_const::Val::Boolval(b) => Some(b.boolval.to_string()),
            a_const::Val::Bsval(b) => Some(b.bsval.clone()),
        },
        _ => None,
    }
}
