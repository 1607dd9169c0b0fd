//! What a server does as a member of an ensemble, beyond serving its own clients:
//! knowing who leads, reporting its sessions' liveness to the leader, catching up on
//! `sync`, reporting status and changing membership.
//!
//! # Global sessions
//!
//! A session belongs to the ensemble, not to the server its client is connected to
//! (ZooKeeper's global sessions). Every server notes traffic from the sessions
//! connected to it; followers report those ids to the leader every half tick
//! ([`liveness_loop`]). Only the leader's [`super::SessionTracker`] decides expiry,
//! which it proposes through the log, so every replica deletes the same ephemerals at
//! the same zxid. A server that becomes leader first gives every session a fresh
//! timeout (`super::expire_sessions_loop`), so sessions whose reports went to the old leader
//! are not expired for the time that leader was failing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, ServerState};

use super::Shared;
use crate::peer::{PeerClient, PeerPool, PeerRequest, PeerResponse, StatusReport};

/// How long a write or a sync waits for a leader to be known before failing (the
/// client then sees a connection loss and retries, as with ZooKeeper mid-election).
pub const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded write may take, from leaving this server to being applied here.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// This server's place in an ensemble.
pub struct Cluster {
    pub my_id: u64,
    pub pool: PeerPool,
    /// Observers named in the configuration file: added as learners by the first leader.
    pub config_observers: BTreeMap<u64, BasicNode>,
}

impl Cluster {
    /// The current leader's peer client, None if this server leads, or an error if no
    /// leader became known within [`LEADER_WAIT`].
    pub async fn leader(&self, raft: &crate::app::Raft) -> Result<Option<PeerClient>, String> {
        let mut rx = raft.metrics();
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            {
                let m = rx.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    if leader == self.my_id {
                        return Ok(None);
                    }
                    if let Some(node) = m.membership_config.membership().get_node(&leader) {
                        return Ok(Some(self.pool.get(&node.addr)));
                    }
                }
                if m.state == ServerState::Shutdown {
                    return Err("raft is shut down".into());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("raft is shut down".into()),
                Err(_) => return Err(format!("no leader known after {LEADER_WAIT:?}")),
            }
        }
    }
}

impl Shared {
    /// True if this server leads (a standalone server always does once started).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
    }

    /// ZooKeeper's name for this server's role: standalone, leader, follower, observer.
    pub fn role(&self) -> &'static str {
        if self.cluster.is_none() {
            return "standalone";
        }
        match self.raft.metrics().borrow().state {
            ServerState::Leader => "leader",
            ServerState::Learner => "observer",
            ServerState::Shutdown => "shutdown",
            ServerState::Follower | ServerState::Candidate => "follower",
        }
    }

    /// Traffic from session `id` (on this server or reported by another): true if the
    /// session is live. Sessions unknown to this server's tracker but present in the
    /// replicated table (created through another server, or before a leader change)
    /// start being tracked with their full timeout.
    pub fn touch_session(&self, id: i64) -> bool {
        self.tracker.note_activity(id);
        if self.tracker.touch(id) {
            return true;
        }
        let timeout = self.sm.read().session(id).map(|s| s.timeout_ms);
        match timeout {
            Some(t) => self.tracker.add_if_absent(id, t),
            None => false,
        }
    }

    /// `sync`: returns once this server has applied everything the leader had
    /// committed when the sync arrived.
    pub async fn linearize(&self) -> Result<(), String> {
        let Some(cluster) = &self.cluster else {
            return self
                .raft
                .ensure_linearizable()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        };
        match cluster.leader(&self.raft).await? {
            None => self
                .raft
                .ensure_linearizable()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Some(leader) => match leader.call(&PeerRequest::ReadIndex, FORWARD_TIMEOUT).await {
                Ok(PeerResponse::ReadIndex(Ok(index))) => wait_applied(&self.raft, index).await,
                Ok(PeerResponse::ReadIndex(Err(e))) => Err(e),
                Ok(other) => Err(format!("unexpected answer to a read index: {other:?}")),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// This server's status, for `wazoo admin status` and multi-server tests.
    pub fn status_report(&self) -> StatusReport {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<u64> = membership.voter_ids().collect();
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.push((*id, node.addr.clone()));
            } else {
                learners.push((*id, node.addr.clone()));
            }
        }
        let replication = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let sm = self.sm.read();
        StatusReport {
            id: self.cluster.as_ref().map_or(m.id, |c| c.my_id),
            role: self.role().to_string(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            voters,
            learners,
            replication,
            sessions: sm.sessions().len(),
            connections: self
                .stats
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(0) as u64,
            client_addr: self.client_addr.to_string(),
            digest: sm.digest(),
            // From the state machine itself, under the same lock as the digest (raft's
            // metrics may trail the state machine by an entry).
            digest_index: (sm.last_zxid() as u64) >> crate::command::ZXID_POSITION_BITS,
        }
    }
}

/// How long apart the surviving voters start their elections after the leader's
/// process is seen gone, in order of id, so that the first one usually wins outright
/// instead of all of them splitting the vote.
const FAST_ELECTION_STAGGER: Duration = Duration::from_millis(150);

/// The replication connection from `leader` closed. If the leader's peer port now
/// refuses connections, its process is gone (its host answered with a reset): start an
/// election now rather than after a whole election timeout, as ZooKeeper's followers
/// re-elect as soon as their leader's socket closes. A leader that is merely slow or
/// unreachable (no answer at all) is left to the election timeout, so this never
/// disturbs a live leader.
pub async fn leader_connection_lost(raft: crate::app::Raft, leader: u64) {
    let (addr, rank) = {
        let m = raft.metrics().borrow().clone();
        if m.current_leader != Some(leader) || m.state == ServerState::Leader {
            tracing::info!(leader, current_leader = ?m.current_leader, state = ?m.state, "replication connection closed; not this node's leader any more");
            return;
        }
        let membership = m.membership_config.membership();
        let Some(addr) = membership.get_node(&leader).map(|n| n.addr.clone()) else {
            return;
        };
        // Learners cannot be elected; voters go in id order.
        let Some(rank) = membership
            .voter_ids()
            .filter(|id| *id != leader)
            .position(|id| id == m.id)
        else {
            return;
        };
        (addr, rank)
    };
    if !peer_process_gone(&addr).await {
        tracing::info!(leader, "replication connection closed, but the leader's peer port still answers; leaving it to the election timeout");
        return;
    }
    // The first attempts may fail: a survivor still honours the dead leader's lease
    // (openraft refuses votes for a while after the last heartbeat), and a survivor
    // with a shorter log cannot win. Each retry takes a higher term, which a survivor
    // that has since started its own election grants if our log is at least as long.
    let voters = {
        let m = raft.metrics().borrow().clone();
        m.membership_config.membership().voter_ids().count().max(1) as u32
    };
    // Keep trying until the survivors' leases on the dead leader have surely run out
    // (a lease lasts up to `election_timeout_max` after the last heartbeat; found in
    // CI: three attempts 450 ms apart all fell inside a 1 s lease, and the election
    // timeout, with a split vote, took over), but no longer than the election timeout
    // would take anyway.
    let give_up =
        tokio::time::Instant::now() + Duration::from_millis(raft.config().election_timeout_max) * 2;
    tokio::time::sleep(FAST_ELECTION_STAGGER * rank as u32).await;
    for attempt in 0..FAST_ELECTION_MAX_ATTEMPTS {
        if tokio::time::Instant::now() >= give_up {
            return;
        }
        let m = raft.metrics().borrow().clone();
        let leader_gone = m.current_leader.is_none() || m.current_leader == Some(leader);
        if !leader_gone || m.state == ServerState::Leader || m.state == ServerState::Shutdown {
            tracing::info!(leader, attempt, current_leader = ?m.current_leader, state = ?m.state, "fast election not needed any more");
            return;
        }
        tracing::info!(leader, attempt, "the leader's process is gone (its peer port refuses connections); starting an election");
        if let Err(e) = raft.trigger().elect().await {
            tracing::warn!(error = %e, "cannot start an election");
            return;
        }
        tokio::time::sleep(FAST_ELECTION_STAGGER * voters).await;
    }
}

/// Whether the process behind a peer address is gone: its port refuses connections,
/// or accepts one and resets it at once.
///
/// The second case is a process being killed right now: the kernel closes its sockets
/// one by one, so the connection that carried its replication can close (which is
/// what made us look) while its listening socket still accepts for a moment; the
/// connection then queued on it is reset when the listener closes. Found in the
/// SIGKILL ensemble tests: one survivor saw "refused" and the other a completed
/// connect, so only one of them started an election and the failover took 2 s. A
/// live peer server keeps an accepted connection open, waiting for a request.
async fn peer_process_gone(addr: &str) -> bool {
    use tokio::io::AsyncReadExt;
    match tokio::time::timeout(PEER_PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(Ok(mut stream)) => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(PEER_RESET_WAIT, stream.read(&mut byte)).await {
                // Closed or reset without a word: nobody is serving there.
                Ok(Ok(0)) | Ok(Err(_)) => true,
                // Open (or, oddly, talking): a live process.
                Ok(Ok(_)) | Err(_) => false,
            }
        }
        // No answer at all: a hung process or a partition, not a dead one.
        Err(_) => false,
    }
}

/// How long a connect to a peer may take before the peer counts as unresponsive.
const PEER_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an accepted probe connection must stay open for its peer to count as alive.
const PEER_RESET_WAIT: Duration = Duration::from_millis(200);

/// A bound on the elections a survivor starts on its own (the time bound in
/// `leader_connection_lost` normally ends them first) before leaving it to the
/// election timeout.
const FAST_ELECTION_MAX_ATTEMPTS: u32 = 16;

/// Waits until this server has applied log index `index`.
pub async fn wait_applied(raft: &crate::app::Raft, index: u64) -> Result<(), String> {
    raft.wait(Some(FORWARD_TIMEOUT))
        .applied_index_at_least(Some(index), "applied the forwarded write")
        .await
        .map(|_| ())
        .map_err(|e| format!("this server did not apply index {index}: {e}"))
}

/// Follower duty: every half tick, report to the leader the sessions that had traffic
/// here since the last report.
pub async fn liveness_loop(shared: Arc<Shared>) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    let period = Duration::from_millis((shared.config.tick_time_ms as u64 / 2).max(10));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let sessions = shared.tracker.take_activity();
        if sessions.is_empty() || shared.is_leader() {
            continue;
        }
        let leader = match cluster.leader(&shared.raft).await {
            Ok(Some(leader)) => leader,
            // Became leader meanwhile: its own tracker saw the traffic.
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "no leader to report session liveness to");
                continue;
            }
        };
        if let Err(e) = leader
            .call(&PeerRequest::Alive { sessions }, Duration::from_secs(2))
            .await
        {
            tracing::debug!(error = %e, "session liveness report failed");
        }
    }
}

/// Leader duty on becoming leader of a new ensemble: adding the configured observers.
pub async fn leader_duties_loop(shared: Arc<Shared>) {
    let mut rx = shared.raft.metrics();
    let mut was_leader = false;
    loop {
        let (is_leader, fresh_membership) = {
            let m = rx.borrow_and_update();
            let fresh = m.membership_config.log_id().is_none_or(|l| l.index == 0);
            (m.state == ServerState::Leader, fresh)
        };
        if is_leader && !was_leader {
            // (Fresh session timeouts for a new leader are given by the expiry loop
            // itself, see `super::expire_sessions_loop`.)
            if let Some(cluster) = &shared.cluster {
                if fresh_membership && !cluster.config_observers.is_empty() {
                    let shared = shared.clone();
                    tokio::spawn(async move { add_config_observers(&shared).await });
                }
            }
        }
        was_leader = is_leader;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn add_config_observers(shared: &Arc<Shared>) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    for (id, node) in &cluster.config_observers {
        match shared.raft.add_learner(*id, node.clone(), false).await {
            Ok(_) => tracing::info!(observer = id, addr = %node.addr, "observer added"),
            Err(e) => tracing::warn!(observer = id, error = %e, "cannot add observer"),
        }
    }
}

/// `wazoo admin add-server`: on the leader, add `id` as a learner, wait for it to catch
/// up (through a snapshot if the log it needs is purged), then make it a voter by joint
/// consensus. On another server, pass the request to the leader.
pub async fn add_server(
    shared: &Arc<Shared>,
    id: u64,
    peer_addr: String,
    voter: bool,
) -> Result<String, String> {
    let Some(cluster) = &shared.cluster else {
        return Err(
            "this server is standalone; start it with server.N lines to form an ensemble".into(),
        );
    };
    if let Some(leader) = cluster.leader(&shared.raft).await? {
        return match leader
            .call(
                &PeerRequest::AddServer {
                    id,
                    peer_addr,
                    voter,
                },
                Duration::from_secs(120),
            )
            .await
        {
            Ok(PeerResponse::Admin(r)) => r,
            Ok(other) => Err(format!("unexpected answer: {other:?}")),
            Err(e) => Err(e.to_string()),
        };
    }
    let node = BasicNode::new(peer_addr.clone());
    shared
        .raft
        .add_learner(id, node, true)
        .await
        .map_err(|e| format!("adding server {id} as a learner: {e}"))?;
    if !voter {
        return Ok(format!("server {id} ({peer_addr}) added as an observer"));
    }
    shared
        .raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(|e| format!("promoting server {id} to voter: {e}"))?;
    Ok(format!("server {id} ({peer_addr}) added as a voter"))
}

/// `wazoo admin remove-server`: remove a voter (joint consensus) or an observer.
pub async fn remove_server(shared: &Arc<Shared>, id: u64) -> Result<String, String> {
    let Some(cluster) = &shared.cluster else {
        return Err("this server is standalone".into());
    };
    if let Some(leader) = cluster.leader(&shared.raft).await? {
        return match leader
            .call(&PeerRequest::RemoveServer { id }, Duration::from_secs(60))
            .await
        {
            Ok(PeerResponse::Admin(r)) => r,
            Ok(other) => Err(format!("unexpected answer: {other:?}")),
            Err(e) => Err(e.to_string()),
        };
    }
    let (is_voter, is_member) = {
        let m = shared.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().any(|v| v == id),
            membership.get_node(&id).is_some(),
        )
    };
    if !is_member {
        return Err(format!("server {id} is not a member"));
    }
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    shared
        .raft
        .change_membership(change, false)
        .await
        .map_err(|e| format!("removing server {id}: {e}"))?;
    Ok(format!("server {id} removed"))
}

#[cfg(test)]
mod peer_probe_tests {
    use super::peer_process_gone;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_closed_port_or_a_reset_connection_is_gone_an_open_one_is_not() {
        // Nothing listening: refused.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(peer_process_gone(&closed).await, "refused");

        // A process on its way out: the connection is accepted, then closed unanswered.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dying = l.local_addr().unwrap().to_string();
        let closer = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        assert!(peer_process_gone(&dying).await, "accepted, then closed");
        closer.await.unwrap();

        // A live server keeps the connection open.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = l.local_addr().unwrap().to_string();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let _ = held_rx.await;
            drop(s);
        });
        assert!(!peer_process_gone(&live).await, "accepted and kept open");
        let _ = held_tx.send(());
        holder.await.unwrap();
    }
}
