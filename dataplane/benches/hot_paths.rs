//! Micro-benchmarks of the per-byte and per-frame paths: batch validation
//! (and the CRC-32C inside it), data-frame building and parsing, a whole
//! fetch over the in-memory link, and batch encoding.
//!
//! `cargo bench -p dataplane --bench hot_paths -- --quick` for a fast pass.

use std::{
    hint::black_box,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::{
    log::{
        BatchIter, RecordBatch,
        generate::{GenSpec, batch_into},
    },
    transport::{
        ClientConfig, FetchRequest, FetchSource, FetchStream, Server, ServerConfig, client,
        frame::{self, Endpoint, Header, Kind, Route},
        server::Refuse,
        testing::MemLink,
    },
};

/// Value bytes of every generated record: a typical small event.
const RECORD_SIZE: usize = 100;
/// Batch sizes for validation and CRC, named as they are reported.
const BATCH_SIZES: [(&str, usize); 3] = [
    ("1KiB", 1 << 10),
    ("16KiB", 16 << 10),
    ("256KiB", 256 << 10),
];
/// Bytes of concatenated batches that the batch iterator walks.
const VALIDATION_BUFFER: usize = 4 << 20;
/// Frame buffer sizes: an Ethernet MTU's worth and a 4 KiB UMEM chunk.
const FRAME_SIZES: [usize; 2] = [1500, 4096];
/// Bytes moved by one fetch over the in-memory link.
const FETCH_BYTES: usize = 4 << 20;
const TOPIC: &str = "bench";

fn spec() -> GenSpec {
    GenSpec {
        record_size: RECORD_SIZE,
        ..GenSpec::default()
    }
}

/// Records per batch that bring one generated batch closest to `target`
/// bytes without going under it.
fn records_for(target: usize) -> u32 {
    let spec = spec();
    let mut one = Vec::new();
    batch_into(&spec, 0, 1, &mut one);
    let mut two = Vec::new();
    batch_into(&spec, 0, 2, &mut two);
    let per_record = two.len() - one.len();
    let fixed = one.len() - per_record;
    target.saturating_sub(fixed).div_ceil(per_record).max(1) as u32
}

/// Batches of about `target` bytes each, back to back, at least `total` bytes.
fn batches(target: usize, total: usize) -> Vec<u8> {
    let spec = spec();
    let count = records_for(target);
    let mut out = Vec::with_capacity(total + 2 * target);
    let mut offset = 0i64;
    while out.len() < total {
        batch_into(&spec, offset, count, &mut out);
        offset += i64::from(count);
    }
    out
}

fn batch_validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_validation");
    for (name, size) in BATCH_SIZES {
        let one = batches(size, 1);
        g.throughput(Throughput::Bytes(one.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("record_batch_parse", name),
            &one,
            |b, one| {
                b.iter(|| {
                    RecordBatch::parse(black_box(one))
                        .expect("valid batch")
                        .header
                        .crc
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("crc32c", name), &one, |b, one| {
            b.iter(|| crc32c::crc32c(black_box(one)))
        });

        let buf = batches(size, VALIDATION_BUFFER);
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::new("batch_iter_4MiB", name), &buf, |b, buf| {
            b.iter(|| {
                let mut n = 0usize;
                for batch in BatchIter::new(black_box(buf), 0) {
                    n += batch.expect("valid batch").1.bytes.len();
                }
                assert_eq!(n, buf.len());
                n
            })
        });
    }
    g.finish();
}

fn endpoints() -> (Endpoint, Endpoint) {
    let server = Endpoint {
        mac: [2, 0, 0, 0, 0, 1],
        ip: Ipv4Addr::new(10, 9, 0, 1),
        port: 9100,
    };
    let client = Endpoint {
        mac: [2, 0, 0, 0, 0, 2],
        ip: Ipv4Addr::new(10, 9, 0, 2),
        port: 40000,
    };
    (server, client)
}

fn frames(c: &mut Criterion) {
    let (server, client) = endpoints();
    let route = Route {
        src: server,
        dst: client,
    };
    let header = Header {
        kind: Kind::Data,
        flags: 0,
        session: 0x1234_5678,
        seq: 42,
        offset: 1 << 30,
    };
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    for size in FRAME_SIZES {
        let body_len = frame::max_body(size);
        let payload = batches(body_len, body_len);
        let payload = &payload[..body_len];
        let mut buf = vec![0u8; size];

        // What the sender does per new frame: copy log bytes into the body in
        // place, then write the headers (IPv4 checksum, CRC-32C) in front.
        g.bench_function(BenchmarkId::new("build_data", size), |b| {
            b.iter(|| {
                frame::body_mut(&mut buf)[..body_len].copy_from_slice(black_box(payload));
                frame::finish(&mut buf, &route, black_box(&header), body_len)
            })
        });

        let len = frame::finish(&mut buf, &route, &header, body_len);
        let wire = &buf[..len];
        g.bench_function(BenchmarkId::new("parse_data", size), |b| {
            b.iter(|| {
                frame::parse(black_box(wire), Some(client.port))
                    .expect("valid frame")
                    .body
                    .len()
            })
        });
    }
    g.finish();
}

/// A partition log held in memory.
struct LogInMemory(Arc<Vec<u8>>);

impl FetchStream for LogInMemory {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn copy_to(&self, pos: u64, dst: &mut [u8]) -> usize {
        let src = self.0.get(pos as usize..).unwrap_or(&[]);
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        n
    }
}

impl FetchSource for LogInMemory {
    type Stream = LogInMemory;
    fn open(&self, topic: &str, partition: i32, offset: i64, _: u64) -> Result<Self, String> {
        if topic != TOPIC || partition != 0 || offset != 0 {
            return Err(format!("no {topic}-{partition} at offset {offset}"));
        }
        Ok(LogInMemory(self.0.clone()))
    }
}

/// Retransmission timers long enough that a descheduled thread on a busy
/// machine is not taken for loss: the link drops nothing.
fn lossless_timing() -> dataplane::transport::reliable::Timing {
    dataplane::transport::reliable::Timing {
        initial_rto: Duration::from_millis(300),
        min_rto: Duration::from_millis(300),
        max_rto: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A server thread on one end of a [`MemLink`] pair, serving until dropped.
struct ServerThread {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl ServerThread {
    fn start(mut link: MemLink, config: ServerConfig, log: Arc<Vec<u8>>) -> ServerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut server = Server::new(config, LogInMemory(log), Refuse);
            server.run(&mut link, &s).expect("server loop");
        });
        ServerThread {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn fetch_over_mem_link(c: &mut Criterion) {
    let log = Arc::new(batches(16 << 10, FETCH_BYTES));
    let total = log.len();
    let (server_ep, client_ep) = endpoints();
    let mut g = c.benchmark_group("ring_loop");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for size in FRAME_SIZES {
        let (srv_link, mut cli_link) = MemLink::pair(size, 256);
        let mut srv_cfg = ServerConfig::new(server_ep, *b"0123456789abcdef");
        srv_cfg.timing = lossless_timing();
        srv_cfg.window = 128;
        srv_cfg.max_in_flight = 128;
        let mut cli_cfg = ClientConfig::new(client_ep, server_ep);
        cli_cfg.timing = lossless_timing();
        cli_cfg.timeout = Duration::from_secs(20);
        cli_cfg.window = 128;
        cli_cfg.max_in_flight = 128;
        let _server = ServerThread::start(srv_link, srv_cfg, log.clone());
        let req = FetchRequest {
            topic: TOPIC,
            partition: 0,
            offset: 0,
            max_bytes: 0,
        };
        g.bench_function(BenchmarkId::new("fetch_mem_link_4MiB", size), |b| {
            b.iter(|| {
                let mut delivered = 0usize;
                let report = client::fetch(&mut cli_link, &cli_cfg, &req, &mut |batch| {
                    delivered += black_box(batch).len();
                })
                .expect("fetch over a lossless link");
                assert_eq!(delivered, total);
                report.stats.retransmissions
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let spec = spec();
    let count = records_for(16 << 10);
    let mut out = Vec::new();
    batch_into(&spec, 0, count, &mut out);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function(BenchmarkId::new("batch_into", "16KiB"), |b| {
        b.iter(|| {
            out.clear();
            batch_into(black_box(&spec), black_box(1000), count, &mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    batch_validation,
    frames,
    fetch_over_mem_link,
    encode
);
criterion_main!(benches);
