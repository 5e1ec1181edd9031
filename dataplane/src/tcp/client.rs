//! Our own Kafka client for the TCP paths: consumes a partition to its end
//! (or N batches), verifying every batch's CRC and offset contiguity, and
//! produces generated batches.

use std::{
    io::{self, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    kafka::{
        self, FrameError,
        messages::{self, api, error},
        wire::{Reader, WireError},
    },
    log::{BatchHeader, TopicPartition},
    transfer::{CopyError, CopySink, TransferReport, Verifier, VerifyError},
};

const CLIENT_ID: &str = "dataplane";
const FETCH_VERSION: i16 = 11;
const PRODUCE_VERSION: i16 = 8;
const LIST_OFFSETS_VERSION: i16 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("sending a {api} request to {addr}: {source}")]
    Send {
        api: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("reading the {api} response from {addr}: {source}")]
    Receive {
        api: &'static str,
        addr: SocketAddr,
        #[source]
        source: FrameError,
    },
    #[error("{api} response from {addr} is malformed: {source}")]
    Malformed {
        api: &'static str,
        addr: SocketAddr,
        #[source]
        source: WireError,
    },
    #[error("{api} response from {addr} has correlation id {got}, expected {expected}")]
    Correlation {
        api: &'static str,
        addr: SocketAddr,
        got: i32,
        expected: i32,
    },
    #[error("{addr} answered {api} for {tp} with Kafka error {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        api: &'static str,
        addr: SocketAddr,
        tp: TopicPartition,
        code: i16,
        message: Option<String>,
    },
    #[error("{addr}: {source}")]
    Verify {
        addr: SocketAddr,
        #[source]
        source: VerifyError,
    },
    #[error("{addr} made no progress at offset {offset} (high watermark {high_watermark})")]
    Stalled {
        addr: SocketAddr,
        offset: i64,
        high_watermark: i64,
    },
    #[error("writing the fetched copy: {source}")]
    Copy {
        #[source]
        source: CopyError,
    },
    #[error(transparent)]
    Log(#[from] crate::log::partition::LogError),
}

/// A response that names no partition where one was asked for.
fn no_partitions() -> WireError {
    WireError {
        what: "partitions",
        position: 0,
        problem: "none in the response",
    }
}

/// A blocking connection to one broker.
pub struct KafkaClient {
    stream: TcpStream,
    addr: SocketAddr,
    correlation_id: i32,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl KafkaClient {
    pub fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect { addr, source })?;
        Ok(Self {
            stream,
            addr,
            correlation_id: 0,
            request: Vec::new(),
            response: Vec::new(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request and reads its response; returns the body's start
    /// within `self.response` (after the correlation id).
    fn round_trip(
        &mut self,
        key: i16,
        version: i16,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<usize, ClientError> {
        self.send(key, version, encode)?;
        self.receive(key)
    }

    fn send(
        &mut self,
        key: i16,
        version: i16,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        self.request.clear();
        self.request.extend_from_slice(&[0; 4]);
        let header = messages::RequestHeader {
            api_key: key,
            api_version: version,
            correlation_id: self.correlation_id,
            client_id: Some(CLIENT_ID),
        };
        header.encode(&mut self.request);
        encode(&mut self.request);
        let size = (self.request.len() - 4) as i32;
        self.request[..4].copy_from_slice(&size.to_be_bytes());
        let (api, addr) = (api::name(key), self.addr);
        self.stream
            .write_all(&self.request)
            .map_err(|source| ClientError::Send { api, addr, source })
    }

    fn receive(&mut self, key: i16) -> Result<usize, ClientError> {
        let (api, addr) = (api::name(key), self.addr);
        let got = kafka::read_frame(
            &mut self.stream,
            &mut self.response,
            usize::MAX >> 1,
            "response",
        )
        .map_err(|source| ClientError::Receive { api, addr, source })?;
        if !got {
            let source = FrameError::Truncated {
                what: "response",
                got: 0,
                expected: 4,
            };
            return Err(ClientError::Receive { api, addr, source });
        }
        let mut r = Reader::new(&self.response);
        let correlation = r
            .i32("correlation id")
            .map_err(|source| ClientError::Malformed { api, addr, source })?;
        if correlation != self.correlation_id {
            return Err(ClientError::Correlation {
                api,
                addr,
                got: correlation,
                expected: self.correlation_id,
            });
        }
        Ok(4)
    }

    /// ListOffsets for one partition: `timestamp` is a time in ms, or
    /// [`messages::LATEST_TIMESTAMP`] / [`messages::EARLIEST_TIMESTAMP`].
    pub fn list_offset(&mut self, tp: &TopicPartition, timestamp: i64) -> Result<i64, ClientError> {
        let request = messages::ListOffsetsRequest {
            isolation_level: 0,
            topics: vec![(tp.topic.as_str(), vec![(tp.partition, timestamp)])],
        };
        let start = self.round_trip(api::LIST_OFFSETS, LIST_OFFSETS_VERSION, |buf| {
            request.encode(buf, LIST_OFFSETS_VERSION)
        })?;
        let addr = self.addr;
        let malformed = |source| ClientError::Malformed {
            api: "ListOffsets",
            addr,
            source,
        };
        let parts = messages::decode_list_offsets_response(
            &mut Reader::new(&self.response[start..]),
            LIST_OFFSETS_VERSION,
        )
        .map_err(malformed)?;
        let p = parts.first().ok_or_else(|| malformed(no_partitions()))?;
        if p.error_code != error::NONE {
            return Err(ClientError::Kafka {
                api: "ListOffsets",
                addr,
                tp: tp.clone(),
                code: p.error_code,
                message: None,
            });
        }
        Ok(p.offset)
    }

    /// One Fetch for one partition; returns the partition header and the
    /// records region (whole batches, possibly a trailing partial one).
    pub fn fetch(
        &mut self,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<(messages::FetchPartitionHeader, &[u8]), ClientError> {
        let request = messages::FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes,
            isolation_level: 0,
            topics: vec![messages::FetchTopic {
                name: &tp.topic,
                partitions: vec![messages::FetchPartition {
                    partition: tp.partition,
                    fetch_offset: offset,
                    partition_max_bytes: max_bytes,
                }],
            }],
        };
        let start = self.round_trip(api::FETCH, FETCH_VERSION, |buf| {
            request.encode(buf, FETCH_VERSION)
        })?;
        let addr = self.addr;
        let malformed = |source| ClientError::Malformed {
            api: "Fetch",
            addr,
            source,
        };
        let (top_error, parts) = messages::decode_fetch_response(
            &mut Reader::new(&self.response[start..]),
            FETCH_VERSION,
        )
        .map_err(malformed)?;
        let kafka_error = |code| ClientError::Kafka {
            api: "Fetch",
            addr,
            tp: tp.clone(),
            code,
            message: None,
        };
        if top_error != error::NONE {
            return Err(kafka_error(top_error));
        }
        let part = parts
            .into_iter()
            .next()
            .ok_or_else(|| malformed(no_partitions()))?;
        if part.header.error_code != error::NONE {
            return Err(kafka_error(part.header.error_code));
        }
        let range = start + part.records.start..start + part.records.end;
        Ok((part.header, &self.response[range]))
    }

    /// Produces `records` (whole batches) to one partition; returns the base
    /// offset the broker assigned.
    pub fn produce(
        &mut self,
        tp: &TopicPartition,
        records: &[u8],
        acks: i16,
    ) -> Result<i64, ClientError> {
        let start = self.round_trip(api::PRODUCE, PRODUCE_VERSION, |buf| {
            messages::encode_produce_request(buf, acks, 30_000, &tp.topic, tp.partition, records)
        })?;
        let addr = self.addr;
        let parts = messages::decode_produce_response(
            &mut Reader::new(&self.response[start..]),
            PRODUCE_VERSION,
        )
        .map_err(|source| ClientError::Malformed {
            api: "Produce",
            addr,
            source,
        })?;
        let p = parts.into_iter().next().ok_or(ClientError::Malformed {
            api: "Produce",
            addr,
            source: no_partitions(),
        })?;
        if p.error_code != error::NONE {
            return Err(ClientError::Kafka {
                api: "Produce",
                addr,
                tp: tp.clone(),
                code: p.error_code,
                message: p.error_message,
            });
        }
        Ok(p.base_offset)
    }
}

/// What `fetch` should read.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub tp: TopicPartition,
    /// First offset; `None`: the log start.
    pub start: Option<i64>,
    /// Stop after this many batches; `None`: at the high watermark seen at the start.
    pub max_batches: Option<u64>,
    pub max_bytes: i32,
    /// Append what is received to a partition under this directory.
    pub out_dir: Option<PathBuf>,
}

/// Consumes a partition over TCP, verifying every batch.
pub fn fetch(
    addr: SocketAddr,
    options: &FetchOptions,
    mut progress: impl FnMut(&TransferReport),
) -> Result<TransferReport, ClientError> {
    let mut client = KafkaClient::connect(addr)?;
    let tp = &options.tp;
    let start = match options.start {
        Some(o) => o,
        None => client.list_offset(tp, messages::EARLIEST_TIMESTAMP)?,
    };
    let end = client.list_offset(tp, messages::LATEST_TIMESTAMP)?;
    let mut sink = match &options.out_dir {
        Some(dir) => {
            Some(CopySink::create(dir, tp).map_err(|source| ClientError::Copy { source })?)
        }
        None => None,
    };
    let mut verifier = Verifier::new(start, options.max_batches);
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while !verifier.done() && (options.max_batches.is_some() || verifier.next_offset < end) {
        let before = verifier.next_offset;
        let (header, records) = client.fetch(tp, before, options.max_bytes, 500)?;
        let consumed = verifier
            .feed(records)
            .map_err(|source| ClientError::Verify { addr, source })?;
        if let Some(sink) = sink.as_mut()
            && consumed > 0
        {
            let first = BatchHeader::parse(records).map_or(before, |h| h.base_offset);
            sink.append(&records[..consumed], first)
                .map_err(|source| ClientError::Copy { source })?;
        }
        if verifier.next_offset == before
            && header.high_watermark <= before
            && options.max_batches.is_none()
        {
            return Err(ClientError::Stalled {
                addr,
                offset: before,
                high_watermark: header.high_watermark,
            });
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            verifier.report.finish(started.elapsed());
            progress(&verifier.report);
            last_progress = Instant::now();
        }
    }
    if let Some(sink) = sink.as_ref() {
        sink.sync().map_err(|source| ClientError::Copy { source })?;
    }
    let mut report = verifier.report;
    report.path = "tcp".into();
    report.obtained = "tcp".into();
    report.verified = true;
    report.finish(started.elapsed());
    Ok(report)
}

/// What `produce` should send.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub tp: TopicPartition,
    pub spec: crate::log::generate::GenSpec,
    /// Batches per Produce request.
    pub batches_per_request: usize,
    pub acks: i16,
}

/// Produces generated batches over TCP; every request is acknowledged
/// (unless acks = 0) before the next is sent.
pub fn produce(
    addr: SocketAddr,
    options: &ProduceOptions,
    mut progress: impl FnMut(&TransferReport),
) -> Result<TransferReport, ClientError> {
    let mut client = KafkaClient::connect(addr)?;
    let spec = &options.spec;
    let per_batch = u64::from(spec.records_per_batch.max(1));
    let total_batches = spec.records.div_ceil(per_batch);
    let mut report = TransferReport {
        path: "tcp".into(),
        obtained: "tcp".into(),
        ..Default::default()
    };
    let mut request = Vec::new();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut batch = 0;
    while batch < total_batches {
        request.clear();
        let end = (batch + options.batches_per_request.max(1) as u64).min(total_batches);
        let mut records_in_request = 0;
        for b in batch..end {
            let first = (b * per_batch) as i64;
            let count = per_batch.min(spec.records - b * per_batch) as u32;
            crate::log::generate::batch_into(spec, first, count, &mut request);
            records_in_request += u64::from(count);
        }
        let base = client.produce(&options.tp, &request, options.acks)?;
        if report.batches == 0 {
            report.first_offset = base;
        }
        report.bytes += request.len() as u64;
        report.batches += end - batch;
        report.records += records_in_request;
        report.next_offset = base + records_in_request as i64;
        batch = end;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            report.finish(started.elapsed());
            progress(&report);
            last_progress = Instant::now();
        }
    }
    report.verified = options.acks != 0;
    report.finish(started.elapsed());
    Ok(report)
}

/// Single-batch request→completion latency at low load: `samples` Fetches of
/// one batch each (max bytes 1: KIP-74 still returns one whole batch), one
/// at a time, walking the log and wrapping at its end. Every batch is verified.
pub fn latency(
    addr: SocketAddr,
    tp: &TopicPartition,
    samples: usize,
) -> Result<crate::bench::report::Latency, ClientError> {
    let mut client = KafkaClient::connect(addr)?;
    let start = client.list_offset(tp, messages::EARLIEST_TIMESTAMP)?;
    let end = client.list_offset(tp, messages::LATEST_TIMESTAMP)?;
    let mut histogram = crate::bench::report::Latency::histogram();
    let mut offset = start;
    for _ in 0..samples {
        if offset >= end {
            offset = start;
        }
        let began = Instant::now();
        let (_, records) = client.fetch(tp, offset, 1, 0)?;
        let mut verifier = Verifier::new(offset, Some(1));
        verifier
            .feed(records)
            .map_err(|source| ClientError::Verify { addr, source })?;
        let elapsed = began.elapsed();
        if verifier.report.batches != 1 {
            return Err(ClientError::Stalled {
                addr,
                offset,
                high_watermark: end,
            });
        }
        histogram.saturating_record(elapsed.as_nanos() as u64);
        offset = verifier.next_offset;
    }
    Ok(crate::bench::report::Latency::from_nanos(&histogram))
}
