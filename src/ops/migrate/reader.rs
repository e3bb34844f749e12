//! Reading a table in batches on a connection of its own, one batch ahead
//! of the one being written: while PostgreSQL updates a batch, the next is
//! read (and then encrypted) instead of waiting.
//!
//! - A table with a primary key is read by keyset pagination: each batch
//!   is the next rows after the previous batch's last key, in key order,
//!   each in its own short statement.
//! - A table without one is read through a portal (a cursor of the
//!   protocol) in one `REPEATABLE READ` snapshot from a block on: every
//!   row as it was at the snapshot, each once. A row the application
//!   updates meanwhile moves to another ctid, where the compare-and-set
//!   (which matches the ctid) will not find it; such rows, and the rows
//!   the migration itself moved, are for the next pass (`scan.rs`).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Row};

use super::db::DbError;
use super::plan::TablePlan;
use super::sql;

/// Where reading starts.
#[derive(Clone, Debug)]
pub(super) enum Start {
    /// After this key (its columns as text), or at the first row.
    Key(Option<Vec<String>>),
    /// At this block, walking by ctid.
    Block(u32),
}

/// The batches of a table, read ahead.
pub(super) struct Batches {
    rx: mpsc::Receiver<Result<Vec<Row>, DbError>>,
    task: JoinHandle<Client>,
}

impl Batches {
    /// Starts reading `table` from `start`, `size` rows a batch, on
    /// `client`, which [`Batches::finish`] gives back.
    pub(super) fn spawn(client: Client, table: Arc<TablePlan>, start: Start, size: usize) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let mut client = client;
            let result = match start {
                Start::Key(after) => read_keyed(&client, &table, after, size, &tx).await,
                Start::Block(block) => read_by_ctid(&mut client, &table, block, size, &tx).await,
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
            client
        });
        Batches { rx, task }
    }

    /// The next batch; `None` at the end of the table.
    pub(super) async fn next(&mut self) -> Option<Result<Vec<Row>, DbError>> {
        self.rx.recv().await
    }

    /// Stops reading and gives the connection back.
    pub(super) async fn finish(self) -> Option<Client> {
        drop(self.rx);
        self.task.await.ok()
    }
}

type Sender = mpsc::Sender<Result<Vec<Row>, DbError>>;

async fn read_keyed(
    client: &Client,
    table: &TablePlan,
    mut after: Option<Vec<String>>,
    size: usize,
    tx: &Sender,
) -> Result<(), DbError> {
    let first = client
        .prepare(&sql::select_first(table))
        .await
        .map_err(DbError::new)?;
    let next = client
        .prepare(&sql::select_after(table))
        .await
        .map_err(DbError::new)?;
    let limit = size as i64;
    let keys = sql::key_len(table);
    loop {
        let rows = match &after {
            None => client.query(&first, &[&limit]).await,
            Some(key) => {
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    key.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
                params.push(&limit);
                client.query(&next, &params).await
            }
        }
        .map_err(DbError::new)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some((0..keys).map(|i| last.get::<_, String>(i)).collect());
        let end = rows.len() < size;
        if tx.send(Ok(rows)).await.is_err() || end {
            return Ok(());
        }
    }
}

async fn read_by_ctid(
    client: &mut Client,
    table: &TablePlan,
    block: u32,
    size: usize,
    tx: &Sender,
) -> Result<(), DbError> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(DbError::new)?;
    // Blocks in order, from the first, whatever other scans run.
    transaction
        .batch_execute("SET LOCAL synchronize_seqscans = off")
        .await
        .map_err(DbError::new)?;
    let select = transaction
        .prepare(&sql::select_from_ctid(table))
        .await
        .map_err(DbError::new)?;
    let start = format!("({block},0)");
    let portal = transaction
        .bind(&select, &[&start])
        .await
        .map_err(DbError::new)?;
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    loop {
        let rows = transaction
            .query_portal(&portal, size)
            .await
            .map_err(DbError::new)?;
        if rows.is_empty() || tx.send(Ok(rows)).await.is_err() {
            break;
        }
    }
    transaction.commit().await.map_err(DbError::new)
}
