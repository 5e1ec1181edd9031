//! The serving side: answers handshakes statelessly, then runs fetch
//! sessions (log → client) and produce sessions (client → log) over one link.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    cookie,
    frame::{self, CookieBody, Endpoint, Frame, Header, Kind, Message, Route, code},
    link::{FrameId, FrameLink},
    reliable::{BatchAssembler, Outbox, PayloadSource, Receiver, Rtt, SendError, Sender, Timing},
    stats::Stats,
};

/// Bytes of a partition's log, from the requested offset's batch to the
/// high watermark at the time of the request.
pub trait FetchStream {
    /// Total bytes in the stream.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies bytes starting at `pos` into `dst`; returns how many (fewer than
    /// `dst.len()` only at the end of the stream).
    fn copy_to(&self, pos: u64, dst: &mut [u8]) -> usize;
}

/// Where fetch sessions get their bytes (the log).
pub trait FetchSource {
    type Stream: FetchStream;
    /// `max_bytes` 0 means no limit. A refusal's text goes to the client.
    fn open(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: u64,
    ) -> Result<Self::Stream, String>;
}

/// One partition's log accepting produced batches.
pub trait BatchAppender {
    /// Appends one whole batch (which the appender may rewrite in place, e.g.
    /// its base offset); returns the offset given to the batch. A refusal
    /// fails the session with that reason; nothing of that batch is kept.
    fn append(&mut self, batch: &mut [u8]) -> Result<i64, String>;
}

/// Where produce sessions put their batches (the log).
pub trait ProduceSink {
    type Appender: BatchAppender;
    fn open(&mut self, topic: &str, partition: i32) -> Result<Self::Appender, String>;
}

/// A source or sink for servers that serve only one direction.
pub struct Refuse;

impl FetchStream for Refuse {
    fn len(&self) -> u64 {
        0
    }
    fn copy_to(&self, _: u64, _: &mut [u8]) -> usize {
        0
    }
}

impl FetchSource for Refuse {
    type Stream = Refuse;
    fn open(&self, _: &str, _: i32, _: i64, _: u64) -> Result<Refuse, String> {
        Err("this server does not serve fetches".into())
    }
}

impl BatchAppender for Refuse {
    fn append(&mut self, _: &mut [u8]) -> Result<i64, String> {
        Err("this server does not accept produce".into())
    }
}

impl ProduceSink for Refuse {
    type Appender = Refuse;
    fn open(&mut self, _: &str, _: i32) -> Result<Refuse, String> {
        Err("this server does not accept produce".into())
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This server's MAC, IPv4 address and UDP port.
    pub local: Endpoint,
    /// Key of the handshake cookies.
    pub secret: [u8; 16],
    /// Length of a cookie time bucket; a cookie is honoured in its own
    /// bucket and the next, so for one to two periods.
    pub cookie_period: Duration,
    pub max_sessions: usize,
    /// Frames a produce session can buffer beyond its cumulative ack.
    pub window: u32,
    /// TX frames one fetch session may hold unacknowledged.
    pub max_in_flight: usize,
    /// A session whose peer is silent this long is dropped.
    pub idle_timeout: Duration,
    pub max_batch: usize,
    pub timing: Timing,
    /// Frames taken from the link per poll.
    pub rx_burst: usize,
}

impl ServerConfig {
    pub fn new(local: Endpoint, secret: [u8; 16]) -> ServerConfig {
        ServerConfig {
            local,
            secret,
            cookie_period: Duration::from_secs(10),
            max_sessions: 64,
            window: 256,
            max_in_flight: 256,
            idle_timeout: Duration::from_secs(10),
            max_batch: 64 << 20,
            timing: Timing::default(),
            rx_burst: 64,
        }
    }
}

enum Role<S, A> {
    /// Handshake done, waiting for a fetch or produce request.
    Idle,
    Fetch {
        sender: Sender,
        stream: S,
    },
    Produce {
        receiver: Receiver,
        assembler: BatchAssembler,
        appender: A,
        last_offset: i64,
    },
    /// Stream over; answers a repeated fin with done until the peer goes quiet.
    Closed {
        last_offset: i64,
    },
    /// Failed; answers every frame with the error until the peer goes quiet.
    Failed {
        code: u16,
        reason: String,
    },
}

struct Session<S, A> {
    id: u32,
    peer: Endpoint,
    route: Route,
    nonce: u64,
    peer_window: u32,
    /// Largest frame the peer can receive.
    peer_max_frame: usize,
    last_heard: Instant,
    role: Role<S, A>,
    /// Replies owed to the peer, sent after the receive burst.
    owe_accept: bool,
    owe_ack: bool,
    owe_done: bool,
    owe_error: bool,
    /// Fetch finished (done or ack of the fin) or abandoned: remove.
    finished: bool,
    /// The client said it has the whole stream.
    peer_done: bool,
}

/// A handshake answer owed to an address that has no session.
#[derive(Clone, Copy)]
enum Stateless {
    Cookie { to: Endpoint, body: CookieBody },
    Busy { to: Endpoint },
}

pub struct Server<F: FetchSource, P: ProduceSink> {
    config: ConfigCache,
    source: F,
    sink: P,
    sessions: Vec<Session<F::Stream, P::Appender>>,
    stateless: Vec<Stateless>,
    outbox: Outbox,
    leftover: Vec<FrameId>,
    stats: Stats,
    epoch: Instant,
    next_id: u64,
}

struct ConfigCache {
    c: ServerConfig,
    max_body: usize,
    /// Largest frame this server's link carries (and can receive).
    max_frame: usize,
}

struct StreamSource<'a, S: FetchStream>(&'a S);

impl<S: FetchStream> PayloadSource for StreamSource<'_, S> {
    fn fill(&mut self, pos: u64, dst: &mut [u8]) -> Result<usize, String> {
        let len = self.0.len();
        if pos >= len {
            return Ok(0);
        }
        let want = (len - pos).min(dst.len() as u64) as usize;
        let n = self.0.copy_to(pos, &mut dst[..want]);
        if n == 0 {
            return Err(format!("log source returned no bytes at {pos} of {len}"));
        }
        Ok(n.min(want))
    }
}

impl<F: FetchSource, P: ProduceSink> Server<F, P> {
    pub fn new(config: ServerConfig, source: F, sink: P) -> Self {
        let sessions = Vec::with_capacity(config.max_sessions);
        Server {
            config: ConfigCache {
                max_body: 0,
                max_frame: 0,
                c: config,
            },
            source,
            sink,
            sessions,
            stateless: Vec::with_capacity(256),
            outbox: Outbox::new(1024),
            leftover: Vec::with_capacity(256),
            stats: Stats::default(),
            epoch: Instant::now(),
            next_id: 0,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn bucket(&self, now: Instant) -> u32 {
        let period = self.config.c.cookie_period.as_nanos().max(1);
        (now.saturating_duration_since(self.epoch).as_nanos() / period) as u32
    }

    /// Does what can be done now without blocking: receives a burst, answers
    /// it, (re)transmits. Returns true if any frame was received.
    pub fn poll(&mut self, link: &mut dyn FrameLink) -> io::Result<bool> {
        if self.config.max_body == 0 {
            self.config.max_body = frame::max_body(link.frame_size());
            self.config.max_frame = link.frame_size();
        }
        let now = Instant::now();
        link.flush()?;
        self.outbox.reap(link);
        self.free_leftover(link);
        let burst = self.config.c.rx_burst;
        let n = link.receive(burst, &mut |bytes| self.on_bytes(bytes, now))?;
        self.answer_stateless(link);
        self.service_sessions(link, now);
        link.flush()?;
        Ok(n > 0)
    }

    /// Serves until `stop` is set, sleeping in [`FrameLink::wait`] when idle.
    pub fn run(&mut self, link: &mut dyn FrameLink, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if !self.poll(link)? {
                let wait = self
                    .next_deadline(Instant::now())
                    .min(Duration::from_millis(10));
                link.wait(wait)?;
            }
        }
        Ok(())
    }

    fn next_deadline(&self, now: Instant) -> Duration {
        self.sessions
            .iter()
            .filter_map(|s| match &s.role {
                Role::Fetch { sender, .. } => sender.next_deadline(now),
                _ => None,
            })
            .min()
            .unwrap_or(Duration::from_millis(10))
    }

    fn free_leftover(&mut self, link: &mut dyn FrameLink) {
        self.leftover.retain(|&id| {
            if link.in_flight(id) {
                true
            } else {
                link.free(id);
                false
            }
        });
    }

    fn on_bytes(&mut self, bytes: &[u8], now: Instant) {
        self.stats.frames_received += 1;
        match frame::parse(bytes, Some(self.config.c.local.port)) {
            Ok(f) => self.on_frame(&f, now),
            Err(e) => self.stats.count_rejected(&e),
        }
    }

    fn on_frame(&mut self, f: &Frame<'_>, now: Instant) {
        let msg = match f.message() {
            Ok(m) => m,
            Err(e) => return self.stats.count_rejected(&e),
        };
        match msg {
            Message::Hello { nonce } => {
                self.stats.handshakes_started += 1;
                let bucket = self.bucket(now);
                let c = cookie::cookie(&self.config.c.secret, &f.src, nonce, bucket);
                self.push_stateless(Stateless::Cookie {
                    to: f.src,
                    body: CookieBody {
                        cookie: c,
                        bucket,
                        nonce,
                    },
                });
            }
            Message::CookieEcho {
                cookie: echo,
                window,
                max_frame,
            } => self.on_echo(f, echo, window, max_frame, now),
            // Server-bound frames below need a session the peer proved its address for.
            _ => {
                let Some(i) = self.find(f) else {
                    self.stats.unknown_session += 1;
                    return;
                };
                self.sessions[i].last_heard = now;
                self.on_session_frame(i, f, msg, now);
            }
        }
    }

    fn push_stateless(&mut self, s: Stateless) {
        // Bounded: a flood of hellos cannot grow memory; excess ones go unanswered.
        if self.stateless.len() < self.stateless.capacity() {
            self.stateless.push(s);
        }
    }

    fn find(&self, f: &Frame<'_>) -> Option<usize> {
        let id = f.header.session;
        self.sessions.iter().position(|s| {
            s.id == id && id != 0 && s.peer.ip == f.src.ip && s.peer.port == f.src.port
        })
    }

    fn on_echo(
        &mut self,
        f: &Frame<'_>,
        echo: CookieBody,
        window: u32,
        max_frame: u16,
        now: Instant,
    ) {
        let bucket = self.bucket(now);
        if echo.bucket != bucket && echo.bucket.wrapping_add(1) != bucket {
            self.stats.stale_cookies += 1;
            return;
        }
        let expected = cookie::cookie(&self.config.c.secret, &f.src, echo.nonce, echo.bucket);
        if expected != echo.cookie {
            self.stats.bad_cookies += 1;
            return;
        }
        // A repeated echo (our accept was lost) finds the session it made.
        if let Some(s) = self
            .sessions
            .iter_mut()
            .find(|s| s.peer == f.src && s.nonce == echo.nonce)
        {
            s.owe_accept = true;
            s.last_heard = now;
            return;
        }
        if self.sessions.len() >= self.config.c.max_sessions {
            self.push_stateless(Stateless::Busy { to: f.src });
            return;
        }
        let id = self.new_session_id();
        self.stats.sessions_opened += 1;
        self.sessions.push(Session {
            id,
            peer: f.src,
            route: Route {
                src: self.config.c.local,
                dst: f.src,
            },
            nonce: echo.nonce,
            peer_window: window.max(1),
            peer_max_frame: usize::from(max_frame),
            last_heard: now,
            role: Role::Idle,
            owe_accept: true,
            owe_ack: false,
            owe_done: false,
            owe_error: false,
            finished: false,
            peer_done: false,
        });
    }

    fn new_session_id(&mut self) -> u32 {
        loop {
            self.next_id += 1;
            let id = cookie::siphash24(&self.config.c.secret, &self.next_id.to_le_bytes()) as u32;
            if id != 0 && !self.sessions.iter().any(|s| s.id == id) {
                return id;
            }
        }
    }

    fn on_session_frame(&mut self, i: usize, f: &Frame<'_>, msg: Message<'_>, now: Instant) {
        let cfg = &self.config;
        let stats = &mut self.stats;
        let s = &mut self.sessions[i];
        if let Role::Failed { .. } = s.role {
            if !matches!(msg, Message::Error { .. } | Message::Done { .. }) {
                s.owe_error = true;
            }
            return;
        }
        match msg {
            Message::FetchRequest {
                topic,
                partition,
                offset,
                max_bytes,
            } => match s.role {
                Role::Idle => match self.source.open(topic, partition, offset, max_bytes) {
                    Ok(stream) => {
                        let rtt = Rtt::new(cfg.c.timing);
                        let max_frame = cfg.max_frame.min(s.peer_max_frame);
                        let sender =
                            Sender::new(s.id, s.peer_window, cfg.c.max_in_flight, max_frame, rtt);
                        s.role = Role::Fetch { sender, stream };
                    }
                    Err(reason) => fail(s, stats, code::FETCH_REJECTED, reason),
                },
                Role::Fetch { .. } => {} // a repeat; the data already flowing answers it
                _ => stats.unexpected += 1,
            },
            Message::ProduceRequest { topic, partition } => match s.role {
                Role::Idle => match self.sink.open(topic, partition) {
                    Ok(appender) => {
                        s.role = Role::Produce {
                            receiver: Receiver::new(cfg.c.window, cfg.max_body),
                            assembler: BatchAssembler::new(cfg.c.max_batch),
                            appender,
                            last_offset: -1,
                        };
                        s.owe_ack = true;
                    }
                    Err(reason) => fail(s, stats, code::PRODUCE_REJECTED, reason),
                },
                Role::Produce { .. } => s.owe_ack = true,
                _ => stats.unexpected += 1,
            },
            Message::Ack { cum, sack, window } => match &mut s.role {
                Role::Fetch { sender, .. } => {
                    sender.on_ack(cum, sack, window, now, stats);
                    if sender.finished() {
                        s.finished = true;
                    }
                }
                _ => stats.unexpected += 1,
            },
            Message::Data(_) | Message::Fin { .. } => match &mut s.role {
                Role::Produce {
                    receiver,
                    assembler,
                    appender,
                    last_offset,
                } => {
                    let r = receiver.on_frame(
                        &f.header,
                        f.body,
                        &mut |bytes| {
                            assembler.feed(bytes, &mut |batch| {
                                *last_offset = appender.append(batch)?;
                                Ok(())
                            })
                        },
                        stats,
                    );
                    s.owe_ack = true;
                    match r {
                        Ok(_) if receiver.complete() => {
                            if !assembler.at_boundary() {
                                let reason = "produce stream ends inside a batch".to_string();
                                return fail(s, stats, code::PROTOCOL, reason);
                            }
                            stats.bytes_delivered += assembler.bytes;
                            stats.batches_delivered += assembler.batches;
                            stats.sessions_completed += 1;
                            s.role = Role::Closed {
                                last_offset: *last_offset,
                            };
                            s.owe_done = true;
                        }
                        Ok(_) => {}
                        Err(super::reliable::RxError::Protocol(reason)) => {
                            fail(s, stats, code::PROTOCOL, reason)
                        }
                        Err(super::reliable::RxError::Consumer(reason)) => {
                            fail(s, stats, code::PRODUCE_REJECTED, reason)
                        }
                    }
                }
                Role::Closed { .. } => {
                    stats.duplicates_dropped += 1;
                    s.owe_done = true;
                }
                _ => stats.unexpected += 1,
            },
            Message::Done { .. } => match s.role {
                Role::Fetch { .. } => {
                    s.peer_done = true;
                    s.finished = true;
                }
                _ => stats.unexpected += 1,
            },
            Message::Error { .. } => {
                stats.errors_received += 1;
                stats.sessions_failed += 1;
                s.finished = true;
            }
            _ => stats.unexpected += 1,
        }
    }

    fn answer_stateless(&mut self, link: &mut dyn FrameLink) {
        let local = self.config.c.local;
        for a in self.stateless.drain(..) {
            match a {
                Stateless::Cookie { to, body } => {
                    let route = Route {
                        src: local,
                        dst: to,
                    };
                    let h = Header::new(Kind::Cookie, 0);
                    self.outbox
                        .send(link, &route, &h, &Message::Cookie(body), &mut self.stats);
                }
                Stateless::Busy { to } => {
                    let route = Route {
                        src: local,
                        dst: to,
                    };
                    let m = Message::Error {
                        code: code::BUSY,
                        reason: "too many sessions",
                    };
                    self.outbox.send(
                        link,
                        &route,
                        &Header::new(Kind::Error, 0),
                        &m,
                        &mut self.stats,
                    );
                }
            }
        }
    }

    fn service_sessions(&mut self, link: &mut dyn FrameLink, now: Instant) {
        let idle = self.config.c.idle_timeout;
        let mut i = 0;
        while i < self.sessions.len() {
            let s = &mut self.sessions[i];
            let stats = &mut self.stats;
            let h = Header::new(Kind::Accept, s.id);
            if std::mem::take(&mut s.owe_accept) {
                let m = Message::Accept {
                    nonce: s.nonce,
                    window: self.config.c.window,
                    max_frame: u16::try_from(self.config.max_frame).unwrap_or(u16::MAX),
                };
                self.outbox.send(link, &s.route, &h, &m, stats);
            }
            if std::mem::take(&mut s.owe_error)
                && let Role::Failed { code, reason } = &s.role
            {
                let m = Message::Error {
                    code: *code,
                    reason,
                };
                self.outbox.send(link, &s.route, &h, &m, stats);
            }
            match &mut s.role {
                Role::Produce { receiver, .. } if std::mem::take(&mut s.owe_ack) => {
                    self.outbox.send(link, &s.route, &h, &receiver.ack(), stats);
                }
                Role::Closed { last_offset } => {
                    // The done acknowledges everything; no ack is needed.
                    s.owe_ack = false;
                    if std::mem::take(&mut s.owe_done) {
                        let m = Message::Done {
                            last_offset: *last_offset,
                        };
                        self.outbox.send(link, &s.route, &h, &m, stats);
                    }
                }
                Role::Fetch { sender, stream } if !s.finished => {
                    let r = sender.pump(link, &s.route, &mut StreamSource(stream), now, stats);
                    match r {
                        Ok(()) => {}
                        Err(SendError::PeerGone { .. }) => {
                            stats.sessions_timed_out += 1;
                            s.finished = true;
                        }
                        Err(e) => {
                            sender.abandon(link, &mut self.leftover);
                            let reason = match e {
                                SendError::Source(reason) => reason,
                                _ => "stream too long".into(),
                            };
                            fail(s, stats, code::SOURCE_FAILED, reason);
                        }
                    }
                }
                _ => {}
            }
            let s = &mut self.sessions[i];
            if let Role::Fetch { sender, .. } = &mut s.role {
                if s.finished && (sender.finished() || s.peer_done) {
                    self.stats.sessions_completed += 1;
                    self.stats.bytes_delivered += sender.position();
                }
                if s.finished {
                    sender.abandon(link, &mut self.leftover);
                }
            }
            let silent = now.saturating_duration_since(s.last_heard) > idle;
            if silent
                && matches!(
                    s.role,
                    Role::Idle | Role::Fetch { .. } | Role::Produce { .. }
                )
            {
                self.stats.sessions_timed_out += 1;
            }
            if s.finished || silent {
                if let Role::Fetch { sender, .. } = &mut s.role {
                    sender.abandon(link, &mut self.leftover);
                }
                self.sessions.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn fail<S, A>(s: &mut Session<S, A>, stats: &mut Stats, code: u16, reason: String) {
    stats.sessions_failed += 1;
    s.role = Role::Failed { code, reason };
    s.owe_error = true;
}
