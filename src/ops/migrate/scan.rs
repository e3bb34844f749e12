//! Migrating one table, batch by batch: each batch read (`reader.rs`),
//! each value judged (`value.rs`), the changed rows written in one
//! `UPDATE` with a compare-and-set (`sql.rs`), rows whose compare-and-set
//! failed read again and retried, counts kept, progress shown and saved.
//!
//! **Compare-and-set.** A row is updated only if every column the batch
//! changes in it still holds the value the batch read, so a value the
//! application wrote meanwhile (through pgveil, so already as the policy
//! asks) is never overwritten with one made from the old value. Each
//! statement is a transaction of its own; PostgreSQL re-checks the
//! condition on the newest version of a row that was locked while it
//! waited.
//!
//! **Tables with a primary key** are walked once, in key order. A row
//! whose compare-and-set failed is read again by its key and judged
//! again, up to [`ATTEMPTS`] times; one still changing then is counted as
//! such and left.
//!
//! **Tables without one** are walked by ctid, which an update changes, in
//! passes: each reads every row as of one snapshot (`reader.rs`) and
//! matches rows by ctid, so a row updated since the snapshot is left to
//! the next pass. A pass that started at the first block and changed
//! nothing, and missed nothing, proves the table done: every row of its
//! snapshot was as the policy asks, and the application (through pgveil)
//! only writes values that are. At most [`PASSES`] passes.
//!
//! **Errors.** A batch the database refuses for its data (a constraint, a
//! value too long for its column, a trigger's exception) is written row by
//! row, and the rows it refuses are counted and left; a deadlock or a lock
//! not had within `lock_timeout` is retried; a lost connection or any
//! other error stops the migration.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::counts::Counts;
use super::db::{DbError, Failure};
use super::params::Params;
use super::plan::{Form, TablePlan, Walk};
use super::progress::Progress;
use super::reader::{Batches, Start};
use super::sql;
use super::state::{Position, State, StateError, TableProgress};
use super::value::{judge, Stored, Verdict};
use crate::protect::keyring::Keyring;

/// How many times a row whose compare-and-set failed is tried again.
const ATTEMPTS: u32 = 20;
/// How many passes a table without a primary key gets.
const PASSES: u32 = 8;

/// The migration of a table stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("{table}: {source}")]
    Db { table: String, source: DbError },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a table's migration did.
#[derive(Debug, Default)]
pub(crate) struct TableResult {
    /// Per column, in the plan's order.
    pub(crate) counts: Vec<Counts>,
    /// What of `counts` an interrupted run wrote to the audit log.
    pub(crate) recorded: Vec<Counts>,
    /// Rows done (in the last pass, walking by ctid), by this run and
    /// the earlier runs it resumed.
    pub(crate) rows: u64,
    /// Rows read by this run.
    pub(crate) read: u64,
    /// Whether it went on from where an earlier run stopped.
    pub(crate) resumed: bool,
    /// Rows the earlier runs had done.
    pub(crate) carried: u64,
    /// Stopped by a signal before the end.
    pub(crate) interrupted: bool,
    /// Rows still changing under the migration after the last pass (a
    /// table walked by ctid).
    pub(crate) unsettled: u64,
    /// Why the database refused rows, and how many.
    pub(crate) refusals: BTreeMap<String, u64>,
    /// The SQLSTATE of the first refusal.
    pub(crate) refusal_code: Option<String>,
    /// Passes made (1 for a table with a primary key).
    pub(crate) passes: u32,
    pub(crate) elapsed: Duration,
}

/// How a migration runs.
#[derive(Clone, Debug)]
pub(crate) struct ScanOptions {
    pub(crate) batch_size: usize,
    pub(crate) dry_run: bool,
    pub(crate) max_rows_per_second: Option<u64>,
}

/// What the batches of one pass did.
#[derive(Default)]
struct PassOutcome {
    changed: u64,
    /// Rows whose compare-and-set failed walking by ctid.
    moved: u64,
}

/// The fate of one row sent to be written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Written,
    /// Its compare-and-set failed: changed meanwhile, or deleted.
    Missed,
    Refused,
}

/// The statements of a table, prepared on the writing connection.
struct Statements {
    update: Option<Statement>,
    between: Option<Statement>,
}

/// Migrates tables one after the other.
pub(super) struct Scanner<'a> {
    pub(super) keyring: &'a Keyring,
    pub(super) write: &'a Client,
    /// The reading connection, lent to each table's [`Batches`].
    pub(super) read: Option<Client>,
    pub(super) options: ScanOptions,
    pub(super) stop: &'a AtomicBool,
    pub(super) progress: Progress,
    pub(super) state: Option<State>,
    /// Rows read over the run and since when, for the throttle.
    pub(super) throttle: (u64, Instant),
}

impl Scanner<'_> {
    /// Migrates `table`, going on from the state an earlier run left.
    pub(super) async fn table(
        &mut self,
        table: &TablePlan,
    ) -> (TableResult, Result<(), ScanError>) {
        let started = Instant::now();
        let name = format!("{}.{}", table.schema, table.table);
        let resume = self.state.as_ref().and_then(|s| s.resume(&name)).cloned();
        let mut result = TableResult {
            counts: match &resume {
                Some(progress) if progress.counts.len() == table.columns.len() => {
                    progress.counts.clone()
                }
                _ => vec![Counts::default(); table.columns.len()],
            },
            recorded: match &resume {
                Some(progress) if progress.recorded.len() == table.columns.len() => {
                    progress.recorded.clone()
                }
                _ => vec![Counts::default(); table.columns.len()],
            },
            rows: resume.as_ref().map_or(0, |p| p.rows),
            resumed: resume.is_some(),
            carried: resume.as_ref().map_or(0, |p| p.rows),
            ..TableResult::default()
        };
        let outcome = self
            .walk(table, &name, resume.map(|p| p.position), &mut result)
            .await;
        result.elapsed = started.elapsed();
        let outcome = outcome.map_err(|e| match e {
            Stop::Db(source) => ScanError::Db {
                table: name,
                source,
            },
            Stop::State(e) => ScanError::State(e),
        });
        (result, outcome)
    }

    async fn walk(
        &mut self,
        table: &TablePlan,
        name: &str,
        resume: Option<Position>,
        result: &mut TableResult,
    ) -> Result<(), Stop> {
        let statements = Statements {
            update: match self.options.dry_run {
                true => None,
                false => Some(self.prepare(&sql::update(table)).await?),
            },
            between: match &table.walk {
                Walk::Key(_) => Some(self.prepare(&sql::select_between(table)).await?),
                Walk::Ctid => None,
            },
        };
        let total = self.estimate(table).await?;
        let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        let table_arc = Arc::new(table.clone());
        if let Walk::Key(_) = table.walk {
            let after = match resume {
                Some(Position::After(key)) => Some(key),
                _ => None,
            };
            self.progress.start(name, &columns, total, result.rows);
            let position = |key: Vec<String>| Position::After(key);
            self.pass(&table_arc, &statements, Start::Key(after), position, result)
                .await?;
            result.passes = 1;
            self.progress.finish(&result.counts, result.interrupted);
            return Ok(());
        }
        let (mut pass, mut block, mut full) = match resume {
            Some(Position::Ctid { pass, block, full }) => (pass, block, full),
            _ => (1, 0, true),
        };
        loop {
            let label = match pass {
                1 => name.to_owned(),
                n => format!("{name} (pass {n})"),
            };
            self.progress.start(&label, &columns, total, result.rows);
            let position = move |key: Vec<String>| Position::Ctid {
                pass,
                block: block_of(&key[0]),
                full: full && block == 0,
            };
            let outcome = self
                .pass(
                    &table_arc,
                    &statements,
                    Start::Block(block),
                    position,
                    result,
                )
                .await?;
            self.progress.finish(&result.counts, result.interrupted);
            result.passes = pass;
            if result.interrupted || self.options.dry_run {
                return Ok(());
            }
            let clean = outcome.changed == 0 && outcome.moved == 0;
            if clean && full && block == 0 {
                return Ok(());
            }
            if pass >= PASSES {
                result.unsettled = outcome.moved;
                return Ok(());
            }
            (pass, block, full) = (pass + 1, 0, true);
            for counts in result.counts.iter_mut().chain(&mut result.recorded) {
                counts.new_pass();
            }
            result.rows = 0;
            self.save(name, Position::Ctid { pass, block, full }, result)?;
        }
    }

    /// Reads `table` from `start` to its end (or a stop signal), writing
    /// and saving each batch.
    async fn pass(
        &mut self,
        table: &Arc<TablePlan>,
        statements: &Statements,
        start: Start,
        position: impl Fn(Vec<String>) -> Position,
        result: &mut TableResult,
    ) -> Result<PassOutcome, Stop> {
        let name = format!("{}.{}", table.schema, table.table);
        let client = self.read.take().expect("the reading connection is back");
        let mut batches = Batches::spawn(client, table.clone(), start, self.batch_size());
        let mut outcome = PassOutcome::default();
        let run = async {
            while let Some(rows) = batches.next().await {
                let rows = rows.map_err(Stop::Db)?;
                let Some(last) = rows.last() else { break };
                let keys: Vec<String> = (0..sql::key_len(table)).map(|i| last.get(i)).collect();
                let read = rows.len() as u64;
                self.settle(table, statements, rows, result, &mut outcome)
                    .await?;
                result.rows += read;
                result.read += read;
                self.progress.advance(read, &result.counts);
                if !self.options.dry_run {
                    self.save(&name, position(keys), result)?;
                }
                self.throttle(read).await;
                if self.stop.load(Ordering::Relaxed) {
                    result.interrupted = true;
                    break;
                }
            }
            Ok::<_, Stop>(())
        }
        .await;
        self.read = batches.finish().await;
        if self.read.is_none() {
            return Err(Stop::Db(DbError {
                reason: "the reading task failed".into(),
                code: None,
                failure: Failure::Other,
            }));
        }
        run.map(|()| outcome)
    }

    /// Judges a batch's rows and writes those that change, until each row
    /// is written, refused, gone, or (walking by ctid) left to the next
    /// pass.
    async fn settle(
        &self,
        table: &TablePlan,
        statements: &Statements,
        mut rows: Vec<Row>,
        result: &mut TableResult,
        outcome: &mut PassOutcome,
    ) -> Result<(), Stop> {
        let keys = sql::key_len(table);
        for attempt in 1.. {
            let judged: Vec<Vec<Option<Verdict>>> = rows
                .iter()
                .map(|row| self.judge_row(table, row, keys))
                .collect();
            let changing: Vec<usize> = (0..rows.len())
                .filter(|&i| judged[i].iter().any(changes))
                .collect();
            for (i, verdicts) in judged.iter().enumerate() {
                if self.options.dry_run || !judged[i].iter().any(changes) {
                    count(&mut result.counts, verdicts, Fate::Written);
                }
            }
            let Some(update) = statements.update.as_ref().filter(|_| !changing.is_empty()) else {
                return Ok(());
            };
            let fates = self
                .write_rows(update, table, &rows, &judged, &changing, result)
                .await?;
            let mut missed = Vec::new();
            for (&i, fate) in changing.iter().zip(&fates) {
                match fate {
                    Fate::Missed => missed.push(i),
                    fate => {
                        if *fate == Fate::Written {
                            outcome.changed += 1;
                        }
                        count(&mut result.counts, &judged[i], *fate);
                    }
                }
            }
            if missed.is_empty() {
                return Ok(());
            }
            let Some(between) = &statements.between else {
                outcome.moved += missed.len() as u64;
                return Ok(());
            };
            if attempt >= ATTEMPTS {
                for &i in &missed {
                    count(&mut result.counts, &judged[i], Fate::Missed);
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
            let key = |i: usize| -> Vec<String> { (0..keys).map(|k| rows[i].get(k)).collect() };
            let wanted: HashSet<Vec<String>> = missed.iter().map(|&i| key(i)).collect();
            let (first, last) = (key(missed[0]), key(missed[missed.len() - 1]));
            let params: Vec<&(dyn ToSql + Sync)> = first
                .iter()
                .chain(&last)
                .map(|k| k as &(dyn ToSql + Sync))
                .collect();
            let again = self
                .write
                .query(between, &params)
                .await
                .map_err(|e| Stop::Db(DbError::new(e)))?;
            rows = again
                .into_iter()
                .filter(|row| {
                    wanted.contains(&(0..keys).map(|k| row.get(k)).collect::<Vec<String>>())
                })
                .collect();
        }
        Ok(())
    }

    /// The verdict on each column of a row (`None` for NULL).
    fn judge_row(&self, table: &TablePlan, row: &Row, keys: usize) -> Vec<Option<Verdict>> {
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let stored = match column.form {
                    Form::Text => row.get::<_, Option<&str>>(keys + i).map(Stored::Text),
                    Form::Bytes => row.get::<_, Option<&[u8]>>(keys + i).map(Stored::Bytes),
                }?;
                Some(judge(self.keyring, &column.target, column.form, stored))
            })
            .collect()
    }

    /// Writes the rows `subset` of a batch with one compare-and-set
    /// `UPDATE`, or one by one if the database refuses the batch for its
    /// data.
    async fn write_rows(
        &self,
        update: &Statement,
        table: &TablePlan,
        rows: &[Row],
        judged: &[Vec<Option<Verdict>>],
        subset: &[usize],
        result: &mut TableResult,
    ) -> Result<Vec<Fate>, Stop> {
        let params = Params::new(table, rows, judged, subset);
        let error = match self.write.query(update, &params.refs()).await {
            Ok(written) => {
                let mut fates = vec![Fate::Missed; subset.len()];
                for row in written {
                    let at: i64 = row.get(0);
                    fates[at as usize - 1] = Fate::Written;
                }
                return Ok(fates);
            }
            Err(e) => DbError::new(e),
        };
        match error.failure {
            Failure::Retry => Ok(vec![Fate::Missed; subset.len()]),
            Failure::Row if subset.len() > 1 => {
                let mut fates = Vec::with_capacity(subset.len());
                for &i in subset {
                    let fate = Box::pin(self.write_rows(update, table, rows, judged, &[i], result))
                        .await?;
                    fates.extend(fate);
                }
                Ok(fates)
            }
            Failure::Row => {
                result
                    .refusal_code
                    .get_or_insert(error.code.unwrap_or_default());
                *result.refusals.entry(error.reason).or_default() += 1;
                Ok(vec![Fate::Refused])
            }
            Failure::Connection | Failure::Other => Err(Stop::Db(error)),
        }
    }

    async fn prepare(&self, sql: &str) -> Result<Statement, Stop> {
        self.write
            .prepare(sql)
            .await
            .map_err(|e| Stop::Db(DbError::new(e)))
    }

    /// The table's rows, as the statistics estimate them, else counted.
    async fn estimate(&self, table: &TablePlan) -> Result<u64, Stop> {
        let row = self
            .write
            .query_one(
                "SELECT c.reltuples::pg_catalog.int8 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.schema, &table.table],
            )
            .await
            .map_err(|e| Stop::Db(DbError::new(e)))?;
        let estimate: i64 = row.get(0);
        if estimate > 0 {
            return Ok(estimate as u64);
        }
        let count = format!("SELECT pg_catalog.count(*) FROM {}", sql::table_name(table));
        let row = self
            .write
            .query_one(&count, &[])
            .await
            .map_err(|e| Stop::Db(DbError::new(e)))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn save(&mut self, table: &str, position: Position, result: &TableResult) -> Result<(), Stop> {
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        state
            .save(TableProgress {
                table: table.into(),
                position,
                rows: result.rows,
                counts: result.counts.clone(),
                recorded: result.recorded.clone(),
            })
            .map_err(Stop::State)
    }

    fn batch_size(&self) -> usize {
        let size = self.options.batch_size.max(1);
        match self.options.max_rows_per_second {
            Some(rate) => size.min(rate.max(1) as usize),
            None => size,
        }
    }

    /// Sleeps as long as it takes to keep to `--max-rows-per-second`.
    async fn throttle(&mut self, rows: u64) {
        let Some(rate) = self.options.max_rows_per_second else {
            return;
        };
        let (done, since) = &mut self.throttle;
        *done += rows;
        let due = Duration::from_secs_f64(*done as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_sub(since.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why a table's migration stopped.
enum Stop {
    Db(DbError),
    State(StateError),
}

/// Whether a column's verdict (`None`: NULL) changes the value.
fn changes(verdict: &Option<Verdict>) -> bool {
    verdict.as_ref().is_some_and(|v| v.new_value().is_some())
}

/// Counts a row's verdicts once its fate is known: the changes of a row
/// refused count as refused, those of a row given up on (still missed
/// after every attempt) as busy.
fn count(counts: &mut [Counts], verdicts: &[Option<Verdict>], fate: Fate) {
    for (counts, verdict) in counts.iter_mut().zip(verdicts) {
        let Some(verdict) = verdict else { continue };
        match fate {
            Fate::Refused if verdict.new_value().is_some() => {
                counts.seen += 1;
                counts.refused += 1;
            }
            Fate::Missed if verdict.new_value().is_some() => {
                counts.seen += 1;
                counts.busy += 1;
            }
            _ => counts.add(verdict),
        }
    }
}

/// The block of a ctid's text, `(block,offset)`.
fn block_of(ctid: &str) -> u32 {
    ctid.trim_start_matches('(')
        .split(',')
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0)
}
