//! # raftengine-examples
//!
//! Shared pieces of the example binaries: a minimal key-value state machine,
//! the key-value service's gRPC API and its server side.
//!
//! * `bench` — the engine comparison (README's main command).
//! * `kv` — the replicated key-value service: `kv serve` runs a node, the
//!   other subcommands are its client.

pub mod admin;
pub mod api_tls;
pub mod engines;
pub mod service;

// The README's Rust examples compile as doctests of this crate, which has
// every backend and the suite: none of them can rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
mod readme {}

/// The generated gRPC code of `proto/kv.proto` (client and server).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod api {
    tonic::include_proto!("raftengine.kv.v1");
}

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// Keys and values, as applied.
pub type Map = Arc<RwLock<HashMap<Bytes, Bytes>>>;

/// A last-writer-wins map; `apply` returns the entry's index. Entries are
/// made by [`put`] and [`delete`]; anything else is applied as a no-op.
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
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        match data.split_first() {
            Some((&OP_PUT, rest)) if rest.len() >= 4 => {
                let mut len = [0u8; 4];
                len.copy_from_slice(&rest[..4]);
                let klen = u32::from_be_bytes(len) as usize;
                let body = &rest[4..];
                if klen <= body.len() {
                    let (k, v) = body.split_at(klen);
                    map.insert(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v));
                }
            }
            Some((&OP_DELETE, key)) => {
                map.remove(key);
            }
            _ => {}
        }
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

const OP_PUT: u8 = b'P';
const OP_DELETE: u8 = b'D';

/// Encodes a put of `value` under `key`.
pub fn put(key: &[u8], value: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + value.len() + 5);
    out.push(OP_PUT);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Bytes::from(out)
}

/// Encodes a delete of `key`.
pub fn delete(key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(OP_DELETE);
    out.extend_from_slice(key);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use raftengine::StateMachine;

    use super::*;

    #[test]
    fn put_delete_and_garbage() {
        let mut m = KvMachine::default();
        m.apply(1, &put(b"k", b"v"));
        assert_eq!(m.map.read().unwrap().get(&b"k"[..]).unwrap(), &b"v"[..]);
        m.apply(2, b"garbage");
        m.apply(3, &[OP_PUT, 0, 0, 0, 9, 1]);
        assert_eq!(m.map.read().unwrap().len(), 1, "garbage changes nothing");
        m.apply(4, &delete(b"k"));
        assert!(m.map.read().unwrap().is_empty());
    }
}
