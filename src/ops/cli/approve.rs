//! `pgveil approve`: write, list and revoke the approvals that lift a
//! column's row limit (`approval = { rows = N }` in the policy) for the
//! sessions of one policy role that declared one ticket
//! (`crate::audit::approvals`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{EXIT_CONFIG, EXIT_FAILURE};
use crate::audit::approvals::{self, Listed, NewApproval, State};
use crate::audit::AuditKeys;
use crate::protect::policy::{Action, Policy};
use crate::protect::protection::load_policy;
use crate::proxy::config::Config;

/// The flags that make a new approval.
const NEW: [&str; 5] = ["role", "column", "rows", "ticket", "expires"];

#[derive(Args)]
pub(super) struct ApproveArgs {
    /// pgveil's configuration: its keyring and master key sign the
    /// approval, its policy is checked, and `[audit] approvals` names the
    /// directory the approval is written to.
    #[arg(long, short)]
    config: PathBuf,
    /// List every approval: its state (active, expired, revoked, used
    /// up), rows used and left; files that do not verify are listed as
    /// REFUSED and make the exit code 1, as does a usage ledger that does
    /// not check.
    #[arg(long, conflicts_with_all = NEW, conflicts_with = "revoke")]
    list: bool,
    /// Revoke the approval of this id (with --approver, who revokes):
    /// pgveil stops honouring it at its next reservation of rows.
    #[arg(long, value_name = "ID", conflicts_with_all = NEW)]
    revoke: Option<String>,
    /// The policy role whose sessions the approval serves.
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    role: Option<String>,
    /// The column, TABLE.COLUMN (schema public) or SCHEMA.TABLE.COLUMN.
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    column: Option<String>,
    /// Plaintext rows it grants, over all its uses.
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    rows: Option<u64>,
    /// The ticket sessions must declare (SET pgveil.ticket = '...').
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    ticket: Option<String>,
    /// How long it is honoured from now: 30m, 2h, 7d, "1h 30m".
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    expires: Option<humantime::Duration>,
    /// Who approves (or revokes).
    #[arg(long, required_unless_present = "list")]
    approver: Option<String>,
}

pub(super) fn approve(args: &ApproveArgs) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            eprintln!("pgveil approve: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `Ok(false)` when a listed file is refused.
fn run(args: &ApproveArgs) -> Result<bool, String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let dir = config
        .audit
        .as_ref()
        .and_then(|audit| audit.approvals.clone())
        .ok_or("the configuration names no approvals directory ([audit] approvals = \"DIR\")")?;
    let keys = config
        .audit_keys()?
        .ok_or("the configuration names no keyring, whose audit key signs approvals")?;
    let approver = args.approver.as_deref().unwrap_or_default();
    if args.list {
        return list(&dir, &keys);
    }
    if let Some(id) = &args.revoke {
        approvals::revoke(&dir, &keys, id, approver).map_err(|e| e.to_string())?;
        println!("approval {id} revoked by {approver}: not honoured from its next reservation");
        return Ok(true);
    }
    let policy = config
        .policy
        .as_deref()
        .ok_or_else(|| "the configuration names no policy".to_string())
        .and_then(|path| load_policy(path).map_err(|e| e.to_string()))?;
    let role = args.role.clone().unwrap_or_default();
    let column = checked_column(&policy, args.column.as_deref().unwrap_or_default(), &role)?;
    let new = NewApproval {
        role,
        column,
        rows: args.rows.unwrap_or_default(),
        ticket: args.ticket.clone().unwrap_or_default(),
        expires_in: args.expires.map(Into::into).unwrap_or_default(),
        approver: approver.into(),
    };
    let approval = approvals::create(&dir, &keys, &new).map_err(|e| e.to_string())?;
    println!(
        "approval {} written to {}: role {}, column {}, {} rows, ticket {}, expires {}, \
         approved by {}",
        approval.id,
        dir.display(),
        approval.role,
        approval.column,
        approval.rows,
        approval.ticket,
        approval.expires,
        approval.approver
    );
    Ok(true)
}

/// The column `name` names in `policy`, as `schema.table.column`, if an
/// approval for `role` would change anything there: it must have an
/// approval limit, and the policy must grant `role` its plaintext.
fn checked_column(policy: &Policy, name: &str, role: &str) -> Result<String, String> {
    let folded = name.to_ascii_lowercase();
    let parts: Vec<&str> = folded.split('.').collect();
    let (schema, table, column) = match parts.as_slice() {
        [table, column] => ("public", *table, *column),
        [schema, table, column] => (*schema, *table, *column),
        _ => {
            return Err(format!(
                "--column {name}: give TABLE.COLUMN or SCHEMA.TABLE.COLUMN"
            ))
        }
    };
    let qualified = format!("{schema}.{table}.{column}");
    let Some(policy) = policy.column(schema, table, column) else {
        return Err(format!("column {qualified} is not in the policy"));
    };
    if policy.approval_rows.is_none() {
        return Err(format!(
            "column {qualified} has no approval limit in the policy (approval = {{ rows = N }}): \
             an approval would change nothing"
        ));
    }
    let granted = policy.reveal.get(role).copied().unwrap_or(policy.default);
    if granted != Action::Plaintext {
        return Err(format!(
            "the policy does not grant role {role} the plaintext of {qualified}: an approval \
             lifts the row limit only, it grants no access the policy does not"
        ));
    }
    Ok(qualified)
}

/// Prints every approval of `dir`; `Ok(false)` when a file is refused.
fn list(dir: &Path, keys: &Arc<AuditKeys>) -> Result<bool, String> {
    let listed = approvals::list(dir, keys).map_err(|e| e.to_string())?;
    if listed.is_empty() {
        println!("no approvals in {}", dir.display());
        return Ok(true);
    }
    let mut all_valid = true;
    for entry in listed {
        match entry {
            Listed::Valid {
                approval: a,
                used,
                state,
            } => {
                all_valid &= state != State::Damaged;
                println!(
                    "{}  {state}  role {}  column {}  ticket {}  rows {}  used {used}  left {}  \
                 expires {}  approved by {} at {}",
                    a.id,
                    a.role,
                    a.column,
                    a.ticket,
                    a.rows,
                    a.rows - used,
                    a.expires,
                    a.approver,
                    a.created
                )
            }
            Listed::Refused(e) => {
                all_valid = false;
                println!("REFUSED  {e}");
            }
        }
    }
    Ok(all_valid)
}
