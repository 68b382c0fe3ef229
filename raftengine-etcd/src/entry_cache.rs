//! The newest log entries, kept in memory beside raft-engine.
//!
//! raft-rs asks its storage for the term of recent entries on every
//! acknowledgement (to move the commit index) and for the entries themselves
//! whenever it replicates ones that are already persisted. raft-engine reads
//! each from its files (a `pread` and a decode per call): in the profile of
//! the bench's 256-client row that was about a third of the leader loop's
//! CPU. The newest entries are the ones asked for, so they are served from
//! here; anything older falls through to raft-engine.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::eraftpb::Entry;

/// Entries kept at most; a follower further behind reads from disk.
const MAX_ENTRIES: usize = 4096;
/// Bytes of encoded entries kept at most.
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// A contiguous run of the log's newest entries, each with its encoded size.
/// Always ends at the log's last index when not empty (it is updated by
/// every write that adds or replaces entries).
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl EntryCache {
    /// Records entries just written to the log: those at or after the first
    /// new index replace what the cache held there (a new leader's tail).
    pub(crate) fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else {
            return;
        };
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.index >= first.index)
        {
            self.pop_back();
        }
        if self
            .entries
            .back()
            .is_some_and(|(e, _)| e.index + 1 != first.index)
        {
            // Not contiguous: cannot happen with raft-rs's appends, but a
            // cache with a hole would answer wrongly, so start over.
            self.clear();
        }
        for e in new {
            let size = e.compute_size() as usize;
            self.bytes += size;
            self.entries.push_back((e.clone(), size));
        }
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries at or before `index` (compacted).
    pub(crate) fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.index <= index) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets everything (the log was replaced by a snapshot).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    fn position(&self, index: u64) -> Option<usize> {
        let first = self.entries.front()?.0.index;
        let offset = usize::try_from(index.checked_sub(first)?).ok()?;
        (offset < self.entries.len()).then_some(offset)
    }

    /// The term of the entry at `index`, if cached.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        self.position(index).map(|i| self.entries[i].0.term)
    }

    /// Entries `[low, high)` limited to `max_size` bytes (at least one), as
    /// raft-rs's `Storage::entries` returns them; `None` unless all of them
    /// are cached.
    pub(crate) fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        if low >= high {
            return None;
        }
        let start = self.position(low)?;
        let end = self.position(high - 1)? + 1;
        let max = max_size.unwrap_or(u64::MAX);
        let mut total = 0u64;
        let mut out = Vec::with_capacity(end - start);
        for (e, size) in self.entries.range(start..end) {
            total += *size as u64;
            if !out.is_empty() && total > max {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![7u8; 100].into();
        e
    }

    fn run(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to).map(|i| entry(i, term)).collect()
    }

    #[test]
    fn serves_only_what_it_holds_and_replaced_tails_win() {
        let mut c = EntryCache::default();
        assert_eq!(c.term(1), None);
        c.append(&run(5, 10, 1));
        assert_eq!(c.term(4), None);
        assert_eq!(c.term(5), Some(1));
        assert_eq!(c.term(10), Some(1));
        assert_eq!(c.term(11), None);
        assert!(c.entries(4, 8, None).is_none());
        assert!(c.entries(8, 12, None).is_none());
        let got = c.entries(6, 9, None).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        // A new leader replaces 8.. with its own entries.
        c.append(&run(8, 9, 2));
        assert_eq!(c.term(7), Some(1));
        assert_eq!(c.term(8), Some(2));
        assert_eq!(c.term(10), None);
        c.compact_to(6);
        assert_eq!(c.term(6), None);
        assert_eq!(c.term(7), Some(1));
        c.clear();
        assert_eq!(c.term(7), None);
    }

    #[test]
    fn a_gap_resets_and_the_size_limit_keeps_at_least_one() {
        let mut c = EntryCache::default();
        c.append(&run(1, 3, 1));
        c.append(&run(7, 8, 1));
        assert_eq!(c.term(2), None);
        assert_eq!(c.term(7), Some(1));
        let one = c.entries(7, 9, Some(1)).unwrap();
        assert_eq!(one.len(), 1);
        let size = one[0].compute_size() as u64;
        assert_eq!(c.entries(7, 9, Some(2 * size)).unwrap().len(), 2);
        assert_eq!(c.entries(7, 9, Some(2 * size - 1)).unwrap().len(), 1);
    }

    #[test]
    fn stays_bounded() {
        let mut c = EntryCache::default();
        for start in (1..20_000u64).step_by(100) {
            c.append(&run(start, start + 99, 1));
        }
        assert!(c.entries.len() <= MAX_ENTRIES);
        assert!(c.bytes <= MAX_BYTES);
        assert_eq!(c.term(20_000 - 1 + 99 - 99), Some(1));
        assert_eq!(c.term(1), None);
    }
}
