//! The client side: handshake, then one fetch or one produce per session.

use std::{
    hash::{BuildHasher, Hasher},
    io,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use super::{
    frame::{self, CookieBody, Endpoint, Frame, Header, Kind, Message, Route},
    link::FrameLink,
    reliable::{
        BatchAssembler, Outbox, PayloadSource, Receiver, Rtt, RxError, SendError, Sender, Timing,
    },
    stats::Stats,
};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// This client's MAC, IPv4 address and UDP port.
    pub local: Endpoint,
    /// The server's.
    pub server: Endpoint,
    /// Give up when the server has been silent this long.
    pub timeout: Duration,
    /// Frames the client buffers beyond its cumulative ack (fetch).
    pub window: u32,
    /// TX frames the client may hold unacknowledged (produce).
    pub max_in_flight: usize,
    pub max_batch: usize,
    pub timing: Timing,
    pub rx_burst: usize,
}

impl ClientConfig {
    pub fn new(local: Endpoint, server: Endpoint) -> ClientConfig {
        ClientConfig {
            local,
            server,
            timeout: Duration::from_secs(5),
            window: 256,
            max_in_flight: 256,
            max_batch: 64 << 20,
            timing: Timing::default(),
            rx_burst: 64,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct FetchRequest<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// 0: up to the high watermark.
    pub max_bytes: u64,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FetchReport {
    pub session: u32,
    pub bytes: u64,
    pub batches: u64,
    /// Request (first hello) to last byte.
    pub elapsed: Duration,
    /// Hello to accept.
    pub handshake: Duration,
    pub stats: Stats,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ProduceReport {
    pub session: u32,
    pub bytes: u64,
    pub batches: u64,
    /// The offset the server's log gave the last batch (-1 if none was sent).
    pub last_offset: i64,
    pub elapsed: Duration,
    pub handshake: Duration,
    pub stats: Stats,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no answer from {peer} for {waited:?} while {during}; is the server running, \
         and is this host's address admitted by its XDP program?"
    )]
    PeerSilent {
        peer: SocketAddrV4,
        during: &'static str,
        waited: Duration,
    },
    #[error("{peer} refused the request (code {code}): {reason}")]
    Rejected {
        peer: SocketAddrV4,
        code: u16,
        reason: String,
    },
    #[error("protocol error in the stream from {peer}: {reason}")]
    Protocol { peer: SocketAddrV4, reason: String },
    #[error("{call} on the frame link failed: {source}")]
    Link {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

fn link_err(call: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Link { call, source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Hello,
    Echo,
    Request,
    Streaming,
}

impl Phase {
    fn doing(self) -> &'static str {
        match self {
            Phase::Hello => "waiting for the handshake cookie",
            Phase::Echo => "waiting for the session to be accepted",
            Phase::Request => "waiting for the answer to the request",
            Phase::Streaming => "streaming",
        }
    }
}

/// Client half of the handshake and the request that follows it; resends
/// each step on its own timer until the server answers.
struct Handshake<'r> {
    request: Message<'r>,
    window: u32,
    phase: Phase,
    nonce: u64,
    cookie: Option<CookieBody>,
    session: u32,
    server_window: u32,
    /// Largest frame this client can receive, and the server's (from its accept).
    max_frame: u16,
    server_max_frame: usize,
    sent_at: Instant,
    sends: u32,
    started: Instant,
    accepted: Option<Instant>,
}

impl<'r> Handshake<'r> {
    fn new(now: Instant, request: Message<'r>, window: u32) -> Handshake<'r> {
        Handshake {
            request,
            window,
            phase: Phase::Hello,
            nonce: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            cookie: None,
            session: 0,
            server_window: 1,
            max_frame: u16::MAX,
            server_max_frame: usize::MAX,
            sent_at: now,
            sends: 0,
            started: now,
            accepted: None,
        }
    }

    /// Takes handshake answers; true if `msg` was one.
    fn on_frame(
        &mut self,
        f: &Frame<'_>,
        msg: &Message<'_>,
        now: Instant,
        rtt: &mut Rtt,
        stats: &mut Stats,
    ) -> bool {
        match *msg {
            Message::Cookie(c) if c.nonce == self.nonce => {
                if self.phase == Phase::Hello {
                    if self.sends == 1 {
                        rtt.sample(now.saturating_duration_since(self.sent_at), stats);
                    }
                    self.cookie = Some(c);
                    self.phase = Phase::Echo;
                    self.sends = 0;
                }
                true
            }
            Message::Accept {
                nonce,
                window,
                max_frame,
            } if nonce == self.nonce => {
                if self.phase == Phase::Echo {
                    self.session = f.header.session;
                    self.server_window = window.max(1);
                    self.server_max_frame = usize::from(max_frame);
                    self.phase = Phase::Request;
                    self.sends = 0;
                    self.accepted = Some(now);
                }
                true
            }
            _ => false,
        }
    }

    /// Sends or resends the current step when its timer has run out.
    fn tick(
        &mut self,
        link: &mut dyn FrameLink,
        outbox: &mut Outbox,
        route: &Route,
        now: Instant,
        rtt: &mut Rtt,
        stats: &mut Stats,
    ) {
        if self.phase == Phase::Streaming {
            return;
        }
        if self.sends > 0 && now.saturating_duration_since(self.sent_at) < rtt.rto() {
            return;
        }
        if self.sends > 0 {
            stats.retransmissions += 1;
            stats.timeouts += 1;
            rtt.back_off();
        }
        if self.phase == Phase::Echo && self.sends >= 4 {
            // The cookie may have gone stale while echoes were lost: start over.
            self.phase = Phase::Hello;
            self.sends = 0;
        }
        let (h, msg) = match self.phase {
            Phase::Hello => (
                Header::new(Kind::Hello, 0),
                Message::Hello { nonce: self.nonce },
            ),
            Phase::Echo => (
                Header::new(Kind::CookieEcho, 0),
                Message::CookieEcho {
                    cookie: self.cookie.expect("cookie in echo phase"),
                    window: self.window,
                    max_frame: self.max_frame,
                },
            ),
            _ => (Header::new(self.request.kind(), self.session), self.request),
        };
        if outbox.send(link, route, &h, &msg, stats) {
            self.sends += 1;
            self.sent_at = now;
        }
    }

    fn handshake_time(&self) -> Duration {
        self.accepted.map(|a| a - self.started).unwrap_or_default()
    }
}

/// Receives a burst and hands each frame from the server, parsed, to `on`.
fn receive_from_server(
    link: &mut dyn FrameLink,
    cfg: &ClientConfig,
    stats: &mut Stats,
    on: &mut dyn FnMut(&Frame<'_>, Message<'_>, &mut Stats),
) -> Result<usize, ClientError> {
    link.receive(cfg.rx_burst, &mut |bytes| {
        stats.frames_received += 1;
        let f = match frame::parse(bytes, Some(cfg.local.port)) {
            Ok(f) => f,
            Err(e) => return stats.count_rejected(&e),
        };
        if f.src.ip != cfg.server.ip || f.src.port != cfg.server.port {
            stats.unknown_session += 1;
            return;
        }
        match f.message() {
            Ok(m) => on(&f, m, stats),
            Err(e) => stats.count_rejected(&e),
        }
    })
    .map_err(link_err("receive"))
}

/// Lets the last control frames leave and returns their buffers to the pool.
fn drain(link: &mut dyn FrameLink, outbox: &mut Outbox) {
    let until = Instant::now() + Duration::from_millis(100);
    loop {
        let _ = link.flush();
        outbox.reap(link);
        if outbox.is_empty() || Instant::now() > until {
            return;
        }
        let _ = link.wait(Duration::from_millis(1));
    }
}

/// Fetches `req` from the server and hands every whole batch, in order, to
/// `on_batch` (which should check its CRC).
pub fn fetch(
    link: &mut dyn FrameLink,
    cfg: &ClientConfig,
    req: &FetchRequest<'_>,
    on_batch: &mut dyn FnMut(&[u8]),
) -> Result<FetchReport, ClientError> {
    let peer = cfg.server.socket_addr();
    let route = Route {
        src: cfg.local,
        dst: cfg.server,
    };
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut outbox = Outbox::new(256);
    let mut rtt = Rtt::new(cfg.timing);
    let request = Message::FetchRequest {
        topic: req.topic,
        partition: req.partition,
        offset: req.offset,
        max_bytes: req.max_bytes,
    };
    let mut hs = Handshake::new(start, request, cfg.window);
    hs.max_frame = u16::try_from(link.frame_size()).unwrap_or(u16::MAX);
    let mut receiver = Receiver::new(cfg.window, frame::max_body(link.frame_size()));
    let mut asm = BatchAssembler::new(cfg.max_batch);
    let mut last_heard = start;
    let result = loop {
        let now = Instant::now();
        link.flush().map_err(link_err("flush"))?;
        outbox.reap(link);
        let mut failure = None;
        let n = receive_from_server(link, cfg, &mut stats, &mut |f, msg, stats| {
            if hs.on_frame(f, &msg, now, &mut rtt, stats) {
                last_heard = now;
                return;
            }
            if hs.session == 0 || f.header.session != hs.session {
                stats.unknown_session += 1;
                return;
            }
            last_heard = now;
            match msg {
                Message::Data(_) | Message::Fin { .. } => {
                    hs.phase = Phase::Streaming;
                    let r = receiver.on_frame(
                        &f.header,
                        f.body,
                        &mut |bytes| {
                            asm.feed(bytes, &mut |batch| {
                                on_batch(batch);
                                Ok(())
                            })
                        },
                        stats,
                    );
                    if let Err(RxError::Protocol(reason) | RxError::Consumer(reason)) = r {
                        failure = Some(ClientError::Protocol { peer, reason });
                    }
                }
                Message::Error { code, reason } => {
                    stats.errors_received += 1;
                    failure = Some(ClientError::Rejected {
                        peer,
                        code,
                        reason: reason.to_string(),
                    });
                }
                _ => stats.unexpected += 1,
            }
        })?;
        if let Some(e) = failure {
            break Err(e);
        }
        if std::mem::take(&mut receiver.ack_due) {
            outbox.send(
                link,
                &route,
                &Header::new(Kind::Ack, hs.session),
                &receiver.ack(),
                &mut stats,
            );
        }
        if receiver.complete() {
            if !asm.at_boundary() {
                let reason = "stream ends inside a batch".to_string();
                break Err(ClientError::Protocol { peer, reason });
            }
            let h = Header::new(Kind::Done, hs.session);
            outbox.send(
                link,
                &route,
                &h,
                &Message::Done { last_offset: -1 },
                &mut stats,
            );
            stats.sessions_completed += 1;
            stats.bytes_delivered = asm.bytes;
            stats.batches_delivered = asm.batches;
            break Ok(FetchReport {
                session: hs.session,
                bytes: asm.bytes,
                batches: asm.batches,
                elapsed: now - start,
                handshake: hs.handshake_time(),
                stats,
            });
        }
        hs.tick(link, &mut outbox, &route, now, &mut rtt, &mut stats);
        if now.saturating_duration_since(last_heard) > cfg.timeout {
            let waited = now - last_heard;
            break Err(ClientError::PeerSilent {
                peer,
                during: hs.phase.doing(),
                waited,
            });
        }
        if n == 0 {
            link.wait(Duration::from_millis(1))
                .map_err(link_err("wait"))?;
        }
    };
    if let Err(ClientError::Protocol { reason, .. }) = &result {
        let h = Header::new(Kind::Error, hs.session);
        let m = Message::Error {
            code: frame::code::PROTOCOL,
            reason,
        };
        outbox.send(link, &route, &h, &m, &mut Stats::default());
    }
    drain(link, &mut outbox);
    result
}

/// Streams byte slices of whole batches back to back.
struct BatchFeed<I: Iterator> {
    iter: I,
    cur: Option<I::Item>,
    at: usize,
    batches: u64,
}

impl<I, B> PayloadSource for BatchFeed<I>
where
    I: Iterator<Item = B>,
    B: AsRef<[u8]>,
{
    fn fill(&mut self, _pos: u64, dst: &mut [u8]) -> Result<usize, String> {
        let mut n = 0;
        while n < dst.len() {
            if self.cur.is_none() {
                self.cur = self.iter.next();
                self.at = 0;
                if self.cur.is_none() {
                    break;
                }
                self.batches += 1;
            }
            let b = self.cur.as_ref().expect("current batch").as_ref();
            let take = (b.len() - self.at).min(dst.len() - n);
            dst[n..n + take].copy_from_slice(&b[self.at..self.at + take]);
            n += take;
            self.at += take;
            if self.at == b.len() {
                self.cur = None;
            }
        }
        Ok(n)
    }
}

/// Produces `batches` (each one whole Kafka record batch) to a partition.
pub fn produce<I, B>(
    link: &mut dyn FrameLink,
    cfg: &ClientConfig,
    topic: &str,
    partition: i32,
    batches: I,
) -> Result<ProduceReport, ClientError>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let peer = cfg.server.socket_addr();
    let route = Route {
        src: cfg.local,
        dst: cfg.server,
    };
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut outbox = Outbox::new(256);
    let mut rtt = Rtt::new(cfg.timing);
    let mut hs = Handshake::new(
        start,
        Message::ProduceRequest { topic, partition },
        cfg.window,
    );
    let own_max_frame = link.frame_size();
    hs.max_frame = u16::try_from(own_max_frame).unwrap_or(u16::MAX);
    let mut sender: Option<Sender> = None;
    let mut feed = BatchFeed {
        iter: batches.into_iter(),
        cur: None,
        at: 0,
        batches: 0,
    };
    let mut last_heard = start;
    let result = loop {
        let now = Instant::now();
        link.flush().map_err(link_err("flush"))?;
        outbox.reap(link);
        let mut failure = None;
        let mut done = None;
        let n = receive_from_server(link, cfg, &mut stats, &mut |f, msg, stats| {
            if hs.on_frame(f, &msg, now, &mut rtt, stats) {
                last_heard = now;
                return;
            }
            if hs.session == 0 || f.header.session != hs.session {
                stats.unknown_session += 1;
                return;
            }
            last_heard = now;
            match msg {
                Message::Ack { cum, sack, window } if hs.phase >= Phase::Request => {
                    hs.phase = Phase::Streaming;
                    let s = sender.get_or_insert_with(|| {
                        Sender::new(
                            hs.session,
                            hs.server_window,
                            cfg.max_in_flight,
                            own_max_frame.min(hs.server_max_frame),
                            rtt,
                        )
                    });
                    s.on_ack(cum, sack, window, now, stats);
                }
                Message::Done { last_offset } => done = Some(last_offset),
                Message::Error { code, reason } => {
                    stats.errors_received += 1;
                    failure = Some(ClientError::Rejected {
                        peer,
                        code,
                        reason: reason.to_string(),
                    });
                }
                _ => stats.unexpected += 1,
            }
        })?;
        if let Some(e) = failure {
            break Err(e);
        }
        if let Some(last_offset) = done {
            // The server says done only after the fin, so after every byte.
            if sender.is_some() {
                stats.sessions_completed += 1;
                let bytes = sender.as_ref().map_or(0, Sender::position);
                stats.bytes_delivered = bytes;
                stats.batches_delivered = feed.batches;
                break Ok(ProduceReport {
                    session: hs.session,
                    bytes,
                    batches: feed.batches,
                    last_offset,
                    elapsed: now - start,
                    handshake: hs.handshake_time(),
                    stats,
                });
            }
            stats.unexpected += 1;
        }
        hs.tick(link, &mut outbox, &route, now, &mut rtt, &mut stats);
        if let Some(s) = sender.as_mut() {
            match s.pump(link, &route, &mut feed, now, &mut stats) {
                Ok(()) => {}
                Err(SendError::PeerGone { .. }) => {
                    let waited = now.saturating_duration_since(last_heard);
                    break Err(ClientError::PeerSilent {
                        peer,
                        during: "streaming",
                        waited,
                    });
                }
                Err(SendError::Source(reason)) => {
                    break Err(ClientError::Protocol { peer, reason });
                }
                Err(SendError::TooLong) => {
                    let reason = "stream too long for the sequence space".to_string();
                    break Err(ClientError::Protocol { peer, reason });
                }
            }
        }
        if now.saturating_duration_since(last_heard) > cfg.timeout {
            let waited = now - last_heard;
            break Err(ClientError::PeerSilent {
                peer,
                during: hs.phase.doing(),
                waited,
            });
        }
        if n == 0 {
            link.wait(Duration::from_millis(1))
                .map_err(link_err("wait"))?;
        }
    };
    if let Some(s) = sender.as_mut() {
        let mut leftover = Vec::new();
        s.abandon(link, &mut leftover);
        outbox.adopt(leftover);
    }
    drain(link, &mut outbox);
    result
}
