//! Group commit in front of raft: operations from every connection are batched into
//! one log entry while the previous entries are being made durable.
//!
//! openraft 0.9 appends one entry at a time and waits for its fsync before the next,
//! so one operation per entry caps writes at the disk's fsync rate. Instead, at most
//! `MAX_ENTRIES_IN_FLIGHT` entries are in raft at once; while they are, new operations
//! queue here, and the next entry takes all of them (up to `MAX_OPS_PER_ENTRY`). Under
//! light load an entry holds one operation and nothing waits; under heavy load one
//! fsync covers hundreds. Operations leave in the order they arrived, so a
//! connection's writes are applied in the order it sent them.

use super::now_ms;
use crate::admin::metrics::Histogram;
use crate::app::Raft;
use crate::command::{Command, CommandOp, CommandOutput};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Entries submitted to raft and not yet applied. Two keep the disk busy: one being
/// fsynced, the next one queued behind it.
const MAX_ENTRIES_IN_FLIGHT: usize = 2;
/// Bound on the operations of one entry (keeps entries, and apply pauses, small).
const MAX_OPS_PER_BATCH: usize = 1024;

/// Why a proposal did not produce an applied result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("raft is shut down or failed: {0}")]
    Fatal(String),
    #[error("write not committed: {0}")]
    Write(String),
}

type Reply = oneshot::Sender<Result<CommandOutput, ProposeError>>;
/// An operation waiting for the next batch, with when it was proposed.
type Queued = (CommandOp, Reply, Instant);

/// Handle for submitting operations; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Queued>,
}

impl Proposer {
    /// Starts the batching task for `raft`. Each applied operation's time from
    /// [`Proposer::propose`] to its result is recorded in `commit_latency`.
    pub fn start(
        raft: Raft,
        commit_latency: Arc<Histogram>,
    ) -> (Proposer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, rx, commit_latency));
        (Proposer { tx }, task)
    }

    /// Queues `op` and returns a future of its applied result. The operation is queued
    /// before this returns, so calls made one after another are applied in that order.
    pub fn propose(
        &self,
        op: CommandOp,
    ) -> BoxFuture<'static, Result<CommandOutput, ProposeError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send((op, reply, Instant::now()));
        Box::pin(async move {
            if sent.is_err() {
                return Err(ProposeError::Fatal("the proposer has stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(ProposeError::Fatal("the proposer has stopped".into())))
        })
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Queued>, commit_latency: Arc<Histogram>) {
    let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    loop {
        // Wait for room in raft first: what arrives meanwhile joins the next batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut ops = vec![first.0];
        let mut replies = vec![(first.1, first.2)];
        while ops.len() < MAX_OPS_PER_BATCH.min(crate::command::MAX_OPS_PER_ENTRY) {
            match rx.try_recv() {
                Ok((op, reply, proposed)) => {
                    ops.push(op);
                    replies.push((reply, proposed));
                }
                Err(_) => break,
            }
        }
        let submitted = raft
            .client_write_ff(Command {
                time_ms: now_ms(),
                ops,
            })
            .await;
        let commit_latency = commit_latency.clone();
        tokio::spawn(async move {
            let outcome = match submitted {
                Err(e) => Err(ProposeError::Fatal(e.to_string())),
                Ok(rx) => match rx.await {
                    Ok(Ok(resp)) => Ok(resp.data),
                    Ok(Err(e)) => Err(ProposeError::Write(e.to_string())),
                    Err(e) => Err(ProposeError::Fatal(e.to_string())),
                },
            };
            drop(permit);
            match outcome {
                Ok(outputs) => {
                    for ((reply, proposed), out) in replies.into_iter().zip(outputs) {
                        commit_latency.observe(proposed.elapsed());
                        let _ = reply.send(Ok(out));
                    }
                }
                Err(e) => {
                    for (reply, _) in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
