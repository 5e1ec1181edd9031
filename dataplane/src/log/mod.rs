//! Kafka's on-disk log: record batch v2 (`batch`), the varint record codec
//! (`record`), segments with their sparse `.index` (`segment`), a whole
//! topic-partition directory (`partition`), and the deterministic generator
//! behind `dataplane gen` (`generate`).
//!
//! Byte offsets in every error are positions in the named file, so a user can
//! go straight to the damage with `xxd -s`.

pub mod batch;
pub mod generate;
pub mod inspect;
pub mod partition;
pub mod record;
pub mod segment;

pub use batch::{BatchError, BatchHeader, BatchIter, RecordBatch};
pub use partition::{FetchSlice, PartitionLog, TopicPartition};
