//! `pgveil guard`: the SQL of the database's ciphertext guards.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::EXIT_CONFIG;
use crate::protect::protection::load_policy;

#[derive(Args)]
pub(super) struct GuardArgs {
    /// Policy file or directory.
    #[arg(long)]
    policy: PathBuf,
    /// Print only the statements that validate the guards, checking the
    /// rows written before they were added.
    #[arg(long)]
    validate: bool,
}

pub(super) fn guard(args: &GuardArgs) -> ExitCode {
    match load_policy(&args.policy) {
        Ok(policy) if args.validate => print!("{}", crate::protect::guard::validate_sql(&policy)),
        Ok(policy) => print!("{}", crate::protect::guard::script(&policy)),
        Err(e) => {
            eprintln!("pgveil guard: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    ExitCode::SUCCESS
}
