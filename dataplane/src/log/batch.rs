//! Record batch v2 (magic 2), Kafka's unit of storage and transfer.
//!
//! ```text
//! byte  0 baseOffset i64            byte 27 baseTimestamp i64
//! byte  8 batchLength i32           byte 35 maxTimestamp i64
//! byte 12 partitionLeaderEpoch i32  byte 43 producerId i64
//! byte 16 magic i8                  byte 51 producerEpoch i16
//! byte 17 crc u32                   byte 53 baseSequence i32
//! byte 21 attributes i16            byte 57 recordsCount i32
//! byte 23 lastOffsetDelta i32       byte 61 records...
//! ```
//!
//! All integers are big-endian. The CRC-32C covers `attributes` through the
//! end of the batch, so a broker can assign `baseOffset` (and stamp
//! `partitionLeaderEpoch`) without recomputing it.
//!
//! Compressed, transactional and control batches are validated (lengths, CRC)
//! and carried as opaque bytes; only uncompressed batches have their records
//! decoded, and only on request.

use super::record::{self, Record};

/// Bytes of a v2 batch header.
pub const HEADER_LEN: usize = 61;
/// baseOffset + batchLength: the part of the header not counted in batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// The CRC-32C covers `attributes`..end.
pub const CRC_START: usize = 21;
/// The only batch format this module reads and writes.
pub const MAGIC_V2: i8 = 2;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = 8;
pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORDS_COUNT_AT: usize = 57;

/// Smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

/// Attribute bits 0-2: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are LogAppendTime rather than CreateTime.
pub const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// Attribute bit 4: part of a transaction.
pub const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit 5: a control batch (transaction markers).
pub const CONTROL_BIT: i16 = 0x20;

/// What is wrong with a batch, and where. `position` is the byte offset of
/// the batch start in the buffer or file it came from (the caller names the
/// file); `BadRecord` points at the record itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch at byte {position}: needs {needed} bytes, only {available} present")]
    Truncated {
        position: u64,
        needed: usize,
        available: usize,
    },
    #[error(
        "batch at byte {position} has magic {magic}; only record batch v2 (magic 2) is supported"
    )]
    BadMagic { position: u64, magic: i8 },
    #[error(
        "batch at byte {position} has batchLength {length}; it must be at least {MIN_BATCH_LENGTH}"
    )]
    BadLength { position: u64, length: i32 },
    #[error(
        "CRC mismatch in batch at byte {position}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        position: u64,
        stored: u32,
        computed: u32,
    },
    #[error("bad record at byte {position}: {what}")]
    BadRecord { position: u64, what: &'static str },
    #[error("bad batch header at byte {position}: {what}")]
    BadHeader { position: u64, what: &'static str },
    #[error(
        "batch at byte {position} is compressed (codec {codec}); its records cannot be decoded here"
    )]
    Compressed { position: u64, codec: u8 },
}

impl BatchError {
    /// Byte position the error refers to.
    pub fn position(&self) -> u64 {
        match self {
            BatchError::Truncated { position, .. }
            | BatchError::BadMagic { position, .. }
            | BatchError::BadLength { position, .. }
            | BatchError::CrcMismatch { position, .. }
            | BatchError::BadRecord { position, .. }
            | BatchError::BadHeader { position, .. }
            | BatchError::Compressed { position, .. } => *position,
        }
    }

    /// The same error with its positions moved by `delta` bytes, for errors
    /// found in a sub-slice of a larger file.
    pub fn shifted(self, delta: u64) -> Self {
        let mut e = self;
        match &mut e {
            BatchError::Truncated { position, .. }
            | BatchError::BadMagic { position, .. }
            | BatchError::BadLength { position, .. }
            | BatchError::CrcMismatch { position, .. }
            | BatchError::BadRecord { position, .. }
            | BatchError::BadHeader { position, .. }
            | BatchError::Compressed { position, .. } => *position += delta,
        }
        e
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    be_i32(b, at) as u32
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The 61-byte header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` (which needs at least 61
    /// bytes), checking magic == 2 and a sane `batchLength`. The CRC is not
    /// checked: that needs the whole batch ([`RecordBatch::parse`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        Self::parse_at(buf, 0)
    }

    /// As [`parse`](Self::parse), with errors reporting `position` as the
    /// batch's location.
    pub fn parse_at(buf: &[u8], position: u64) -> Result<BatchHeader, BatchError> {
        // Magic decides how to read the rest, so look at it first when it is there.
        if buf.len() > MAGIC_AT {
            let magic = buf[MAGIC_AT] as i8;
            if magic != MAGIC_V2 {
                return Err(BatchError::BadMagic { position, magic });
            }
        }
        if buf.len() >= LOG_OVERHEAD {
            let length = be_i32(buf, BATCH_LENGTH_AT);
            if length < MIN_BATCH_LENGTH {
                return Err(BatchError::BadLength { position, length });
            }
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                position,
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: be_u32(buf, CRC_AT),
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Writes this header into the first 61 bytes of `out` exactly as given
    /// (the CRC field included; see [`seal`] to compute it).
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[BASE_OFFSET_AT..][..8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[BATCH_LENGTH_AT..][..4].copy_from_slice(&self.batch_length.to_be_bytes());
        out[PARTITION_LEADER_EPOCH_AT..][..4]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out[MAGIC_AT] = self.magic as u8;
        out[CRC_AT..][..4].copy_from_slice(&self.crc.to_be_bytes());
        out[ATTRIBUTES_AT..][..2].copy_from_slice(&self.attributes.to_be_bytes());
        out[LAST_OFFSET_DELTA_AT..][..4].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[BASE_TIMESTAMP_AT..][..8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[MAX_TIMESTAMP_AT..][..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[PRODUCER_ID_AT..][..8].copy_from_slice(&self.producer_id.to_be_bytes());
        out[PRODUCER_EPOCH_AT..][..2].copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[BASE_SEQUENCE_AT..][..4].copy_from_slice(&self.base_sequence.to_be_bytes());
        out[RECORDS_COUNT_AT..][..4].copy_from_slice(&self.records_count.to_be_bytes());
    }

    /// Whole batch size on disk and on the wire: 12 + batchLength.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the batch's last record (or last offset it once held, after
    /// compaction).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Number of offsets the batch spans: lastOffsetDelta + 1.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Compression codec, attribute bits 0-2.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Name of the compression codec, as kafka-dump-log prints it.
    pub fn compression_name(&self) -> &'static str {
        match self.compression() {
            0 => "none",
            1 => "gzip",
            2 => "snappy",
            3 => "lz4",
            4 => "zstd",
            _ => "unknown",
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// True when timestamps are LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// CRC-32C of a whole batch's covered region (`attributes`..end). `batch`
/// must be at least [`CRC_START`] bytes; shorter input yields the CRC of
/// nothing.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_START..).unwrap_or(&[]))
}

/// Fills in `batchLength` and the CRC of a fully written batch (all of
/// `batch`, header first). Does nothing to input shorter than a header.
pub fn seal(batch: &mut [u8]) {
    if batch.len() < HEADER_LEN {
        return;
    }
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[BATCH_LENGTH_AT..][..4].copy_from_slice(&length.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..][..4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites a batch's `baseOffset` (not covered by the CRC, so the batch
/// stays valid). Input shorter than 8 bytes is left alone.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if let Some(field) = batch.get_mut(BASE_OFFSET_AT..BASE_OFFSET_AT + 8) {
        field.copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// One whole batch, CRC checked, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    pub header: BatchHeader,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
    /// Where the batch starts in the file or buffer it was parsed from.
    pub position: u64,
}

impl<'a> RecordBatch<'a> {
    /// Parses the one whole batch at the start of `buf` and checks its CRC.
    pub fn parse(buf: &'a [u8]) -> Result<RecordBatch<'a>, BatchError> {
        Self::parse_at(buf, 0)
    }

    /// As [`parse`](Self::parse), with errors and `position` reporting
    /// `position` as the batch's location.
    pub fn parse_at(buf: &'a [u8], position: u64) -> Result<RecordBatch<'a>, BatchError> {
        let header = BatchHeader::parse_at(buf, position)?;
        let bytes = Self::whole(buf, &header, position)?;
        let computed = compute_crc(bytes);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                position,
                stored: header.crc,
                computed,
            });
        }
        Ok(RecordBatch {
            header,
            bytes,
            position,
        })
    }

    fn whole(buf: &'a [u8], header: &BatchHeader, position: u64) -> Result<&'a [u8], BatchError> {
        let total = header.total_len();
        buf.get(..total).ok_or(BatchError::Truncated {
            position,
            needed: total,
            available: buf.len(),
        })
    }

    /// Decodes the records of an uncompressed batch (control batches
    /// included: their records are plain records). Compressed batches give
    /// [`BatchError::Compressed`]. The number of records and their total
    /// length must match the header exactly.
    pub fn records(&self) -> Result<Vec<Record<'a>>, BatchError> {
        let codec = self.header.compression();
        if codec != 0 {
            return Err(BatchError::Compressed {
                position: self.position,
                codec,
            });
        }
        let count = self.header.records_count;
        if count < 0 {
            return Err(BatchError::BadHeader {
                position: self.position,
                what: "negative recordsCount",
            });
        }
        let body = self.bytes.get(HEADER_LEN..).unwrap_or(&[]);
        // Every record takes at least 7 bytes; this bounds the allocation.
        let mut out = Vec::with_capacity((count as usize).min(body.len() / 7));
        let mut pos = 0usize;
        for _ in 0..count {
            let at = self.position + (HEADER_LEN + pos) as u64;
            let r = Record::decode(body, &mut pos)
                .map_err(|what| BatchError::BadRecord { position: at, what })?;
            out.push(r);
        }
        if pos != body.len() {
            return Err(BatchError::BadRecord {
                position: self.position + (HEADER_LEN + pos) as u64,
                what: "bytes left after the last record the header counts",
            });
        }
        Ok(out)
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }
}

/// Walks a byte slice of concatenated batches, checking each one's CRC.
/// `position` is the slice's offset in its file, so yielded positions and
/// errors are file positions. Stops after the first error; a trailing partial
/// batch is [`BatchError::Truncated`].
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    at: usize,
    position: u64,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8], position: u64) -> Self {
        BatchIter {
            buf,
            at: 0,
            position,
            failed: false,
        }
    }

    /// File position of the next batch (or of the end, once done).
    pub fn next_position(&self) -> u64 {
        self.position + self.at as u64
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(u64, RecordBatch<'a>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.buf.len() {
            return None;
        }
        let pos = self.next_position();
        match RecordBatch::parse_at(&self.buf[self.at..], pos) {
            Ok(b) => {
                self.at += b.bytes.len();
                Some(Ok((pos, b)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Walks batch headers only (no CRC, no record bytes touched beyond each
/// 61-byte header): the lookup path over memory-mapped segments that were
/// validated when written or opened.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    at: usize,
    position: u64,
    failed: bool,
}

impl<'a> HeaderIter<'a> {
    pub fn new(buf: &'a [u8], position: u64) -> Self {
        HeaderIter {
            buf,
            at: 0,
            position,
            failed: false,
        }
    }
}

impl Iterator for HeaderIter<'_> {
    /// (file position, header)
    type Item = Result<(u64, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.buf.len() {
            return None;
        }
        let pos = self.position + self.at as u64;
        let rest = &self.buf[self.at..];
        let r = BatchHeader::parse_at(rest, pos).and_then(|h| {
            if h.total_len() > rest.len() {
                Err(BatchError::Truncated {
                    position: pos,
                    needed: h.total_len(),
                    available: rest.len(),
                })
            } else {
                Ok(h)
            }
        });
        match r {
            Ok(h) => {
                self.at += h.total_len();
                Some(Ok((pos, h)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Encodes records into one uncompressed v2 batch, CRC computed on finish.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    header: BatchHeader,
    count: i32,
}

impl BatchBuilder {
    pub fn new(base_offset: i64, base_timestamp: i64) -> Self {
        Self::with_buffer(Vec::new(), base_offset, base_timestamp)
    }

    /// Starts a batch in `buf` (cleared first), to reuse its allocation.
    pub fn with_buffer(mut buf: Vec<u8>, base_offset: i64, base_timestamp: i64) -> Self {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            header: BatchHeader {
                base_offset,
                batch_length: 0,
                partition_leader_epoch: -1,
                magic: MAGIC_V2,
                crc: 0,
                attributes: 0,
                last_offset_delta: -1,
                base_timestamp,
                max_timestamp: base_timestamp,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records_count: 0,
            },
            count: 0,
        }
    }

    /// Sets the attribute bits other than compression (timestamp type,
    /// transactional, control); the records written here are never
    /// compressed, so the codec bits are kept at 0.
    pub fn attributes(mut self, attributes: i16) -> Self {
        self.header.attributes = attributes & !COMPRESSION_MASK;
        self
    }

    /// Idempotent/transactional producer identity.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.header.producer_id = producer_id;
        self.header.producer_epoch = producer_epoch;
        self.header.base_sequence = base_sequence;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.header.partition_leader_epoch = epoch;
        self
    }

    /// Appends the next record (offset delta = records pushed so far).
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let delta = timestamp.wrapping_sub(self.header.base_timestamp);
        record::encode_record(&mut self.buf, delta, self.count, key, value, headers);
        if self.count == 0 || timestamp > self.header.max_timestamp {
            self.header.max_timestamp = timestamp;
        }
        self.header.last_offset_delta = self.count;
        self.count += 1;
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if finished now.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The finished batch. A batch with no records gets lastOffsetDelta 0,
    /// as Kafka never writes an empty batch that spans no offset.
    pub fn finish(mut self) -> Vec<u8> {
        self.finish_in_place();
        self.buf
    }

    /// Appends the finished batch to `out`.
    pub fn finish_into(mut self, out: &mut Vec<u8>) {
        self.finish_in_place();
        out.extend_from_slice(&self.buf);
    }

    fn finish_in_place(&mut self) {
        self.header.records_count = self.count;
        self.header.last_offset_delta = self.header.last_offset_delta.max(0);
        let mut h = [0u8; HEADER_LEN];
        self.header.encode(&mut h);
        self.buf[..HEADER_LEN].copy_from_slice(&h);
        seal(&mut self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn header_fields_at_documented_offsets() {
        let mut b = BatchBuilder::new(0x0102_0304_0506_0708, 1_000)
            .producer(77, 3, 9)
            .partition_leader_epoch(5)
            .attributes(TRANSACTIONAL_BIT);
        b.push(1_000, Some(b"k"), Some(b"hello"), &[]);
        b.push(1_007, None, Some(b"world"), &[("h", Some(b"v"))]);
        let bytes = b.finish();

        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let i32_at = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let i16_at = |at: usize| i16::from_be_bytes(bytes[at..at + 2].try_into().unwrap());
        assert_eq!(i64_at(0), 0x0102_0304_0506_0708, "baseOffset at 0");
        assert_eq!(&bytes[0..8], &[1, 2, 3, 4, 5, 6, 7, 8], "big-endian");
        assert_eq!(i32_at(8) as usize, bytes.len() - 12, "batchLength at 8");
        assert_eq!(i32_at(12), 5, "partitionLeaderEpoch at 12");
        assert_eq!(bytes[16], 2, "magic at 16");
        assert_eq!(
            i32_at(17) as u32,
            crc32c::crc32c(&bytes[21..]),
            "crc at 17 covers 21..end"
        );
        assert_eq!(i16_at(21), 0x10, "attributes at 21");
        assert_eq!(i32_at(23), 1, "lastOffsetDelta at 23");
        assert_eq!(i64_at(27), 1_000, "baseTimestamp at 27");
        assert_eq!(i64_at(35), 1_007, "maxTimestamp at 35");
        assert_eq!(i64_at(43), 77, "producerId at 43");
        assert_eq!(i16_at(51), 3, "producerEpoch at 51");
        assert_eq!(i32_at(53), 9, "baseSequence at 53");
        assert_eq!(i32_at(57), 2, "recordsCount at 57");
        // First record right after the header: length varint, attributes 0,
        // timestampDelta 0, offsetDelta 0, key len 1 "k", value len 5 "hello", 0 headers.
        let body = 1 + 1 + 1 + (1 + 1) + (1 + 5) + 1;
        assert_eq!(
            &bytes[61..61 + 1 + body],
            &[
                (body as u8) << 1,
                0,
                0,
                0,
                2,
                b'k',
                10,
                b'h',
                b'e',
                b'l',
                b'l',
                b'o',
                0
            ]
        );

        let batch = RecordBatch::parse(&bytes).unwrap();
        assert!(batch.header.is_transactional());
        assert!(!batch.header.is_control());
        let recs = batch.records().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].timestamp_delta, 7);
        assert_eq!(recs[1].offset_delta, 1);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].headers[0].key, "h");
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid() {
        let mut b = BatchBuilder::new(0, 0);
        b.push(0, None, Some(b"x"), &[]);
        let mut bytes = b.finish();
        set_base_offset(&mut bytes, 123_456);
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(batch.base_offset(), 123_456);
        set_base_offset(&mut [0u8; 3], 1); // too short: no panic
    }

    #[test]
    fn corruption_is_reported_with_position() {
        let mut b = BatchBuilder::new(0, 0);
        b.push(0, None, Some(b"abc"), &[]);
        let one = b.finish();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let n = one.len();

        let mut flipped = two.clone();
        flipped[n + 70] ^= 1;
        let r: Vec<_> = BatchIter::new(&flipped, 1000).collect();
        assert!(r[0].is_ok());
        assert!(matches!(
            r[1],
            Err(BatchError::CrcMismatch { position, .. }) if position == 1000 + n as u64
        ));

        let truncated = &two[..two.len() - 1];
        let r: Vec<_> = BatchIter::new(truncated, 0).collect();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1].as_ref().unwrap_err(),
            &BatchError::Truncated {
                position: n as u64,
                needed: n,
                available: n - 1
            }
        );

        let mut magic = one.clone();
        magic[MAGIC_AT] = 1;
        assert_eq!(
            RecordBatch::parse(&magic).unwrap_err(),
            BatchError::BadMagic {
                position: 0,
                magic: 1
            }
        );

        let mut len = one.clone();
        len[BATCH_LENGTH_AT..][..4].copy_from_slice(&3i32.to_be_bytes());
        assert!(matches!(
            RecordBatch::parse(&len),
            Err(BatchError::BadLength { length: 3, .. })
        ));
        let err = RecordBatch::parse(&len).unwrap_err().to_string();
        assert!(err.contains("byte 0"), "{err}");
    }

    #[test]
    fn compressed_batch_records_are_not_decoded() {
        let mut bytes = BatchBuilder::new(0, 0).finish();
        bytes[ATTRIBUTES_AT + 1] = 4; // zstd
        bytes.extend_from_slice(b"opaque payload");
        seal(&mut bytes);
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(batch.header.compression_name(), "zstd");
        assert!(matches!(
            batch.records(),
            Err(BatchError::Compressed { codec: 4, .. })
        ));
    }

    proptest! {
        #[test]
        fn batch_round_trip(
            base in any::<i64>(),
            ts in -1_000_000_000_000i64..4_000_000_000_000,
            recs in proptest::collection::vec(
                (
                    0i64..100_000,
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                    proptest::collection::vec(
                        ("[a-z]{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))),
                        0..3,
                    ),
                ),
                0..20,
            ),
        ) {
            let mut b = BatchBuilder::new(base, ts);
            for (dt, k, v, h) in &recs {
                let h: Vec<(&str, Option<&[u8]>)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                b.push(ts + dt, k.as_deref(), v.as_deref(), &h);
            }
            let bytes = b.finish();
            let batch = RecordBatch::parse(&bytes).unwrap();
            prop_assert_eq!(batch.bytes.len(), bytes.len());
            prop_assert_eq!(batch.header.base_offset, base);
            prop_assert_eq!(batch.header.records_count as usize, recs.len());
            let max_ts = recs.iter().map(|r| ts + r.0).max().unwrap_or(ts);
            prop_assert_eq!(batch.header.max_timestamp, max_ts);
            let decoded = batch.records().unwrap();
            prop_assert_eq!(decoded.len(), recs.len());
            for (i, (r, (dt, k, v, h))) in decoded.iter().zip(&recs).enumerate() {
                prop_assert_eq!(r.offset_delta as usize, i);
                prop_assert_eq!(r.timestamp_delta, *dt);
                prop_assert_eq!(r.key, k.as_deref());
                prop_assert_eq!(r.value, v.as_deref());
                prop_assert_eq!(r.headers.len(), h.len());
            }
        }

        #[test]
        fn parsing_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for (_, b) in BatchIter::new(&bytes, 0).flatten() {
                let _ = b.records();
            }
            for r in HeaderIter::new(&bytes, 0) {
                let _ = r;
            }
        }
    }
}
