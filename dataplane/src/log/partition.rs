pub struct FetchSlice;
pub struct PartitionLog;
pub struct TopicPartition;
