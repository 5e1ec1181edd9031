//! The Kafka-protocol listener: one thread per connection, requests answered
//! in order. A connection that sends something malformed is closed with a log
//! line naming the peer; every other connection carries on.

use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{TcpMode, broker::Broker, records::RecordsSender, records::send_framing};
use crate::{
    kafka::{
        self, FrameError,
        messages::{self, api, error},
        wire::{Reader, WireError, WriteKafka},
    },
    log::{FetchSlice, partition::LogError},
};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mode: TcpMode,
    /// Host and port given to clients in Metadata; by default the address
    /// each client connected to.
    pub advertise: Option<(String, u16)>,
    pub max_request_bytes: usize,
}

const CLUSTER_ID: &str = "dataplane";
const NODE_ID: i32 = 0;

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{api} v{version}: {source}")]
    Malformed {
        api: &'static str,
        version: i16,
        #[source]
        source: WireError,
    },
    #[error(
        "unknown API key {0}; this broker serves Produce, Fetch, ListOffsets, Metadata and ApiVersions"
    )]
    UnknownApi(i16),
    #[error("{api} v{version} is not supported (this broker serves v{min}-{max})")]
    UnsupportedVersion {
        api: &'static str,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("writing the {api} response: {source}")]
    Write {
        api: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Accepts connections until `stop` is set, serving each on its own thread.
pub fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    stop: &AtomicBool,
) -> io::Result<()> {
    let config = Arc::new(config);
    listener.set_nonblocking(true)?;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                let broker = broker.clone();
                let config = config.clone();
                std::thread::Builder::new()
                    .name(format!("kafka {peer}"))
                    .spawn(move || Connection::new(stream, peer, broker, config).run())?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll_readable(&listener, Duration::from_millis(100));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of fds or a connection reset before accept: keep serving.
            Err(e) => {
                ::log::warn!("accept on {}: {e}", listener.local_addr()?);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

fn poll_readable(listener: &TcpListener, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: Arc<ServerConfig>,
    request: Vec<u8>,
    response: Vec<u8>,
    sender: RecordsSender,
}

/// One piece of a Fetch response on the wire: framing bytes from the
/// response buffer, then optionally records moved straight from a segment.
struct FetchPiece {
    framing_end: usize,
    records: Option<FetchSlice>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        broker: Arc<Broker>,
        config: Arc<ServerConfig>,
    ) -> Self {
        let sender = RecordsSender::new(config.mode);
        Self {
            stream,
            peer,
            broker,
            config,
            request: Vec::new(),
            response: Vec::new(),
            sender,
        }
    }

    fn run(mut self) {
        let _ = self.stream.set_nodelay(true);
        ::log::debug!("{}: connected", self.peer);
        loop {
            match kafka::read_frame(
                &mut self.stream,
                &mut self.request,
                self.config.max_request_bytes,
                "request",
            ) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.close_with(ConnectionError::Frame(e));
                    return;
                }
            }
            if let Err(e) = self.handle_request() {
                self.close_with(e);
                return;
            }
        }
        ::log::debug!("{}: disconnected", self.peer);
    }

    fn close_with(&self, e: ConnectionError) {
        let disconnect = matches!(&e, ConnectionError::Write { source, .. }
            if matches!(source.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset));
        if disconnect {
            ::log::info!("{}: client went away: {e}", self.peer);
        } else {
            ::log::warn!("{}: closing connection: {e}", self.peer);
        }
    }

    fn handle_request(&mut self) -> Result<(), ConnectionError> {
        let mut request = std::mem::take(&mut self.request);
        let result = self.dispatch(&mut request);
        self.request = request;
        result
    }

    fn dispatch(&mut self, request: &mut [u8]) -> Result<(), ConnectionError> {
        let mut r = Reader::new(request);
        let malformed = |api_key: i16, version: i16| {
            move |source| ConnectionError::Malformed {
                api: api::name(api_key),
                version,
                source,
            }
        };
        // The key and version first, so a bad header still names its API.
        let (key, version) = {
            let mut peek = Reader::new(request);
            let key = peek.i16("request api key").map_err(malformed(-1, -1))?;
            (
                key,
                peek.i16("request api version")
                    .map_err(malformed(key, -1))?,
            )
        };
        let Some((min, max)) = messages::supported_range(key) else {
            return Err(ConnectionError::UnknownApi(key));
        };
        let header = messages::RequestHeader::decode(&mut r).map_err(malformed(key, version))?;
        self.begin_response(header.correlation_id);
        if version < min || version > max {
            if key == api::API_VERSIONS {
                // Kafka answers with v0 and the supported ranges, so the
                // client can retry with a version it shares with us.
                messages::encode_api_versions_response(
                    &mut self.response,
                    0,
                    error::UNSUPPORTED_VERSION,
                );
                return self.finish_response(key);
            }
            return Err(ConnectionError::UnsupportedVersion {
                api: api::name(key),
                version,
                min,
                max,
            });
        }
        match key {
            api::API_VERSIONS => {
                messages::encode_api_versions_response(&mut self.response, version, error::NONE);
            }
            api::METADATA => {
                let req = messages::MetadataRequest::decode(&mut r, version)
                    .map_err(malformed(key, version))?;
                self.metadata(&req, version);
            }
            api::LIST_OFFSETS => {
                let req = messages::ListOffsetsRequest::decode(&mut r, version)
                    .map_err(malformed(key, version))?;
                self.list_offsets(&req, version);
            }
            api::FETCH => {
                let req = messages::FetchRequest::decode(&mut r, version)
                    .map_err(malformed(key, version))?;
                return self.fetch(&req, version);
            }
            api::PRODUCE => {
                // Record ranges index `request`, which append then mutates in
                // place (base offsets), so names are copied out first.
                let req = messages::ProduceRequest::decode(&mut r, 0, version)
                    .map_err(malformed(key, version))?;
                let acks = req.acks;
                let topics: Vec<(String, Vec<_>)> = req
                    .topics
                    .into_iter()
                    .map(|t| (t.name.to_owned(), t.partitions))
                    .collect();
                self.produce(acks, topics, request, version);
                if acks == 0 {
                    return Ok(()); // acks=0: the client expects no response
                }
            }
            _ => unreachable!("supported_range admitted only the keys above"),
        }
        self.finish_response(key)
    }

    fn begin_response(&mut self, correlation_id: i32) {
        self.response.clear();
        self.response.put_i32(0); // size, filled in by finish
        self.response.put_i32(correlation_id);
    }

    fn patch_size(&mut self, total: usize) {
        let size = (total - 4) as i32;
        self.response[..4].copy_from_slice(&size.to_be_bytes());
    }

    fn finish_response(&mut self, key: i16) -> Result<(), ConnectionError> {
        self.patch_size(self.response.len());
        send_framing(&mut self.stream, &self.response, false).map_err(|source| {
            ConnectionError::Write {
                api: api::name(key),
                source,
            }
        })
    }

    fn advertised(&self) -> (String, u16) {
        if let Some((host, port)) = &self.config.advertise {
            return (host.clone(), *port);
        }
        match self.stream.local_addr() {
            Ok(addr) => (addr.ip().to_string(), addr.port()),
            Err(_) => ("127.0.0.1".into(), 9092),
        }
    }

    fn metadata(&mut self, req: &messages::MetadataRequest<'_>, version: i16) {
        let (host, port) = self.advertised();
        // One snapshot of the partitions for the whole request.
        let mut known_topics = self.broker.topics();
        let mut names: Vec<String> = match &req.topics {
            Some(topics) => topics.iter().map(|t| (*t).to_owned()).collect(),
            None => known_topics.keys().cloned().collect(),
        };
        names.dedup();
        let mut topics = Vec::with_capacity(names.len());
        for name in &names {
            let known = known_topics.remove(name.as_str());
            let (error_code, partitions) = match known {
                Some(partitions) => (error::NONE, partitions),
                None if req.allow_auto_topic_creation && self.broker.auto_create() => {
                    match self.broker.partition_or_create(name, 0) {
                        Ok(Some(_)) => (error::NONE, vec![0]),
                        Ok(None) => (error::UNKNOWN_TOPIC_OR_PARTITION, vec![]),
                        Err(super::broker::BrokerError::Log(LogError::BadTopicPartition {
                            ..
                        })) => (error::INVALID_TOPIC_EXCEPTION, vec![]),
                        Err(e) => {
                            ::log::error!("{}: creating topic {name}: {e}", self.peer);
                            (error::KAFKA_STORAGE_ERROR, vec![])
                        }
                    }
                }
                None => (error::UNKNOWN_TOPIC_OR_PARTITION, vec![]),
            };
            let partitions = partitions.into_iter().map(|p| (p, error::NONE)).collect();
            topics.push(messages::TopicMetadata {
                error_code,
                name,
                partitions,
            });
        }
        let port = i32::from(port);
        let broker = messages::Broker {
            node_id: NODE_ID,
            host: &host,
            port,
        };
        messages::encode_metadata_response(
            &mut self.response,
            version,
            &broker,
            CLUSTER_ID,
            &topics,
        );
    }

    fn list_offsets(&mut self, req: &messages::ListOffsetsRequest<'_>, version: i16) {
        let mut topics = Vec::with_capacity(req.topics.len());
        for (name, partitions) in &req.topics {
            let mut out = Vec::with_capacity(partitions.len());
            for &(partition, timestamp) in partitions {
                let mut resp = messages::ListOffsetsPartitionResponse {
                    partition,
                    error_code: error::NONE,
                    timestamp: -1,
                    offset: -1,
                };
                match self.broker.partition(name, partition) {
                    None => resp.error_code = error::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(log) => match timestamp {
                        messages::LATEST_TIMESTAMP => resp.offset = log.high_watermark(),
                        messages::EARLIEST_TIMESTAMP => resp.offset = log.log_start_offset(),
                        ts => {
                            if let Some(offset) = log.offset_for_timestamp(ts) {
                                resp.offset = offset;
                                resp.timestamp = ts;
                            }
                        }
                    },
                }
                out.push(resp);
            }
            topics.push((*name, out));
        }
        messages::encode_list_offsets_response(&mut self.response, version, &topics);
    }

    fn fetch(
        &mut self,
        req: &messages::FetchRequest<'_>,
        version: i16,
    ) -> Result<(), ConnectionError> {
        let mut pieces = self.plan_fetch(req, version);
        let available: usize = pieces
            .iter()
            .filter_map(|p| p.records.as_ref())
            .map(|s| s.len)
            .sum();
        if available < req.min_bytes.max(1) as usize && req.max_wait_ms > 0 {
            // Long poll: wait for a producer to append to the first partition
            // asked for, up to max_wait_ms, then answer with what there is.
            let first = req.topics.iter().find_map(|t| {
                t.partitions.first().and_then(|p| {
                    self.broker
                        .partition(t.name, p.partition)
                        .map(|log| (log, p.fetch_offset))
                })
            });
            if let Some((log, offset)) = first {
                let wait = Duration::from_millis(req.max_wait_ms.min(30_000) as u64);
                if log.wait_for_data(offset, wait) {
                    pieces = self.plan_fetch(req, version);
                }
            } else {
                std::thread::sleep(Duration::from_millis(req.max_wait_ms.min(1000) as u64));
            }
        }
        let total = self.response.len()
            + pieces
                .iter()
                .filter_map(|p| p.records.as_ref())
                .map(|s| s.len)
                .sum::<usize>();
        self.patch_size(total);
        let write = |source| ConnectionError::Write {
            api: "Fetch",
            source,
        };
        let mut start = 0;
        for piece in &pieces {
            let framing = &self.response[start..piece.framing_end];
            send_framing(&mut self.stream, framing, piece.records.is_some()).map_err(write)?;
            if let Some(slice) = &piece.records {
                self.sender
                    .send(&mut self.stream, &slice.file, slice.position, slice.len)
                    .map_err(write)?;
            }
            start = piece.framing_end;
        }
        Ok(())
    }

    /// Encodes the Fetch response framing into `self.response` (after the
    /// response header) and returns where records go between its pieces.
    fn plan_fetch(&mut self, req: &messages::FetchRequest<'_>, version: i16) -> Vec<FetchPiece> {
        self.response.truncate(8);
        let mut pieces = Vec::new();
        // KIP-74: the response may exceed max_bytes by one batch for the
        // first partition with data, so a large batch never gets stuck.
        // The response's size prefix is an i32: whatever the request says,
        // the records stay well below it (room left for the framing).
        const RECORDS_LIMIT: usize = i32::MAX as usize - (1 << 20);
        let mut remaining = if req.max_bytes > 0 {
            (req.max_bytes as usize).min(RECORDS_LIMIT)
        } else {
            RECORDS_LIMIT
        };
        let mut first_with_data = true;
        messages::encode_fetch_response_top(&mut self.response, version, req.topics.len());
        for topic in &req.topics {
            messages::encode_fetch_topic_top(
                &mut self.response,
                topic.name,
                topic.partitions.len(),
            );
            for p in &topic.partitions {
                let mut header = messages::FetchPartitionHeader {
                    partition: p.partition,
                    error_code: error::NONE,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    records_len: Some(0),
                };
                let mut records = None;
                match self.broker.partition(topic.name, p.partition) {
                    None => header.error_code = error::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(log) => {
                        header.high_watermark = log.high_watermark();
                        header.last_stable_offset = header.high_watermark;
                        header.log_start_offset = log.log_start_offset();
                        let limit = (p.partition_max_bytes.max(0) as usize).min(remaining);
                        if limit > 0 || first_with_data {
                            match log.fetch_slice(p.fetch_offset, limit) {
                                Ok(Some(slice)) => {
                                    header.high_watermark = slice.high_watermark;
                                    header.last_stable_offset = slice.high_watermark;
                                    header.records_len = Some(slice.len as i32);
                                    remaining = remaining.saturating_sub(slice.len);
                                    first_with_data = false;
                                    records = Some(slice);
                                }
                                Ok(None) => {}
                                Err(LogError::OffsetOutOfRange { .. }) => {
                                    header.error_code = error::OFFSET_OUT_OF_RANGE;
                                }
                                Err(e) => {
                                    ::log::error!(
                                        "{}: fetch {}-{}: {e}",
                                        self.peer,
                                        topic.name,
                                        p.partition
                                    );
                                    header.error_code = error::KAFKA_STORAGE_ERROR;
                                }
                            }
                        }
                    }
                }
                messages::encode_fetch_partition_header(&mut self.response, version, &header);
                if records.is_some() {
                    pieces.push(FetchPiece {
                        framing_end: self.response.len(),
                        records,
                    });
                }
            }
        }
        pieces.push(FetchPiece {
            framing_end: self.response.len(),
            records: None,
        });
        pieces
    }

    fn produce(
        &mut self,
        acks: i16,
        topics: Vec<(String, Vec<messages::ProducePartition>)>,
        request: &mut [u8],
        version: i16,
    ) {
        let mut out = Vec::with_capacity(topics.len());
        for (name, partitions) in &topics {
            let mut responses = Vec::with_capacity(partitions.len());
            for (partition, records) in partitions {
                let mut resp = messages::ProducePartitionResponse {
                    partition: *partition,
                    error_code: error::NONE,
                    base_offset: -1,
                    log_start_offset: -1,
                    error_message: None,
                };
                if !matches!(acks, -1..=1) {
                    resp.error_code = error::INVALID_REQUIRED_ACKS;
                    responses.push(resp);
                    continue;
                }
                let log = match self.broker.partition_or_create(name, *partition) {
                    Ok(Some(log)) => log,
                    Ok(None) => {
                        resp.error_code = error::UNKNOWN_TOPIC_OR_PARTITION;
                        responses.push(resp);
                        continue;
                    }
                    Err(e) => {
                        resp.error_code = error::INVALID_TOPIC_EXCEPTION;
                        resp.error_message = Some(e.to_string());
                        responses.push(resp);
                        continue;
                    }
                };
                let range = records.clone().unwrap_or(0..0);
                let batches = &mut request[range];
                match log.append(batches) {
                    Ok(base) => {
                        resp.base_offset = base;
                        resp.log_start_offset = log.log_start_offset();
                    }
                    Err(e) => {
                        let corrupt = matches!(e, LogError::InvalidBatch { .. });
                        resp.error_code = if corrupt {
                            error::CORRUPT_MESSAGE
                        } else {
                            error::KAFKA_STORAGE_ERROR
                        };
                        ::log::warn!("{}: produce to {name}-{partition} rejected: {e}", self.peer);
                        resp.error_message = Some(e.to_string());
                    }
                }
                responses.push(resp);
            }
            out.push((name.as_str(), responses));
        }
        messages::encode_produce_response(&mut self.response, version, &out);
    }
}
