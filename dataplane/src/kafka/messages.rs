//! The Kafka messages this broker speaks, in the versions it supports:
//! ApiVersions v0–3, Metadata v0–4, ListOffsets v0–2, Fetch v4–11 and
//! Produce v3–8. Requests decode from a borrowed body (records stay where they
//! are, as ranges); responses encode into a `Vec<u8>`. A Fetch response's
//! records region is not encoded here: the server writes only its framing and
//! moves the records itself (sendfile or copy).

use std::ops::Range;

use super::wire::{Reader, WireError, WriteKafka};

/// API keys.
pub mod api {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
    pub const LIST_OFFSETS: i16 = 2;
    pub const METADATA: i16 = 3;
    pub const API_VERSIONS: i16 = 18;

    pub fn name(key: i16) -> &'static str {
        match key {
            PRODUCE => "Produce",
            FETCH => "Fetch",
            LIST_OFFSETS => "ListOffsets",
            METADATA => "Metadata",
            API_VERSIONS => "ApiVersions",
            _ => "unknown",
        }
    }
}

/// Kafka error codes used here.
pub mod error {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
}

/// (api key, min version, max version) this broker serves.
pub const SUPPORTED_APIS: [(i16, i16, i16); 5] = [
    (api::PRODUCE, 3, 8),
    (api::FETCH, 4, 11),
    (api::LIST_OFFSETS, 0, 2),
    (api::METADATA, 0, 4),
    (api::API_VERSIONS, 0, 3),
];

pub fn supported_range(key: i16) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// ListOffsets timestamps with special meaning.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<&'a str>,
}

impl<'a> RequestHeader<'a> {
    /// Decodes the header (v1, or v2 for flexible ApiVersions v3+).
    pub fn decode(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let api_key = r.i16("request api key")?;
        let api_version = r.i16("request api version")?;
        let correlation_id = r.i32("correlation id")?;
        let client_id = r.nullable_string("client id")?;
        if api_key == api::API_VERSIONS && api_version >= 3 {
            r.skip_tagged_fields()?;
        }
        Ok(Self {
            api_key,
            api_version,
            correlation_id,
            client_id,
        })
    }

    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.put_i16(self.api_key);
        buf.put_i16(self.api_version);
        buf.put_i32(self.correlation_id);
        buf.put_nullable_string(self.client_id);
        if self.api_key == api::API_VERSIONS && self.api_version >= 3 {
            buf.put_empty_tagged_fields();
        }
    }
}

// ---------------------------------------------------------------- ApiVersions

/// Encodes an ApiVersions response body. Kafka answers a request of a version
/// it does not know with a v0 response carrying UNSUPPORTED_VERSION, so the
/// client can retry with a version from the list; `version` is then 0.
pub fn encode_api_versions_response(buf: &mut Vec<u8>, version: i16, error_code: i16) {
    buf.put_i16(error_code);
    if version >= 3 {
        buf.put_compact_array_len(SUPPORTED_APIS.len());
    } else {
        buf.put_array_len(SUPPORTED_APIS.len());
    }
    for (key, min, max) in SUPPORTED_APIS {
        buf.put_i16(key);
        buf.put_i16(min);
        buf.put_i16(max);
        if version >= 3 {
            buf.put_empty_tagged_fields();
        }
    }
    if version >= 1 {
        buf.put_i32(0); // throttle_time_ms
    }
    if version >= 3 {
        buf.put_empty_tagged_fields();
    }
}

// ------------------------------------------------------------------- Metadata

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest<'a> {
    /// `None`: all topics.
    pub topics: Option<Vec<&'a str>>,
    pub allow_auto_topic_creation: bool,
}

impl<'a> MetadataRequest<'a> {
    pub fn decode(r: &mut Reader<'a>, version: i16) -> Result<Self, WireError> {
        let topics = match r.array_len("metadata topics", 2)? {
            None => None,
            // In v0 an empty array means "all topics".
            Some(0) if version == 0 => None,
            Some(n) => Some(
                (0..n)
                    .map(|_| r.string("metadata topic name"))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let allow_auto_topic_creation = if version >= 4 {
            r.bool("allow_auto_topic_creation")?
        } else {
            true
        };
        Ok(Self {
            topics,
            allow_auto_topic_creation,
        })
    }

    pub fn encode(&self, buf: &mut Vec<u8>, version: i16) {
        match &self.topics {
            None if version == 0 => buf.put_array_len(0),
            None => buf.put_i32(-1),
            Some(topics) => {
                buf.put_array_len(topics.len());
                for t in topics {
                    buf.put_string(t);
                }
            }
        }
        if version >= 4 {
            buf.put_bool(self.allow_auto_topic_creation);
        }
    }
}

pub struct Broker<'a> {
    pub node_id: i32,
    pub host: &'a str,
    pub port: i32,
}

pub struct TopicMetadata<'a> {
    pub error_code: i16,
    pub name: &'a str,
    /// (partition index, error code)
    pub partitions: Vec<(i32, i16)>,
}

/// A single-broker cluster: the broker leads every partition and is the only replica.
pub fn encode_metadata_response(
    buf: &mut Vec<u8>,
    version: i16,
    broker: &Broker<'_>,
    cluster_id: &str,
    topics: &[TopicMetadata<'_>],
) {
    if version >= 3 {
        buf.put_i32(0); // throttle_time_ms
    }
    buf.put_array_len(1);
    buf.put_i32(broker.node_id);
    buf.put_string(broker.host);
    buf.put_i32(broker.port);
    if version >= 1 {
        buf.put_nullable_string(None); // rack
    }
    if version >= 2 {
        buf.put_nullable_string(Some(cluster_id));
    }
    if version >= 1 {
        buf.put_i32(broker.node_id); // controller_id
    }
    buf.put_array_len(topics.len());
    for topic in topics {
        buf.put_i16(topic.error_code);
        buf.put_string(topic.name);
        if version >= 1 {
            buf.put_bool(false); // is_internal
        }
        buf.put_array_len(topic.partitions.len());
        for &(index, error_code) in &topic.partitions {
            buf.put_i16(error_code);
            buf.put_i32(index);
            buf.put_i32(broker.node_id); // leader
            buf.put_array_len(1); // replicas
            buf.put_i32(broker.node_id);
            buf.put_array_len(1); // isr
            buf.put_i32(broker.node_id);
        }
    }
}

// ---------------------------------------------------------------- ListOffsets

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest<'a> {
    pub isolation_level: i8,
    /// (topic, [(partition, timestamp)])
    pub topics: Vec<(&'a str, Vec<(i32, i64)>)>,
}

impl<'a> ListOffsetsRequest<'a> {
    pub fn decode(r: &mut Reader<'a>, version: i16) -> Result<Self, WireError> {
        r.i32("replica id")?;
        let isolation_level = if version >= 2 {
            r.i8("isolation level")?
        } else {
            0
        };
        let n = r.array_len("list offsets topics", 6)?.unwrap_or(0);
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string("list offsets topic name")?;
            let m = r.array_len("list offsets partitions", 12)?.unwrap_or(0);
            let mut partitions = Vec::with_capacity(m);
            for _ in 0..m {
                let partition = r.i32("list offsets partition")?;
                let timestamp = r.i64("list offsets timestamp")?;
                if version == 0 {
                    r.i32("max_num_offsets")?;
                }
                partitions.push((partition, timestamp));
            }
            topics.push((name, partitions));
        }
        Ok(Self {
            isolation_level,
            topics,
        })
    }

    pub fn encode(&self, buf: &mut Vec<u8>, version: i16) {
        buf.put_i32(-1);
        if version >= 2 {
            buf.put_i8(self.isolation_level);
        }
        buf.put_array_len(self.topics.len());
        for (name, partitions) in &self.topics {
            buf.put_string(name);
            buf.put_array_len(partitions.len());
            for &(partition, timestamp) in partitions {
                buf.put_i32(partition);
                buf.put_i64(timestamp);
                if version == 0 {
                    buf.put_i32(1);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    pub partition: i32,
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

pub fn encode_list_offsets_response(
    buf: &mut Vec<u8>,
    version: i16,
    topics: &[(&str, Vec<ListOffsetsPartitionResponse>)],
) {
    if version >= 2 {
        buf.put_i32(0); // throttle_time_ms
    }
    buf.put_array_len(topics.len());
    for (name, partitions) in topics {
        buf.put_string(name);
        buf.put_array_len(partitions.len());
        for p in partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error_code);
            if version == 0 {
                // old_style_offsets: one offset, or none on error.
                if p.error_code == error::NONE {
                    buf.put_array_len(1);
                    buf.put_i64(p.offset);
                } else {
                    buf.put_array_len(0);
                }
            } else {
                buf.put_i64(p.timestamp);
                buf.put_i64(p.offset);
            }
        }
    }
}

pub fn decode_list_offsets_response(
    r: &mut Reader<'_>,
    version: i16,
) -> Result<Vec<ListOffsetsPartitionResponse>, WireError> {
    if version >= 2 {
        r.i32("throttle time")?;
    }
    let mut out = Vec::new();
    for _ in 0..r.array_len("list offsets topics", 6)?.unwrap_or(0) {
        r.string("topic name")?;
        for _ in 0..r.array_len("list offsets partitions", 6)?.unwrap_or(0) {
            let partition = r.i32("partition")?;
            let error_code = r.i16("error code")?;
            let (timestamp, offset) = if version == 0 {
                let n = r.array_len("old style offsets", 8)?.unwrap_or(0);
                let mut first = -1;
                for i in 0..n {
                    let o = r.i64("offset")?;
                    if i == 0 {
                        first = o;
                    }
                }
                (-1, first)
            } else {
                (r.i64("timestamp")?, r.i64("offset")?)
            };
            out.push(ListOffsetsPartitionResponse {
                partition,
                error_code,
                timestamp,
                offset,
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------- Fetch

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest<'a> {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub isolation_level: i8,
    pub topics: Vec<FetchTopic<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic<'a> {
    pub name: &'a str,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    pub partition: i32,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
}

impl<'a> FetchRequest<'a> {
    pub fn decode(r: &mut Reader<'a>, version: i16) -> Result<Self, WireError> {
        r.i32("replica id")?;
        let max_wait_ms = r.i32("max_wait_ms")?;
        let min_bytes = r.i32("min_bytes")?;
        let max_bytes = r.i32("max_bytes")?;
        let isolation_level = r.i8("isolation_level")?;
        if version >= 7 {
            r.i32("session_id")?;
            r.i32("session_epoch")?;
        }
        let n = r.array_len("fetch topics", 6)?.unwrap_or(0);
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string("fetch topic name")?;
            let m = r.array_len("fetch partitions", 16)?.unwrap_or(0);
            let mut partitions = Vec::with_capacity(m);
            for _ in 0..m {
                let partition = r.i32("fetch partition")?;
                if version >= 9 {
                    r.i32("current_leader_epoch")?;
                }
                let fetch_offset = r.i64("fetch_offset")?;
                if version >= 5 {
                    r.i64("log_start_offset")?;
                }
                let partition_max_bytes = r.i32("partition_max_bytes")?;
                partitions.push(FetchPartition {
                    partition,
                    fetch_offset,
                    partition_max_bytes,
                });
            }
            topics.push(FetchTopic { name, partitions });
        }
        if version >= 7 {
            for _ in 0..r.array_len("forgotten topics", 6)?.unwrap_or(0) {
                r.string("forgotten topic")?;
                let m = r.array_len("forgotten partitions", 4)?.unwrap_or(0);
                r.take(m * 4, "forgotten partitions")?;
            }
        }
        if version >= 11 {
            r.string("rack_id")?;
        }
        Ok(Self {
            max_wait_ms,
            min_bytes,
            max_bytes,
            isolation_level,
            topics,
        })
    }

    pub fn encode(&self, buf: &mut Vec<u8>, version: i16) {
        buf.put_i32(-1); // replica_id: a consumer
        buf.put_i32(self.max_wait_ms);
        buf.put_i32(self.min_bytes);
        buf.put_i32(self.max_bytes);
        buf.put_i8(self.isolation_level);
        if version >= 7 {
            buf.put_i32(0); // session_id: no fetch session
            buf.put_i32(-1); // session_epoch: full fetch
        }
        buf.put_array_len(self.topics.len());
        for topic in &self.topics {
            buf.put_string(topic.name);
            buf.put_array_len(topic.partitions.len());
            for p in &topic.partitions {
                buf.put_i32(p.partition);
                if version >= 9 {
                    buf.put_i32(-1);
                }
                buf.put_i64(p.fetch_offset);
                if version >= 5 {
                    buf.put_i64(-1);
                }
                buf.put_i32(p.partition_max_bytes);
            }
        }
        if version >= 7 {
            buf.put_array_len(0);
        }
        if version >= 11 {
            buf.put_string("");
        }
    }
}

/// The framing of one partition in a Fetch response, up to and including the
/// records length; the records themselves follow on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartitionHeader {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `None` encodes null records.
    pub records_len: Option<i32>,
}

/// Top of a Fetch response body, before the topics.
pub fn encode_fetch_response_top(buf: &mut Vec<u8>, version: i16, topic_count: usize) {
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(error::NONE);
        buf.put_i32(0); // session_id
    }
    buf.put_array_len(topic_count);
}

pub fn encode_fetch_topic_top(buf: &mut Vec<u8>, name: &str, partition_count: usize) {
    buf.put_string(name);
    buf.put_array_len(partition_count);
}

pub fn encode_fetch_partition_header(buf: &mut Vec<u8>, version: i16, p: &FetchPartitionHeader) {
    buf.put_i32(p.partition);
    buf.put_i16(p.error_code);
    buf.put_i64(p.high_watermark);
    buf.put_i64(p.last_stable_offset);
    if version >= 5 {
        buf.put_i64(p.log_start_offset);
    }
    buf.put_array_len(0); // aborted_transactions
    if version >= 11 {
        buf.put_i32(-1); // preferred_read_replica
    }
    buf.put_i32(p.records_len.unwrap_or(-1));
}

/// One partition of a decoded Fetch response; `records` indexes the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic: String,
    pub header: FetchPartitionHeader,
    pub records: Range<usize>,
}

pub fn decode_fetch_response(
    r: &mut Reader<'_>,
    version: i16,
) -> Result<(i16, Vec<FetchedPartition>), WireError> {
    r.i32("throttle time")?;
    let mut top_error = error::NONE;
    if version >= 7 {
        top_error = r.i16("error code")?;
        r.i32("session id")?;
    }
    let mut out = Vec::new();
    for _ in 0..r.array_len("fetch response topics", 6)?.unwrap_or(0) {
        let topic = r.string("topic name")?.to_owned();
        for _ in 0..r.array_len("fetch response partitions", 30)?.unwrap_or(0) {
            let partition = r.i32("partition")?;
            let error_code = r.i16("error code")?;
            let high_watermark = r.i64("high watermark")?;
            let last_stable_offset = r.i64("last stable offset")?;
            let log_start_offset = if version >= 5 {
                r.i64("log start offset")?
            } else {
                -1
            };
            let aborted = r.array_len("aborted transactions", 16)?.unwrap_or(0);
            r.take(aborted * 16, "aborted transactions")?;
            if version >= 11 {
                r.i32("preferred read replica")?;
            }
            let len = r.i32("records length")?;
            let start = r.position();
            let records_len = if len < 0 { None } else { Some(len) };
            if len > 0 {
                r.take(len as usize, "records")?;
            }
            let header = FetchPartitionHeader {
                partition,
                error_code,
                high_watermark,
                last_stable_offset,
                log_start_offset,
                records_len,
            };
            out.push(FetchedPartition {
                topic: topic.clone(),
                header,
                records: start..r.position(),
            });
        }
    }
    Ok((top_error, out))
}

// -------------------------------------------------------------------- Produce

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest<'a> {
    pub transactional_id: Option<&'a str>,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<ProduceTopic<'a>>,
}

/// (partition, records as a range of the request body; `None` = null)
pub type ProducePartition = (i32, Option<Range<usize>>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic<'a> {
    pub name: &'a str,
    pub partitions: Vec<ProducePartition>,
}

impl<'a> ProduceRequest<'a> {
    /// `base` is the byte position of the reader's start within the body the
    /// record ranges index (the body is mutated later to assign offsets).
    pub fn decode(r: &mut Reader<'a>, base: usize, _version: i16) -> Result<Self, WireError> {
        let transactional_id = r.nullable_string("transactional_id")?;
        let acks = r.i16("acks")?;
        let timeout_ms = r.i32("timeout_ms")?;
        let n = r.array_len("produce topics", 6)?.unwrap_or(0);
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string("produce topic name")?;
            let m = r.array_len("produce partitions", 8)?.unwrap_or(0);
            let mut partitions = Vec::with_capacity(m);
            for _ in 0..m {
                let partition = r.i32("produce partition")?;
                let start = base + r.position() + 4;
                let records = r.nullable_bytes("produce records")?;
                partitions.push((partition, records.map(|b| start..start + b.len())));
            }
            topics.push(ProduceTopic { name, partitions });
        }
        Ok(Self {
            transactional_id,
            acks,
            timeout_ms,
            topics,
        })
    }
}

/// Encodes a Produce request for one partition carrying `records`.
pub fn encode_produce_request(
    buf: &mut Vec<u8>,
    acks: i16,
    timeout_ms: i32,
    topic: &str,
    partition: i32,
    records: &[u8],
) {
    buf.put_nullable_string(None);
    buf.put_i16(acks);
    buf.put_i32(timeout_ms);
    buf.put_array_len(1);
    buf.put_string(topic);
    buf.put_array_len(1);
    buf.put_i32(partition);
    buf.put_nullable_bytes(Some(records));
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    pub partition: i32,
    pub error_code: i16,
    pub base_offset: i64,
    pub log_start_offset: i64,
    pub error_message: Option<String>,
}

pub fn encode_produce_response(
    buf: &mut Vec<u8>,
    version: i16,
    topics: &[(&str, Vec<ProducePartitionResponse>)],
) {
    buf.put_array_len(topics.len());
    for (name, partitions) in topics {
        buf.put_string(name);
        buf.put_array_len(partitions.len());
        for p in partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error_code);
            buf.put_i64(p.base_offset);
            buf.put_i64(-1); // log_append_time_ms: CreateTime
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            if version >= 8 {
                buf.put_array_len(0); // record_errors
                buf.put_nullable_string(p.error_message.as_deref());
            }
        }
    }
    buf.put_i32(0); // throttle_time_ms
}

pub fn decode_produce_response(
    r: &mut Reader<'_>,
    version: i16,
) -> Result<Vec<ProducePartitionResponse>, WireError> {
    let mut out = Vec::new();
    for _ in 0..r.array_len("produce response topics", 6)?.unwrap_or(0) {
        r.string("topic name")?;
        for _ in 0..r.array_len("produce response partitions", 22)?.unwrap_or(0) {
            let partition = r.i32("partition")?;
            let error_code = r.i16("error code")?;
            let base_offset = r.i64("base offset")?;
            r.i64("log append time")?;
            let log_start_offset = if version >= 5 {
                r.i64("log start offset")?
            } else {
                -1
            };
            let mut error_message = None;
            if version >= 8 {
                for _ in 0..r.array_len("record errors", 6)?.unwrap_or(0) {
                    r.i32("batch index")?;
                    r.nullable_string("batch error message")?;
                }
                error_message = r.nullable_string("error message")?.map(str::to_owned);
            }
            out.push(ProducePartitionResponse {
                partition,
                error_code,
                base_offset,
                log_start_offset,
                error_message,
            });
        }
    }
    r.i32("throttle time")?;
    Ok(out)
}
