use std::process::ExitCode;

fn main() -> ExitCode {
    pgveil::ops::cli::main()
}
