//! The peer protocol: what servers of one ensemble say to each other on the peer port.
//!
//! A frame is `u32 length (big-endian) ++ u64 request id ++ rmp-serde body`. A
//! connection carries many requests at once (replication, votes, forwarded writes);
//! the id pairs each response with its request, so a 3 MB snapshot chunk does not
//! make a heartbeat wait for a reply it does not need.
//!
//! The raft messages are openraft's own types, serialized as they are. The others
//! exist because ZooKeeper semantics need them: followers forward writes to the
//! leader, report their sessions' liveness to it, and ask it for a read index on
//! `sync`; an operator asks any server for status or a membership change.

use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::TypeConfig;
use crate::command::{CommandOp, CommandOutput};

/// The largest peer frame accepted. Snapshot chunks are 3 MiB and an append carries
/// at most a few hundred entries, but an entry may hold many 1 MiB writes.
pub const MAX_PEER_FRAME: usize = 512 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    /// A follower's client writes, to be proposed by the leader in this order.
    Forward {
        ops: Vec<CommandOp>,
    },
    /// Sessions that had traffic on the sender since its previous report.
    Alive {
        sessions: Vec<i64>,
    },
    /// `sync`: the leader confirms it still leads and returns its commit index.
    ReadIndex,
    /// `wazoo admin status`.
    Status,
    /// `wazoo admin add-server`: add a learner, let it catch up, then (if a voter)
    /// promote it by joint consensus.
    AddServer {
        id: u64,
        peer_addr: String,
        voter: bool,
    },
    /// `wazoo admin remove-server`.
    RemoveServer {
        id: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// One output per forwarded operation, or why none was applied.
    Forward(Result<Vec<CommandOutput>, String>),
    Alive,
    /// The log index a read must wait for, or why the leader could not confirm it leads.
    ReadIndex(Result<u64, String>),
    Status(Box<StatusReport>),
    /// A membership change's outcome (a human-readable summary, or the error).
    Admin(Result<String, String>),
    /// The receiver cannot serve this request (e.g. it is still starting).
    Refused(String),
}

/// One server's view of itself, as `wazoo admin status` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusReport {
    pub id: u64,
    /// leader, follower, observer, candidate or shutdown.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied: Option<u64>,
    /// The last log index the current snapshot covers, and the last purged one.
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// Voters and learners of the current membership, with their peer addresses.
    pub voters: Vec<(u64, String)>,
    pub learners: Vec<(u64, String)>,
    /// Only on the leader: each follower's matched log index.
    pub replication: Vec<(u64, Option<u64>)>,
    pub sessions: usize,
    pub connections: u64,
    pub client_addr: String,
    /// Hex SHA-256 over every znode (path, data, stat, ACL) at `digest_index`.
    pub digest: String,
    pub digest_index: u64,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer connection: {0}")]
    Io(#[from] io::Error),
    #[error("peer frame of {0} bytes is larger than the {MAX_PEER_FRAME} byte limit")]
    TooLarge(usize),
    #[error("peer frame shorter than its request id")]
    Short,
    #[error("undecodable peer frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("unencodable peer message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes one frame.
pub fn encode<T: Serialize>(id: u64, body: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 12];
    // Byte vectors as `bin`, as in the raft log (see `raft::db::write_compact_named`).
    let mut ser = rmp_serde::Serializer::new(&mut buf)
        .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
    body.serialize(&mut ser)?;
    let len = buf.len() - 4;
    if len > MAX_PEER_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    buf[4..12].copy_from_slice(&id.to_be_bytes());
    Ok(buf)
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    rd: &mut (impl AsyncReadExt + Unpin),
) -> Result<Option<(u64, T)>, FrameError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PEER_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len < 8 {
        return Err(FrameError::Short);
    }
    let mut buf = vec![0u8; len];
    rd.read_exact(&mut buf).await?;
    let id = u64::from_be_bytes(buf[..8].try_into().map_err(|_| FrameError::Short)?);
    let body = rmp_serde::from_slice(&buf[8..])?;
    Ok(Some((id, body)))
}

/// Writes one encoded frame.
pub async fn write_frame(wr: &mut (impl AsyncWriteExt + Unpin), frame: &[u8]) -> io::Result<()> {
    wr.write_all(frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let frame = encode(
            7,
            &PeerRequest::Alive {
                sessions: vec![1, 2],
            },
        )
        .expect("encodes");
        let mut rd = &frame[..];
        let (id, req): (u64, PeerRequest) = read_frame(&mut rd).await.expect("reads").expect("one");
        assert_eq!(id, 7);
        assert!(matches!(req, PeerRequest::Alive { sessions } if sessions == vec![1, 2]));
        // End of stream between frames is clean.
        assert!(read_frame::<PeerRequest>(&mut rd)
            .await
            .expect("eof")
            .is_none());
        // A length over the limit, a length shorter than the id, a garbage body.
        let huge = ((MAX_PEER_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame::<PeerRequest>(&mut &huge[..]).await,
            Err(FrameError::TooLarge(_))
        ));
        let short = [0, 0, 0, 3, 1, 2, 3];
        assert!(matches!(
            read_frame::<PeerRequest>(&mut &short[..]).await,
            Err(FrameError::Short)
        ));
        let garbage = [0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 1, 0xc1, 0xc1];
        assert!(matches!(
            read_frame::<PeerRequest>(&mut &garbage[..]).await,
            Err(FrameError::Decode(_))
        ));
    }
}
