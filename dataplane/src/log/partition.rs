//! One topic-partition directory, `<log-dir>/<topic>-<partition>`: its
//! segments in offset order, the one appender and the many readers.
//!
//! Concurrency: `append` holds the writer mutex for its whole duration, so
//! appends are serialised; readers take only a read lock on the segment list
//! (write-locked just to add a rolled segment) and otherwise see appends
//! through each segment's atomically published committed length and the
//! partition's high watermark, which is stored last.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::batch::{BatchError, BatchIter, HeaderIter};
use super::segment::{
    DEFAULT_INDEX_INTERVAL_BYTES, SegmentReader, SegmentScan, SegmentWriter, log_file_name,
    parse_log_file_name,
};

/// Errors of the log, saying what was being done and where.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: BatchError,
    },
    #[error("rejected append, nothing written: {source} (position in the appended data)")]
    InvalidBatch {
        #[source]
        source: BatchError,
    },
    #[error(
        "rejected append, nothing written: batch at byte {position} is {size} bytes, larger than the segment size {max}"
    )]
    BatchTooLarge {
        position: u64,
        size: usize,
        max: u64,
    },
    #[error("rejected append: no batches given")]
    EmptyAppend,
    #[error("rejected append: offsets would overflow i64")]
    OffsetOverflow,
    #[error("offset {offset} is out of range: the log holds {log_start_offset}..{high_watermark}")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error(
        "{}: another process (or another PartitionLog in this one) is appending to this partition",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("another writer appended meanwhile: expected base offset {expected}, got {got}")]
    ConcurrentAppend { expected: i64, got: i64 },
    #[error("invalid topic-partition {name:?}: {why}")]
    BadTopicPartition { name: String, why: &'static str },
    #[error("invalid log options: {0}")]
    BadOptions(&'static str),
    #[error("{}: appends refused because {why}; move the damaged file aside to continue", path.display())]
    Damaged { path: PathBuf, why: &'static str },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, source: BatchError) -> Self {
        LogError::Corrupt {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A topic and partition number; its directory is `<topic>-<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// `<topic>-<partition>`
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Kafka's rules (1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`), which also
    /// keep a topic name from escaping the log directory.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |why| {
            Err(LogError::BadTopicPartition {
                name: self.dir_name(),
                why,
            })
        };
        let t = &self.topic;
        if t.is_empty() || t.len() > 249 {
            return bad("topic names are 1 to 249 characters");
        }
        if t == "." || t == ".." {
            return bad("topic cannot be '.' or '..'");
        }
        if !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return bad("topic names use only ASCII letters, digits, '.', '_' and '-'");
        }
        if self.partition < 0 {
            return bad("partition numbers are not negative");
        }
        Ok(())
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Leave it to the kernel (Kafka's default).
    #[default]
    Never,
    EveryAppend,
    /// At the first append at least this long after the last sync.
    Interval(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is rolled before it would grow past this (Kafka's
    /// `segment.bytes`); also the largest batch accepted. At most `i32::MAX`.
    pub segment_bytes: u64,
    /// Kafka's `index.interval.bytes`.
    pub index_interval_bytes: u32,
    pub fsync: FsyncPolicy,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 1 << 30,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            fsync: FsyncPolicy::Never,
        }
    }
}

/// Something wrong that `open` found: the file, the byte position, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub position: u64,
    pub error: BatchError,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.path.display(),
            self.position,
            self.error
        )
    }
}

/// A range of whole batches in one segment file, ready for `sendfile(2)`
/// (`file`, `position`, `len`) or to be copied from the map (`bytes`).
#[derive(Debug, Clone)]
pub struct FetchSlice {
    pub file: Arc<fs::File>,
    /// Byte position of the first batch in `file`.
    pub position: u64,
    pub len: usize,
    /// Base offset of the first batch (at or before the offset asked for).
    pub first_offset: i64,
    /// Last offset of the last batch.
    pub last_offset: i64,
    /// The high watermark when the slice was taken.
    pub high_watermark: i64,
    /// The log start offset when the slice was taken.
    pub log_start_offset: i64,
    segment: Arc<SegmentReader>,
}

impl FetchSlice {
    /// The batches' bytes, straight from the segment's memory map.
    pub fn bytes(&self) -> &[u8] {
        self.segment.slice(self.position, self.len).unwrap_or(&[])
    }

    /// The segment file the slice is in.
    pub fn path(&self) -> &Path {
        self.segment.log_path()
    }

    /// The batch headers in the slice.
    pub fn headers(&self) -> HeaderIter<'_> {
        HeaderIter::new(self.bytes(), self.position)
    }
}

// Shared by server threads: keep it that way.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<PartitionLog>();
    shared::<FetchSlice>();
};

#[derive(Debug)]
struct Writer {
    active: Option<SegmentWriter>,
    /// The undamaged last segment found by open, resumed at the first append.
    resumable: Option<SegmentScan>,
    /// The partition directory, `flock`ed from the first append on so that
    /// only one appender writes a partition.
    lock: Option<fs::File>,
    last_sync: Instant,
}

/// One `<log-dir>/<topic>-<partition>` directory. `Send + Sync`: one
/// appender at a time, any number of concurrent readers.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    tp: TopicPartition,
    opts: LogOptions,
    segments: RwLock<Vec<Arc<SegmentReader>>>,
    writer: Mutex<Writer>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    damage: Vec<Damage>,
    /// Set when open found damage that a new segment cannot route around.
    refuse_appends: Option<(PathBuf, &'static str)>,
    appended: (Mutex<()>, Condvar),
}

impl PartitionLog {
    /// Opens an existing partition directory, validating every segment.
    /// A corrupt or truncated tail is logged, recorded in [`damage`](Self::damage)
    /// and left on disk; only the valid prefix is served. Nothing is written.
    pub fn open(log_dir: &Path, tp: &TopicPartition, opts: LogOptions) -> Result<Self, LogError> {
        tp.validate()?;
        if opts.segment_bytes < super::batch::HEADER_LEN as u64
            || opts.segment_bytes > i32::MAX as u64
        {
            return Err(LogError::BadOptions(
                "segment_bytes must be between 61 and 2147483647",
            ));
        }
        let dir = log_dir.join(tp.dir_name());
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| LogError::io("opening partition", &dir, e))? {
            let entry = entry.map_err(|e| LogError::io("listing partition", &dir, e))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let mut segments = Vec::new();
        let mut damage = Vec::new();
        let mut refuse_appends = None;
        let mut resumable = None;
        let mut next_offset = bases.first().copied().unwrap_or(0);
        let n = bases.len();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(log_file_name(base));
            if base < next_offset {
                let error = BatchError::BadHeader {
                    position: 0,
                    what: "segment base offset overlaps the previous segment",
                };
                ::log::warn!(
                    "{}: {error}; it and later segments are not served",
                    path.display()
                );
                damage.push(Damage {
                    path: path.clone(),
                    position: 0,
                    error,
                });
                refuse_appends = Some((path, "a segment overlaps its predecessor"));
                break;
            }
            let last = i + 1 == n;
            let capacity = if last { opts.segment_bytes } else { 0 };
            let scan =
                SegmentReader::scan(&dir, base, next_offset, capacity, opts.index_interval_bytes)?;
            let reader = Arc::clone(&scan.reader);
            if let Some(error) = &scan.damage {
                let position = error.position();
                ::log::warn!(
                    "{}: damaged at byte {position} of {}: {error}; serving the {} valid bytes before it",
                    path.display(),
                    scan.file_len,
                    reader.committed_len()
                );
                damage.push(Damage {
                    path: path.clone(),
                    position,
                    error: error.clone(),
                });
                if last && reader.committed_len() == 0 {
                    refuse_appends = Some((
                        path,
                        "the last segment is damaged from its first byte and a new one would replace it",
                    ));
                }
            } else if last {
                resumable = Some(scan);
            }
            next_offset = reader.next_offset();
            segments.push(reader);
        }

        let log_start = segments.first().map_or(0, |s| s.base_offset());
        Ok(PartitionLog {
            dir,
            tp: tp.clone(),
            opts,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active: None,
                resumable,
                lock: None,
                last_sync: Instant::now(),
            }),
            high_watermark: AtomicI64::new(next_offset),
            log_start_offset: AtomicI64::new(log_start),
            damage,
            refuse_appends,
            appended: (Mutex::new(()), Condvar::new()),
        })
    }

    /// As [`open`](Self::open), creating the directory if it is missing.
    pub fn create(log_dir: &Path, tp: &TopicPartition, opts: LogOptions) -> Result<Self, LogError> {
        tp.validate()?;
        let dir = log_dir.join(tp.dir_name());
        fs::create_dir_all(&dir).map_err(|e| LogError::io("creating partition", &dir, e))?;
        Self::open(log_dir, tp, opts)
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// What `open` found wrong, in file order.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// The next offset to be assigned.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<SegmentReader>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whole batches starting with the one that contains `offset` (or the
    /// first one after it), all from one segment, up to `max_bytes` but at
    /// least one batch however large (KIP-74). `None` at the high watermark;
    /// `OffsetOutOfRange` below the log start or above the high watermark.
    /// Only batch headers are read, through the memory map.
    pub fn fetch_slice(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<FetchSlice>, LogError> {
        let hw = self.high_watermark();
        let start = self.log_start_offset();
        if offset < start || offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                high_watermark: hw,
            });
        }
        if offset == hw {
            return Ok(None);
        }
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for seg in segments.iter().skip(first) {
            let Some((position, h)) = seg.find(offset)? else {
                continue;
            };
            if h.base_offset >= hw {
                return Ok(None);
            }
            let mut len = h.total_len();
            let mut last_offset = h.last_offset();
            for item in seg.headers_from(position + len as u64) {
                let (_, next) = item.map_err(|e| LogError::corrupt(seg.log_path(), e))?;
                if next.last_offset() >= hw || len + next.total_len() > max_bytes {
                    break;
                }
                len += next.total_len();
                last_offset = next.last_offset();
            }
            return Ok(Some(FetchSlice {
                file: Arc::clone(seg.file()),
                position,
                len,
                first_offset: h.base_offset,
                last_offset,
                high_watermark: hw,
                log_start_offset: start,
                segment: Arc::clone(seg),
            }));
        }
        Ok(None)
    }

    /// Validates every batch in `batches` (magic, lengths, CRC, size), and
    /// only then assigns offsets from the high watermark (rewriting each
    /// batch's base offset in place), writes them, and publishes them to
    /// readers. Rolls to a new segment when the next batch would not fit.
    /// Returns the base offset of the first batch.
    pub fn append(&self, batches: &mut [u8]) -> Result<i64, LogError> {
        // Validate everything before touching anything.
        let mut spans = Vec::new();
        for item in BatchIter::new(batches, 0) {
            let (pos, b) = item.map_err(|source| LogError::InvalidBatch { source })?;
            if b.header.last_offset_delta < 0 || b.header.records_count < 0 {
                return Err(LogError::InvalidBatch {
                    source: BatchError::BadHeader {
                        position: pos,
                        what: "negative lastOffsetDelta or recordsCount",
                    },
                });
            }
            if b.bytes.len() as u64 > self.opts.segment_bytes {
                return Err(LogError::BatchTooLarge {
                    position: pos,
                    size: b.bytes.len(),
                    max: self.opts.segment_bytes,
                });
            }
            spans.push((pos as usize, b.bytes.len(), b.header.last_offset_delta));
        }
        if spans.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        if let Some((path, why)) = &self.refuse_appends {
            return Err(LogError::Damaged {
                path: path.clone(),
                why,
            });
        }

        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.lock.is_none() {
            w.lock = Some(self.lock_dir()?);
        }
        let base = self.high_watermark();
        let total: i64 = spans.iter().map(|&(_, _, d)| i64::from(d) + 1).sum();
        base.checked_add(total).ok_or(LogError::OffsetOverflow)?;
        let mut next = base;
        for &(pos, _, delta) in &spans {
            super::batch::set_base_offset(&mut batches[pos..], next);
            next += i64::from(delta) + 1;
        }

        // Write runs of batches that fit in the active segment.
        let mut i = 0;
        let mut offset = base;
        while i < spans.len() {
            let start = spans[i].0;
            let mut end = start;
            let mut run_next = offset;
            let seg = self.writable_segment(&mut w, offset, spans[i].1 as u64)?;
            let limit = self.opts.segment_bytes.saturating_sub(seg.size());
            let max_rel = seg.reader().base_offset() + i64::from(u32::MAX);
            while i < spans.len() {
                let (pos, len, delta) = spans[i];
                let last = run_next + i64::from(delta);
                if (pos + len - start) as u64 > limit.min(seg.room()) || last > max_rel {
                    break;
                }
                end = pos + len;
                run_next = last + 1;
                i += 1;
            }
            if end == start {
                // The first batch of the run does not fit: roll and retry.
                self.roll(&mut w, offset)?;
                continue;
            }
            let seg = w.active.as_mut().ok_or(LogError::EmptyAppend)?;
            seg.append(&batches[start..end])?;
            offset = run_next;
            self.high_watermark.store(offset, Ordering::Release);
        }
        self.maybe_sync(&mut w)?;
        drop(w);

        let _g = self.appended.0.lock().unwrap_or_else(|p| p.into_inner());
        self.appended.1.notify_all();
        Ok(base)
    }

    /// The active segment, resuming or creating one on the first append, and
    /// rolling when `next_len` more bytes would overflow it.
    fn writable_segment<'w>(
        &self,
        w: &'w mut Writer,
        next_offset: i64,
        next_len: u64,
    ) -> Result<&'w mut SegmentWriter, LogError> {
        if w.active.is_none() {
            if let Some(scan) = w.resumable.take() {
                w.active = Some(SegmentWriter::resume(&scan)?);
            } else {
                self.roll(w, next_offset)?;
            }
        }
        let full = w.active.as_ref().is_some_and(|s| {
            s.size() > 0 && s.size() + next_len > self.opts.segment_bytes.min(s.size() + s.room())
        });
        if full {
            self.roll(w, next_offset)?;
        }
        w.active.as_mut().ok_or(LogError::EmptyAppend)
    }

    fn roll(&self, w: &mut Writer, base_offset: i64) -> Result<(), LogError> {
        if let Some(old) = &w.active
            && self.opts.fsync != FsyncPolicy::Never
        {
            old.sync()?;
        }
        let seg = SegmentWriter::create(
            &self.dir,
            base_offset,
            self.opts.segment_bytes,
            self.opts.index_interval_bytes,
        )?;
        let mut segments = self.segments.write().unwrap_or_else(|p| p.into_inner());
        if segments.is_empty() {
            self.log_start_offset.store(base_offset, Ordering::Release);
        }
        segments.push(Arc::clone(seg.reader()));
        drop(segments);
        ::log::debug!("{}: rolled new segment at offset {base_offset}", self.tp);
        w.active = Some(seg);
        Ok(())
    }

    /// Takes an exclusive, non-blocking `flock` on the partition directory
    /// (released when the returned descriptor is closed).
    fn lock_dir(&self) -> Result<fs::File, LogError> {
        use std::os::fd::AsRawFd;
        let dir = fs::File::open(&self.dir)
            .map_err(|e| LogError::io("opening partition directory to lock", &self.dir, e))?;
        // SAFETY: flock on a descriptor we own and keep open; no memory is
        // passed to the kernel.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                LogError::Locked {
                    path: self.dir.clone(),
                }
            } else {
                LogError::io("locking partition directory", &self.dir, e)
            });
        }
        Ok(dir)
    }

    fn maybe_sync(&self, w: &mut Writer) -> Result<(), LogError> {
        let due = match self.opts.fsync {
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryAppend => true,
            FsyncPolicy::Interval(d) => w.last_sync.elapsed() >= d,
        };
        if due {
            if let Some(s) = &w.active {
                s.sync()?;
            }
            w.last_sync = Instant::now();
        }
        Ok(())
    }

    /// fsyncs the active segment and its index.
    pub fn sync(&self) -> Result<(), LogError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &w.active {
            s.sync()?;
        }
        w.last_sync = Instant::now();
        Ok(())
    }

    /// Base offset of the first batch whose maxTimestamp is >= `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Option<i64> {
        let hw = self.high_watermark();
        let segments = self.segments();
        for seg in segments.iter().filter(|s| s.max_timestamp() >= ts) {
            for (_, h) in seg.headers_from(0).map_while(Result::ok) {
                if h.base_offset >= hw {
                    return None;
                }
                if h.max_timestamp >= ts {
                    return Some(h.base_offset);
                }
            }
        }
        None
    }

    /// Waits until the high watermark passes `offset` or `timeout` elapses;
    /// true if data at `offset` is available.
    pub fn wait_for_data(&self, offset: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.appended.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.high_watermark() > offset {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = match self.appended.1.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}
