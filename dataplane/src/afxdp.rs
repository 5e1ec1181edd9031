//! The AF_XDP data path end to end: the XDP program steers the data-plane
//! flow of one interface queue to an AF_XDP socket, and the reliable
//! transport moves record batches through the socket's UMEM — from the log to
//! the client (fetch) and from the client into the log (produce).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use clap::Args;
use dataplane_common::XdpConfig;

use crate::{
    bench::report::Latency,
    log::{BatchHeader, FetchSlice, PartitionLog, TopicPartition, generate::GenSpec},
    tcp::broker::Broker,
    transfer::{CopyError, CopySink, TransferReport, Verifier, VerifyError},
    transport::{
        self, BatchAppender, ClientConfig, Endpoint, FetchSource, FetchStream, ProduceSink, Server,
        ServerConfig,
    },
    xdp::{
        loader::{AttachOptions, LoaderError, XdpModeChoice, XdpProgram},
        xsk::{BindMode, BusyPoll, XskConfig, XskError, XskSocket},
    },
};

/// Where and how the AF_XDP path runs.
#[derive(Args, Clone, Debug)]
pub struct AfxdpArgs {
    /// Interface carrying the data path (on the lab: dpv-srv on the server
    /// side, dpv-cli on the client side).
    #[arg(long)]
    pub iface: Option<String>,
    /// Receive queue of the interface the socket binds to.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// UDP port of the data path (both ends).
    #[arg(long, default_value_t = crate::DEFAULT_AFXDP_PORT)]
    pub udp_port: u16,
    /// XDP attach mode: native (driver), skb (generic), or auto (native, else skb).
    #[arg(long, value_enum, default_value_t = XdpModeChoice::Auto)]
    pub xdp_mode: XdpModeChoice,
    /// Socket bind mode: zero-copy needs driver support; auto takes zero-copy
    /// where there is one and copy otherwise, and says which it got.
    #[arg(long, value_enum, default_value_t = BindMode::Auto)]
    pub bind: BindMode,
    /// Bytes per UMEM frame (2048 or 4096). Frames on the wire are at most
    /// the MTU plus the Ethernet header.
    #[arg(long, default_value_t = 4096)]
    pub frame_size: u32,
    /// UMEM frames (half for TX, half kept on the fill ring for RX).
    #[arg(long, default_value_t = 4096)]
    pub frames: u32,
    /// Turn off the need_wakeup optimisation (to compare).
    #[arg(long)]
    pub no_need_wakeup: bool,
    /// Busy-poll the socket for up to USECS microseconds per poll.
    #[arg(long, value_name = "USECS")]
    pub busy_poll: Option<u32>,
    /// Back the UMEM with huge pages.
    #[arg(long)]
    pub hugepages: bool,
    /// Most descriptors moved per ring operation.
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Frames in flight per session: the sender's limit and the receiver's
    /// advertised window. Above the receiving path's queue (a veth ring holds
    /// 256) frames are dropped and must be retransmitted.
    #[arg(long, default_value_t = 256)]
    pub window: u32,
    /// Replace an XDP program already attached to the interface.
    #[arg(long)]
    pub force: bool,
}

impl AfxdpArgs {
    pub fn iface(&self) -> Result<&str, AfxdpError> {
        self.iface.as_deref().ok_or(AfxdpError::NoInterface)
    }

    fn xsk_config(&self) -> XskConfig {
        XskConfig {
            frame_size: self.frame_size,
            frame_count: self.frames,
            tx_frames: self.frames / 2,
            fill_size: (self.frames / 2).next_power_of_two(),
            completion_size: (self.frames / 2).next_power_of_two(),
            rx_size: (self.frames / 2).next_power_of_two(),
            tx_size: (self.frames / 2).next_power_of_two(),
            bind: self.bind,
            need_wakeup: !self.no_need_wakeup,
            busy_poll: self.busy_poll.map(|usecs| BusyPoll {
                usecs,
                budget: self.batch,
            }),
            hugepages: self.hugepages,
            queue: self.queue,
            batch: self.batch,
        }
    }
}

/// The fault injector of the XDP program (for tests and demonstrations).
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct FaultArgs {
    /// Drop one in N data frames arriving here (0: off).
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    pub inject_drop: u32,
    /// Deliver one in N data frames twice (0: off).
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    pub inject_duplicate: u32,
    /// Corrupt one in N data frames (0: off).
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    pub inject_corrupt: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AfxdpError {
    #[error("the AF_XDP path needs --iface (the interface whose queue carries the flow)")]
    NoInterface,
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Xsk(#[from] XskError),
    #[error("{iface}: {what}: {source}")]
    Interface {
        iface: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no MAC address for next hop {hop} toward {peer} on {iface}: {detail}")]
    Neighbour {
        iface: String,
        peer: Ipv4Addr,
        hop: Ipv4Addr,
        detail: String,
    },
    #[error(transparent)]
    Transport(#[from] transport::ClientError),
    #[error("{peer}: {source}")]
    Verify {
        peer: SocketAddrV4,
        #[source]
        source: VerifyError,
    },
    #[error("writing the fetched copy: {0}")]
    Copy(#[from] CopyError),
    #[error("serving on {iface} queue {queue}: {source}")]
    Serve {
        iface: String,
        queue: u32,
        #[source]
        source: std::io::Error,
    },
}

/// The interface's MAC and IPv4 address (in this thread's namespace).
pub fn local_endpoint(iface: &str, port: u16) -> Result<Endpoint, AfxdpError> {
    let err = |what| {
        move |source| AfxdpError::Interface {
            iface: iface.into(),
            what,
            source,
        }
    };
    let mac = crate::xdp::iface::mac(iface).map_err(err("reading its MAC address"))?;
    let ip = crate::xdp::iface::ipv4(iface)
        .map_err(err("reading its IPv4 address (does it have one?)"))?;
    Ok(Endpoint { mac, ip, port })
}

/// The next hop toward `peer` (the gateway if the route has one) and the
/// interface the kernel would use.
fn next_hop(peer: Ipv4Addr) -> Option<(Ipv4Addr, Option<String>)> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "get", &peer.to_string()])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let route = json.get(0)?;
    let hop = route
        .get("gateway")
        .and_then(|g| g.as_str())
        .and_then(|g| g.parse().ok())
        .unwrap_or(peer);
    Some((
        hop,
        route.get("dev").and_then(|d| d.as_str()).map(str::to_owned),
    ))
}

fn arp_entry(ip: Ipv4Addr) -> Option<[u8; 6]> {
    // The thread's own view: /proc/self/net would show the process's namespace.
    let table = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags (0x2 = complete), HW address, Mask, Device
        if f.len() < 6 || f[0] != ip.to_string() || f[2] == "0x0" {
            return None;
        }
        let mut mac = [0u8; 6];
        let parts: Vec<u8> = f[3]
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        (parts.len() == 6).then(|| {
            mac.copy_from_slice(&parts);
            mac
        })
    })
}

/// Resolves the MAC of the next hop toward `peer` through the kernel's
/// neighbour table, prompting a resolution with one datagram to the discard
/// port if the entry is missing.
pub fn resolve_peer_mac(iface: &str, peer: Ipv4Addr) -> Result<[u8; 6], AfxdpError> {
    let (hop, dev) = next_hop(peer).unwrap_or((peer, None));
    let fail = |detail: String| AfxdpError::Neighbour {
        iface: iface.into(),
        peer,
        hop,
        detail,
    };
    if let Some(dev) = dev
        && dev != iface
    {
        return Err(fail(format!(
            "the route to {peer} leaves by {dev}, not {iface}"
        )));
    }
    if let Some(mac) = arp_entry(hop) {
        return Ok(mac);
    }
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| fail(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let _ = socket.send_to(&[], (hop, 9));
        for _ in 0..20 {
            if let Some(mac) = arp_entry(hop) {
                return Ok(mac);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Err(fail("no ARP answer within 3 s".into()))
}

/// The XDP program and the socket of one end, torn down on drop (socket
/// first, then the program).
pub struct XdpPath {
    pub socket: XskSocket,
    pub program: XdpProgram,
}

impl XdpPath {
    /// Attaches the program to `args.iface`, configures it, admits `peers`,
    /// and opens and registers the socket on `args.queue`.
    pub fn open(
        args: &AfxdpArgs,
        peers: &[Ipv4Addr],
        admit_all: bool,
        faults: FaultArgs,
    ) -> Result<Self, AfxdpError> {
        let iface = args.iface()?;
        let mut options = AttachOptions::new(iface);
        options.mode = args.xdp_mode;
        options.force = args.force;
        let mut program = XdpProgram::attach(&options)?;
        program.set_config(&XdpConfig {
            udp_port: args.udp_port,
            flags: if admit_all { XdpConfig::ADMIT_ALL } else { 0 },
            drop_one_in: faults.inject_drop,
            duplicate_one_in: faults.inject_duplicate,
            corrupt_one_in: faults.inject_corrupt,
        })?;
        for peer in peers {
            program.admit(*peer)?;
        }
        let mut socket = XskSocket::open(iface, &args.xsk_config())?;
        socket.register(&mut program)?;
        Ok(XdpPath { socket, program })
    }

    /// What was obtained, in one line.
    pub fn obtained(&self) -> String {
        let mut s = self.socket.report().to_string();
        if let Some(why) = self.program.fallback_reason() {
            s.push_str(&format!(" (skb mode because {why})"));
        }
        s
    }

    /// Kernel and XDP figures for reports.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "xdp_counters": self.program.counters().ok().map(|c| c.to_string()),
            "xsk_statistics": self.socket.statistics().ok(),
        })
    }
}

fn random_secret() -> [u8; 16] {
    let mut secret = [0u8; 16];
    // SAFETY: getrandom writes at most secret.len() bytes into secret.
    let n = unsafe { libc::getrandom(secret.as_mut_ptr().cast(), secret.len(), 0) };
    if n != secret.len() as isize {
        // Only the cookie's unpredictability depends on this; fall back to time.
        let t = Instant::now().elapsed().as_nanos() ^ std::process::id() as u128;
        secret.copy_from_slice(&t.to_le_bytes());
    }
    secret
}

/// The log bytes of one fetch: whole batches from the requested offset's
/// batch to the high watermark at the time of the request, possibly spanning
/// segments. Copies go straight from the segments' memory maps into UMEM frames.
pub struct LogStream {
    slices: Vec<FetchSlice>,
    /// Stream position where each slice starts.
    starts: Vec<u64>,
    len: u64,
}

impl FetchStream for LogStream {
    fn len(&self) -> u64 {
        self.len
    }

    fn copy_to(&self, pos: u64, dst: &mut [u8]) -> usize {
        let mut i = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
        let mut done = 0;
        let mut pos = pos;
        while done < dst.len() && i < self.slices.len() {
            let bytes = self.slices[i].bytes();
            let within = (pos - self.starts[i]) as usize;
            let n = (bytes.len() - within).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&bytes[within..within + n]);
            done += n;
            pos += n as u64;
            i += 1;
        }
        done
    }
}

/// Offset meaning "the log start", as Kafka's ListOffsets EARLIEST.
pub const EARLIEST: i64 = -2;

/// Fetch sessions read the broker's partitions.
pub struct BrokerSource(pub Arc<Broker>);

impl FetchSource for BrokerSource {
    type Stream = LogStream;

    fn open(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: u64,
    ) -> Result<LogStream, String> {
        let log = self
            .0
            .partition(topic, partition)
            .ok_or_else(|| format!("unknown topic-partition {topic}-{partition}"))?;
        let mut next = if offset == EARLIEST {
            log.log_start_offset()
        } else {
            offset
        };
        let end = log.high_watermark();
        if next < log.log_start_offset() || next > end {
            return Err(format!(
                "offset {next} is out of range: {topic}-{partition} holds {}..{end}",
                log.log_start_offset()
            ));
        }
        let limit = if max_bytes == 0 { u64::MAX } else { max_bytes };
        let mut stream = LogStream {
            slices: Vec::new(),
            starts: Vec::new(),
            len: 0,
        };
        // At least one batch even when max_bytes is smaller (KIP-74).
        while next < end && (stream.len < limit || stream.slices.is_empty()) {
            let room = (limit - stream.len).min(usize::MAX as u64) as usize;
            match log.fetch_slice(next, room).map_err(|e| e.to_string())? {
                Some(slice) => {
                    next = slice.last_offset + 1;
                    stream.starts.push(stream.len);
                    stream.len += slice.len as u64;
                    stream.slices.push(slice);
                }
                None => break,
            }
        }
        Ok(stream)
    }
}

/// Produce sessions append to the broker's partitions (created on demand,
/// as the TCP path does).
pub struct BrokerSink(pub Arc<Broker>);

pub struct LogAppender(Arc<PartitionLog>);

impl BatchAppender for LogAppender {
    fn append(&mut self, batch: &mut [u8]) -> Result<i64, String> {
        self.0.append(batch).map_err(|e| e.to_string())
    }
}

impl ProduceSink for BrokerSink {
    type Appender = LogAppender;

    fn open(&mut self, topic: &str, partition: i32) -> Result<LogAppender, String> {
        match self.0.partition_or_create(topic, partition) {
            Ok(Some(log)) => Ok(LogAppender(log)),
            Ok(None) => Err(format!("unknown topic-partition {topic}-{partition}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Who the server admits.
#[derive(Args, Clone, Debug, Default)]
pub struct AdmitArgs {
    /// Admit data-plane frames from this IPv4 source (repeatable).
    #[arg(long, value_name = "IP")]
    pub admit: Vec<Ipv4Addr>,
    /// Admit data-plane frames from any source (the cookie handshake still
    /// proves each client's address before data flows).
    #[arg(long)]
    pub admit_any: bool,
}

/// Serves the broker's partitions over AF_XDP until `stop` is set.
/// `on_ready` gets the one-line description of what was obtained.
pub fn serve(
    broker: Arc<Broker>,
    args: &AfxdpArgs,
    admit: &AdmitArgs,
    faults: FaultArgs,
    stop: &AtomicBool,
    on_ready: impl FnOnce(&str),
) -> Result<serde_json::Value, AfxdpError> {
    let iface = args.iface()?;
    let admit_all = admit.admit_any || admit.admit.is_empty();
    let mut path = XdpPath::open(args, &admit.admit, admit_all, faults)?;
    let local = local_endpoint(iface, args.udp_port)?;
    let mut config = ServerConfig::new(local, random_secret());
    config.window = args.window;
    config.max_in_flight = args.window as usize;
    let mut server = Server::new(config, BrokerSource(broker.clone()), BrokerSink(broker));
    on_ready(&format!(
        "{}, UDP port {} at {}",
        path.obtained(),
        args.udp_port,
        local.ip
    ));
    server
        .run(&mut path.socket, stop)
        .map_err(|source| AfxdpError::Serve {
            iface: iface.into(),
            queue: args.queue,
            source,
        })?;
    let mut details = path.details();
    details["transport"] = serde_json::to_value(server.stats()).unwrap_or_default();
    Ok(details)
}

/// The client end: the path plus both endpoints.
struct ClientEnd {
    path: XdpPath,
    config: ClientConfig,
}

impl ClientEnd {
    fn open(args: &AfxdpArgs, server: Ipv4Addr, faults: FaultArgs) -> Result<Self, AfxdpError> {
        let iface = args.iface()?;
        let path = XdpPath::open(args, &[server], false, faults)?;
        let local = local_endpoint(iface, args.udp_port)?;
        let mac = resolve_peer_mac(iface, server)?;
        let server = Endpoint {
            mac,
            ip: server,
            port: args.udp_port,
        };
        Ok(ClientEnd {
            path,
            config: ClientConfig::new(local, server),
        })
    }

    fn peer(&self) -> SocketAddrV4 {
        self.config.server.socket_addr()
    }
}

/// Consumes a topic-partition over AF_XDP, verifying every batch, and
/// optionally writing what it got to `out_dir`.
pub fn fetch(
    args: &AfxdpArgs,
    server: Ipv4Addr,
    tp: &TopicPartition,
    start: Option<i64>,
    max_batches: Option<u64>,
    out_dir: Option<&PathBuf>,
    faults: FaultArgs,
) -> Result<TransferReport, AfxdpError> {
    let mut end = ClientEnd::open(args, server, faults)?;
    let peer = end.peer();
    let mut sink = match out_dir {
        Some(dir) => Some(CopySink::create(dir, tp)?),
        None => None,
    };
    let mut verifier = Verifier::new(start.unwrap_or(0), max_batches);
    let mut failure: Option<AfxdpError> = None;
    let request = transport::FetchRequest {
        topic: &tp.topic,
        partition: tp.partition,
        offset: start.unwrap_or(EARLIEST),
        max_bytes: 0,
    };
    let report = transport::fetch(&mut end.path.socket, &end.config, &request, &mut |batch| {
        if failure.is_some() || verifier.done() {
            return;
        }
        let counted = verifier.report.batches;
        if let Err(source) = verifier.feed(batch) {
            failure = Some(AfxdpError::Verify { peer, source });
            return;
        }
        if let Some(sink) = sink.as_mut() {
            // One batch per call: its base offset is where the verifier was.
            if verifier.report.batches > counted {
                let first = BatchHeader::parse(batch).map_or(0, |h| h.base_offset);
                if let Err(e) = sink.append(batch, first) {
                    failure = Some(e.into());
                }
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(sink) = sink.as_ref() {
        sink.sync()?;
    }
    let mut out = verifier.report;
    out.path = "afxdp".into();
    out.obtained = end.path.obtained();
    out.verified = true;
    out.finish(report.elapsed);
    let mut details = end.path.details();
    details["transport"] = serde_json::to_value(report.stats).unwrap_or_default();
    details["handshake_us"] = (report.handshake.as_secs_f64() * 1e6).into();
    out.details = details;
    Ok(out)
}

/// Produces generated batches over AF_XDP.
pub fn produce(
    args: &AfxdpArgs,
    server: Ipv4Addr,
    tp: &TopicPartition,
    spec: &GenSpec,
    faults: FaultArgs,
) -> Result<TransferReport, AfxdpError> {
    let mut end = ClientEnd::open(args, server, faults)?;
    let per_batch = u64::from(spec.records_per_batch.max(1));
    let batches = spec.records.div_ceil(per_batch);
    let generated = (0..batches).map(|b| {
        let first = b * per_batch;
        let mut batch = Vec::new();
        crate::log::generate::batch_into(
            spec,
            first as i64,
            per_batch.min(spec.records - first) as u32,
            &mut batch,
        );
        batch
    });
    let report = transport::produce(
        &mut end.path.socket,
        &end.config,
        &tp.topic,
        tp.partition,
        generated,
    )?;
    // The server answers with the base offset it gave the last batch.
    let last_batch_records = spec.records - (batches.max(1) - 1) * per_batch;
    let next_offset = report.last_offset + last_batch_records as i64;
    let mut out = TransferReport {
        path: "afxdp".into(),
        obtained: end.path.obtained(),
        bytes: report.bytes,
        batches: report.batches,
        records: spec.records,
        first_offset: next_offset - spec.records as i64,
        next_offset,
        // Every batch was acknowledged after the server's CRC check and append.
        verified: report.batches == batches,
        ..Default::default()
    };
    out.finish(report.elapsed);
    let mut details = end.path.details();
    details["transport"] = serde_json::to_value(report.stats).unwrap_or_default();
    out.details = details;
    Ok(out)
}

/// Single-batch request→completion latency over AF_XDP: each sample is a
/// fetch of one batch; the handshake that opens each session is measured
/// apart and left out, as the TCP probe leaves out its connection setup.
pub fn latency(
    args: &AfxdpArgs,
    server: Ipv4Addr,
    tp: &TopicPartition,
    samples: usize,
) -> Result<Latency, AfxdpError> {
    let mut end = ClientEnd::open(args, server, FaultArgs::default())?;
    let peer = end.peer();
    let mut histogram = Latency::histogram();
    let mut offset = EARLIEST;
    let mut wrapped = false;
    while (histogram.len() as usize) < samples {
        let request = transport::FetchRequest {
            topic: &tp.topic,
            partition: tp.partition,
            offset,
            max_bytes: 1,
        };
        let mut verifier = Verifier::new(offset.max(0), Some(1));
        let mut failure = None;
        let report = transport::fetch(&mut end.path.socket, &end.config, &request, &mut |batch| {
            if let Err(source) = verifier.feed(batch) {
                failure.get_or_insert(AfxdpError::Verify { peer, source });
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if report.batches == 0 {
            // Past the end: wrap, unless the log has nothing from its start.
            if std::mem::replace(&mut wrapped, true) {
                return Err(AfxdpError::Transport(transport::ClientError::Protocol {
                    peer,
                    reason: format!("{tp} has no batches to measure"),
                }));
            }
            offset = EARLIEST;
            continue;
        }
        wrapped = false;
        histogram
            .saturating_record(report.elapsed.saturating_sub(report.handshake).as_nanos() as u64);
        offset = verifier.next_offset;
    }
    Ok(Latency::from_nanos(&histogram))
}
