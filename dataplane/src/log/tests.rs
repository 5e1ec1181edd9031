//! Tests of a whole partition log: append, fetch, open/recovery, rolling,
//! concurrency, and the generator checked through inspect.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::batch::{
    ATTRIBUTES_AT, BatchBuilder, BatchError, BatchIter, CONTROL_BIT, CRC_AT, MAGIC_AT, RecordBatch,
    TRANSACTIONAL_BIT, seal,
};
use super::generate::{self, GenSpec};
use super::inspect::inspect;
use super::partition::{LogError, LogOptions, PartitionLog, TopicPartition};
use super::segment::{IndexEntry, index_file_name, log_file_name};

fn tp() -> TopicPartition {
    TopicPartition::new("events", 0)
}

fn small(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogOptions::default()
    }
}

/// A batch of `n` records whose values say which batch and record they are.
fn batch(tag: u32, n: usize, value_len: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(0, 1_000 + i64::from(tag));
    for i in 0..n {
        let mut v = format!("b{tag}r{i}-").into_bytes();
        v.resize(value_len.max(v.len()), b'.');
        b.push(1_000 + i64::from(tag), Some(b"key"), Some(&v), &[]);
    }
    b.finish()
}

/// Every file in the partition directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Fetches everything from `from` to the high watermark, checking each
/// slice; returns (base offset, last offset) of every batch in order.
fn fetch_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut at = from;
    while let Some(s) = log.fetch_slice(at, max_bytes).unwrap() {
        let bytes = s.bytes();
        assert_eq!(bytes.len(), s.len);
        let mut n = 0;
        for item in BatchIter::new(bytes, s.position) {
            let (_, b) = item.unwrap();
            out.push((b.base_offset(), b.last_offset()));
            n += 1;
        }
        assert!(n >= 1);
        let last = out.last().unwrap().1;
        assert_eq!(last, s.last_offset);
        at = last + 1;
    }
    out
}

#[test]
fn append_assigns_offsets_and_fetch_returns_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::create(dir.path(), &tp(), LogOptions::default()).unwrap();
    assert_eq!(log.high_watermark(), 0);
    assert!(log.fetch_slice(0, 1 << 20).unwrap().is_none());

    let mut one = batch(0, 3, 10);
    assert_eq!(log.append(&mut one).unwrap(), 0);
    assert_eq!(RecordBatch::parse(&one).unwrap().base_offset(), 0);
    let mut two = [batch(1, 2, 10), batch(2, 5, 10)].concat();
    assert_eq!(log.append(&mut two).unwrap(), 3);
    // Base offsets were rewritten in the caller's buffer too.
    let rewritten: Vec<i64> = BatchIter::new(&two, 0)
        .map(|b| b.unwrap().1.base_offset())
        .collect();
    assert_eq!(rewritten, [3, 5]);
    assert_eq!(log.high_watermark(), 10);
    assert_eq!(log.log_start_offset(), 0);

    // An offset in the middle of a batch gives that whole batch first.
    let s = log.fetch_slice(6, 1 << 20).unwrap().unwrap();
    assert_eq!(s.first_offset, 5);
    assert_eq!(s.last_offset, 9);
    assert_eq!(s.high_watermark, 10);
    assert_eq!(s.log_start_offset, 0);
    let b = RecordBatch::parse(s.bytes()).unwrap();
    assert_eq!(b.records().unwrap()[4].value.unwrap(), b"b2r4-.....");
    // The slice can also be read from the file (the sendfile path).
    let mut via_file = vec![0; s.len];
    std::os::unix::fs::FileExt::read_exact_at(&*s.file, &mut via_file, s.position).unwrap();
    assert_eq!(via_file, s.bytes());

    // max_bytes smaller than one batch still gives one batch (KIP-74).
    let s = log.fetch_slice(0, 1).unwrap().unwrap();
    assert_eq!((s.first_offset, s.last_offset, s.len), (0, 2, one.len()));
    // Exactly two batches' worth gives two.
    let s = log
        .fetch_slice(0, one.len() + two.len() - 1)
        .unwrap()
        .unwrap();
    assert_eq!(s.last_offset, 4);
    let s = log.fetch_slice(0, one.len() + two.len()).unwrap().unwrap();
    assert_eq!(s.last_offset, 9);
    assert_eq!(s.bytes(), [&one[..], &two[..]].concat());

    assert!(
        log.fetch_slice(10, 100).unwrap().is_none(),
        "at the high watermark"
    );
    assert!(matches!(
        log.fetch_slice(11, 100),
        Err(LogError::OffsetOutOfRange {
            offset: 11,
            high_watermark: 10,
            ..
        })
    ));
    assert!(matches!(
        log.fetch_slice(-1, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_and_reopen_serves_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small(2_000);
    let log = PartitionLog::create(dir.path(), &tp(), opts).unwrap();
    let mut expected = Vec::new();
    let mut next = 0;
    for tag in 0..40 {
        let n = 1 + (tag as usize % 5);
        let mut b = batch(tag, n, 30 + tag as usize * 3);
        assert_eq!(log.append(&mut b).unwrap(), next);
        expected.push((next, next + n as i64 - 1));
        next += n as i64;
    }
    // One multi-batch append that straddles a roll.
    let mut many: Vec<u8> = (40..50).flat_map(|t| batch(t, 2, 100)).collect();
    assert_eq!(log.append(&mut many).unwrap(), next);
    for _ in 40..50 {
        expected.push((next, next + 1));
        next += 2;
    }

    let segs = log.segments();
    assert!(segs.len() > 3, "rolled into {} segments", segs.len());
    for (i, s) in segs.iter().enumerate() {
        assert!(s.committed_len() <= 2_000);
        assert!(s.log_path().ends_with(log_file_name(s.base_offset())));
        assert!(
            dir.path()
                .join("events-0")
                .join(index_file_name(s.base_offset()))
                .exists()
        );
        if let Some(n) = segs.get(i + 1) {
            assert_eq!(s.next_offset(), n.base_offset(), "segments are contiguous");
        }
        // The base offset is the first batch's offset.
        let first = RecordBatch::parse(s.bytes()).unwrap();
        assert_eq!(first.base_offset(), s.base_offset());
    }
    assert_eq!(fetch_all(&log, 0, 700), expected);
    // A slice never spans two segments.
    let s = log.fetch_slice(0, usize::MAX).unwrap().unwrap();
    assert_eq!(s.len as u64, segs[0].committed_len());
    let indexes: Vec<Vec<IndexEntry>> = segs.iter().map(|s| s.index_entries()).collect();
    assert!(indexes.iter().any(|i| !i.is_empty()));
    drop(log);

    let before = snapshot(&dir.path().join("events-0"));
    let log = PartitionLog::open(dir.path(), &tp(), opts).unwrap();
    assert!(log.damage().is_empty());
    assert_eq!(log.high_watermark(), next);
    assert_eq!(fetch_all(&log, 0, 700), expected);
    let reopened: Vec<Vec<IndexEntry>> = log.segments().iter().map(|s| s.index_entries()).collect();
    assert_eq!(reopened, indexes);
    assert_eq!(
        snapshot(&dir.path().join("events-0")),
        before,
        "open writes nothing"
    );

    // Appending resumes the last segment.
    let mut b = batch(99, 1, 10);
    assert_eq!(log.append(&mut b).unwrap(), next);
    assert_eq!(log.segments().len(), segs.len());
    expected.push((next, next));
    assert_eq!(fetch_all(&log, 0, 100_000), expected);
    // The index files on disk match the in-memory ones.
    for s in log.segments() {
        let on_disk = IndexEntry::parse_all(&std::fs::read(s.index_path()).unwrap());
        assert_eq!(on_disk, s.index_entries(), "{}", s.index_path().display());
    }
}

#[test]
fn open_serves_the_valid_prefix_of_a_truncated_segment() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("events-0");
    let mut sizes = Vec::new();
    {
        let log = PartitionLog::create(dir.path(), &tp(), LogOptions::default()).unwrap();
        for tag in 0..5 {
            let mut b = batch(tag, 2, 50);
            sizes.push(b.len() as u64);
            log.append(&mut b).unwrap();
        }
    }
    let path = pdir.join(log_file_name(0));
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 10]).unwrap();
    let before = snapshot(&pdir);

    let log = PartitionLog::open(dir.path(), &tp(), LogOptions::default()).unwrap();
    let last_pos: u64 = sizes[..4].iter().sum();
    assert_eq!(log.damage().len(), 1);
    let d = &log.damage()[0];
    assert_eq!(d.path, path);
    assert_eq!(d.position, last_pos);
    assert!(matches!(d.error, BatchError::Truncated { .. }));
    let msg = d.to_string();
    assert!(
        msg.contains("00000000000000000000.log") && msg.contains(&format!("byte {last_pos}")),
        "{msg}"
    );
    assert_eq!(log.high_watermark(), 8);
    assert_eq!(fetch_all(&log, 0, 1 << 20).len(), 4);
    assert_eq!(snapshot(&pdir), before, "nothing modified by open");

    // Appending goes to a new segment after the valid prefix, leaving the
    // damaged bytes alone; a reopen serves both.
    let mut b = batch(9, 3, 20);
    assert_eq!(log.append(&mut b).unwrap(), 8);
    assert_eq!(std::fs::read(&path).unwrap(), &full[..full.len() - 10]);
    assert!(pdir.join(log_file_name(8)).exists());
    drop(log);
    let log = PartitionLog::open(dir.path(), &tp(), LogOptions::default()).unwrap();
    assert_eq!(log.damage().len(), 1);
    assert_eq!(log.high_watermark(), 11);
    let batches = fetch_all(&log, 0, 1 << 20);
    assert_eq!(batches.len(), 5);
    assert_eq!(batches[4], (8, 10));
}

#[test]
fn open_stops_at_a_flipped_byte_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("events-0");
    let mut positions = Vec::new();
    {
        let log = PartitionLog::create(dir.path(), &tp(), small(1 << 20)).unwrap();
        let mut pos = 0;
        for tag in 0..5 {
            let mut b = batch(tag, 3, 200);
            positions.push(pos);
            pos += b.len() as u64;
            log.append(&mut b).unwrap();
        }
    }
    let path = pdir.join(log_file_name(0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[positions[2] as usize + 100] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    // A stale index on disk must not be trusted either.
    std::fs::write(pdir.join(index_file_name(0)), [0u8; 24]).unwrap();
    let before = snapshot(&pdir);

    let log = PartitionLog::open(dir.path(), &tp(), small(1 << 20)).unwrap();
    let d = &log.damage()[0];
    assert_eq!((d.path.clone(), d.position), (path, positions[2]));
    assert!(matches!(d.error, BatchError::CrcMismatch { .. }), "{d}");
    assert_eq!(log.high_watermark(), 6);
    assert_eq!(fetch_all(&log, 0, 1), [(0, 2), (3, 5)]);
    assert!(log.fetch_slice(7, 1).is_err());
    assert!(
        log.segments()[0]
            .index_entries()
            .iter()
            .all(|e| u64::from(e.position) < positions[2])
    );
    assert_eq!(snapshot(&pdir), before);
}

#[test]
fn rejected_appends_leave_the_files_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("events-0");
    let log = PartitionLog::create(dir.path(), &tp(), small(4_000)).unwrap();
    log.append(&mut batch(0, 2, 10)).unwrap();
    let before = snapshot(&pdir);
    let good = batch(1, 2, 10);

    let mut bad_crc = good.clone();
    bad_crc[80] ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[MAGIC_AT] = 1;
    let truncated = good[..good.len() - 1].to_vec();
    let too_big = batch(2, 1, 5_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad crc", bad_crc.clone()),
        ("bad magic", bad_magic),
        ("truncated", truncated),
        ("good then bad crc", [good.clone(), bad_crc].concat()),
        (
            "good then truncated header",
            [good.clone(), good[..30].to_vec()].concat(),
        ),
        ("larger than a segment", too_big),
        ("empty", Vec::new()),
    ];
    for (what, mut bytes) in cases {
        let copy = bytes.clone();
        let err = log.append(&mut bytes).expect_err(what);
        assert_eq!(bytes, copy, "{what}: the caller's buffer is not modified");
        assert_eq!(snapshot(&pdir), before, "{what}: {err}");
        assert_eq!(log.high_watermark(), 2, "{what}");
    }
    let mut bad = [good.clone(), good[..30].to_vec()].concat();
    let err = log.append(&mut bad).unwrap_err().to_string();
    assert!(err.contains(&format!("byte {}", good.len())), "{err}");
    // The log still works.
    assert_eq!(log.append(&mut good.clone()).unwrap(), 2);
}

/// A batch with the given attribute bits and arbitrary payload, CRC fixed.
fn opaque_batch(attributes: i16, payload: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new(0, 5).finish();
    b[ATTRIBUTES_AT..][..2].copy_from_slice(&attributes.to_be_bytes());
    b[23..27].copy_from_slice(&4i32.to_be_bytes()); // lastOffsetDelta: 5 offsets
    b[57..61].copy_from_slice(&5i32.to_be_bytes()); // recordsCount
    b.extend_from_slice(payload);
    seal(&mut b);
    b
}

#[test]
fn compressed_transactional_and_control_batches_pass_through_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::create(dir.path(), &tp(), LogOptions::default()).unwrap();
    let gzip = opaque_batch(1, b"\x1f\x8bnot really gzip but opaque");
    let zstd_txn = opaque_batch(4 | TRANSACTIONAL_BIT, &[0xff; 300]);
    let control = opaque_batch(CONTROL_BIT | TRANSACTIONAL_BIT, &[0, 0, 0, 1, 2, 3]);
    let mut txn_plain = BatchBuilder::new(0, 7)
        .producer(1234, 2, 0)
        .attributes(TRANSACTIONAL_BIT);
    txn_plain.push(7, None, Some(b"in a transaction"), &[]);
    let txn_plain = txn_plain.finish();
    // A well-formed COMMIT marker: key (version 0, type 1), value (version 0,
    // coordinator epoch 5).
    let mut marker = BatchBuilder::new(0, 9)
        .producer(1234, 2, -1)
        .attributes(CONTROL_BIT | TRANSACTIONAL_BIT);
    marker.push(9, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5]), &[]);
    let marker = marker.finish();

    let mut offset = 0;
    for original in [&gzip, &zstd_txn, &control, &txn_plain, &marker] {
        let mut b = original.clone();
        let base = log.append(&mut b).unwrap();
        assert_eq!(base, offset);
        let s = log.fetch_slice(base, 1).unwrap().unwrap();
        let got = s.bytes();
        assert_eq!(got.len(), original.len());
        assert_eq!(
            &got[..8],
            &base.to_be_bytes(),
            "only the base offset changed"
        );
        assert_eq!(&got[8..], &original[8..]);
        assert_eq!(&got[CRC_AT..CRC_AT + 4], &original[CRC_AT..CRC_AT + 4]);
        offset += RecordBatch::parse(got).unwrap().header.offset_count();
    }
    // The crafted control batch's payload is not records, so only the
    // non-verbose dump (headers and CRCs) passes.
    let mut out = Vec::new();
    let summary = inspect(&dir.path().join("events-0"), &mut out, false).unwrap();
    assert_eq!(summary.batches, 5);
    assert_eq!(summary.compressed_batches, 2);
    assert_eq!(summary.transactional_batches, 4);
    assert_eq!(summary.control_batches, 2);
}

#[test]
fn concurrent_appends_and_fetches_never_see_partial_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::create(dir.path(), &tp(), small(64 * 1024)).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let log = Arc::clone(&log);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut checked = 0u64;
                let mut x = r + 1;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let hw = log.high_watermark();
                    if hw > 0 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let offset = (x >> 33) as i64 % hw;
                        let max = 1 + (x >> 20) as usize % 20_000;
                        let s = log.fetch_slice(offset, max).unwrap().unwrap();
                        assert!(s.first_offset <= offset && offset <= s.last_offset);
                        assert!(s.last_offset < s.high_watermark);
                        let mut expect = s.first_offset;
                        for item in BatchIter::new(s.bytes(), s.position) {
                            let (_, b) = item.expect("whole batch with a valid CRC");
                            assert_eq!(b.base_offset(), expect, "contiguous offsets");
                            let recs = b.records().unwrap();
                            let tag = b.header.base_timestamp - 1_000;
                            assert!(
                                recs[0]
                                    .value
                                    .unwrap()
                                    .starts_with(format!("b{tag}r0-").as_bytes())
                            );
                            expect = b.last_offset() + 1;
                            checked += 1;
                        }
                        assert_eq!(expect, s.last_offset + 1);
                    }
                    if finished {
                        return checked;
                    }
                }
            })
        })
        .collect();
    let mut next = 0;
    for tag in 0..1500u32 {
        let n = 1 + (tag as usize * 7) % 9;
        let mut b = if tag % 10 == 0 {
            (0..3)
                .flat_map(|k| batch(tag, n + k, 40))
                .collect::<Vec<u8>>()
        } else {
            batch(tag, n, 20 + (tag as usize * 13) % 400)
        };
        let count: i64 = BatchIter::new(&b, 0)
            .map(|x| x.unwrap().1.header.offset_count())
            .sum();
        assert_eq!(log.append(&mut b).unwrap(), next);
        next += count;
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(log.segments().len() > 2);
    assert_eq!(fetch_all(&log, 0, 50_000).last().unwrap().1, next - 1);
}

#[test]
fn only_one_appender_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let a = PartitionLog::create(dir.path(), &tp(), LogOptions::default()).unwrap();
    let b = PartitionLog::open(dir.path(), &tp(), LogOptions::default()).unwrap();
    a.append(&mut batch(0, 1, 1)).unwrap();
    let err = b.append(&mut batch(1, 1, 1)).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    drop(a);
    // Once the first appender is gone, a fresh open can append (b's view
    // of the log is stale, so it is not the one to use).
    drop(b);
    let c = PartitionLog::open(dir.path(), &tp(), LogOptions::default()).unwrap();
    assert_eq!(c.append(&mut batch(2, 1, 1)).unwrap(), 1);
}

#[test]
fn wait_for_data_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::create(dir.path(), &tp(), LogOptions::default()).unwrap());
    assert!(!log.wait_for_data(0, Duration::from_millis(20)));
    let l = Arc::clone(&log);
    let waiter = std::thread::spawn(move || l.wait_for_data(0, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(50));
    log.append(&mut batch(0, 1, 1)).unwrap();
    assert!(waiter.join().unwrap());
    assert!(log.wait_for_data(0, Duration::ZERO));
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::create(dir.path(), &tp(), small(1_000)).unwrap();
    for tag in 0..20 {
        log.append(&mut batch(tag * 10, 2, 100)).unwrap();
    }
    // batch(tag) has every timestamp at 1000 + tag.
    assert_eq!(log.offset_for_timestamp(0), Some(0));
    assert_eq!(log.offset_for_timestamp(1_000 + 50), Some(10));
    assert_eq!(log.offset_for_timestamp(1_000 + 51), Some(12));
    assert_eq!(log.offset_for_timestamp(1_000 + 190), Some(38));
    assert_eq!(log.offset_for_timestamp(1_000 + 191), None);
}

#[test]
fn topic_names_cannot_escape_the_log_dir() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["..", "a/b", "../x", ""] {
        let r = PartitionLog::create(
            dir.path(),
            &TopicPartition::new(bad, 0),
            LogOptions::default(),
        );
        assert!(
            matches!(r, Err(LogError::BadTopicPartition { .. })),
            "{bad:?}"
        );
    }
    assert!(
        PartitionLog::open(dir.path(), &tp(), LogOptions::default()).is_err(),
        "missing dir"
    );
}

#[test]
fn generate_then_inspect_and_check_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenSpec {
        records: 1_003,
        record_size: 57,
        records_per_batch: 10,
        seed: 0xfeed,
        key: true,
    };
    let opts = small(16 * 1024);
    let summary = generate::generate_with(dir.path(), &tp(), &spec, opts).unwrap();
    assert_eq!((summary.first_offset, summary.next_offset), (0, 1_003));
    assert_eq!(summary.batches, 101);

    let pdir = dir.path().join("events-0");
    let mut out = Vec::new();
    let s = inspect(&pdir, &mut out, false).unwrap();
    assert_eq!((s.batches, s.records, s.bytes), (101, 1_003, summary.bytes));
    assert_eq!(
        (s.first_offset, s.last_offset, s.crc_errors),
        (Some(0), Some(1_002), 0)
    );
    assert!(s.files > 1);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("position: ")).count(),
        101
    );
    assert!(text.lines().last().unwrap().starts_with("Summary: "));

    let log = PartitionLog::open(dir.path(), &tp(), opts).unwrap();
    let mut seen = 0;
    let mut at = 0;
    while let Some(sl) = log.fetch_slice(at, 5_000).unwrap() {
        for item in BatchIter::new(sl.bytes(), sl.position) {
            let (_, b) = item.unwrap();
            for r in b.records().unwrap() {
                let off = b.base_offset() + i64::from(r.offset_delta);
                assert_eq!(off, seen);
                assert_eq!(r.value.unwrap(), generate::record_value(spec.seed, off, 57));
                assert_eq!(r.key.unwrap(), generate::record_key(spec.seed, off));
                assert_eq!(
                    b.header.base_timestamp + r.timestamp_delta,
                    generate::record_timestamp(off)
                );
                seen += 1;
            }
        }
        at = sl.last_offset + 1;
    }
    assert_eq!(seen, 1_003);

    // Generating again continues the offsets.
    let more = generate::generate_into(
        &log,
        &GenSpec {
            records: 5,
            ..spec.clone()
        },
    )
    .unwrap();
    assert_eq!((more.first_offset, more.next_offset), (1_003, 1_008));
}

#[test]
fn inspect_reports_damage_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenSpec {
        records: 100,
        record_size: 20,
        records_per_batch: 10,
        ..GenSpec::default()
    };
    generate::generate(dir.path(), &tp(), &spec).unwrap();
    let path = dir.path().join("events-0").join(log_file_name(0));
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    let first_len = RecordBatch::parse(&bytes).unwrap().bytes.len();
    bytes[first_len * 3 + 70] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let mut out = Vec::new();
    let err = inspect(&path, &mut out, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("00000000000000000000.log"), "{msg}");
    assert!(msg.contains(&format!("byte {}", first_len * 3)), "{msg}");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("crc: BAD").count(), 1, "{text}");
    assert!(text.contains("DAMAGED"));

    std::fs::write(&path, &original[..original.len() - 3]).unwrap();
    let err = inspect(&path, &mut Vec::new(), false).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Corrupt {
                source: BatchError::Truncated { .. },
                ..
            }
        ),
        "{err}"
    );
}
