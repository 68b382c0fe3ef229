//! Sending a snapshot: the file first (streamed, with a progress
//! deadline), then the `MsgSnapshot` that refers to it.

use super::*;

/// Streams the snapshot file a `MsgSnapshot` refers to, then the message.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_snapshot(
    to: u64,
    msg: Message,
    snapshots: SnapshotDir,
    channel: Channel,
    from_id: String,
    from_address: String,
    rpc_timeout: Duration,
    failures: mpsc::Sender<SendFailure>,
) {
    let meta = msg.get_snapshot().get_metadata().clone();
    let result = stream_snapshot(
        to,
        &msg,
        &meta,
        &snapshots,
        channel,
        from_id,
        from_address,
        rpc_timeout,
    )
    .await;
    match result {
        Ok(()) => {
            tracing::info!(to, index = meta.index, "snapshot sent");
            let _ = failures.try_send(SendFailure::SnapshotSent(to));
        }
        Err(e) => {
            tracing::warn!(to, index = meta.index, error = %e, "sending snapshot failed");
            let _ = failures.try_send(SendFailure::Snapshot(to));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_snapshot(
    to: u64,
    msg: &Message,
    meta: &raft::eraftpb::SnapshotMetadata,
    snapshots: &SnapshotDir,
    channel: Channel,
    from_id: String,
    from_address: String,
    rpc_timeout: Duration,
) -> Result<(), String> {
    let path = snapshots.path(meta.index, meta.term);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let header = SnapshotHeader {
        from_id: from_id.clone(),
        index: meta.index,
        term: meta.term,
        size,
    };
    let mut header = Some(header);
    let mut client = RaftTransportClient::new(channel.clone());
    let call = raftengine_kit::snapshot_stream::send_file(
        file,
        rpc_timeout,
        |data| SnapshotChunk {
            header: header.take(),
            data,
        },
        |chunks| async move { client.install_snapshot(chunks).await },
    )
    .await
    .map_err(|e| e.to_string())?;
    match tokio::time::timeout(rpc_timeout, call).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(status))) => return Err(format!("peer refused snapshot: {status}")),
        Ok(Err(e)) => return Err(format!("snapshot call failed: {e}")),
        Err(_) => return Err("peer did not confirm the snapshot".into()),
    }
    let raw = msg
        .write_to_bytes()
        .map_err(|e| format!("encode snapshot message: {e}"))?;
    let mut request = Request::new(MessageBatch {
        from_id,
        from_address,
        messages: vec![Bytes::from(raw)],
        seq: 0,
    });
    request.set_timeout(rpc_timeout);
    let mut client = RaftTransportClient::new(channel);
    match tokio::time::timeout(rpc_timeout, client.send(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("peer refused the snapshot message: {status}")),
        Err(_) => Err(format!("snapshot message to {to} timed out")),
    }
}
