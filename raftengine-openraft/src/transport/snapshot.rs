//! Snapshots between peers: the file streamed each way with a progress
//! deadline per chunk (through `raftengine_kit::snapshot_stream`), the
//! vote and metadata in the first chunk's header.

use std::path::PathBuf;
use std::time::Duration;

use openraft::Snapshot;
use openraft::raft::SnapshotResponse;
use raftengine_kit::SnapshotDir;
use raftengine_kit::peer::PeerChannel;
use tonic::{Status, Streaming};

use crate::codec::{decode, encode};
use crate::pb::SnapshotChunk;
use crate::pb::raft_network_client::RaftNetworkClient;
use crate::state_machine::SnapshotFile;
use crate::types::{Committed, Peer, SnapshotMeta, TypeConfig, Vote};

/// Why [`send`] failed.
pub(super) enum SendError {
    /// A chunk or the peer's answer was late.
    Stalled(Duration),
    /// The peer refused.
    Status(Status),
    /// This side could not read, encode or decode.
    Local(String),
}

/// Streams the snapshot file: a header chunk, then 1 MiB chunks; each chunk
/// must be taken by the network within `progress`, and the peer must answer
/// within `install_timeout` of the last.
pub(super) async fn send(
    mut client: RaftNetworkClient<PeerChannel>,
    vote: Vote,
    snapshot: Snapshot<Committed, u64, Peer, SnapshotFile>,
    progress: Duration,
    install_timeout: Duration,
) -> Result<SnapshotResponse<TypeConfig>, SendError> {
    let file = tokio::fs::File::from_std(snapshot.snapshot.file);
    let size = file
        .metadata()
        .await
        .map_err(|e| SendError::Local(format!("stat snapshot: {e}")))?
        .len();
    let header = encode(&(vote, snapshot.meta.clone(), size))
        .map_err(|e| SendError::Local(format!("encode snapshot header: {e}")))?;
    let mut header = Some(header);
    let call = raftengine_kit::snapshot_stream::send_file(
        file,
        progress,
        |data| SnapshotChunk {
            header: header.take().unwrap_or_default().into(),
            data,
        },
        |chunks| async move { client.install_snapshot(chunks).await },
    )
    .await
    .map_err(|e| match e {
        raftengine_kit::snapshot_stream::SendFileError::Stalled(d) => SendError::Stalled(d),
        other => SendError::Local(other.to_string()),
    })?;
    match tokio::time::timeout(install_timeout, call).await {
        Ok(Ok(Ok(resp))) => decode(&resp.get_ref().payload)
            .map_err(|e| SendError::Local(format!("bad snapshot reply: {e}"))),
        Ok(Ok(Err(status))) => Err(SendError::Status(status)),
        Ok(Err(e)) => Err(SendError::Local(format!("snapshot call failed: {e}"))),
        Err(_) => Err(SendError::Stalled(install_timeout)),
    }
}

/// A snapshot received whole and fsynced, ready for openraft to install.
pub(super) struct Received {
    pub(super) vote: Vote,
    pub(super) snapshot: Snapshot<Committed, u64, Peer, SnapshotFile>,
    /// Where the file lies; the caller removes it once openraft is done
    /// (an installed snapshot was renamed away, anything left is junk).
    pub(super) path: PathBuf,
    /// Held until openraft is done with the file.
    pub(super) _slot: raftengine_kit::snapshot_stream::ReceiveSlot,
}

/// Receives a streamed snapshot into a fresh file of `snapshots`, within
/// `limits`, if `admit` takes the vote its header carries (checked
/// before a byte is written).
///
/// # Errors
///
/// The stream's refusals from `raftengine_kit::snapshot_stream`,
/// `InvalidArgument` for an undecodable header or an oversized file,
/// `ResourceExhausted` while every receive slot is taken,
/// whatever `admit` refuses with,
/// `Internal` when the file cannot be reopened. The partial file is
/// removed.
///
/// # Cancel safety
///
/// Dropping the future leaves a partial receive file, which
/// `SnapshotDir::remove_temporaries` removes at the next start.
pub(super) async fn receive(
    snapshots: &SnapshotDir,
    mut stream: Streaming<SnapshotChunk>,
    progress: Duration,
    limits: &raftengine_kit::snapshot_stream::ReceiveLimits,
    admit: impl FnOnce(&Vote, &SnapshotMeta) -> Result<(), Status>,
) -> Result<Received, Status> {
    let first = raftengine_kit::snapshot_stream::first_chunk(&mut stream, progress).await?;
    let (vote, meta, size): (Vote, SnapshotMeta, u64) = decode(&first.header)
        .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
    admit(&vote, &meta)?;
    let slot = limits.admit(size)?;
    let (index, term) = meta
        .last_log_id
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    let path = snapshots.receive_path(index, term, rand::random());
    let mut rest = tokio_stream::StreamExt::map(stream, |c| c.map(|c| c.data));
    let received = async {
        raftengine_kit::snapshot_stream::receive_file(&path, size, first.data, &mut rest, progress)
            .await?;
        tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("open received snapshot: {e}")))
    }
    .await;
    match received {
        Ok(file) => Ok(Received {
            vote,
            snapshot: Snapshot {
                meta,
                snapshot: SnapshotFile {
                    file: file.into_std().await,
                    path: path.clone(),
                },
            },
            path,
            _slot: slot,
        }),
        Err(status) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(status)
        }
    }
}
