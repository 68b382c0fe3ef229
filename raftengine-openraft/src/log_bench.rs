//! Append throughput of the log store, for `examples/log_store.rs`.
//! Not part of the API; it exists so the storage choice documented in
//! `docs/backends/openraft.md` can be re-measured on any machine.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::EntryPayload;
use openraft::storage::{IOFlushed, RaftLogStorage};

use crate::log_store::LogStore;
use openraft::type_config::TypeConfigExt;

use crate::types::{Committed, Entry, LogId, Request, TypeConfig};

fn batch(first: u64, n: usize, payload: usize) -> Vec<Entry> {
    (first..first + n as u64)
        .map(|i| Entry {
            log_id: LogId::new(Committed::new(1), i),
            payload: EntryPayload::Normal(Request(vec![7u8; payload].into())),
        })
        .collect()
}

/// Appends `batches` batches of `per_batch` entries of `payload` bytes.
/// With `wait_each`, each append waits for its fsync before the next (the
/// latency-bound path); otherwise appends are issued back to back as
/// openraft does and the store group-commits them. Returns the elapsed time.
pub async fn appends(
    dir: &Path,
    per_batch: usize,
    batches: usize,
    payload: usize,
    wait_each: bool,
) -> io::Result<Duration> {
    let dir = dir.to_path_buf();
    let mut store = tokio::task::spawn_blocking(move || LogStore::open(&dir, "bench"))
        .await
        .map_err(io::Error::other)??
        .store;
    let start = Instant::now();
    let mut pending = Vec::with_capacity(batches);
    for b in 0..batches {
        let (tx, rx) = TypeConfig::oneshot();
        let entries = batch((b * per_batch) as u64, per_batch, payload);
        store.append(entries, IOFlushed::signal(tx)).await?;
        if wait_each {
            rx.await.map_err(io::Error::other)??;
        } else {
            pending.push(rx);
        }
    }
    for rx in pending {
        rx.await.map_err(io::Error::other)??;
    }
    Ok(start.elapsed())
}
