//! The reference state machine: a key-value map that also records every
//! entry it applied, so a case can check that replicas applied the identical
//! sequence and nothing twice.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// What [`KvStateMachine::apply`](raftengine::StateMachine::apply) returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvResponse {
    /// The log index the entry was applied at.
    pub index: u64,
    /// The value the key had before (for puts), or `None`.
    pub previous: Option<Vec<u8>>,
    /// False when the entry was not a valid command (it is still recorded).
    pub valid: bool,
}

/// The state the engine applies into, shared with the test.
#[derive(Debug, Default)]
pub struct KvState {
    /// The key-value map.
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Every applied entry in order: (index, payload).
    pub applied: Vec<(u64, Vec<u8>)>,
    /// Index of the snapshot this state was restored from (0 if none).
    pub restored_from: u64,
    /// How many times a fresh state machine was attached to this handle
    /// (node restarts); lets a reader tell that the state was replaced.
    pub incarnation: u64,
    /// Applies that ran on a thread driving the async runtime, where the
    /// contract forbids them (`StateMachine`'s docs: blocking threads).
    pub applied_on_runtime_worker: u64,
}

/// A handle to a [`KvState`] that the test keeps while the engine owns the
/// state machine.
#[derive(Debug, Clone, Default)]
pub struct KvHandle(Arc<Mutex<KvState>>);

impl KvHandle {
    /// Locks the state.
    pub fn lock(&self) -> MutexGuard<'_, KvState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().map.get(key).cloned()
    }

    /// Highest applied index seen by the state machine.
    pub fn last_applied(&self) -> u64 {
        let s = self.lock();
        s.applied.last().map(|(i, _)| *i).unwrap_or(s.restored_from)
    }
}

/// Encodes a put command.
pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Bytes {
    let (k, v) = (key.as_ref(), value.as_ref());
    let mut out = Vec::with_capacity(9 + k.len() + v.len());
    out.push(b'P');
    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(v);
    Bytes::from(out)
}

fn decode_put(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    if tag != b'P' || rest.len() < 4 {
        return None;
    }
    let klen = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if rest.len() < klen {
        return None;
    }
    Some(rest.split_at(klen))
}

/// The reference state machine.
#[derive(Debug)]
pub struct KvStateMachine {
    state: KvHandle,
}

impl KvStateMachine {
    /// A fresh state machine on an existing handle: the handle's state is
    /// emptied, so it behaves like a new state machine the test can still
    /// observe through handles it kept. Attach only once the previous state
    /// machine on that handle is gone (its engine shut down).
    pub fn attached(handle: &KvHandle) -> Self {
        {
            let mut state = handle.lock();
            let incarnation = state.incarnation + 1;
            *state = KvState {
                incarnation,
                ..KvState::default()
            };
        }
        KvStateMachine {
            state: handle.clone(),
        }
    }

    /// A fresh state machine and the handle the test keeps.
    pub fn new() -> (Self, KvHandle) {
        let handle = KvHandle::default();
        (
            KvStateMachine {
                state: handle.clone(),
            },
            handle,
        )
    }
}

/// A captured copy of the state, serialized off the Raft loop.
#[derive(Debug)]
pub struct KvSnapshot {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    applied: Vec<(u64, Vec<u8>)>,
}

fn write_chunk(w: &mut dyn Write, bytes: &[u8]) -> std::io::Result<u64> {
    w.write_all(&(bytes.len() as u64).to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(8 + bytes.len() as u64)
}

fn read_u64(r: &mut dyn Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_chunk(r: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let len = read_u64(r)?;
    if len > 1 << 30 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "snapshot chunk too large",
        ));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

impl raftengine::Snapshot for KvSnapshot {
    fn write_to(&mut self, w: &mut dyn Write) -> std::io::Result<u64> {
        let mut n = 0;
        w.write_all(&(self.map.len() as u64).to_be_bytes())?;
        n += 8;
        for (k, v) in &self.map {
            n += write_chunk(w, k)?;
            n += write_chunk(w, v)?;
        }
        w.write_all(&(self.applied.len() as u64).to_be_bytes())?;
        n += 8;
        for (i, d) in &self.applied {
            w.write_all(&i.to_be_bytes())?;
            n += 8 + write_chunk(w, d)?;
        }
        Ok(n)
    }
}

impl raftengine::StateMachine for KvStateMachine {
    type Response = KvResponse;
    type Snapshot = KvSnapshot;

    fn apply(&mut self, index: u64, data: &[u8]) -> KvResponse {
        let on_worker = on_runtime_worker();
        let mut s = self.state.lock();
        s.applied_on_runtime_worker += u64::from(on_worker);
        s.applied.push((index, data.to_vec()));
        match decode_put(data) {
            Some((k, v)) => {
                let previous = s.map.insert(k.to_vec(), v.to_vec());
                KvResponse {
                    index,
                    previous,
                    valid: true,
                }
            }
            None => KvResponse {
                index,
                previous: None,
                valid: false,
            },
        }
    }

    fn snapshot(&mut self) -> std::io::Result<KvSnapshot> {
        let s = self.state.lock();
        Ok(KvSnapshot {
            map: s.map.clone(),
            applied: s.applied.clone(),
        })
    }

    fn restore(&mut self, r: &mut dyn Read) -> std::io::Result<()> {
        let mut map = BTreeMap::new();
        for _ in 0..read_u64(r)? {
            let k = read_chunk(r)?;
            let v = read_chunk(r)?;
            map.insert(k, v);
        }
        let mut applied = Vec::new();
        for _ in 0..read_u64(r)? {
            let i = read_u64(r)?;
            applied.push((i, read_chunk(r)?));
        }
        let mut s = self.state.lock();
        s.restored_from = applied.last().map(|(i, _)| *i).unwrap_or(0);
        s.map = map;
        s.applied = applied;
        Ok(())
    }
}

/// True on a thread that drives tokio tasks (a runtime worker): there
/// `Handle::block_on` refuses, by panicking, while blocking-pool threads and
/// threads outside any runtime may block.
fn on_runtime_worker() -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    // The refusal is a panic (its message shows in the output of a failing
    // run only); the panic hook is process-wide, so it is left alone.
    std::panic::catch_unwind(|| handle.block_on(async {})).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftengine::{Snapshot as _, StateMachine as _};

    #[test]
    fn snapshot_round_trips_and_garbage_is_an_error() {
        let (mut sm, h) = KvStateMachine::new();
        assert_eq!(sm.apply(1, &put("a", "1")).previous, None);
        assert_eq!(sm.apply(2, &put("a", "2")).previous, Some(b"1".to_vec()));
        assert!(!sm.apply(3, b"junk").valid);
        let mut bytes = Vec::new();
        sm.snapshot().unwrap().write_to(&mut bytes).unwrap();
        let (mut fresh, fh) = KvStateMachine::new();
        fresh.restore(&mut bytes.as_slice()).unwrap();
        assert_eq!(fh.get(b"a"), Some(b"2".to_vec()));
        assert_eq!(fh.lock().applied, h.lock().applied);
        let (mut bad, _) = KvStateMachine::new();
        assert!(
            bad.restore(&mut &b"\xff\xff\xff\xff\xff\xff\xff\xff"[..])
                .is_err()
        );
    }
}
