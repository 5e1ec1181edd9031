//! A `kafka-dump-log`-style checker: one line per batch and a summary, for a
//! `.log` file or a whole partition directory. Any damage is an error naming
//! the file and byte position, so the CLI can exit non-zero.
//!
//! Files are streamed through a buffered reader (memory is bounded by the
//! largest batch), so a log being appended to or truncated meanwhile cannot
//! crash the tool the way a memory map could.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::batch::{BatchError, BatchHeader, HEADER_LEN, RecordBatch, compute_crc};
use super::partition::LogError;
use super::segment::parse_log_file_name;

/// Totals over everything inspected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InspectSummary {
    pub files: u64,
    pub batches: u64,
    pub records: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    pub compressed_batches: u64,
    pub transactional_batches: u64,
    pub control_batches: u64,
    pub crc_errors: u64,
}

/// The `.log` files of a partition directory in offset order, or `path`
/// itself if it is a file.
fn log_files(path: &Path) -> Result<Vec<PathBuf>, LogError> {
    let meta = std::fs::metadata(path).map_err(|e| LogError::io("inspecting", path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| LogError::io("listing", path, e))? {
        let entry = entry.map_err(|e| LogError::io("listing", path, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
            files.push((base, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Inspects a `.log` file or a partition directory, writing one line per
/// batch (and, if `verbose`, per record) to `out`, then a summary. Returns
/// the first damage found (after finishing what can still be read) as
/// [`LogError::Corrupt`].
pub fn inspect(
    path: &Path,
    out: &mut dyn Write,
    verbose: bool,
) -> Result<InspectSummary, LogError> {
    let mut summary = InspectSummary::default();
    let mut first_error: Option<LogError> = None;
    let mut next_offset: Option<i64> = None;
    let write_err = |e: io::Error| LogError::io("writing inspection output", Path::new("-"), e);
    for file in log_files(path)? {
        summary.files += 1;
        writeln!(out, "Dumping {}", file.display()).map_err(write_err)?;
        if let Err(e) = inspect_file(&file, out, verbose, &mut summary, &mut next_offset) {
            if let LogError::Corrupt { source, .. } = &e {
                writeln!(out, "ERROR at byte {}: {source}", source.position())
                    .map_err(write_err)?;
            }
            first_error.get_or_insert(e);
        }
    }
    let range = match (summary.first_offset, summary.last_offset) {
        (Some(a), Some(b)) => format!("{a}..{b}"),
        _ => "none".to_string(),
    };
    writeln!(
        out,
        "Summary: {} files, {} batches, {} records, {} bytes, offsets {range}, {} compressed, {} transactional, {} control, {} bad CRC{}",
        summary.files,
        summary.batches,
        summary.records,
        summary.bytes,
        summary.compressed_batches,
        summary.transactional_batches,
        summary.control_batches,
        summary.crc_errors,
        if first_error.is_some() {
            ", DAMAGED"
        } else {
            ""
        },
    )
    .map_err(write_err)?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

fn inspect_file(
    file: &Path,
    out: &mut dyn Write,
    verbose: bool,
    summary: &mut InspectSummary,
    next_offset: &mut Option<i64>,
) -> Result<(), LogError> {
    let f = File::open(file).map_err(|e| LogError::io("opening", file, e))?;
    let file_len = f
        .metadata()
        .map_err(|e| LogError::io("reading metadata of", file, e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let write_err = |e: io::Error| LogError::io("writing inspection output", Path::new("-"), e);
    let corrupt = |e: BatchError| LogError::corrupt(file, e);
    let mut first_error = None;
    let mut batch = Vec::new();
    let mut pos = 0u64;
    while pos < file_len {
        let remaining = file_len - pos;
        let head_len = remaining.min(HEADER_LEN as u64) as usize;
        batch.resize(head_len, 0);
        reader
            .read_exact(&mut batch)
            .map_err(|e| LogError::io("reading", file, e))?;
        let h = match BatchHeader::parse_at(&batch, pos) {
            Ok(h) => h,
            Err(e) => {
                // Without a header there is no way to find the next batch.
                first_error.get_or_insert(corrupt(e));
                break;
            }
        };
        let total = h.total_len() as u64;
        if total > remaining {
            first_error.get_or_insert(corrupt(BatchError::Truncated {
                position: pos,
                needed: h.total_len(),
                available: remaining as usize,
            }));
            break;
        }
        batch.resize(total as usize, 0);
        reader
            .read_exact(&mut batch[HEADER_LEN..])
            .map_err(|e| LogError::io("reading", file, e))?;
        let crc_ok = compute_crc(&batch) == h.crc;
        writeln!(
            out,
            "position: {pos} offsets: {}..{} size: {total} records: {} crc: {} compression: {} transactional: {} control: {} maxTimestamp: {}",
            h.base_offset,
            h.last_offset(),
            h.records_count,
            if crc_ok { "ok" } else { "BAD" },
            h.compression_name(),
            h.is_transactional(),
            h.is_control(),
            h.max_timestamp,
        )
        .map_err(write_err)?;
        if !crc_ok {
            summary.crc_errors += 1;
            first_error.get_or_insert(corrupt(BatchError::CrcMismatch {
                position: pos,
                stored: h.crc,
                computed: compute_crc(&batch),
            }));
        } else {
            if next_offset.is_some_and(|n| h.base_offset < n) || h.last_offset_delta < 0 {
                first_error.get_or_insert(corrupt(BatchError::BadHeader {
                    position: pos,
                    what: "batch offsets go backwards",
                }));
            }
            *next_offset = Some(h.last_offset().saturating_add(1));
            summary.batches += 1;
            summary.records += h.records_count.max(0) as u64;
            summary.bytes += total;
            summary.first_offset.get_or_insert(h.base_offset);
            summary.last_offset = Some(h.last_offset());
            summary.compressed_batches += u64::from(h.compression() != 0);
            summary.transactional_batches += u64::from(h.is_transactional());
            summary.control_batches += u64::from(h.is_control());
            if verbose && h.compression() == 0 {
                match RecordBatch::parse_at(&batch, pos).and_then(|b| b.records()) {
                    Ok(records) => {
                        for r in records {
                            writeln!(
                                out,
                                "| offset: {} timestamp: {} keySize: {} valueSize: {} headers: {}",
                                h.base_offset + i64::from(r.offset_delta),
                                h.base_timestamp.wrapping_add(r.timestamp_delta),
                                r.key.map_or(-1, |k| k.len() as i64),
                                r.value.map_or(-1, |v| v.len() as i64),
                                r.headers.len(),
                            )
                            .map_err(write_err)?;
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(corrupt(e));
                    }
                }
            }
        }
        pos += total;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
