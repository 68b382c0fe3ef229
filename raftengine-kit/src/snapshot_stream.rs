//! Streaming a snapshot file between peers, with a deadline on progress
//! rather than on the whole transfer (a large snapshot may take minutes; a
//! stalled one must not hold a stream forever).
//!
//! The chunk message is each backend's own; these helpers see only its
//! bytes.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

/// Bytes per chunk sent.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The first message of a snapshot stream (the one that carries the
/// header), within `progress` of the call's start: a peer that opens the
/// stream and sends nothing must not hold it.
///
/// # Errors
///
/// `InvalidArgument` when the stream ends empty, `DeadlineExceeded` when
/// nothing arrives in time, the stream's own status when it fails.
///
/// # Cancel safety
///
/// Cancel-safe: nothing is written.
pub async fn first_chunk<S, T>(stream: &mut S, progress: Duration) -> Result<T, Status>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    match tokio::time::timeout(progress, stream.next()).await {
        Ok(Some(first)) => first,
        Ok(None) => Err(Status::invalid_argument("empty snapshot stream")),
        Err(_) => Err(Status::deadline_exceeded("snapshot stream stalled")),
    }
}

/// Writes a streamed file to `tmp` and fsyncs it: `first` (the chunk that
/// carried the header), then each chunk of `rest`, each within `progress`
/// of the previous one, `size` bytes in all. The caller renames `tmp` into
/// place (through [`SnapshotDir`](crate::SnapshotDir), which fsyncs the
/// directory) or removes it.
///
/// # Errors
///
/// `InvalidArgument` when the stream carries more or fewer than `size`
/// bytes, `DeadlineExceeded` when a chunk is late, the stream's own status
/// when it fails, `Internal` when the file cannot be written.
///
/// # Cancel safety
///
/// Dropping the future leaves a partial `tmp`; the caller removes it.
pub async fn receive_file<S>(
    tmp: &Path,
    size: u64,
    first: Bytes,
    rest: &mut S,
    progress: Duration,
) -> Result<(), Status>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    let io = |e: std::io::Error| Status::internal(format!("snapshot file: {e}"));
    let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
    let mut received = 0u64;
    let mut chunk = Some(first);
    while let Some(data) = chunk.take() {
        received += data.len() as u64;
        if received > size {
            return Err(Status::invalid_argument("snapshot larger than announced"));
        }
        file.write_all(&data).await.map_err(io)?;
        chunk = match tokio::time::timeout(progress, rest.next()).await {
            Ok(next) => next.transpose()?,
            Err(_) => return Err(Status::deadline_exceeded("snapshot stream stalled")),
        };
    }
    if received != size {
        return Err(Status::invalid_argument("snapshot shorter than announced"));
    }
    file.sync_all().await.map_err(io)?;
    Ok(())
}

/// Why [`send_file`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendFileError {
    /// The network took no chunk within the progress deadline.
    #[error("snapshot transfer made no progress in {0:?}")]
    Stalled(Duration),
    /// The file could not be read.
    #[error("read snapshot file: {0}")]
    Read(#[from] std::io::Error),
}

/// Sends `file` as a stream of chunks: spawns `call` on the stream (the
/// backend's client-streaming RPC), then feeds it chunks of up to
/// [`CHUNK_BYTES`] made by `chunk` (called once per chunk, in order, the
/// first time with the first bytes, so it can attach a header; an empty
/// file still makes one chunk). A two-chunk queue sits between the file and
/// the call, so each chunk must be taken within `progress` while the whole
/// transfer may take as long as the file needs. Returns the spawned call
/// once every chunk is queued; the caller awaits it with its own deadline.
///
/// # Errors
///
/// [`SendFileError`]; the call is aborted first.
///
/// # Cancel safety
///
/// Dropping the future drops the queue, which ends the stream early; the
/// receiver refuses a short file.
pub async fn send_file<C, T, Fut>(
    mut file: tokio::fs::File,
    progress: Duration,
    mut chunk: impl FnMut(Bytes) -> C,
    call: impl FnOnce(tokio_stream::wrappers::ReceiverStream<C>) -> Fut,
) -> Result<tokio::task::JoinHandle<T>, SendFileError>
where
    C: Send + 'static,
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (chunks, rx) = mpsc::channel::<C>(2);
    let handle = tokio::spawn(call(tokio_stream::wrappers::ReceiverStream::new(rx)));
    let mut first = true;
    loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                handle.abort();
                return Err(e.into());
            }
        };
        if n == 0 && !first {
            break;
        }
        first = false;
        buf.truncate(n);
        if chunks
            .send_timeout(chunk(Bytes::from(buf)), progress)
            .await
            .is_err()
        {
            handle.abort();
            return Err(SendFileError::Stalled(progress));
        }
        if n == 0 {
            break;
        }
    }
    Ok(handle)
}

/// What a node admits of snapshot uploads
/// ([`PeerLimits`](raftengine::tls::PeerLimits)'s `max_snapshot_bytes`
/// and `max_snapshot_receives`). Cheap to clone; clones share the slots.
#[derive(Debug, Clone)]
pub struct ReceiveLimits {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    max_bytes: u64,
}

/// One upload's place in [`ReceiveLimits`], given back on drop.
#[derive(Debug)]
pub struct ReceiveSlot(
    // Held only to be dropped.
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

impl ReceiveLimits {
    /// The limits `limits` sets.
    pub fn new(limits: &raftengine::tls::PeerLimits) -> Self {
        ReceiveLimits {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_snapshot_receives)),
            max_bytes: limits.max_snapshot_bytes,
        }
    }

    /// Admits an upload announcing `size` bytes; call it once the header
    /// is checked, before writing. Hold the slot until the file is
    /// published or removed.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a size above the limit, `ResourceExhausted`
    /// while every slot is taken.
    pub fn admit(&self, size: u64) -> Result<ReceiveSlot, Status> {
        if size > self.max_bytes {
            return Err(Status::invalid_argument(format!(
                "a snapshot of {size} bytes is above the limit of {}",
                self.max_bytes
            )));
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map(ReceiveSlot)
            .map_err(|_| Status::resource_exhausted("every snapshot receive slot is taken"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_beyond_the_limits_are_refused() {
        let limits = ReceiveLimits::new(
            &raftengine::tls::PeerLimits::default()
                .with_max_snapshot_bytes(100)
                .with_max_snapshot_receives(2),
        );
        assert_eq!(
            limits.admit(101).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let (a, _b) = (limits.admit(100).unwrap(), limits.admit(1).unwrap());
        assert_eq!(
            limits.admit(1).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        drop(a);
        limits.admit(1).unwrap();
    }

    async fn sent_and_received(len: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).expect("write");
        let file = tokio::fs::File::open(&src).await.expect("open");
        let mut headers = 0;
        let call = send_file(
            file,
            Duration::from_secs(5),
            |b| {
                headers += 1;
                (headers == 1, b)
            },
            |stream| async move {
                let mut stream = stream;
                let (is_first, first) = stream.next().await.expect("a first chunk");
                assert!(is_first, "the first chunk is marked first");
                let mut rest = stream.map(|(h, b)| {
                    assert!(!h);
                    Ok::<_, Status>(b)
                });
                let tmp = tempfile::NamedTempFile::new().expect("tmp");
                receive_file(
                    tmp.path(),
                    len as u64,
                    first,
                    &mut rest,
                    Duration::from_secs(5),
                )
                .await
                .map(|()| std::fs::read(tmp.path()).expect("read back"))
            },
        )
        .await
        .expect("sent");
        let got = call.await.expect("joined").expect("received");
        assert_eq!(got, data);
        got
    }

    #[tokio::test]
    async fn files_of_any_size_arrive_whole() {
        for len in [0, 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES - 7] {
            sent_and_received(len).await;
        }
    }

    #[tokio::test]
    async fn a_stream_that_sends_no_first_chunk_is_refused() {
        let mut silent = tokio_stream::pending::<Result<u8, Status>>();
        // The outer deadline turns a first_chunk that waits forever into a
        // failure instead of a hung test.
        let late = tokio::time::timeout(
            Duration::from_secs(5),
            first_chunk(&mut silent, Duration::from_millis(20)),
        )
        .await
        .expect("first_chunk kept waiting for a silent stream");
        assert_eq!(
            late.map_err(|s| s.code()),
            Err(tonic::Code::DeadlineExceeded)
        );
        let mut empty = tokio_stream::iter(Vec::<Result<u8, Status>>::new());
        let none = first_chunk(&mut empty, Duration::from_secs(1)).await;
        assert_eq!(
            none.map_err(|s| s.code()),
            Err(tonic::Code::InvalidArgument)
        );
        let mut one = tokio_stream::iter(vec![Ok::<_, Status>(7u8)]);
        assert_eq!(
            first_chunk(&mut one, Duration::from_secs(1)).await.ok(),
            Some(7)
        );
    }

    #[tokio::test]
    async fn a_stream_that_is_short_long_or_stalled_is_refused() {
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let chunks = |v: Vec<&'static [u8]>| {
            tokio_stream::iter(
                v.into_iter()
                    .map(|b| Ok::<_, Status>(Bytes::from_static(b))),
            )
        };
        let short = receive_file(
            tmp.path(),
            10,
            Bytes::from_static(b"abc"),
            &mut chunks(vec![b"de"]),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(
            short.map_err(|s| s.code()),
            Err(tonic::Code::InvalidArgument)
        );
        let long = receive_file(
            tmp.path(),
            4,
            Bytes::from_static(b"abc"),
            &mut chunks(vec![b"de"]),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(
            long.map_err(|s| s.code()),
            Err(tonic::Code::InvalidArgument)
        );
        let mut stalled = tokio_stream::pending::<Result<Bytes, Status>>();
        let late = receive_file(
            tmp.path(),
            10,
            Bytes::from_static(b"abc"),
            &mut stalled,
            Duration::from_millis(20),
        )
        .await;
        assert_eq!(
            late.map_err(|s| s.code()),
            Err(tonic::Code::DeadlineExceeded)
        );
    }

    #[tokio::test]
    async fn a_receiver_that_takes_nothing_stalls_the_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::write(&src, vec![7u8; 4 * CHUNK_BYTES]).expect("write");
        let file = tokio::fs::File::open(&src).await.expect("open");
        let got = send_file(
            file,
            Duration::from_millis(20),
            |b| b,
            |stream| async move {
                // Holds the stream and never reads it.
                let _held = stream;
                std::future::pending::<()>().await
            },
        )
        .await;
        assert!(matches!(got, Err(SendFileError::Stalled(_))), "{got:?}");
    }
}
