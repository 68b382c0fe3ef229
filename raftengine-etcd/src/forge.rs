//! Forged peer messages in this backend's wire format
//! ([`raftengine_conformance::Forger`]), for hostile tests: the suite's
//! forged-message cases (stamped below) and tests that attack real
//! processes (feature `forge`). Not for production use.

use raft::eraftpb::{Message, MessageType};
use raftengine_conformance::{Answer, Forge, Forger, Forgery};
use raftengine_kit::peer::PeerChannel;

use crate::transport::pb::raft_transport_client::RaftTransportClient;
use crate::transport::pb::{MessageBatch, RemovedNotice, SnapshotChunk, SnapshotHeader};

/// Writes forgeries as raft-rs messages in `MessageBatch`es, notices and
/// snapshot streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdForger;

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

/// A client that speaks as `forge.from`, with its certificate and cluster
/// id, checked to get past the target's gate: a notice naming another node
/// is refused for that reason alone.
async fn client(forge: &Forge) -> Result<RaftTransportClient<PeerChannel>, String> {
    let channel = raftengine_kit::peer::channel_as(
        &forge.credentials,
        &forge.from_dir,
        &forge.to_address,
        &forge.to,
    )?;
    let mut client = RaftTransportClient::new(channel);
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

fn message(forge: &Forge, kind: MessageType) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = raftengine::numeric_id(&forge.from);
    m.to = raftengine::numeric_id(&forge.to);
    m.term = forge.term;
    m
}

fn batch(forge: &Forge, address: &str, messages: Vec<Message>) -> Result<MessageBatch, String> {
    use protobuf::Message as _;
    let messages = messages
        .iter()
        .map(|m| m.write_to_bytes().map(Into::into))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(MessageBatch {
        from_id: forge.from.clone(),
        from_address: address.to_owned(),
        messages,
        seq: 0,
    })
}

impl Forger for EtcdForger {
    async fn send(&self, forgery: Forgery, forge: &Forge) -> Result<Answer, String> {
        let mut client = client(forge).await?;
        Ok(match forgery {
            Forgery::HugeTerm => {
                let m = message(forge, MessageType::MsgHeartbeat);
                answer(client.send(batch(forge, "", vec![m])?).await)
            }
            Forgery::CommitBeyondLog => {
                let mut m = message(forge, MessageType::MsgHeartbeat);
                m.commit = forge.commit;
                answer(client.send(batch(forge, "", vec![m])?).await)
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
            Forgery::PoisonedAddress => answer(
                client
                    .send(batch(forge, &forge.poison_address, vec![])?)
                    .await,
            ),
            Forgery::SnapshotFromFollower | Forgery::OversizedSnapshot => {
                let (index, term) = (forge.commit, forge.term);
                let payload = match forgery {
                    Forgery::OversizedSnapshot => vec![7; forge.size as usize],
                    _ => b"forged state".to_vec(),
                };
                let file = snapshot_file(index, term, payload)?;
                let chunk = SnapshotChunk {
                    header: Some(SnapshotHeader {
                        from_id: forge.from.clone(),
                        index,
                        term,
                        size: file.len() as u64,
                    }),
                    data: file.into(),
                };
                answer(
                    client
                        .install_snapshot(tokio_stream::iter(vec![chunk]))
                        .await,
                )
            }
            // A response a follower ignores, padded past the limit.
            Forgery::OversizedMessage => {
                let mut m = message(forge, MessageType::MsgHeartbeatResponse);
                m.context = vec![0; forge.size as usize].into();
                answer(client.send(batch(forge, "", vec![m])?).await)
            }
            other => panic!("the etcd forger cannot write {other:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::EtcdForger;

    raftengine_conformance::forged_tests!(
        crate::EtcdFactory::new(crate::EtcdConfig::default()),
        EtcdForger
    );
}
