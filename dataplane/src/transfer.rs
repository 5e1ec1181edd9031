//! What a transfer moved and the per-batch verification every consumer runs,
//! whatever path the batches came by (TCP or AF_XDP).

use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::log::{
    BatchError, BatchIter, PartitionLog, TopicPartition,
    partition::{LogError, LogOptions},
};

/// What a transfer moved, for people and scripts (`--json`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TransferReport {
    /// The data path: "copy", "sendfile" (as served), "tcp" or "afxdp".
    pub path: String,
    /// What the path actually obtained (XDP mode, bind mode, ...).
    pub obtained: String,
    pub bytes: u64,
    pub batches: u64,
    pub records: u64,
    pub first_offset: i64,
    pub next_offset: i64,
    pub seconds: f64,
    pub gbit_per_s: f64,
    pub batches_per_s: f64,
    /// Every batch's CRC-32C and offsets were checked.
    pub verified: bool,
    /// Path-specific figures (transport and XDP statistics).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl TransferReport {
    pub fn finish(&mut self, elapsed: Duration) {
        self.seconds = elapsed.as_secs_f64();
        if self.seconds > 0.0 {
            self.gbit_per_s = self.bytes as f64 * 8.0 / self.seconds / 1e9;
            self.batches_per_s = self.batches as f64 / self.seconds;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("batch at offset {offset} fails verification: {source}")]
    BadBatch {
        offset: i64,
        #[source]
        source: BatchError,
    },
    #[error("offsets are not contiguous: expected a batch starting at {expected}, got {got}")]
    Gap { expected: i64, got: i64 },
}

/// Checks batches in order: CRC-32C, and offsets continuing where the
/// previous batch ended.
pub struct Verifier {
    pub next_offset: i64,
    pub report: TransferReport,
    limit: Option<u64>,
}

impl Verifier {
    /// `start`: the offset asked for; `limit`: stop counting after this many batches.
    pub fn new(start: i64, limit: Option<u64>) -> Self {
        let report = TransferReport {
            first_offset: start,
            next_offset: start,
            ..Default::default()
        };
        Verifier {
            next_offset: start,
            report,
            limit,
        }
    }

    pub fn done(&self) -> bool {
        self.limit.is_some_and(|n| self.report.batches >= n)
    }

    /// Verifies the whole batches at the start of `records` (a Fetch records
    /// region or a single batch). A trailing partial batch is allowed, as in
    /// Kafka, and left for the next fetch. Returns the bytes of whole batches
    /// consumed.
    pub fn feed(&mut self, records: &[u8]) -> Result<usize, VerifyError> {
        let mut consumed = 0;
        for item in BatchIter::new(records, 0) {
            if self.done() {
                break;
            }
            let (position, batch) = match item {
                Ok(b) => b,
                Err(BatchError::Truncated { .. }) => break,
                Err(source) => {
                    return Err(VerifyError::BadBatch {
                        offset: self.next_offset,
                        source,
                    });
                }
            };
            let header = &batch.header;
            consumed = position as usize + batch.bytes.len();
            if header.last_offset() < self.next_offset {
                // A fetch returns the whole batch that holds the offset asked
                // for; skip what was already consumed.
                continue;
            }
            if self.report.batches == 0 {
                self.report.first_offset = header.base_offset;
            } else if header.base_offset != self.next_offset {
                return Err(VerifyError::Gap {
                    expected: self.next_offset,
                    got: header.base_offset,
                });
            }
            self.next_offset = header.last_offset() + 1;
            self.report.next_offset = self.next_offset;
            self.report.bytes += batch.bytes.len() as u64;
            self.report.batches += 1;
            self.report.records += header.records_count.max(0) as u64;
        }
        Ok(consumed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "{} would give offset {next} to the batch fetched at offset {fetched}; \
         write copies into an empty directory and fetch from the log start",
        dir.display()
    )]
    Offsets {
        dir: PathBuf,
        next: i64,
        fetched: i64,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A local copy of a fetched partition, which must keep the offsets the
/// batches had at the source (appends renumber from the copy's high watermark).
pub struct CopySink {
    log: PartitionLog,
    scratch: Vec<u8>,
}

impl CopySink {
    pub fn create(dir: &Path, tp: &TopicPartition) -> Result<Self, CopyError> {
        Ok(CopySink {
            log: PartitionLog::create(dir, tp, LogOptions::default())?,
            scratch: Vec::new(),
        })
    }

    /// Appends whole, verified batches whose first base offset is `first`.
    pub fn append(&mut self, batches: &[u8], first: i64) -> Result<(), CopyError> {
        let next = self.log.high_watermark();
        if next != first {
            return Err(CopyError::Offsets {
                dir: self.log.dir().to_path_buf(),
                next,
                fetched: first,
            });
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(batches);
        self.log.append(&mut self.scratch)?;
        Ok(())
    }

    pub fn sync(&self) -> Result<(), CopyError> {
        Ok(self.log.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::generate::{GenSpec, batch_into};

    fn batches(first: i64, n: u32) -> Vec<u8> {
        let spec = GenSpec {
            records: 100,
            record_size: 20,
            records_per_batch: 5,
            seed: 1,
            key: false,
        };
        let mut out = Vec::new();
        for b in 0..n {
            batch_into(&spec, first + i64::from(b) * 5, 5, &mut out);
        }
        out
    }

    #[test]
    fn contiguous_batches_pass_and_a_partial_tail_is_left() {
        let mut bytes = batches(10, 3);
        let whole = bytes.len();
        bytes.extend_from_slice(&batches(25, 1)[..30]);
        let mut v = Verifier::new(10, None);
        assert_eq!(v.feed(&bytes).unwrap(), whole);
        assert_eq!(
            (v.report.batches, v.report.records, v.next_offset),
            (3, 15, 25)
        );
    }

    #[test]
    fn a_gap_a_bad_crc_and_the_limit() {
        let mut v = Verifier::new(0, None);
        v.feed(&batches(0, 1)).unwrap();
        assert!(matches!(
            v.feed(&batches(10, 1)),
            Err(VerifyError::Gap {
                expected: 5,
                got: 10
            })
        ));

        let mut bad = batches(0, 2);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut v = Verifier::new(0, None);
        assert!(matches!(
            v.feed(&bad),
            Err(VerifyError::BadBatch { offset: 5, .. })
        ));

        let mut v = Verifier::new(0, Some(2));
        v.feed(&batches(0, 3)).unwrap();
        assert_eq!(v.report.batches, 2);
        assert!(v.done());
    }

    #[test]
    fn a_batch_before_the_requested_offset_is_skipped() {
        let mut v = Verifier::new(10, None);
        v.feed(&batches(5, 2)).unwrap();
        assert_eq!(
            (v.report.batches, v.report.first_offset, v.next_offset),
            (1, 10, 15)
        );
    }
}
