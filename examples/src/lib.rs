//! # raftengine-examples
//!
//! Shared pieces of the example binaries: a minimal key-value state machine
//! and helpers to run a cluster of nodes in one process.
//!
//! * `bench` — the engine comparison (README's main command).
//! * The replicated key-value service (`kv`) lands with issue #6.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// Keys and values; entries are `key \0 value`.
pub type Map = Arc<RwLock<HashMap<Bytes, Bytes>>>;

/// A last-writer-wins map; `apply` returns the entry's index.
#[derive(Debug, Default)]
pub struct KvMachine {
    /// The state, shared with readers.
    pub map: Map,
}

/// A copy of the map, serialized off the Raft loop.
#[derive(Debug)]
pub struct KvSnapshot(Vec<(Bytes, Bytes)>);

impl raftengine::Snapshot for KvSnapshot {
    fn write_to(&mut self, w: &mut dyn Write) -> std::io::Result<u64> {
        let mut n = 0;
        for (k, v) in &self.0 {
            for part in [k, v] {
                w.write_all(&(part.len() as u32).to_be_bytes())?;
                w.write_all(part)?;
                n += 4 + part.len() as u64;
            }
        }
        Ok(n)
    }
}

fn read_part(r: &mut dyn Read) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut v = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut v)?;
    Ok(Some(Bytes::from(v)))
}

impl raftengine::StateMachine for KvMachine {
    type Response = u64;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, index: u64, data: &[u8]) -> u64 {
        let (k, v) = match data.iter().position(|b| *b == 0) {
            Some(p) => (&data[..p], &data[p + 1..]),
            None => (data, &[][..]),
        };
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v));
        index
    }

    fn snapshot(&mut self) -> std::io::Result<KvSnapshot> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        Ok(KvSnapshot(
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
    }

    fn restore(&mut self, r: &mut dyn Read) -> std::io::Result<()> {
        let mut map = HashMap::new();
        while let Some(k) = read_part(r)? {
            let v = read_part(r)?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "key without value")
            })?;
            map.insert(k, v);
        }
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }
}

/// Encodes a put of `value` under `key`.
pub fn put(key: &[u8], value: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + value.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(value);
    Bytes::from(out)
}
