//! Forged peer messages in this backend's wire format
//! ([`raftengine_conformance::Forger`]), for hostile tests: the suite's
//! forged-message cases (stamped below) and tests that attack real
//! processes (feature `forge`). Not for production use.

use std::collections::{BTreeMap, BTreeSet};

use openraft::Membership;
use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use raftengine_conformance::{Answer, Forge, Forger, Forgery};
use raftengine_kit::peer::PeerChannel;

use crate::codec::encode;
use crate::pb::raft_network_client::RaftNetworkClient;
use crate::pb::{Frame, RemovedNotice, SnapshotChunk};
use crate::types::{Committed, Entry, LogId, Peer, SnapshotMeta, TypeConfig, Vote};

/// Writes forgeries as openraft requests in this backend's frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenraftForger;

/// A valid snapshot file of `payload`, as bytes.
fn snapshot_file(index: u64, term: u64, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    raftengine_kit::snapshot_dir::file_bytes(index, term, &payload).map_err(|e| e.to_string())
}

fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Answer {
    match result {
        Ok(_) => Answer::Taken,
        Err(s) => Answer::Refused(s.code() as i32, s.message().to_owned()),
    }
}

fn frame<T: serde::Serialize>(value: &T) -> Result<Frame, String> {
    Ok(Frame {
        payload: encode(value).map_err(|e| e.to_string())?.into(),
    })
}

/// A client that speaks as `forge.from`, with its certificate and cluster
/// id, checked to get past the target's gate: a notice naming another node
/// is refused for that reason alone.
async fn client(forge: &Forge) -> Result<RaftNetworkClient<PeerChannel>, String> {
    let channel = raftengine_kit::peer::channel_as(
        &forge.credentials,
        &forge.from_dir,
        &forge.to_address,
        &forge.to,
    )?;
    let mut client = RaftNetworkClient::new(channel);
    let probe = client
        .removed(RemovedNotice {
            from_id: forge.from.clone(),
            removed_id: "nobody".into(),
            conf_index: 0,
        })
        .await;
    raftengine_kit::peer::probe_reached(probe)?;
    Ok(client)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(Committed::new(term), index)
}

impl Forger for OpenraftForger {
    async fn send(&self, forgery: Forgery, forge: &Forge) -> Result<Answer, String> {
        let mut client = client(forge).await?;
        let (from, to) = (
            raftengine::numeric_id(&forge.from),
            raftengine::numeric_id(&forge.to),
        );
        Ok(match forgery {
            // An append, not a vote request: a follower under a leader's
            // lease ignores vote requests, but takes any higher vote an
            // append carries.
            Forgery::HugeTerm => {
                let rpc = AppendEntriesRequest::<TypeConfig> {
                    vote: Vote::new_committed(forge.term, from),
                    prev_log_id: None,
                    entries: vec![],
                    leader_commit: None,
                };
                answer(client.append(frame(&rpc)?).await)
            }
            Forgery::CommitBeyondLog => {
                let rpc = AppendEntriesRequest::<TypeConfig> {
                    vote: Vote::new_committed(forge.term, from),
                    prev_log_id: None,
                    entries: vec![],
                    leader_commit: Some(log_id(forge.term, forge.commit)),
                };
                answer(client.append(frame(&rpc)?).await)
            }
            Forgery::RemovedNotice => answer(
                client
                    .removed(RemovedNotice {
                        from_id: forge.from.clone(),
                        removed_id: forge.to.clone(),
                        conf_index: u64::MAX,
                    })
                    .await,
            ),
            // This wire carries no sender address: addresses come only from
            // membership entries, so the forgery is an append whose
            // membership puts the sender at the trap.
            Forgery::PoisonedAddress => {
                let nodes: BTreeMap<u64, Peer> = [
                    (
                        from,
                        Peer {
                            id: forge.from.clone(),
                            address: forge.poison_address.clone(),
                        },
                    ),
                    (
                        to,
                        Peer {
                            id: forge.to.clone(),
                            address: forge.to_address.clone(),
                        },
                    ),
                ]
                .into();
                let voters: BTreeSet<u64> = [from, to].into();
                let membership = Membership::new(vec![voters], nodes).map_err(|e| e.to_string())?;
                let rpc = AppendEntriesRequest::<TypeConfig> {
                    vote: Vote::new_committed(forge.term, from),
                    prev_log_id: None,
                    entries: vec![Entry::new_membership(log_id(forge.term, 1), membership)],
                    leader_commit: None,
                };
                answer(client.append(frame(&rpc)?).await)
            }
            Forgery::SnapshotFromFollower | Forgery::OversizedSnapshot => {
                let (index, term) = (forge.commit, forge.term);
                let payload = match forgery {
                    Forgery::OversizedSnapshot => vec![7; forge.size as usize],
                    _ => b"forged state".to_vec(),
                };
                let file = snapshot_file(index, term, payload)?;
                let meta = SnapshotMeta {
                    last_log_id: Some(log_id(term, index)),
                    last_membership: Default::default(),
                };
                let header = encode(&(Vote::new_committed(term, from), meta, file.len() as u64))
                    .map_err(|e| e.to_string())?;
                let chunk = SnapshotChunk {
                    header: header.into(),
                    data: file.into(),
                };
                answer(
                    client
                        .install_snapshot(tokio_stream::iter(vec![chunk]))
                        .await,
                )
            }
            // An append of one entry, padded past the limit, under a vote
            // the target refuses (it follows another leader this term).
            Forgery::OversizedMessage => {
                let data = crate::types::Request(vec![0; forge.size as usize].into());
                let rpc = AppendEntriesRequest::<TypeConfig> {
                    vote: Vote::new_committed(forge.term, from),
                    prev_log_id: None,
                    entries: vec![Entry::new_normal(log_id(forge.term, 1), data)],
                    leader_commit: None,
                };
                answer(client.append(frame(&rpc)?).await)
            }
            other => panic!("the openraft forger cannot write {other:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::OpenraftForger;

    raftengine_conformance::forged_tests!(
        crate::OpenraftFactory::new(crate::OpenraftConfig::default()),
        OpenraftForger
    );
}
