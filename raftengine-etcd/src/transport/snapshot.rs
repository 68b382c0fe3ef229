//! Snapshots between peers. Sending: the file first (streamed, with a
//! progress deadline), then the `MsgSnapshot` that refers to it. Receiving:
//! the file, verified and published, before any message may name it.

use super::*;

/// Streams the snapshot file a `MsgSnapshot` refers to, then the message.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_snapshot(
    to: u64,
    msg: Message,
    snapshots: SnapshotDir,
    channel: PeerChannel,
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
    channel: PeerChannel,
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

/// Receives a streamed snapshot file and publishes it in `snapshots`. A
/// copy already published and still valid is kept (the sender retried); a
/// damaged one is replaced.
///
/// # Errors
///
/// The stream's refusals from `raftengine_kit::snapshot_stream`,
/// `PermissionDenied` for a header whose sender is not `caller`, or not
/// `leader` (the leader this node follows: a snapshot replaces the state
/// machine, and only the leader has one to give),
/// `InvalidArgument` for an implausible header or a size above the limit,
/// `ResourceExhausted` while every receive slot is taken, `DataLoss` when the file
/// fails its checksum.
///
/// # Cancel safety
///
/// Dropping the future leaves a partial receive file, which the snapshot
/// directory's start-up sweep removes.
pub(super) async fn receive(
    caller: &raftengine_kit::peer::Caller,
    snapshots: &SnapshotDir,
    mut stream: tonic::Streaming<SnapshotChunk>,
    progress: Duration,
    leader: Option<String>,
    limits: &raftengine_kit::snapshot_stream::ReceiveLimits,
) -> Result<(), Status> {
    let first = raftengine_kit::snapshot_stream::first_chunk(&mut stream, progress).await?;
    let Some(header) = first.header.clone() else {
        return Err(Status::invalid_argument("snapshot stream without a header"));
    };
    caller.speaks_as(&header.from_id)?;
    // Checked before a byte is written.
    if leader.as_deref() != Some(header.from_id.as_str()) {
        return Err(Status::permission_denied(format!(
            "a snapshot from {:?}, but this node follows {leader:?}",
            header.from_id
        )));
    }
    if header.index == 0 {
        return Err(Status::invalid_argument("implausible snapshot header"));
    }
    let _slot = limits.admit(header.size)?;
    let final_path = snapshots.path(header.index, header.term);
    if tokio::fs::try_exists(&final_path).await.unwrap_or(false) {
        // Published files were verified once, but the disk may have
        // damaged them since; a bad one is replaced by this transfer.
        let path = final_path.clone();
        let valid =
            tokio::task::spawn_blocking(move || raftengine_kit::snapshot_dir::verify(&path)).await;
        if matches!(valid, Ok(Ok(_))) {
            return Ok(());
        }
        tracing::warn!(path = %final_path.display(), "local copy of the snapshot is damaged; receiving it again");
        let _ = tokio::fs::remove_file(&final_path).await;
    }
    let tmp = snapshots.receive_path(header.index, header.term, rand::random());
    let mut rest = tokio_stream::StreamExt::map(stream, |c| c.map(|c| c.data));
    let result = raftengine_kit::snapshot_stream::receive_file(
        &tmp,
        header.size,
        first.data,
        &mut rest,
        progress,
    )
    .await;
    if let Err(status) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(status);
    }
    let dir = snapshots.clone();
    let (index, term) = (header.index, header.term);
    let received = tmp.clone();
    match tokio::task::spawn_blocking(move || dir.publish(&received, index, term)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(Status::data_loss(format!(
                "received snapshot is invalid: {e}"
            )))
        }
        Err(e) => Err(Status::internal(format!("snapshot check failed: {e}"))),
    }
}
