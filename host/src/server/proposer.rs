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
//!
//! On a standalone server an entry stops counting as in flight once it is durable (the
//! log's fsync covers it, `LogProgress`), not once it is applied: the next entry's fsync then
//! runs while the previous entry is applied and answered, as ZooKeeper's sync and final
//! request processors overlap. That shortens chains of dependent writes (a lock
//! handoff: a release, then the next holder's release) by the apply time.
//!
//! In an ensemble only the leader appends to the log. A follower's batches go to the
//! leader as one `Forward` request each (sent in order on one connection, and queued
//! there in that order); the follower answers its clients only once it has applied
//! the entry itself, so a session reads its own writes on the server it is connected
//! to, and the watch events of that entry reach the client before the reply.

use super::cluster::{wait_applied, Cluster, FORWARD_TIMEOUT};
use super::now_ms;
use crate::admin::metrics::Histogram;
use crate::app::Raft;
use crate::command::{Command, CommandOp, CommandOutput, ZXID_POSITION_BITS};
use crate::peer::{PeerRequest, PeerResponse};
use crate::raft::log_store::LogProgress;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Entries submitted to raft and not yet applied, in an ensemble. Two keep the leader
/// busy: one being replicated and fsynced, the next one queued behind it.
const MAX_ENTRIES_IN_FLIGHT: usize = 2;
/// The same for a standalone server. One: there is no network round trip to overlap,
/// and every entry costs a fixed amount of work (an fsync, a raft round, thread
/// wake-ups) whatever its size, so on a small machine fewer, bigger entries win.
/// Measured on 2 cores, 16 clients x 8 in flight of setData: 1 entry in flight gave
/// about 72k writes/s, 2 gave 60k, 4 gave 46k, 8 gave 34k; one request at a time is
/// unaffected (each entry holds one operation either way). Re-measured once entries
/// left the count when durable instead of applied: 1 gave 80-84k, 2 gave 67-72k.
const MAX_ENTRIES_IN_FLIGHT_STANDALONE: usize = 1;
/// Bound on the operations of one entry (keeps entries, and apply pauses, small).
const MAX_OPS_PER_BATCH: usize = 1024;
/// Bound on the approximate bytes of one entry's operations (an operation larger than
/// this gets an entry of its own): entries are replicated whole, and an append to a
/// follower must complete within one heartbeat interval (openraft's append timeout).
const MAX_BYTES_PER_BATCH: usize = 1 << 20;

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
    /// `cluster` is None for a standalone server (always its own leader).
    pub fn start(
        raft: Raft,
        log: Arc<LogProgress>,
        commit_latency: Arc<Histogram>,
        cluster: Option<Arc<Cluster>>,
    ) -> (Proposer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, log, rx, commit_latency, cluster));
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

async fn run(
    raft: Raft,
    log: Arc<LogProgress>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    commit_latency: Arc<Histogram>,
    cluster: Option<Arc<Cluster>>,
) {
    let in_flight = Arc::new(Semaphore::new(if cluster.is_some() {
        MAX_ENTRIES_IN_FLIGHT
    } else {
        MAX_ENTRIES_IN_FLIGHT_STANDALONE
    }));
    // An operation that would have overflowed the previous batch starts the next one.
    let mut carry: Option<Queued> = None;
    loop {
        // Wait for room in raft first: what arrives meanwhile joins the next batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes = first.0.approx_bytes();
        let mut ops = vec![first.0];
        let mut replies = vec![(first.1, first.2)];
        while ops.len() < MAX_OPS_PER_BATCH.min(crate::command::MAX_OPS_PER_ENTRY) {
            match rx.try_recv() {
                Ok((op, reply, proposed)) => {
                    let size = op.approx_bytes();
                    if bytes + size > MAX_BYTES_PER_BATCH {
                        carry = Some((op, reply, proposed));
                        break;
                    }
                    bytes += size;
                    ops.push(op);
                    replies.push((reply, proposed));
                }
                Err(_) => break,
            }
        }
        let leader = match &cluster {
            None => Ok(None),
            Some(c) => c.leader(&raft).await,
        };
        let leader = match leader {
            Ok(l) => l,
            Err(e) => {
                drop(permit);
                for (reply, _) in replies {
                    let _ = reply.send(Err(ProposeError::Write(e.clone())));
                }
                continue;
            }
        };
        if let Some(leader) = leader {
            // Enqueued on the leader connection before the next batch is: order kept.
            let sent = leader.send(&PeerRequest::Forward { ops }).await;
            let raft = raft.clone();
            let commit_latency = commit_latency.clone();
            tokio::spawn(async move {
                let outcome = match sent {
                    Err(e) => Err(ProposeError::Write(e.to_string())),
                    Ok(rx) => match leader.wait(rx, FORWARD_TIMEOUT).await {
                        Ok(PeerResponse::Forward(Ok(outputs))) => Ok(outputs),
                        Ok(PeerResponse::Forward(Err(e))) | Ok(PeerResponse::Refused(e)) => {
                            Err(ProposeError::Write(e))
                        }
                        Ok(other) => Err(ProposeError::Write(format!(
                            "unexpected answer to forwarded writes: {other:?}"
                        ))),
                        Err(e) => Err(ProposeError::Write(e.to_string())),
                    },
                };
                let outcome = match outcome {
                    Ok(outputs) => {
                        let index = outputs
                            .iter()
                            .map(|o| (o.zxid as u64) >> ZXID_POSITION_BITS)
                            .max()
                            .unwrap_or(0);
                        wait_applied(&raft, index)
                            .await
                            .map(|()| outputs)
                            .map_err(ProposeError::Write)
                    }
                    Err(e) => Err(e),
                };
                drop(permit);
                deliver(replies, outcome, &commit_latency);
            });
            continue;
        }
        // This server is the leader. Its entry is the next one appended (a hint: raft
        // may append one of its own first, which only frees the slot early). Only a
        // standalone server frees the slot at the local fsync, where durable means
        // committed; an ensemble's leader keeps counting an entry until it is applied
        // (committed by a quorum), which bounds what waits for the followers.
        let entry_index = if cluster.is_none() {
            log.appended() + 1
        } else {
            u64::MAX
        };
        let mut flushed = log.flushed();
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
                Ok(mut rx) => {
                    // The slot is free once the entry is durable, not once it is
                    // applied: the next entry's fsync then overlaps this one's apply
                    // and replies (ZooKeeper's sync and final processors overlap the
                    // same way). Replies stay in order: each connection answers its
                    // requests in the order it received them.
                    let mut permit = Some(permit);
                    let applied = tokio::select! {
                        biased;
                        applied = &mut rx => applied,
                        () = async {
                            // (The guard it returns must not live across `rx.await`.)
                            let _ = flushed.wait_for(|f| *f >= entry_index).await;
                        } => {
                            permit.take();
                            rx.await
                        }
                    };
                    drop(permit);
                    match applied {
                        Ok(Ok(resp)) => Ok(resp.data),
                        Ok(Err(e)) => Err(ProposeError::Write(e.to_string())),
                        Err(e) => Err(ProposeError::Fatal(e.to_string())),
                    }
                }
            };
            deliver(replies, outcome, &commit_latency);
        });
    }
}

fn deliver(
    replies: Vec<(Reply, Instant)>,
    outcome: Result<Vec<CommandOutput>, ProposeError>,
    commit_latency: &Histogram,
) {
    match outcome {
        Ok(outputs) if outputs.len() == replies.len() => {
            for ((reply, proposed), out) in replies.into_iter().zip(outputs) {
                commit_latency.observe(proposed.elapsed());
                let _ = reply.send(Ok(out));
            }
        }
        Ok(outputs) => {
            let e = ProposeError::Write(format!(
                "{} results for {} operations",
                outputs.len(),
                replies.len()
            ));
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
