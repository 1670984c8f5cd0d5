//! Group commit: every transfer step of the process goes through one writer task, which
//! takes whatever steps are waiting (up to [`MAX_BATCH`]) and applies them in one database
//! transaction ([`Store::run_batch`]).
//!
//! Under load the batches grow by themselves and the cost of a transaction (and, on SQLite,
//! of every round trip to the database thread) is shared by all the steps in it; when idle a
//! batch is one step and nothing waits. A step is answered only after its batch committed.
//! If a batch fails in the database, its steps are retried one by one, so one bad step cannot
//! fail its neighbours.

use tokio::sync::{mpsc, oneshot};

use super::engine::{Op, Transfer};
use super::store::{Store, StoreError};

/// Most steps in one transaction.
pub const MAX_BATCH: usize = 256;

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Transfer, StoreError>>,
}

/// The handle request handlers send steps to.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
}

impl Batcher {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_loop(store, rx));
        Self { tx }
    }

    /// Applies one step (in some batch) and returns its answer.
    pub async fn apply(&self, op: Op) -> Result<Transfer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the ledger writer stopped".to_owned());
        self.tx.send(Request { op, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ops: Vec<Op> = batch.iter().map(|r| r.op.clone()).collect();
        match store.run_batch(&ops).await {
            Ok(results) => answer(batch.drain(..), results),
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, steps = batch.len(), "batch failed; retrying its steps one by one");
                for request in batch.drain(..) {
                    let result = store.run_batch(std::slice::from_ref(&request.op)).await;
                    match result {
                        Ok(results) => answer(std::iter::once(request), results),
                        Err(e) => {
                            let _ = request.reply.send(Err(StoreError::Unavailable(e.to_string())));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "step failed in the database");
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

fn answer(
    requests: impl Iterator<Item = Request>,
    results: Vec<Result<Transfer, super::ledger::LedgerError>>,
) {
    for (request, result) in requests.zip(results) {
        // The handler may have gone (client disconnected); the step applied all the same.
        let _ = request.reply.send(result.map_err(StoreError::from));
    }
}
