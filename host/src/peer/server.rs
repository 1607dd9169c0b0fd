//! The listening side of the peer port: raft RPCs go to openraft, the rest to the
//! server (forwarded writes, liveness reports, read index, status, membership).

use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::wire::{self, FrameError, PeerRequest, PeerResponse};
use crate::app::Raft;
use crate::server::Shared;

/// What the peer server needs: raft at once (peers may replicate to a node before its
/// client side is up), the rest of the server once it has started.
pub struct PeerContext {
    pub raft: Raft,
    pub shared: OnceLock<Arc<Shared>>,
}

/// Accepts peer connections until the task is aborted.
pub async fn accept_loop(ctx: Arc<PeerContext>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(ctx, stream).await {
                        tracing::debug!(%remote, error = %e, "peer connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(ctx: Arc<PeerContext>, stream: TcpStream) -> Result<(), FrameError> {
    let (mut rd, mut wr) = stream.into_split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wire::write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
        }
    });
    // The leader that replicates to us over this connection, if it is one.
    let mut from_leader = None;
    let result = async {
        while let Some((id, req)) = wire::read_frame::<PeerRequest>(&mut rd).await? {
            if let PeerRequest::AppendEntries(rpc) = &req {
                from_leader = rpc.vote.leader_id().voted_for();
            }
            dispatch(&ctx, id, req, &out);
        }
        Ok(())
    }
    .await;
    drop(out);
    let _ = writer.await;
    if let Some(leader) = from_leader {
        tokio::spawn(crate::server::cluster::leader_connection_lost(
            ctx.raft.clone(),
            leader,
        ));
    }
    result
}

fn respond(out: &mpsc::UnboundedSender<Vec<u8>>, id: u64, resp: &PeerResponse) {
    match wire::encode(id, resp) {
        Ok(frame) => {
            let _ = out.send(frame);
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a peer response"),
    }
}

/// Handles one request. Runs in the read loop, so whatever must keep the sender's
/// order (queuing forwarded writes) happens here; the waiting happens in a task.
fn dispatch(
    ctx: &Arc<PeerContext>,
    id: u64,
    req: PeerRequest,
    out: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let out = out.clone();
    let raft = ctx.raft.clone();
    match req {
        PeerRequest::AppendEntries(rpc) => {
            tokio::spawn(async move {
                respond(
                    &out,
                    id,
                    &PeerResponse::AppendEntries(raft.append_entries(rpc).await),
                );
            });
        }
        PeerRequest::InstallSnapshot(rpc) => {
            tokio::spawn(async move {
                respond(
                    &out,
                    id,
                    &PeerResponse::InstallSnapshot(raft.install_snapshot(rpc).await),
                );
            });
        }
        PeerRequest::Vote(rpc) => {
            tokio::spawn(async move {
                respond(&out, id, &PeerResponse::Vote(raft.vote(rpc).await));
            });
        }
        other => {
            let Some(shared) = ctx.shared.get().cloned() else {
                respond(
                    &out,
                    id,
                    &PeerResponse::Refused("server is starting".into()),
                );
                return;
            };
            match other {
                PeerRequest::Forward { ops } => {
                    if !shared.is_leader() {
                        respond(
                            &out,
                            id,
                            &PeerResponse::Forward(Err("this server is not the leader".into())),
                        );
                        return;
                    }
                    // Queued now, in the order the follower sent them.
                    let results: Vec<_> = ops.into_iter().map(|op| shared.propose(op)).collect();
                    tokio::spawn(async move {
                        let mut outputs = Vec::with_capacity(results.len());
                        for r in results {
                            match r.await {
                                Ok(o) => outputs.push(o),
                                Err(e) => {
                                    respond(&out, id, &PeerResponse::Forward(Err(e.to_string())));
                                    return;
                                }
                            }
                        }
                        respond(&out, id, &PeerResponse::Forward(Ok(outputs)));
                    });
                }
                PeerRequest::Alive { sessions } => {
                    for s in sessions {
                        shared.touch_session(s);
                    }
                    respond(&out, id, &PeerResponse::Alive);
                }
                PeerRequest::ReadIndex => {
                    tokio::spawn(async move {
                        let r = raft
                            .ensure_linearizable()
                            .await
                            .map(|log_id| log_id.map_or(0, |l| l.index))
                            .map_err(|e| e.to_string());
                        respond(&out, id, &PeerResponse::ReadIndex(r));
                    });
                }
                PeerRequest::Status => {
                    respond(
                        &out,
                        id,
                        &PeerResponse::Status(Box::new(shared.status_report())),
                    );
                }
                PeerRequest::AddServer {
                    id: node,
                    peer_addr,
                    voter,
                } => {
                    tokio::spawn(async move {
                        let r = crate::server::cluster::add_server(&shared, node, peer_addr, voter)
                            .await;
                        respond(&out, id, &PeerResponse::Admin(r));
                    });
                }
                PeerRequest::RemoveServer { id: node } => {
                    tokio::spawn(async move {
                        let r = crate::server::cluster::remove_server(&shared, node).await;
                        respond(&out, id, &PeerResponse::Admin(r));
                    });
                }
                PeerRequest::AppendEntries(_)
                | PeerRequest::InstallSnapshot(_)
                | PeerRequest::Vote(_) => unreachable!("raft requests are handled above"),
            }
        }
    }
}
