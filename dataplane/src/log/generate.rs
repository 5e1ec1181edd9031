//! Deterministic test data: `records` records of `record_size` bytes,
//! `records_per_batch` to a batch, all derived from a seed and the record's
//! offset, so any record can be recomputed later ([`record_value`]) to check
//! what a consumer received.
//!
//! Values are alphanumeric ASCII (no newline), so `kcat -C` prints one value
//! per line. Keys, when enabled, are the offset as 20 decimal digits.
//! Timestamps are [`GEN_BASE_TIMESTAMP`] + offset (milliseconds).
//!
//! The hot loop writes straight into one reused buffer: no allocation per
//! record or batch, one CRC pass per batch. A value is a window of a 64 KiB
//! per-seed stream of random alphanumerics, starting at a position hashed
//! from the offset, so making one is a memcpy.

use std::path::Path;
use std::time::{Duration, Instant};

use super::batch::{BatchHeader, HEADER_LEN, MAGIC_V2, seal};
use super::partition::{LogError, LogOptions, PartitionLog, TopicPartition};
use super::record::{put_varint, put_varlong, varint_len, varlong_len};

/// Timestamp of the record at offset 0 (2023-11-14T22:13:20Z).
pub const GEN_BASE_TIMESTAMP: i64 = 1_700_000_000_000;
/// Length of a generated key.
pub const KEY_LEN: usize = 20;
/// Largest record size the generator accepts.
pub const MAX_RECORD_SIZE: usize = 64 << 20;
/// Bytes of batches handed to one `append` call.
const APPEND_CHUNK: usize = 4 << 20;

/// 64 alphanumeric characters, so six random bits pick one.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789Kq";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenSpec {
    pub records: u64,
    /// Bytes of each record value.
    pub record_size: usize,
    pub records_per_batch: u32,
    pub seed: u64,
    /// Give each record a key ([`record_key`]); otherwise keys are null.
    pub key: bool,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            records: 1000,
            record_size: 100,
            records_per_batch: 100,
            seed: 0,
            key: false,
        }
    }
}

impl GenSpec {
    fn validate(&self) -> Result<(), LogError> {
        if self.records_per_batch == 0 || self.records_per_batch > i32::MAX as u32 {
            return Err(LogError::BadOptions(
                "records per batch must be between 1 and 2147483647",
            ));
        }
        if self.record_size > MAX_RECORD_SIZE {
            return Err(LogError::BadOptions("record size is at most 64 MiB"));
        }
        Ok(())
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenSummary {
    /// Offset of the first generated record.
    pub first_offset: i64,
    /// High watermark afterwards.
    pub next_offset: i64,
    pub records: u64,
    pub batches: u64,
    /// Bytes of batches written.
    pub bytes: u64,
    pub elapsed: Duration,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Period of the character stream values are cut from.
const PATTERN_LEN: usize = 1 << 16;

/// The seed's character stream: `PATTERN_LEN` random alphanumerics.
fn make_pattern(seed: u64) -> Box<[u8]> {
    let mut p = vec![0u8; PATTERN_LEN].into_boxed_slice();
    let mut state = mix(seed ^ GOLDEN);
    for chunk in p.chunks_mut(8) {
        state = state.wrapping_add(GOLDEN);
        let x = mix(state);
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = ALPHABET[((x >> (8 * i)) & 63) as usize];
        }
    }
    p
}

thread_local! {
    static PATTERN: std::cell::RefCell<Option<(u64, Box<[u8]>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the seed's pattern, built once per thread and seed.
fn with_pattern<R>(seed: u64, f: impl FnOnce(&[u8]) -> R) -> R {
    PATTERN.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(s, _)| *s != seed) {
            *cell = Some((seed, make_pattern(seed)));
        }
        match cell.as_ref() {
            Some((_, p)) => f(p),
            None => f(&make_pattern(seed)),
        }
    })
}

/// Where the value of the record at `offset` starts in the pattern.
fn value_start(seed: u64, offset: i64) -> usize {
    (mix(seed ^ mix((offset as u64).wrapping_add(GOLDEN))) % PATTERN_LEN as u64) as usize
}

/// Calls `sink` with the consecutive pieces of the value of the record at
/// `offset`: the seed's pattern read cyclically from a per-offset start, so
/// producing a value is a memcpy.
fn value_pieces(seed: u64, offset: i64, size: usize, mut sink: impl FnMut(&[u8])) {
    with_pattern(seed, |p| {
        let mut start = value_start(seed, offset);
        let mut left = size;
        while left > 0 {
            let n = left.min(PATTERN_LEN - start);
            sink(&p[start..start + n]);
            left -= n;
            start = 0;
        }
    });
}

/// Fills `out` with the value of the record at `offset` (its length is the
/// record size). A shorter value is a prefix of a longer one.
pub fn fill_value(seed: u64, offset: i64, out: &mut [u8]) {
    let mut at = 0;
    value_pieces(seed, offset, out.len(), |piece| {
        out[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    });
}

/// The exact value of the generated record at `offset`.
pub fn record_value(seed: u64, offset: i64, size: usize) -> Vec<u8> {
    let mut v = vec![0; size];
    fill_value(seed, offset, &mut v);
    v
}

fn key_digits(offset: i64) -> [u8; KEY_LEN] {
    let mut k = [b'0'; KEY_LEN];
    let mut n = offset.unsigned_abs();
    for d in k.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// The key of the generated record at `offset`: the offset as 20 decimal
/// digits (the same for every seed).
pub fn record_key(_seed: u64, offset: i64) -> Vec<u8> {
    key_digits(offset).to_vec()
}

/// The timestamp of the generated record at `offset`.
pub fn record_timestamp(offset: i64) -> i64 {
    GEN_BASE_TIMESTAMP.wrapping_add(offset)
}

/// Appends one batch of `count` generated records, the first at
/// `first_offset`, to `out`.
pub fn batch_into(spec: &GenSpec, first_offset: i64, count: u32, out: &mut Vec<u8>) {
    let count = count.clamp(1, i32::MAX as u32);
    let size = spec.record_size.min(MAX_RECORD_SIZE);
    let start = out.len();
    let key_part = if spec.key {
        varint_len(KEY_LEN as i32) + KEY_LEN
    } else {
        varint_len(-1)
    };
    let value_part = varint_len(size as i32) + size;
    out.reserve(HEADER_LEN + count as usize * (size + key_part + 24));
    out.resize(start + HEADER_LEN, 0);
    for i in 0..count {
        let offset = first_offset.wrapping_add(i64::from(i));
        let delta = i as i32;
        let body =
            1 + varlong_len(i64::from(delta)) + varint_len(delta) + key_part + value_part + 1;
        put_varint(out, body as i32);
        out.push(0);
        put_varlong(out, i64::from(delta));
        put_varint(out, delta);
        if spec.key {
            put_varint(out, KEY_LEN as i32);
            out.extend_from_slice(&key_digits(offset));
        } else {
            put_varint(out, -1);
        }
        put_varint(out, size as i32);
        value_pieces(spec.seed, offset, size, |piece| {
            out.extend_from_slice(piece)
        });
        put_varint(out, 0); // no headers
    }
    let base_timestamp = record_timestamp(first_offset);
    let header = BatchHeader {
        base_offset: first_offset,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: MAGIC_V2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count as i32 - 1,
        base_timestamp,
        max_timestamp: base_timestamp.wrapping_add(i64::from(count) - 1),
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: count as i32,
    };
    let mut h = [0u8; HEADER_LEN];
    header.encode(&mut h);
    out[start..start + HEADER_LEN].copy_from_slice(&h);
    seal(&mut out[start..]);
}

/// One full batch of `spec.records_per_batch` records starting at
/// `first_offset` (what a producer sends).
pub fn batch_for(spec: &GenSpec, first_offset: i64) -> Vec<u8> {
    let mut out = Vec::new();
    batch_into(spec, first_offset, spec.records_per_batch, &mut out);
    out
}

/// Appends `spec` to an open log, continuing from its high watermark (values
/// are those of the offsets actually assigned). The caller must be the only
/// appender meanwhile.
pub fn generate_into(log: &PartitionLog, spec: &GenSpec) -> Result<GenSummary, LogError> {
    spec.validate()?;
    let t0 = Instant::now();
    let first_offset = log.high_watermark();
    let mut buf = Vec::with_capacity(APPEND_CHUNK + spec.record_size * 2 + 4096);
    let (mut produced, mut batches, mut bytes) = (0u64, 0u64, 0u64);
    while produced < spec.records {
        buf.clear();
        let chunk_first = first_offset + produced as i64;
        while produced < spec.records && buf.len() < APPEND_CHUNK {
            let n = (spec.records - produced).min(u64::from(spec.records_per_batch)) as u32;
            batch_into(spec, first_offset + produced as i64, n, &mut buf);
            produced += u64::from(n);
            batches += 1;
        }
        let got = log.append(&mut buf)?;
        if got != chunk_first {
            return Err(LogError::ConcurrentAppend {
                expected: chunk_first,
                got,
            });
        }
        bytes += buf.len() as u64;
    }
    Ok(GenSummary {
        first_offset,
        next_offset: log.high_watermark(),
        records: produced,
        batches,
        bytes,
        elapsed: t0.elapsed(),
    })
}

/// Creates (if needed) `<log_dir>/<topic>-<partition>` with default options,
/// appends `spec` to it and fsyncs.
pub fn generate(
    log_dir: &Path,
    tp: &TopicPartition,
    spec: &GenSpec,
) -> Result<GenSummary, LogError> {
    generate_with(log_dir, tp, spec, LogOptions::default())
}

/// As [`generate`], with explicit log options (segment size, index interval).
pub fn generate_with(
    log_dir: &Path,
    tp: &TopicPartition,
    spec: &GenSpec,
    opts: LogOptions,
) -> Result<GenSummary, LogError> {
    let log = PartitionLog::create(log_dir, tp, opts)?;
    let summary = generate_into(&log, spec)?;
    log.sync()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::RecordBatch;

    #[test]
    fn values_are_deterministic_printable_and_distinct() {
        let a = record_value(7, 42, 1000);
        assert_eq!(a, record_value(7, 42, 1000));
        assert_ne!(a, record_value(7, 43, 1000));
        assert_ne!(a, record_value(8, 42, 1000));
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
        // A shorter value is a prefix of a longer one.
        assert_eq!(&a[..13], &record_value(7, 42, 13)[..]);
        assert_eq!(record_key(0, 42), b"00000000000000000042");
    }

    #[test]
    fn generated_batch_decodes_to_the_documented_records() {
        let spec = GenSpec {
            records: 10,
            record_size: 33,
            records_per_batch: 5,
            seed: 99,
            key: true,
        };
        let bytes = batch_for(&spec, 1000);
        let b = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(b.header.base_offset, 1000);
        assert_eq!(b.header.records_count, 5);
        assert_eq!(b.header.base_timestamp, record_timestamp(1000));
        assert_eq!(b.header.max_timestamp, record_timestamp(1004));
        for r in b.records().unwrap() {
            let off = 1000 + i64::from(r.offset_delta);
            assert_eq!(r.value, Some(&record_value(99, off, 33)[..]));
            assert_eq!(r.key, Some(&record_key(99, off)[..]));
            assert_eq!(
                b.header.base_timestamp + r.timestamp_delta,
                record_timestamp(off)
            );
            assert!(r.headers.is_empty());
        }
    }
}
