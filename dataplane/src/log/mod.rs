//! Kafka's on-disk log: record batch v2 (`batch`), the varint record codec
//! (`record`), segments with their sparse `.index` (`segment`), a whole
//! topic-partition directory (`partition`), the deterministic generator
//! behind `dataplane gen` (`generate`) and a kafka-dump-log style checker
//! (`inspect`).
//!
//! Byte offsets in every error are positions in the named file, so a user can
//! go straight to the damage with `xxd -s`.

pub mod batch;
pub mod generate;
pub mod inspect;
pub mod partition;
pub mod record;
pub mod segment;

pub use batch::{BatchBuilder, BatchError, BatchHeader, BatchIter, HeaderIter, RecordBatch};
pub use partition::{
    Damage, FetchSlice, FsyncPolicy, LogError, LogOptions, PartitionLog, TopicPartition,
};
pub use record::{Header, Record};

#[cfg(test)]
mod tests;
