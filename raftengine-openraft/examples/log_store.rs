//! Measures the openraft backend's log store against a plain file.
//!
//! `cargo run --release -p raftengine-openraft --example log_store [DIR]`
//!
//! For each batch size: raft-engine (this backend's store) with an fsync per
//! batch, the same with appends pipelined (group commit, as openraft drives
//! it), and a plain append-only file with `fdatasync` per batch, the floor
//! any purpose-built log pays for the same durability.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement tool

use std::time::{Duration, Instant};

const PAYLOAD: usize = 128;

fn plain_file(dir: &std::path::Path, per_batch: usize, batches: usize) -> Duration {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(dir.join("plain.log")).unwrap();
    let record = vec![7u8; PAYLOAD + 24];
    // Written with zeros and synced once, as a recycled log segment would
    // be, so each fdatasync flushes data only, not allocation or file size.
    let total = (record.len() * per_batch * batches) as u64;
    f.write_all_at(&vec![0u8; total as usize], 0).unwrap();
    f.sync_all().unwrap();
    let start = Instant::now();
    let mut offset = 0u64;
    for _ in 0..batches {
        let mut buf = Vec::with_capacity(record.len() * per_batch);
        for _ in 0..per_batch {
            buf.extend_from_slice(&record);
        }
        f.write_all_at(&buf, offset).unwrap();
        offset += buf.len() as u64;
        f.sync_data().unwrap();
    }
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "| entries per batch | raft-engine, fsync each batch | raft-engine, pipelined | preallocated file + fdatasync |"
    );
    println!("|---|---|---|---|");
    for per_batch in [1usize, 16, 256] {
        let batches = (20_000 / per_batch).clamp(200, 2_000);
        let n = (per_batch * batches) as f64;
        let rate = |d: Duration| format!("{:.0} entries/s", n / d.as_secs_f64());
        let d1 = tempfile::tempdir_in(&base).unwrap();
        let each =
            raftengine_openraft::log_bench::appends(d1.path(), per_batch, batches, PAYLOAD, true)
                .await
                .unwrap();
        let d2 = tempfile::tempdir_in(&base).unwrap();
        let piped =
            raftengine_openraft::log_bench::appends(d2.path(), per_batch, batches, PAYLOAD, false)
                .await
                .unwrap();
        let d3 = tempfile::tempdir_in(&base).unwrap();
        let plain = plain_file(d3.path(), per_batch, batches);
        println!(
            "| {per_batch} | {} | {} | {} |",
            rate(each),
            rate(piped),
            rate(plain)
        );
    }
}
