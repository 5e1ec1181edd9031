//! One log segment: `<base offset %020d>.log` holding whole batches back to
//! back, and `<base offset>.index`, Kafka's sparse offset index of 8-byte
//! entries (offset relative to the segment base, u32 BE; file position,
//! u32 BE).
//!
//! Readers go through a memory map that is as long as the segment may ever
//! grow, so appends become visible without remapping: the writer `pwrite`s a
//! batch, then publishes the new committed length with a `Release` store;
//! readers `Acquire` it and never look past it. Bytes below the committed
//! length are never written again, which is what makes handing out `&[u8]`
//! over them sound while appends continue.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use memmap2::{MmapOptions, MmapRaw};

use super::batch::{BatchError, BatchHeader, BatchIter, HeaderIter};
use super::partition::LogError;

/// Kafka's default `index.interval.bytes`.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Size of one `.index` entry.
pub const INDEX_ENTRY_LEN: usize = 8;

/// `00000000000000000042.log`
pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// `00000000000000000042.index`
pub fn index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}

/// The base offset a segment file name stands for, if `name` is exactly 20
/// digits and `.log` (Kafka's `.log.deleted`, `.cleaned` etc. are not).
pub fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of a batch in the `.log` file.
    pub position: u32,
}

impl IndexEntry {
    pub fn to_bytes(self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        b[4..].copy_from_slice(&self.position.to_be_bytes());
        b
    }

    /// Decodes a whole `.index` file; a trailing partial entry is ignored.
    pub fn parse_all(bytes: &[u8]) -> Vec<IndexEntry> {
        bytes
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|c| IndexEntry {
                relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect()
    }
}

/// Kafka's rule for when to add an index entry (`LogSegment.append`): before
/// a batch is written, if more than `interval` bytes went in since the last
/// entry, index that batch as (its last offset, its position). Applied both
/// when appending and when rebuilding an index from the log, so the two agree.
#[derive(Debug, Clone)]
pub struct IndexPolicy {
    interval: u64,
    bytes_since_last: u64,
}

impl IndexPolicy {
    pub fn new(interval_bytes: u32) -> Self {
        IndexPolicy {
            interval: u64::from(interval_bytes),
            bytes_since_last: 0,
        }
    }

    /// Accounts for the batch `header` at `position` in a segment based at
    /// `base_offset`, returning the entry to add, if any.
    pub fn on_batch(
        &mut self,
        base_offset: i64,
        header: &BatchHeader,
        position: u64,
    ) -> Option<IndexEntry> {
        let mut entry = None;
        if self.bytes_since_last > self.interval {
            let rel = u32::try_from(header.last_offset() - base_offset).ok();
            let pos = u32::try_from(position).ok();
            if let (Some(relative_offset), Some(position)) = (rel, pos) {
                entry = Some(IndexEntry {
                    relative_offset,
                    position,
                });
            }
            self.bytes_since_last = 0;
        }
        self.bytes_since_last += header.total_len() as u64;
        entry
    }
}

/// The read side of a segment, shared by every reader thread.
#[derive(Debug)]
pub struct SegmentReader {
    base_offset: i64,
    log_path: PathBuf,
    index_path: PathBuf,
    file: Arc<File>,
    /// `None` only for a segment that is empty and will not grow.
    map: Option<MmapRaw>,
    capacity: u64,
    committed: AtomicU64,
    next_offset: AtomicI64,
    max_timestamp: AtomicI64,
    index: RwLock<Vec<IndexEntry>>,
}

/// What scanning a segment file found.
#[derive(Debug)]
pub struct SegmentScan {
    pub reader: Arc<SegmentReader>,
    /// Length of the file on disk (the valid prefix may be shorter).
    pub file_len: u64,
    /// The first thing wrong in the file; everything before it is served.
    pub damage: Option<BatchError>,
    /// The `.index` on disk equals the one rebuilt from the valid prefix.
    pub index_on_disk_ok: bool,
    /// Index policy state after the valid prefix, to continue appending.
    pub index_policy: IndexPolicy,
}

impl SegmentReader {
    fn new(
        dir: &Path,
        base_offset: i64,
        file: File,
        capacity: u64,
        committed: u64,
    ) -> Result<Self, LogError> {
        let log_path = dir.join(log_file_name(base_offset));
        let map = if capacity == 0 {
            None
        } else {
            let len = usize::try_from(capacity).map_err(|_| LogError::Io {
                op: "memory-mapping segment",
                path: log_path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "segment too large"),
            })?;
            Some(
                MmapOptions::new()
                    .len(len)
                    .map_raw_read_only(&file)
                    .map_err(|e| LogError::io("memory-mapping segment", &log_path, e))?,
            )
        };
        Ok(SegmentReader {
            base_offset,
            index_path: dir.join(index_file_name(base_offset)),
            log_path,
            file: Arc::new(file),
            map,
            capacity,
            committed: AtomicU64::new(committed),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(i64::MIN),
            index: RwLock::new(Vec::new()),
        })
    }

    /// Opens and validates an existing segment: every batch's magic, length
    /// and CRC, offsets increasing and not below `min_offset`. Nothing on
    /// disk is modified. The map is `capacity` bytes (at least the file
    /// length) so that an appendable segment can grow inside it.
    pub fn scan(
        dir: &Path,
        base_offset: i64,
        min_offset: i64,
        capacity: u64,
        index_interval_bytes: u32,
    ) -> Result<SegmentScan, LogError> {
        let log_path = dir.join(log_file_name(base_offset));
        let file =
            File::open(&log_path).map_err(|e| LogError::io("opening segment", &log_path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| LogError::io("reading segment metadata", &log_path, e))?
            .len();
        let reader = SegmentReader::new(dir, base_offset, file, capacity.max(file_len), 0)?;

        let mut policy = IndexPolicy::new(index_interval_bytes);
        let mut index = Vec::new();
        let mut damage = None;
        let mut valid_len = 0u64;
        let mut next_offset = base_offset.max(min_offset);
        let mut max_ts = i64::MIN;
        // SAFETY: the file is `file_len` bytes and open() does not write it;
        // a concurrent external truncation is outside what a log can defend
        // against (Kafka has the same exposure through its mmapped indexes).
        let bytes = unsafe { reader.bytes_unchecked(0, file_len) };
        for item in BatchIter::new(bytes, 0) {
            let (pos, batch) = match item {
                Ok(b) => b,
                Err(e) => {
                    damage = Some(e);
                    break;
                }
            };
            let h = batch.header;
            let problem = if h.last_offset_delta < 0 {
                Some("negative lastOffsetDelta")
            } else if h.base_offset < next_offset {
                Some(if h.base_offset < base_offset {
                    "batch offset below the segment's base offset"
                } else {
                    "batch offsets go backwards"
                })
            } else if h.last_offset() - base_offset > i64::from(u32::MAX) {
                Some("batch offset too far above the segment's base offset")
            } else {
                None
            };
            if let Some(what) = problem {
                damage = Some(BatchError::BadHeader {
                    position: pos,
                    what,
                });
                break;
            }
            if let Some(e) = policy.on_batch(base_offset, &h, pos) {
                index.push(e);
            }
            next_offset = h.last_offset() + 1;
            max_ts = max_ts.max(h.max_timestamp);
            valid_len = pos + batch.bytes.len() as u64;
        }

        let on_disk = match std::fs::read(&reader.index_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io("reading index", &reader.index_path, e)),
        };
        let rebuilt: Vec<u8> = index.iter().flat_map(|e| e.to_bytes()).collect();
        let index_on_disk_ok = on_disk.as_deref() == Some(&rebuilt[..]);
        if !index_on_disk_ok && damage.is_none() {
            ::log::info!(
                "{}: {}; using an index rebuilt from the log",
                reader.index_path.display(),
                if on_disk.is_none() {
                    "missing"
                } else {
                    "stale"
                }
            );
        }

        *reader.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        reader.next_offset.store(next_offset, Ordering::Relaxed);
        reader.max_timestamp.store(max_ts, Ordering::Relaxed);
        reader.committed.store(valid_len, Ordering::Release);
        Ok(SegmentScan {
            reader: Arc::new(reader),
            file_len,
            damage,
            index_on_disk_ok,
            index_policy: policy,
        })
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// The segment file, for `sendfile(2)` and `pread`.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Bytes of whole, validated batches readers may look at.
    pub fn committed_len(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The offset after the last committed batch (the base offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Largest batch maxTimestamp in the segment (`i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// A copy of the in-memory sparse index.
    pub fn index_entries(&self) -> Vec<IndexEntry> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// # Safety
    /// `position + len` must not exceed the file's length, and those bytes
    /// must not be written while the returned slice lives.
    unsafe fn bytes_unchecked(&self, position: u64, len: u64) -> &[u8] {
        match &self.map {
            Some(m) if position.saturating_add(len) <= self.capacity && len > 0 => {
                // SAFETY: the range is inside the mapping (checked just
                // above) and, by this function's contract, inside the file
                // and not written concurrently.
                unsafe {
                    std::slice::from_raw_parts(m.as_ptr().add(position as usize), len as usize)
                }
            }
            _ => &[],
        }
    }

    /// `len` committed bytes at `position`, through the map; `None` if the
    /// range is not (yet) committed.
    pub fn slice(&self, position: u64, len: usize) -> Option<&[u8]> {
        let end = position.checked_add(len as u64)?;
        if end > self.committed_len() {
            return None;
        }
        // SAFETY: below the committed length, which only grows and is never
        // beyond the file's end; committed bytes are never rewritten.
        Some(unsafe { self.bytes_unchecked(position, len as u64) })
    }

    /// All committed bytes.
    pub fn bytes(&self) -> &[u8] {
        let len = self.committed_len();
        // SAFETY: as in `slice`.
        unsafe { self.bytes_unchecked(0, len) }
    }

    /// Batch headers from `position` to the committed end, reading only
    /// the 61-byte headers (no record bytes, no CRC).
    pub fn headers_from(&self, position: u64) -> HeaderIter<'_> {
        let all = self.bytes();
        let start = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(all.len());
        HeaderIter::new(&all[start..], start as u64)
    }

    /// Position to start a search for `offset` from: the entry with the
    /// largest offset at or below it (0 when there is none).
    pub fn index_lookup(&self, offset: i64) -> u64 {
        let Ok(rel) = u32::try_from(offset - self.base_offset) else {
            return if offset < self.base_offset {
                0
            } else {
                self.index_lookup(self.base_offset + i64::from(u32::MAX))
            };
        };
        let committed = self.committed_len();
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let n = index.partition_point(|e| e.relative_offset <= rel);
        index[..n]
            .iter()
            .rev()
            .find(|e| u64::from(e.position) < committed)
            .map_or(0, |e| u64::from(e.position))
    }

    /// The batch containing `offset`, or else the first one after it: the
    /// first committed batch whose last offset is >= `offset`. Walks headers
    /// from the index entry at or before `offset`.
    pub fn find(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        for item in self.headers_from(self.index_lookup(offset)) {
            let (pos, h) = item.map_err(|e| LogError::corrupt(&self.log_path, e))?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
        }
        Ok(None)
    }
}

/// Appends whole batches to one segment and keeps its `.index`.
#[derive(Debug)]
pub struct SegmentWriter {
    reader: Arc<SegmentReader>,
    log: File,
    index: File,
    size: u64,
    index_entries_on_disk: u64,
    rewrite_index: bool,
    policy: IndexPolicy,
}

impl SegmentWriter {
    /// Creates a new, empty segment (both files must not exist yet) whose
    /// map can hold `capacity` bytes.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        capacity: u64,
        index_interval_bytes: u32,
    ) -> Result<Self, LogError> {
        let log_path = dir.join(log_file_name(base_offset));
        let index_path = dir.join(index_file_name(base_offset));
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        let log = opts
            .open(&log_path)
            .map_err(|e| LogError::io("creating segment", &log_path, e))?;
        // A stale .index without its .log is garbage from an earlier life.
        let index = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&index_path)
            .map_err(|e| LogError::io("creating index", &index_path, e))?;
        let read = log
            .try_clone()
            .map_err(|e| LogError::io("duplicating segment descriptor", &log_path, e))?;
        let reader = SegmentReader::new(dir, base_offset, read, capacity, 0)?;
        Ok(SegmentWriter {
            reader: Arc::new(reader),
            log,
            index,
            size: 0,
            index_entries_on_disk: 0,
            rewrite_index: false,
            policy: IndexPolicy::new(index_interval_bytes),
        })
    }

    /// Continues appending to a scanned segment with no damage. A missing
    /// or stale `.index` is rewritten from memory on the first append.
    pub fn resume(scan: &SegmentScan) -> Result<Self, LogError> {
        let reader = Arc::clone(&scan.reader);
        let log = OpenOptions::new()
            .write(true)
            .open(reader.log_path())
            .map_err(|e| LogError::io("opening segment for append", reader.log_path(), e))?;
        let index = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(reader.index_path())
            .map_err(|e| LogError::io("opening index for append", reader.index_path(), e))?;
        let entries = reader.index.read().unwrap_or_else(|p| p.into_inner()).len() as u64;
        Ok(SegmentWriter {
            size: reader.committed_len(),
            reader,
            log,
            index,
            index_entries_on_disk: entries,
            rewrite_index: !scan.index_on_disk_ok,
            policy: scan.index_policy.clone(),
        })
    }

    pub fn reader(&self) -> &Arc<SegmentReader> {
        &self.reader
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes the map can still take.
    pub fn room(&self) -> u64 {
        self.reader.capacity.saturating_sub(self.size)
    }

    /// Appends `batches` (whole, validated batches whose base offsets are
    /// final) and publishes them to readers only once they are all written.
    /// On error nothing is published and the next append overwrites
    /// whatever part was written.
    pub fn append(&mut self, batches: &[u8]) -> Result<(), LogError> {
        let r = &self.reader;
        if batches.len() as u64 > self.room() {
            return Err(LogError::io(
                "appending to segment",
                r.log_path(),
                io::Error::new(io::ErrorKind::StorageFull, "segment map is full"),
            ));
        }
        let mut policy = self.policy.clone();
        let mut new_entries = Vec::new();
        let mut next_offset = r.next_offset();
        let mut max_ts = r.max_timestamp();
        for item in HeaderIter::new(batches, self.size) {
            let (pos, h) = item.map_err(|e| LogError::corrupt(r.log_path(), e))?;
            if let Some(e) = policy.on_batch(r.base_offset, &h, pos) {
                new_entries.push(e);
            }
            next_offset = h.last_offset() + 1;
            max_ts = max_ts.max(h.max_timestamp);
        }

        self.log
            .write_all_at(batches, self.size)
            .map_err(|e| LogError::io("writing segment", r.log_path(), e))?;

        let mut index = r.index.write().unwrap_or_else(|p| p.into_inner());
        if self.rewrite_index {
            let all: Vec<u8> = index
                .iter()
                .chain(&new_entries)
                .flat_map(|e| e.to_bytes())
                .collect();
            self.index
                .set_len(0)
                .and_then(|()| self.index.write_all_at(&all, 0))
                .map_err(|e| LogError::io("rewriting index", r.index_path(), e))?;
            self.rewrite_index = false;
        } else if !new_entries.is_empty() {
            let bytes: Vec<u8> = new_entries.iter().flat_map(|e| e.to_bytes()).collect();
            self.index
                .write_all_at(&bytes, self.index_entries_on_disk * INDEX_ENTRY_LEN as u64)
                .map_err(|e| LogError::io("writing index", r.index_path(), e))?;
        }
        self.index_entries_on_disk = (index.len() + new_entries.len()) as u64;
        index.extend_from_slice(&new_entries);
        drop(index);

        self.policy = policy;
        self.size += batches.len() as u64;
        r.next_offset.store(next_offset, Ordering::Release);
        r.max_timestamp.store(max_ts, Ordering::Release);
        // Publishes the bytes written above to readers.
        r.committed.store(self.size, Ordering::Release);
        Ok(())
    }

    /// fsyncs the log and index.
    pub fn sync(&self) -> Result<(), LogError> {
        self.log
            .sync_data()
            .map_err(|e| LogError::io("syncing segment", self.reader.log_path(), e))?;
        self.index
            .sync_data()
            .map_err(|e| LogError::io("syncing index", self.reader.index_path(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::BatchBuilder;

    fn batch(base: i64, records: usize, value_len: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(base, 1_000);
        let v = vec![b'v'; value_len];
        for i in 0..records {
            b.push(1_000 + i as i64, None, Some(&v), &[]);
        }
        b.finish()
    }

    #[test]
    fn file_names() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(index_file_name(0), "00000000000000000000.index");
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(
            parse_log_file_name("00000000000000000042.log.deleted"),
            None
        );
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn index_entries_at_the_interval_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let interval = 1000;
        let mut w = SegmentWriter::create(dir.path(), 100, 1 << 20, interval).unwrap();
        // Expected entries by Kafka's rule, computed independently.
        let mut expected = Vec::new();
        let mut since = 0u64;
        let mut pos = 0u64;
        let mut off = 100i64;
        let mut positions = Vec::new();
        for i in 0..60 {
            let n = 1 + i % 4;
            let b = batch(off, n, 90 + 7 * i);
            if since > u64::from(interval) {
                expected.push(IndexEntry {
                    relative_offset: (off + n as i64 - 1 - 100) as u32,
                    position: pos as u32,
                });
                since = 0;
            }
            since += b.len() as u64;
            positions.push((off, off + n as i64 - 1, pos));
            w.append(&b).unwrap();
            pos += b.len() as u64;
            off += n as i64;
        }
        let r = w.reader();
        assert!(expected.len() > 5, "test spans several entries");
        assert_eq!(r.index_entries(), expected);
        let on_disk = std::fs::read(r.index_path()).unwrap();
        assert_eq!(on_disk.len(), expected.len() * INDEX_ENTRY_LEN);
        assert_eq!(IndexEntry::parse_all(&on_disk), expected);
        // Consecutive entries are at least `interval` bytes apart.
        for w in expected.windows(2) {
            assert!(w[1].position - w[0].position > interval);
        }

        for &(base, last, p) in &positions {
            for o in [base, last, (base + last) / 2] {
                let start = r.index_lookup(o);
                assert!(start <= p, "index entry for {o} is after its batch");
                let (found_pos, h) = r.find(o).unwrap().unwrap();
                assert_eq!(found_pos, p, "offset {o}");
                assert_eq!(h.base_offset, base);
            }
        }
        assert!(r.find(off).unwrap().is_none());
        assert_eq!(r.next_offset(), off);

        // A scan of the same files rebuilds the same index and finds it on disk.
        let scan = SegmentReader::scan(dir.path(), 100, 0, 0, interval).unwrap();
        assert!(scan.damage.is_none());
        assert!(scan.index_on_disk_ok);
        assert_eq!(scan.reader.index_entries(), expected);
        assert_eq!(scan.reader.committed_len(), pos);
        assert_eq!(scan.reader.next_offset(), off);
    }

    #[test]
    fn index_entry_only_once_more_than_the_interval_went_in() {
        // Equal-size batches and an interval of exactly three of them: like
        // Kafka, the entry goes on the batch written after *more* than the
        // interval, i.e. the 5th, 9th, ... batch (indexes 4, 8, ...).
        let dir = tempfile::tempdir().unwrap();
        let len = batch(0, 1, 50).len();
        let interval = 3 * len as u32;
        let mut w = SegmentWriter::create(dir.path(), 0, 1 << 20, interval).unwrap();
        for i in 0..13 {
            w.append(&batch(i, 1, 50)).unwrap();
        }
        let expected: Vec<IndexEntry> = [4u32, 8, 12]
            .iter()
            .map(|&i| IndexEntry {
                relative_offset: i,
                position: i * len as u32,
            })
            .collect();
        assert_eq!(w.reader().index_entries(), expected);
    }

    #[test]
    fn scan_rebuilds_a_missing_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 0, 1 << 20, 100).unwrap();
        let mut off = 0;
        for _ in 0..10 {
            w.append(&batch(off, 2, 80)).unwrap();
            off += 2;
        }
        let expected = w.reader().index_entries();
        drop(w);
        std::fs::remove_file(dir.path().join(index_file_name(0))).unwrap();
        let scan = SegmentReader::scan(dir.path(), 0, 0, 1 << 20, 100).unwrap();
        assert!(!scan.index_on_disk_ok);
        assert_eq!(scan.reader.index_entries(), expected);
        assert!(
            !dir.path().join(index_file_name(0)).exists(),
            "scan writes nothing"
        );
        // Appending after the resume rewrites the whole index.
        let mut w = SegmentWriter::resume(&scan).unwrap();
        w.append(&batch(off, 2, 80)).unwrap();
        let on_disk = IndexEntry::parse_all(&std::fs::read(w.reader().index_path()).unwrap());
        assert_eq!(on_disk, w.reader().index_entries());
        assert!(on_disk.len() > expected.len());
    }
}
