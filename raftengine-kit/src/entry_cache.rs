//! The newest log entries, kept in memory beside a log store.
//!
//! Raft libraries read back the entries they just wrote: raft-rs asks for
//! the term of recent entries on every acknowledgement and for the entries
//! themselves when it replicates persisted ones; openraft's replication
//! reads every entry it sends. Served from a log store's files, each read is
//! a `pread` and a decode (and, for an async reader, a hop to a blocking
//! thread). The newest entries are the ones asked for, so a backend keeps
//! them here and falls through to its store for anything older.

use std::collections::VecDeque;

/// One entry handed to [`EntryCache::append`], with what the cache needs to
/// know about it.
#[derive(Debug, Clone)]
pub struct CachedEntry<T> {
    /// The entry's log index.
    pub index: u64,
    /// The term it was appended in.
    pub term: u64,
    /// Its size in bytes, as counted against the cache's byte limit (and the
    /// `max_bytes` of [`EntryCache::range`]).
    pub size: usize,
    /// The entry itself.
    pub entry: T,
}

/// A contiguous run of a log's newest entries, bounded in count and bytes.
///
/// The owner keeps it in step with the log: [`append`](Self::append) after
/// every write of entries, [`truncate_from`](Self::truncate_from) when a
/// tail is dropped, [`compact_to`](Self::compact_to) when a prefix is, and
/// [`clear`](Self::clear) when the log is replaced by a snapshot. Lookups
/// answer `None` for anything not held, never a guess.
///
/// ```
/// use raftengine_kit::entry_cache::{CachedEntry, EntryCache};
///
/// let mut cache = EntryCache::new(1024, 1 << 20);
/// cache.append((5..=7).map(|i| CachedEntry { index: i, term: 2, size: 10, entry: i * 100 }));
/// assert_eq!(cache.term(6), Some(2));
/// assert_eq!(cache.range(5, 7, None), Some(vec![500, 600]));
/// assert_eq!(cache.range(4, 6, None), None); // 4 is not held
/// ```
#[derive(Debug)]
pub struct EntryCache<T> {
    entries: VecDeque<CachedEntry<T>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<T: Clone> EntryCache<T> {
    /// An empty cache holding at most `max_entries` entries and `max_bytes`
    /// bytes (the oldest go first).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        EntryCache {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Records entries just written to the log, in index order: those at or
    /// after the first one's index replace what the cache held there (a new
    /// leader's tail). Entries that would leave a hole start the cache over.
    pub fn append(&mut self, new: impl IntoIterator<Item = CachedEntry<T>>) {
        let mut first = true;
        for e in new {
            if first {
                self.truncate_from(e.index);
                first = false;
            }
            if self.entries.back().is_some_and(|b| b.index + 1 != e.index) {
                // A cache with a hole would answer wrongly.
                self.clear();
            }
            self.bytes += e.size;
            self.entries.push_back(e);
        }
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            self.pop_front();
        }
    }

    /// Forgets entries at or after `index` (the log's tail was dropped).
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.size;
            }
        }
    }

    /// Forgets entries at or before `index` (compacted or purged).
    pub fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.pop_front();
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as counted from the entries' sizes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.size;
        }
    }

    fn position(&self, index: u64) -> Option<usize> {
        let first = self.entries.front()?.index;
        let offset = usize::try_from(index.checked_sub(first)?).ok()?;
        (offset < self.entries.len()).then_some(offset)
    }

    /// The term of the entry at `index`, if held.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.position(index).map(|i| self.entries[i].term)
    }

    /// Entries `[low, high)`, cut after the entry that takes the total past
    /// `max_bytes` (always at least one, as raft-rs's `Storage::entries`
    /// expects); `None` unless every one of them is held or the range is
    /// empty.
    pub fn range(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Option<Vec<T>> {
        if low >= high {
            return None;
        }
        let start = self.position(low)?;
        let end = self.position(high - 1)? + 1;
        let max = max_bytes.unwrap_or(u64::MAX);
        let mut total = 0u64;
        let mut out = Vec::with_capacity(end - start);
        for e in self.entries.range(start..end) {
            total += e.size as u64;
            if !out.is_empty() && total > max {
                break;
            }
            out.push(e.entry.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(from: u64, to: u64, term: u64) -> Vec<CachedEntry<(u64, u64)>> {
        (from..=to)
            .map(|index| CachedEntry {
                index,
                term,
                size: 100,
                entry: (index, term),
            })
            .collect()
    }

    #[test]
    fn serves_only_what_it_holds_and_replaced_tails_win() {
        let mut c = EntryCache::new(4096, 1 << 20);
        assert_eq!(c.term(1), None);
        c.append(run(5, 10, 1));
        assert_eq!(
            (c.term(4), c.term(5), c.term(10), c.term(11)),
            (None, Some(1), Some(1), None)
        );
        assert!(c.range(4, 8, None).is_none());
        assert!(c.range(8, 12, None).is_none());
        assert!(c.range(8, 8, None).is_none());
        assert_eq!(c.range(6, 9, None), Some(vec![(6, 1), (7, 1), (8, 1)]));
        // A new leader replaces 8.. with its own entries.
        c.append(run(8, 9, 2));
        assert_eq!((c.term(7), c.term(8), c.term(10)), (Some(1), Some(2), None));
        assert_eq!(c.bytes(), 500);
        c.truncate_from(9);
        assert_eq!((c.term(8), c.term(9)), (Some(2), None));
        c.compact_to(6);
        assert_eq!((c.term(6), c.term(7)), (None, Some(1)));
        assert_eq!(c.len(), 2);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn a_gap_starts_over_and_the_byte_limit_keeps_at_least_one() {
        let mut c = EntryCache::new(4096, 1 << 20);
        c.append(run(1, 3, 1));
        c.append(run(7, 8, 1));
        assert_eq!((c.term(2), c.term(7)), (None, Some(1)));
        assert_eq!(c.range(7, 9, Some(1)).map(|v| v.len()), Some(1));
        assert_eq!(c.range(7, 9, Some(200)).map(|v| v.len()), Some(2));
        assert_eq!(c.range(7, 9, Some(199)).map(|v| v.len()), Some(1));
    }

    #[test]
    fn stays_bounded_by_count_and_bytes() {
        let mut c = EntryCache::new(50, 1 << 20);
        c.append(run(1, 200, 1));
        assert_eq!(c.len(), 50);
        assert_eq!(
            (c.term(150), c.term(151), c.term(200)),
            (None, Some(1), Some(1))
        );
        let mut c = EntryCache::new(4096, 1000);
        c.append(run(1, 200, 1));
        assert_eq!((c.len(), c.bytes()), (10, 1000));
        assert_eq!(c.term(191), Some(1));
    }
}
