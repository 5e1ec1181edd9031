//! Sessions end to end over the in-memory link, with and without faults.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use super::{
    client::{self, ClientConfig, ClientError, FetchRequest},
    frame::{self, CookieBody, Endpoint, Header, Kind, Message, Route},
    link::FrameLink,
    reliable::Timing,
    server::{BatchAppender, FetchSource, FetchStream, ProduceSink, Server, ServerConfig},
    stats::Stats,
    testing::{Faults, MemLink, TxRecord, WireCounts},
};

const TOPIC: &str = "orders";

fn server_ep() -> Endpoint {
    Endpoint {
        mac: [2, 0, 0, 0, 0, 1],
        ip: Ipv4Addr::new(10, 9, 0, 1),
        port: 9100,
    }
}

fn client_ep() -> Endpoint {
    Endpoint {
        mac: [2, 0, 0, 0, 0, 2],
        ip: Ipv4Addr::new(10, 9, 0, 2),
        port: 40000,
    }
}

fn timing() -> Timing {
    Timing {
        initial_rto: Duration::from_millis(20),
        min_rto: Duration::from_millis(20),
        max_rto: Duration::from_millis(200),
        max_sends: 40,
        dup_threshold: 3,
    }
}

/// Timers for fault-free runs: long enough that a stalled test thread on a
/// busy machine is not mistaken for loss, so any retransmission is a bug.
fn patient(mut t: Timing) -> Timing {
    t.min_rto = Duration::from_millis(300);
    t.max_rto = Duration::from_secs(1);
    t
}

fn configs(drop: f64) -> (ServerConfig, ClientConfig) {
    let (mut s, mut c) = (server_config(), client_config());
    if drop == 0.0 {
        s.timing = patient(s.timing);
        c.timing = patient(c.timing);
    }
    (s, c)
}

fn server_config() -> ServerConfig {
    let mut c = ServerConfig::new(server_ep(), *b"0123456789abcdef");
    c.timing = timing();
    c.window = 128;
    c.max_in_flight = 128;
    c
}

fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new(client_ep(), server_ep());
    c.timing = timing();
    c.timeout = Duration::from_secs(20);
    c.window = 128;
    c.max_in_flight = 128;
    c
}

/// Pseudo-random batches with a valid Kafka length field, `min..=max` bytes
/// each, `total` bytes in all (the last one may be shorter but is >= 61).
fn make_batches(total: usize, min: usize, max: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        let mut len = min + (next() as usize) % (max - min + 1);
        if left - len.min(left) < 61 {
            len = left;
        }
        len = len.min(left).max(61);
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        left -= len.min(left);
        out.push(b);
    }
    out
}

struct MemSource {
    log: Arc<Vec<u8>>,
}

struct MemStream {
    log: Arc<Vec<u8>>,
}

impl FetchStream for MemStream {
    fn len(&self) -> u64 {
        self.log.len() as u64
    }
    fn copy_to(&self, pos: u64, dst: &mut [u8]) -> usize {
        let src = &self.log[pos as usize..];
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        n
    }
}

impl FetchSource for MemSource {
    type Stream = MemStream;
    fn open(&self, topic: &str, partition: i32, offset: i64, _: u64) -> Result<MemStream, String> {
        if topic != TOPIC || partition != 0 {
            return Err(format!("unknown topic-partition {topic}-{partition}"));
        }
        if offset != 0 {
            return Err(format!("offset {offset} out of range"));
        }
        Ok(MemStream {
            log: self.log.clone(),
        })
    }
}

#[derive(Clone, Default)]
struct MemSink {
    batches: Arc<Mutex<Vec<Vec<u8>>>>,
    reject_from: Option<usize>,
}

impl BatchAppender for MemSink {
    fn append(&mut self, batch: &mut [u8]) -> Result<i64, String> {
        let mut b = self.batches.lock().unwrap();
        if self.reject_from.is_some_and(|r| b.len() >= r) {
            return Err("record batch too large for the segment".into());
        }
        b.push(batch.to_vec());
        Ok(b.len() as i64 - 1)
    }
}

impl ProduceSink for MemSink {
    type Appender = MemSink;
    fn open(&mut self, topic: &str, partition: i32) -> Result<MemSink, String> {
        if topic != TOPIC || partition != 0 {
            return Err(format!("unknown topic-partition {topic}-{partition}"));
        }
        Ok(self.clone())
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(Stats, MemLink)>,
    tx_log: Arc<Mutex<Vec<TxRecord>>>,
}

impl Running {
    fn start(mut link: MemLink, config: ServerConfig, source: MemSource, sink: MemSink) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let tx_log = link.tx_log();
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut server = Server::new(config, source, sink);
            server.run(&mut link, &s).unwrap();
            // Let the last completions arrive so every frame can be freed.
            for _ in 0..50 {
                server.poll(&mut link).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
            (*server.stats(), link)
        });
        Running {
            stop,
            handle,
            tx_log,
        }
    }

    fn stop(self) -> (Stats, MemLink, Vec<TxRecord>) {
        self.stop.store(true, Ordering::Relaxed);
        let (stats, link) = self.handle.join().unwrap();
        let log = self.tx_log.lock().unwrap().clone();
        (stats, link, log)
    }
}

fn faults(drop: f64, seed: u64) -> Faults {
    if drop == 0.0 {
        return Faults::default();
    }
    // Duplicates, corruption and reordering come along with any loss.
    Faults {
        drop,
        duplicate: drop / 2.0,
        corrupt: drop / 2.0,
        reorder: drop,
        seed,
    }
}

/// Every retransmission re-posted the buffer the frame was first built in.
fn assert_retransmissions_reuse_frames(log: &[TxRecord]) -> usize {
    let mut first: HashMap<(u32, u32), (super::link::FrameId, usize)> = HashMap::new();
    let mut retransmitted = 0;
    for r in log
        .iter()
        .filter(|r| r.kind == Some(Kind::Data as u8) || r.kind == Some(Kind::Fin as u8))
    {
        let e = first.entry((r.session, r.seq)).or_insert((r.id, 0));
        assert_eq!(
            e.0, r.id,
            "seq {} of session {:#x} re-sent from another frame",
            r.seq, r.session
        );
        e.1 += 1;
        if e.1 == 2 {
            retransmitted += 1;
        }
    }
    retransmitted
}

struct Outcome {
    server: Stats,
    client: Stats,
    to_client: WireCounts,
    to_server: WireCounts,
    retransmitted_seqs: usize,
}

fn run_fetch(total: usize, frame_size: usize, drop: f64, seed: u64) -> Outcome {
    let batches = make_batches(total, 1024, 256 * 1024, seed);
    let log: Vec<u8> = batches.concat();
    assert_eq!(log.len(), total);
    let (srv_cfg, cli_cfg) = configs(drop);
    let (mut srv_link, mut cli_link) = MemLink::pair(frame_size, 256);
    srv_link.set_faults(faults(drop, seed));
    cli_link.set_faults(faults(drop, seed + 1));
    let to_client = srv_link.counts_handle();
    let to_server = cli_link.counts_handle();
    let server = Running::start(
        srv_link,
        srv_cfg,
        MemSource { log: Arc::new(log) },
        MemSink::default(),
    );
    let mut got: Vec<Vec<u8>> = Vec::new();
    let req = FetchRequest {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    let report = client::fetch(&mut cli_link, &cli_cfg, &req, &mut |b| got.push(b.to_vec()))
        .unwrap_or_else(|e| {
            panic!("fetch of {total} bytes, frames {frame_size}, drop {drop}: {e}")
        });
    let (server_stats, srv_link, tx_log) = server.stop();
    assert_eq!(got.len(), batches.len(), "batch count");
    assert!(got == batches, "fetched batches differ from the log");
    assert_eq!(report.bytes, total as u64);
    assert_eq!(report.batches, batches.len() as u64);
    assert_eq!(cli_link.frames_allocated(), 0, "client leaked TX frames");
    assert_eq!(srv_link.frames_allocated(), 0, "server leaked TX frames");
    Outcome {
        server: server_stats,
        client: report.stats,
        to_client: to_client.get(),
        to_server: to_server.get(),
        retransmitted_seqs: assert_retransmissions_reuse_frames(&tx_log),
    }
}

fn run_produce(total: usize, frame_size: usize, drop: f64, seed: u64) -> Outcome {
    let batches = make_batches(total, 1024, 256 * 1024, seed);
    let (srv_cfg, cli_cfg) = configs(drop);
    let (mut srv_link, mut cli_link) = MemLink::pair(frame_size, 256);
    srv_link.set_faults(faults(drop, seed));
    cli_link.set_faults(faults(drop, seed + 1));
    let to_client = srv_link.counts_handle();
    let to_server = cli_link.counts_handle();
    let cli_log = cli_link.tx_log();
    let sink = MemSink::default();
    let stored = sink.batches.clone();
    let server = Running::start(
        srv_link,
        srv_cfg,
        MemSource {
            log: Arc::new(Vec::new()),
        },
        sink,
    );
    let report =
        client::produce(&mut cli_link, &cli_cfg, TOPIC, 0, batches.iter()).unwrap_or_else(|e| {
            panic!("produce of {total} bytes, frames {frame_size}, drop {drop}: {e}")
        });
    let (server_stats, srv_link, _) = server.stop();
    let stored = stored.lock().unwrap();
    assert_eq!(stored.len(), batches.len(), "batch count");
    assert!(
        *stored == batches,
        "stored batches differ from the produced ones"
    );
    assert_eq!(report.last_offset, batches.len() as i64 - 1);
    assert_eq!(report.bytes, total as u64);
    assert_eq!(cli_link.frames_allocated(), 0, "client leaked TX frames");
    assert_eq!(srv_link.frames_allocated(), 0, "server leaked TX frames");
    let log = cli_log.lock().unwrap().clone();
    Outcome {
        server: server_stats,
        client: report.stats,
        to_client: to_client.get(),
        to_server: to_server.get(),
        retransmitted_seqs: assert_retransmissions_reuse_frames(&log),
    }
}

const SIZES: [usize; 4] = [1024, 100 * 1024, 1024 * 1024 + 777, 3 * 1024 * 1024];

#[test]
fn fetch_is_byte_identical_without_faults() {
    for frame_size in [2048, 4096] {
        for (i, total) in SIZES.into_iter().enumerate() {
            let o = run_fetch(total, frame_size, 0.0, 10 + i as u64);
            assert_eq!(o.server.retransmissions, 0, "nothing lost, nothing re-sent");
            assert_eq!(o.client.duplicates_dropped, 0);
            assert_eq!(o.server.sessions_completed, 1);
            assert!(o.server.data_frames_sent as usize >= total / frame::max_body(frame_size));
        }
    }
}

#[test]
fn produce_is_byte_identical_without_faults() {
    for frame_size in [2048, 4096] {
        for (i, total) in SIZES.into_iter().enumerate() {
            let o = run_produce(total, frame_size, 0.0, 20 + i as u64);
            assert_eq!(o.client.retransmissions, 0);
            assert_eq!(o.server.sessions_completed, 1);
        }
    }
}

#[test]
fn fetch_recovers_from_one_percent_loss() {
    for (frame_size, total, seed) in [(2048, 3 << 20, 31), (4096, 1 << 20, 32), (4096, 1024, 33)] {
        let o = run_fetch(total, frame_size, 0.01, seed);
        if total > 1 << 20 {
            assert!(o.to_client.dropped > 0, "faults were injected");
            assert!(o.server.retransmissions > 0 && o.retransmitted_seqs > 0);
        }
    }
}

#[test]
fn fetch_recovers_from_ten_percent_loss_duplicates_corruption_and_reordering() {
    for (frame_size, total, seed) in [(2048, 3 << 20, 41), (4096, 2 << 20, 42), (2048, 5000, 43)] {
        let o = run_fetch(total, frame_size, 0.10, seed);
        if total < 1 << 20 {
            continue;
        }
        let w = o.to_client;
        assert!(
            w.dropped > 0 && w.duplicated > 0 && w.corrupted > 0 && w.reordered > 0,
            "{w:?}"
        );
        assert!(o.server.retransmissions > 0);
        assert!(
            o.server.fast_retransmissions > 0,
            "SACK gaps triggered fast retransmits"
        );
        assert!(
            o.server.timeouts > 0,
            "lost tails were recovered by the timer"
        );
        assert!(o.retransmitted_seqs > 0);
        assert!(
            o.client.duplicates_dropped > 0,
            "duplicates reached the client and were dropped"
        );
        assert!(
            o.client.checksum_failures + o.client.malformed.total() > 0,
            "corruption seen"
        );
        assert!(
            o.server.checksum_failures + o.server.malformed.total() > 0,
            "corrupted acks seen"
        );
        assert!(o.to_server.dropped > 0, "acks were lost too");
    }
}

#[test]
fn produce_recovers_from_one_percent_loss() {
    for (frame_size, total, seed) in [(2048, 3 << 20, 51), (4096, 1024, 52)] {
        let o = run_produce(total, frame_size, 0.01, seed);
        if total > 1 << 20 {
            assert!(o.to_server.dropped > 0);
            assert!(o.client.retransmissions > 0 && o.retransmitted_seqs > 0);
        }
    }
}

#[test]
fn produce_recovers_from_ten_percent_loss_duplicates_corruption_and_reordering() {
    for (frame_size, total, seed) in [(4096, 3 << 20, 61), (2048, 1 << 20, 62), (2048, 3000, 63)] {
        let o = run_produce(total, frame_size, 0.10, seed);
        if total < 1 << 20 {
            continue;
        }
        let w = o.to_server;
        assert!(
            w.dropped > 0 && w.duplicated > 0 && w.corrupted > 0 && w.reordered > 0,
            "{w:?}"
        );
        assert!(o.client.retransmissions > 0 && o.retransmitted_seqs > 0);
        assert!(o.server.duplicates_dropped > 0);
        assert!(o.server.checksum_failures + o.server.malformed.total() > 0);
        assert!(o.to_client.dropped > 0);
    }
}

/// Drives a server in this thread and collects what it sent back.
struct Harness {
    server: Server<MemSource, MemSink>,
    srv: MemLink,
    cli: MemLink,
    received: Vec<Vec<u8>>,
}

impl Harness {
    fn new(config: ServerConfig) -> Harness {
        let (srv, cli) = MemLink::pair(2048, 64);
        let log = make_batches(200_000, 1024, 8192, 7).concat();
        let server = Server::new(config, MemSource { log: Arc::new(log) }, MemSink::default());
        Harness {
            server,
            srv,
            cli,
            received: Vec::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let id = self.cli.alloc().unwrap();
        self.cli.frame_mut(id)[..bytes.len()].copy_from_slice(bytes);
        assert!(self.cli.transmit(id, bytes.len()));
        self.cli.flush().unwrap();
        self.cli.flush().unwrap();
        self.cli.free(id);
    }

    fn send(&mut self, from: Endpoint, session: u32, msg: &Message<'_>) -> usize {
        let mut buf = [0u8; 2048];
        let route = Route {
            src: from,
            dst: server_ep(),
        };
        let n = frame::build(&mut buf, &route, &Header::new(msg.kind(), session), msg).unwrap();
        self.send_raw(&buf[..n]);
        n
    }

    fn settle(&mut self) {
        for _ in 0..20 {
            self.server.poll(&mut self.srv).unwrap();
            let received = &mut self.received;
            self.cli
                .receive(64, &mut |b| received.push(b.to_vec()))
                .unwrap();
        }
    }

    fn replies(&self) -> Vec<(Kind, usize, Message<'_>)> {
        self.received
            .iter()
            .map(|b| {
                let f = frame::parse(b, None).unwrap();
                (f.header.kind, b.len(), f.message().unwrap())
            })
            .collect()
    }

    fn assert_no_data_sent(&self) {
        assert_eq!(self.server.stats().data_frames_sent, 0);
        assert!(
            self.replies()
                .iter()
                .all(|(k, _, _)| *k != Kind::Data && *k != Kind::Fin)
        );
    }

    fn cookie_for(&mut self, from: Endpoint, nonce: u64) -> CookieBody {
        self.received.clear();
        self.send(from, 0, &Message::Hello { nonce });
        self.settle();
        match self.replies().as_slice() {
            [(Kind::Cookie, _, Message::Cookie(c))] => *c,
            r => panic!("expected one cookie, got {r:?}"),
        }
    }
}

#[test]
fn spoofed_fetch_request_with_made_up_session_sends_nothing() {
    let mut h = Harness::new(server_config());
    let req = Message::FetchRequest {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    h.send(client_ep(), 0x1234_5678, &req);
    h.send(client_ep(), 0, &req);
    h.settle();
    assert_eq!(h.server.stats().unknown_session, 2);
    assert!(
        h.received.is_empty(),
        "no reply at all to an unknown session"
    );
    assert_eq!(h.srv.tx_log().lock().unwrap().len(), 0);
    h.assert_no_data_sent();
}

#[test]
fn hello_gets_only_a_cookie_no_larger_than_itself() {
    let mut h = Harness::new(server_config());
    let sent = h.send(client_ep(), 0, &Message::Hello { nonce: 1 });
    h.settle();
    let replies = h.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, Kind::Cookie);
    assert!(
        replies[0].1 <= sent,
        "reply {} bytes to a hello of {sent}",
        replies[0].1
    );
    assert_eq!(h.server.session_count(), 0, "no state before the echo");
    h.assert_no_data_sent();
}

#[test]
fn forged_stale_and_misaddressed_cookies_open_no_session() {
    let mut config = server_config();
    config.cookie_period = Duration::from_millis(40);
    let mut h = Harness::new(config);
    // Forged.
    let forged = CookieBody {
        cookie: 0xdead_beef,
        bucket: 0,
        nonce: 9,
    };
    h.send(
        client_ep(),
        0,
        &Message::CookieEcho {
            cookie: forged,
            window: 64,
            max_frame: 4096,
        },
    );
    // Echoed from another port than the one that said hello.
    let c = h.cookie_for(client_ep(), 10);
    let other = Endpoint {
        port: 40001,
        ..client_ep()
    };
    h.send(
        other,
        0,
        &Message::CookieEcho {
            cookie: c,
            window: 64,
            max_frame: 4096,
        },
    );
    // Stale: two periods later.
    let c = h.cookie_for(client_ep(), 11);
    thread::sleep(Duration::from_millis(100));
    h.received.clear();
    h.send(
        client_ep(),
        0,
        &Message::CookieEcho {
            cookie: c,
            window: 64,
            max_frame: 4096,
        },
    );
    h.settle();
    assert_eq!(h.server.stats().bad_cookies, 2);
    assert_eq!(h.server.stats().stale_cookies, 1);
    assert_eq!(h.server.session_count(), 0);
    assert!(h.received.is_empty(), "{:?}", h.replies());
    h.assert_no_data_sent();
    // A fresh cookie does open a session, and its fetch streams.
    let c = h.cookie_for(client_ep(), 12);
    h.received.clear();
    h.send(
        client_ep(),
        0,
        &Message::CookieEcho {
            cookie: c,
            window: 64,
            max_frame: 4096,
        },
    );
    h.settle();
    let session = match h.replies().as_slice() {
        [(Kind::Accept, _, Message::Accept { nonce: 12, .. })] => {
            frame::parse(&h.received[0], None).unwrap().header.session
        }
        r => panic!("expected accept, got {r:?}"),
    };
    h.received.clear();
    let req = Message::FetchRequest {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    h.send(client_ep(), session, &req);
    h.settle();
    assert!(
        h.server.stats().data_frames_sent > 0,
        "the control case streams"
    );
    // The same session id from another address is not that session.
    let before = h.server.stats().unknown_session;
    h.send(
        other,
        session,
        &Message::Ack {
            cum: 1000,
            sack: 0,
            window: 64,
        },
    );
    h.settle();
    assert_eq!(h.server.stats().unknown_session, before + 1);
}

#[test]
fn malformed_frames_are_counted_and_the_server_keeps_serving() {
    let (srv_link, mut cli_link) = MemLink::pair(2048, 128);
    let log = make_batches(300_000, 1024, 64 * 1024, 3).concat();
    let server = Running::start(
        srv_link,
        server_config(),
        MemSource {
            log: Arc::new(log.clone()),
        },
        MemSink::default(),
    );
    let mut good = [0u8; 256];
    let route = Route {
        src: client_ep(),
        dst: server_ep(),
    };
    let n = frame::build(
        &mut good,
        &route,
        &Header::new(Kind::Hello, 0),
        &Message::Hello { nonce: 5 },
    )
    .unwrap();
    let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0xff; 9], good[..n - 3].to_vec()];
    let mut b = good[..n].to_vec();
    b[frame::DP_OFFSET] = 0; // magic
    junk.push(b);
    let mut b = good[..n].to_vec();
    b[frame::DP_OFFSET + 2] = 0x7f; // kind
    junk.push(b);
    let mut b = good[..n].to_vec();
    b[n - 1] ^= 0x40; // body, so the CRC-32C fails
    junk.push(b);
    let mut b = good[..n].to_vec();
    b[36..38].copy_from_slice(&53u16.to_be_bytes()); // another UDP port
    junk.push(b);
    for j in &junk {
        let id = cli_link.alloc().unwrap();
        cli_link.frame_mut(id)[..j.len()].copy_from_slice(j);
        assert!(cli_link.transmit(id, j.len()));
        cli_link.flush().unwrap();
        cli_link.flush().unwrap();
        cli_link.free(id);
    }
    let mut got = Vec::new();
    let req = FetchRequest {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    client::fetch(&mut cli_link, &client_config(), &req, &mut |b| {
        got.extend_from_slice(b)
    })
    .unwrap();
    assert!(got == log);
    let (stats, _, _) = server.stop();
    assert_eq!(stats.malformed.truncated, 3);
    assert_eq!(stats.malformed.bad_magic, 1);
    assert_eq!(stats.malformed.unknown_kind, 1);
    assert_eq!(stats.malformed.wrong_port, 1);
    assert_eq!(stats.checksum_failures, 1);
    assert_eq!(stats.sessions_completed, 1);
}

#[test]
fn sessions_follow_one_another_and_refusals_reach_the_client() {
    let (srv_link, mut cli_link) = MemLink::pair(4096, 128);
    let log = make_batches(50_000, 1024, 4096, 5).concat();
    let sink = MemSink {
        reject_from: Some(3),
        ..MemSink::default()
    };
    let stored = sink.batches.clone();
    let server = Running::start(
        srv_link,
        server_config(),
        MemSource {
            log: Arc::new(log.clone()),
        },
        sink,
    );
    let cfg = client_config();
    for _ in 0..3 {
        let mut got = Vec::new();
        let req = FetchRequest {
            topic: TOPIC,
            partition: 0,
            offset: 0,
            max_bytes: 0,
        };
        client::fetch(&mut cli_link, &cfg, &req, &mut |b| got.extend_from_slice(b)).unwrap();
        assert!(got == log);
    }
    let req = FetchRequest {
        topic: "nope",
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    match client::fetch(&mut cli_link, &cfg, &req, &mut |_| {}) {
        Err(ClientError::Rejected { reason, .. }) => assert!(reason.contains("nope-0"), "{reason}"),
        r => panic!("expected a refusal, got {r:?}"),
    }
    let batches = make_batches(20_000, 1024, 2048, 6);
    match client::produce(&mut cli_link, &cfg, TOPIC, 0, batches.iter()) {
        Err(ClientError::Rejected { reason, .. }) => {
            assert!(reason.contains("too large"), "{reason}")
        }
        r => panic!("expected the sink's refusal, got {r:?}"),
    }
    assert_eq!(
        *stored.lock().unwrap(),
        batches[..3].to_vec(),
        "nothing after the refused batch"
    );
    let (stats, _, _) = server.stop();
    assert_eq!(stats.sessions_opened, 5);
    assert_eq!(stats.sessions_completed, 3);
    assert_eq!(stats.sessions_failed, 2);
    assert_eq!(cli_link.frames_allocated(), 0);
}

#[test]
fn silent_server_is_named_in_the_error() {
    let (_srv_link, mut cli_link) = MemLink::pair(2048, 16);
    let mut cfg = client_config();
    cfg.timeout = Duration::from_millis(150);
    let req = FetchRequest {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    let err = client::fetch(&mut cli_link, &cfg, &req, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ClientError::PeerSilent { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("10.9.0.1:9100") && text.contains("cookie"),
        "{text}"
    );
    let err = client::produce(&mut cli_link, &cfg, TOPIC, 0, [[0u8; 61]]).unwrap_err();
    assert!(err.to_string().contains("10.9.0.1:9100"));
}

#[test]
fn one_server_serves_concurrent_fetch_and_produce_sessions_sharing_its_pool() {
    let ports = [40000, 40001, 40002, 40003];
    let (mut srv_link, clients) = MemLink::star(2048, 192, &ports);
    srv_link.set_faults(faults(0.02, 71));
    let log = Arc::new(make_batches(1 << 20, 1024, 64 * 1024, 8).concat());
    let sink = MemSink::default();
    let stored = sink.batches.clone();
    let server = Running::start(
        srv_link,
        server_config(),
        MemSource { log: log.clone() },
        sink,
    );
    let produced = make_batches(512 * 1024, 1024, 32 * 1024, 9);
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut link)| {
            link.set_faults(faults(0.02, 80 + i as u64));
            let mut cfg = client_config();
            cfg.local = Endpoint {
                port: ports[i],
                mac: [2, 0, 0, 0, 1, i as u8],
                ..cfg.local
            };
            let log = log.clone();
            let produced = produced.clone();
            thread::spawn(move || {
                if i == 3 {
                    let r = client::produce(&mut link, &cfg, TOPIC, 0, produced.iter()).unwrap();
                    assert_eq!(r.batches, produced.len() as u64);
                } else {
                    let mut got = Vec::new();
                    let req = FetchRequest {
                        topic: TOPIC,
                        partition: 0,
                        offset: 0,
                        max_bytes: 0,
                    };
                    client::fetch(&mut link, &cfg, &req, &mut |b| got.extend_from_slice(b))
                        .unwrap();
                    assert!(got == *log, "client {i} got other bytes");
                }
                assert_eq!(link.frames_allocated(), 0);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (stats, srv_link, _) = server.stop();
    assert!(*stored.lock().unwrap() == produced);
    assert_eq!(stats.sessions_opened, 4);
    assert_eq!(stats.sessions_completed, 4);
    assert_eq!(srv_link.frames_allocated(), 0);
}

#[test]
fn empty_streams_complete_in_both_directions() {
    let (srv_link, mut cli_link) = MemLink::pair(2048, 64);
    let sink = MemSink::default();
    let stored = sink.batches.clone();
    let server = Running::start(
        srv_link,
        server_config(),
        MemSource {
            log: Arc::new(vec![]),
        },
        sink,
    );
    let req = FetchRequest {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    let mut calls = 0;
    let r = client::fetch(&mut cli_link, &client_config(), &req, &mut |_| calls += 1).unwrap();
    assert_eq!((r.bytes, r.batches, calls), (0, 0, 0));
    let none: [&[u8]; 0] = [];
    let r = client::produce(&mut cli_link, &client_config(), TOPIC, 0, none).unwrap();
    assert_eq!((r.bytes, r.batches, r.last_offset), (0, 0, -1));
    let (stats, _, _) = server.stop();
    assert!(stored.lock().unwrap().is_empty());
    assert_eq!(stats.sessions_completed, 2);
    let json = serde_json::to_value(stats).unwrap();
    assert_eq!(json["sessions_completed"], 2);
    assert!(json["malformed"]["bad_magic"].is_u64());
}

#[test]
fn a_full_server_says_busy_in_a_frame_no_larger_than_the_echo() {
    let mut config = server_config();
    config.max_sessions = 1;
    let mut h = Harness::new(config);
    let c = h.cookie_for(client_ep(), 1);
    h.send(
        client_ep(),
        0,
        &Message::CookieEcho {
            cookie: c,
            window: 64,
            max_frame: 4096,
        },
    );
    h.settle();
    let other = Endpoint {
        port: 40001,
        ..client_ep()
    };
    let c = h.cookie_for(other, 2);
    h.received.clear();
    let echo = h.send(
        other,
        0,
        &Message::CookieEcho {
            cookie: c,
            window: 64,
            max_frame: 4096,
        },
    );
    h.settle();
    assert_eq!(h.server.session_count(), 1);
    let replies = h.replies();
    let busy: Vec<_> = replies
        .iter()
        .filter(|(k, _, _)| *k == Kind::Error)
        .collect();
    assert_eq!(busy.len(), 1, "{replies:?}");
    assert!(matches!(
        busy[0].2,
        Message::Error {
            code: frame::code::BUSY,
            ..
        }
    ));
    assert!(busy[0].1 <= echo);
    h.assert_no_data_sent();
}
