//! Reliability machinery shared by both directions: the sending window with
//! retransmission ([`Sender`]), the reassembly ring ([`Receiver`]), the
//! round-trip estimator ([`Rtt`]), the cutter of a byte stream into whole
//! Kafka batches ([`BatchAssembler`]) and short-lived control frames
//! ([`Outbox`]).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{
    frame::{self, Header, Kind, Message, Route},
    link::{FrameId, FrameLink},
    stats::Stats,
};

/// Bytes of a Kafka batch before its `batchLength` field ends (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// The smallest v2 record batch (its header alone).
pub const MIN_BATCH: usize = 61;

/// Retransmission timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// RTO before any round trip has been measured.
    pub initial_rto: Duration,
    /// Floor of the estimated RTO.
    pub min_rto: Duration,
    /// Ceiling of the RTO, backoff included.
    pub max_rto: Duration,
    /// Sends of one frame after which the peer is given up on.
    pub max_sends: u32,
    /// SACK reports that must show a hole before it is fast-retransmitted.
    pub dup_threshold: u8,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_rto: Duration::from_millis(50),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(1),
            max_sends: 16,
            dup_threshold: 3,
        }
    }
}

/// RFC 6298 round-trip estimator with exponential backoff.
#[derive(Clone, Copy, Debug)]
pub struct Rtt {
    timing: Timing,
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
}

impl Rtt {
    pub fn new(timing: Timing) -> Rtt {
        Rtt {
            timing,
            srtt: None,
            rttvar: Duration::ZERO,
            backoff: 0,
        }
    }

    pub fn sample(&mut self, rtt: Duration, stats: &mut Stats) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
        stats.rtt_samples += 1;
        stats.srtt_us = self.srtt.unwrap_or_default().as_micros() as u64;
    }

    /// The current retransmission timeout, backoff included.
    /// The smoothed round-trip time (the initial RTO before any sample).
    pub fn smoothed(&self) -> Duration {
        self.srtt.unwrap_or(self.timing.initial_rto)
    }

    pub fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => self.timing.initial_rto,
            Some(srtt) => (srtt + self.rttvar * 4).max(self.timing.min_rto),
        };
        (base * (1u32 << self.backoff.min(16))).min(self.timing.max_rto)
    }

    pub fn back_off(&mut self) {
        self.backoff = (self.backoff + 1).min(16);
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }
}

/// Where a [`Sender`] gets the bytes of its stream.
pub trait PayloadSource {
    /// Copies stream bytes starting at `pos` into `dst`; returns how many.
    /// `Ok(0)` means the stream ends at `pos`.
    fn fill(&mut self, pos: u64, dst: &mut [u8]) -> Result<usize, String>;
}

#[derive(Clone, Copy, Debug)]
struct TxSlot {
    id: FrameId,
    len: usize,
    seq: u32,
    fin: bool,
    sent_at: Instant,
    sends: u32,
    acked: bool,
    sacked: bool,
    /// Acks that reported frames above this one while it was missing.
    holes_seen: u8,
    /// Must be (re)posted as soon as the frame is not in flight.
    due: bool,
}

/// Why a sender stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// A frame was sent `max_sends` times without being acknowledged.
    PeerGone { sends: u32 },
    /// The payload source failed.
    Source(String),
    /// Sequence space exhausted.
    TooLong,
}

/// The sending half of a stream: owns its TX frames until they are
/// cumulatively acknowledged and re-posts them, uncopied, when lost.
pub struct Sender {
    session: u32,
    max_frame: usize,
    slots: VecDeque<TxSlot>,
    next_seq: u32,
    /// The receiver's cumulative ack (next sequence it expects).
    peer_cum: u32,
    peer_window: u32,
    max_in_flight: usize,
    pos: u64,
    fin_seq: Option<u32>,
    pub rtt: Rtt,
}

impl Sender {
    /// `peer_window`: frames the receiver said it can take beyond its
    /// cumulative ack; `max_in_flight`: this sender's share of the TX pool.
    /// `max_frame`: the largest frame to send, the smaller of what this
    /// link carries and what the peer said it can receive.
    pub fn new(
        session: u32,
        peer_window: u32,
        max_in_flight: usize,
        max_frame: usize,
        rtt: Rtt,
    ) -> Sender {
        Sender {
            session,
            max_frame,
            slots: VecDeque::with_capacity(max_in_flight),
            next_seq: 0,
            peer_cum: 0,
            peer_window: peer_window.max(1),
            max_in_flight: max_in_flight.max(1),
            pos: 0,
            fin_seq: None,
            rtt,
        }
    }

    /// True once the end of stream has been acknowledged.
    pub fn finished(&self) -> bool {
        self.fin_seq.is_some_and(|f| self.peer_cum > f)
    }

    /// Bytes of the stream framed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Frames still held (sent and not yet released).
    pub fn held(&self) -> usize {
        self.slots.len()
    }

    pub fn on_ack(&mut self, cum: u32, sack: u64, window: u32, now: Instant, stats: &mut Stats) {
        stats.acks_received += 1;
        if cum > self.next_seq {
            stats.unexpected += 1;
            return;
        }
        if cum >= self.peer_cum {
            self.peer_window = window;
        }
        if cum > self.peer_cum {
            self.peer_cum = cum;
        }
        // Slots hold consecutive sequence numbers from the front's, so a
        // sequence number indexes its slot: an ack touches only what it
        // newly covers, not the whole window.
        let Some(base) = self.slots.front().map(|s| s.seq) else {
            return;
        };
        let rtt = &mut self.rtt;
        let mut mark = |s: &mut TxSlot, sacked: bool| {
            let newly = !s.acked && !s.sacked;
            if sacked {
                s.sacked = true;
            } else {
                s.acked = true;
            }
            // Karn: only frames sent once give an unambiguous sample.
            if newly && s.sends == 1 {
                rtt.sample(now.saturating_duration_since(s.sent_at), stats);
            }
        };
        // Cumulative: back from cum until the prefix an earlier ack covered.
        let covered = (cum.saturating_sub(base) as usize).min(self.slots.len());
        for s in self.slots.range_mut(..covered).rev() {
            if s.acked {
                break;
            }
            mark(s, false);
        }
        // Selective: bit i stands for cum + 1 + i.
        let mut highest_sacked = None;
        let mut bits = sack;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            let Some(seq) = cum.checked_add(1 + i) else {
                break;
            };
            // A reordered, older ack may name frames already released.
            let Some(index) = seq.checked_sub(base) else {
                continue;
            };
            let Some(s) = self.slots.get_mut(index as usize) else {
                break;
            };
            mark(s, true);
            highest_sacked = Some(seq);
        }
        if let Some(h) = highest_sacked {
            let threshold = self.rtt.timing().dup_threshold;
            // A frame resent less than a round trip ago cannot have been
            // acknowledged yet: acks for frames sent before it say nothing
            // about the resend, so they must not trigger another one.
            let srtt = self.rtt.smoothed();
            for s in self.slots.iter_mut() {
                if s.seq >= h {
                    break;
                }
                if !s.acked && !s.sacked && s.sends > 0 {
                    s.holes_seen = s.holes_seen.saturating_add(1);
                    let resent_recently =
                        s.sends > 1 && now.saturating_duration_since(s.sent_at) < srtt;
                    if s.holes_seen >= threshold && !s.due && !resent_recently {
                        s.due = true;
                        s.holes_seen = 0;
                        stats.fast_retransmissions += 1;
                    }
                }
            }
        }
    }

    /// Frees acknowledged frames whose transmission has completed.
    pub fn release(&mut self, link: &mut dyn FrameLink) {
        while let Some(s) = self.slots.front() {
            if !s.acked || link.in_flight(s.id) {
                break;
            }
            link.free(s.id);
            self.slots.pop_front();
        }
    }

    /// Frees every held frame (session torn down); frames still in flight
    /// are returned in `leftover` for the caller to free later.
    pub fn abandon(&mut self, link: &mut dyn FrameLink, leftover: &mut Vec<FrameId>) {
        for s in self.slots.drain(..) {
            if link.in_flight(s.id) {
                leftover.push(s.id);
            } else {
                link.free(s.id);
            }
        }
    }

    /// Retransmits what is due, then sends new frames within the window.
    pub fn pump(
        &mut self,
        link: &mut dyn FrameLink,
        route: &Route,
        src: &mut dyn PayloadSource,
        now: Instant,
        stats: &mut Stats,
    ) -> Result<(), SendError> {
        self.release(link);
        let rto = self.rtt.rto();
        let max_sends = self.rtt.timing().max_sends;
        let mut timed_out = false;
        for s in self.slots.iter_mut() {
            if s.acked || s.sacked {
                continue;
            }
            let expired = s.sends > 0 && now.saturating_duration_since(s.sent_at) >= rto;
            if !(s.due || expired) {
                continue;
            }
            if link.in_flight(s.id) {
                // Re-posting a frame the kernel still holds is not allowed; try next round.
                s.due = true;
                continue;
            }
            if s.sends >= max_sends {
                return Err(SendError::PeerGone { sends: s.sends });
            }
            if !link.transmit(s.id, s.len) {
                stats.tx_ring_full += 1;
                s.due = true;
                break;
            }
            if s.sends > 0 {
                stats.retransmissions += 1;
                if expired && !s.due {
                    timed_out = true;
                }
            }
            count_sent(stats, s.len, if s.fin { Kind::Fin } else { Kind::Data });
            s.sends += 1;
            s.sent_at = now;
            s.due = false;
            s.holes_seen = 0;
        }
        if timed_out {
            stats.timeouts += 1;
            self.rtt.back_off();
        }
        self.send_new(link, route, src, now, stats)
    }

    fn send_new(
        &mut self,
        link: &mut dyn FrameLink,
        route: &Route,
        src: &mut dyn PayloadSource,
        now: Instant,
        stats: &mut Stats,
    ) -> Result<(), SendError> {
        while self.fin_seq.is_none()
            && self.next_seq.wrapping_sub(self.peer_cum) < self.peer_window
            && self.slots.len() < self.max_in_flight
        {
            let Some(id) = link.alloc() else {
                stats.tx_pool_empty += 1;
                break;
            };
            let buf = link.frame_mut(id);
            let buf_len = buf.len().min(self.max_frame);
            let buf = &mut buf[..buf_len];
            let max = frame::max_body(buf_len);
            let n = match src.fill(self.pos, &mut frame::body_mut(buf)[..max]) {
                Ok(n) => n.min(max),
                Err(e) => {
                    link.free(id);
                    return Err(SendError::Source(e));
                }
            };
            let seq = self.next_seq;
            let len = if n == 0 {
                let msg = Message::Fin { total: self.pos };
                let h = Header {
                    kind: Kind::Fin,
                    flags: 0,
                    session: self.session,
                    seq,
                    offset: 0,
                };
                self.fin_seq = Some(seq);
                frame::build(buf, route, &h, &msg).expect("fin fits any frame")
            } else {
                let h = Header {
                    kind: Kind::Data,
                    flags: 0,
                    session: self.session,
                    seq,
                    offset: self.pos,
                };
                self.pos += n as u64;
                frame::finish(buf, route, &h, n)
            };
            self.next_seq = self.next_seq.checked_add(1).ok_or(SendError::TooLong)?;
            let mut slot = TxSlot {
                id,
                len,
                seq,
                fin: n == 0,
                sent_at: now,
                sends: 0,
                acked: false,
                sacked: false,
                holes_seen: 0,
                due: true,
            };
            if link.transmit(id, len) {
                slot.sends = 1;
                slot.due = false;
                count_sent(stats, len, if n == 0 { Kind::Fin } else { Kind::Data });
            } else {
                stats.tx_ring_full += 1;
                self.slots.push_back(slot);
                break;
            }
            self.slots.push_back(slot);
        }
        Ok(())
    }

    /// How long until the earliest retransmission timer fires.
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        let rto = self.rtt.rto();
        self.slots
            .iter()
            .filter(|s| !s.acked && !s.sacked)
            .map(|s| {
                if s.due || s.sends == 0 {
                    Duration::ZERO
                } else {
                    (s.sent_at + rto).saturating_duration_since(now)
                }
            })
            .min()
    }
}

fn count_sent(stats: &mut Stats, len: usize, kind: Kind) {
    stats.frames_sent += 1;
    stats.bytes_sent += len as u64;
    if kind == Kind::Data {
        stats.data_frames_sent += 1;
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RxSlot {
    present: bool,
    fin: bool,
    offset: u64,
    len: usize,
}

/// What [`Receiver::on_frame`] made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    Accepted,
    Duplicate,
    OutOfWindow,
}

/// Why a receiver gave up on its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RxError {
    /// The peer's frames contradict each other (offsets, lengths, end).
    Protocol(String),
    /// The consumer refused the bytes.
    Consumer(String),
}

/// The receiving half of a stream: a preallocated ring of `window` frame
/// bodies holding what arrived ahead of a gap.
pub struct Receiver {
    ring: Vec<u8>,
    slots: Vec<RxSlot>,
    max_body: usize,
    window: u32,
    cum: u32,
    delivered: u64,
    complete: bool,
    /// An ack should be sent (something arrived since the last one).
    pub ack_due: bool,
}

impl Receiver {
    pub fn new(window: u32, max_body: usize) -> Receiver {
        let window = window.max(1);
        Receiver {
            ring: vec![0; window as usize * max_body],
            slots: vec![RxSlot::default(); window as usize],
            max_body,
            window,
            cum: 0,
            delivered: 0,
            complete: false,
            ack_due: false,
        }
    }

    /// All bytes up to and including the end of stream were delivered.
    pub fn complete(&self) -> bool {
        self.complete
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The ack to send now: (cumulative, selective bitmap, free window).
    pub fn ack(&self) -> Message<'static> {
        let mut sack = 0u64;
        for i in 0..63u32.min(self.window.saturating_sub(1)) {
            let seq = self.cum.wrapping_add(1 + i);
            if self.slots[(seq % self.window) as usize].present {
                sack |= 1 << i;
            }
        }
        Message::Ack {
            cum: self.cum,
            sack,
            window: self.window,
        }
    }

    /// Takes a data or fin frame; delivers every byte that became contiguous
    /// to `consumer`, in order, exactly once.
    pub fn on_frame(
        &mut self,
        header: &Header,
        body: &[u8],
        consumer: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        stats: &mut Stats,
    ) -> Result<RxOutcome, RxError> {
        self.ack_due = true;
        let seq = header.seq;
        if self.complete || seq < self.cum {
            stats.duplicates_dropped += 1;
            return Ok(RxOutcome::Duplicate);
        }
        if seq - self.cum >= self.window {
            stats.out_of_window += 1;
            return Ok(RxOutcome::OutOfWindow);
        }
        let fin = match header.kind {
            Kind::Data => false,
            Kind::Fin => true,
            k => return Err(RxError::Protocol(format!("{k:?} frame in a data stream"))),
        };
        let offset = if fin {
            match Message::decode(Kind::Fin, body) {
                Ok(Message::Fin { total }) => total,
                _ => return Err(RxError::Protocol("malformed fin".into())),
            }
        } else {
            header.offset
        };
        if body.len() > self.max_body {
            return Err(RxError::Protocol(format!(
                "frame body of {} bytes",
                body.len()
            )));
        }
        if seq == self.cum {
            self.deliver(fin, offset, body, consumer)?;
            stats.data_frames_received += u64::from(!fin);
            self.cum += 1;
            self.drain(consumer)?;
            return Ok(RxOutcome::Accepted);
        }
        let i = (seq % self.window) as usize;
        if self.slots[i].present {
            stats.duplicates_dropped += 1;
            return Ok(RxOutcome::Duplicate);
        }
        let len = if fin { 0 } else { body.len() };
        self.ring[i * self.max_body..i * self.max_body + len].copy_from_slice(&body[..len]);
        self.slots[i] = RxSlot {
            present: true,
            fin,
            offset,
            len,
        };
        stats.data_frames_received += u64::from(!fin);
        Ok(RxOutcome::Accepted)
    }

    fn deliver(
        &mut self,
        fin: bool,
        offset: u64,
        body: &[u8],
        consumer: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), RxError> {
        deliver(
            &mut self.delivered,
            &mut self.complete,
            fin,
            offset,
            body,
            consumer,
        )
    }

    fn drain(
        &mut self,
        consumer: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), RxError> {
        loop {
            let i = (self.cum % self.window) as usize;
            let s = self.slots[i];
            if !s.present || self.complete {
                return Ok(());
            }
            self.slots[i].present = false;
            let start = i * self.max_body;
            let body = &self.ring[start..start + s.len];
            deliver(
                &mut self.delivered,
                &mut self.complete,
                s.fin,
                s.offset,
                body,
                consumer,
            )?;
            self.cum += 1;
        }
    }
}

fn deliver(
    delivered: &mut u64,
    complete: &mut bool,
    fin: bool,
    offset: u64,
    body: &[u8],
    consumer: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), RxError> {
    if offset != *delivered {
        return Err(RxError::Protocol(if fin {
            format!("stream ends at {offset} but {delivered} bytes arrived")
        } else {
            format!("frame at stream offset {offset}, expected {delivered}")
        }));
    }
    if fin {
        *complete = true;
        return Ok(());
    }
    consumer(body).map_err(RxError::Consumer)?;
    *delivered += body.len() as u64;
    Ok(())
}

/// Cuts a byte stream into whole Kafka record batches (`12 + batchLength`
/// bytes each) in a buffer that grows to the largest batch seen, then is reused.
pub struct BatchAssembler {
    buf: Vec<u8>,
    have: usize,
    need: usize,
    max_batch: usize,
    pub batches: u64,
    pub bytes: u64,
}

impl BatchAssembler {
    pub fn new(max_batch: usize) -> BatchAssembler {
        BatchAssembler {
            buf: Vec::with_capacity(64 * 1024),
            have: 0,
            need: 0,
            max_batch,
            batches: 0,
            bytes: 0,
        }
    }

    /// True at a batch boundary (no partial batch buffered).
    pub fn at_boundary(&self) -> bool {
        self.have == 0
    }

    pub fn feed(
        &mut self,
        mut data: &[u8],
        emit: &mut dyn FnMut(&mut [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        while !data.is_empty() {
            if self.need == 0 {
                let take = (LOG_OVERHEAD - self.have).min(data.len());
                if self.buf.len() < LOG_OVERHEAD {
                    self.buf.resize(LOG_OVERHEAD, 0);
                }
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < LOG_OVERHEAD {
                    return Ok(());
                }
                let len = i32::from_be_bytes(self.buf[8..12].try_into().expect("4 bytes"));
                let total = LOG_OVERHEAD as i64 + i64::from(len);
                if total < MIN_BATCH as i64 || total > self.max_batch as i64 {
                    return Err(format!(
                        "batch at stream offset {} has length field {len}",
                        self.bytes
                    ));
                }
                self.need = total as usize;
                if self.buf.len() < self.need {
                    self.buf.resize(self.need, 0);
                }
            }
            let take = (self.need - self.have).min(data.len());
            self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == self.need {
                let n = self.need;
                self.have = 0;
                self.need = 0;
                self.batches += 1;
                self.bytes += n as u64;
                emit(&mut self.buf[..n])?;
            }
        }
        Ok(())
    }
}

/// Control frames (acks, handshake, errors) sent once and freed when their
/// transmission completes.
pub struct Outbox {
    pending: Vec<FrameId>,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            pending: Vec::with_capacity(capacity),
        }
    }

    /// Builds and queues one control frame; false if it could not be sent
    /// now (pool empty or TX ring full). Losing one is harmless: every
    /// control exchange is retried by the side waiting for it.
    pub fn send(
        &mut self,
        link: &mut dyn FrameLink,
        route: &Route,
        header: &Header,
        msg: &Message<'_>,
        stats: &mut Stats,
    ) -> bool {
        self.reap(link);
        let Some(id) = link.alloc() else {
            stats.tx_pool_empty += 1;
            return false;
        };
        let Some(len) = frame::build(link.frame_mut(id), route, header, msg) else {
            link.free(id);
            return false;
        };
        if !link.transmit(id, len) {
            stats.tx_ring_full += 1;
            link.free(id);
            return false;
        }
        count_sent(stats, len, msg.kind());
        match msg.kind() {
            Kind::Ack => stats.acks_sent += 1,
            Kind::Error => stats.errors_sent += 1,
            Kind::Cookie => stats.cookies_sent += 1,
            _ => {}
        }
        self.pending.push(id);
        true
    }

    /// Frees control frames whose transmission completed.
    pub fn reap(&mut self, link: &mut dyn FrameLink) {
        self.pending.retain(|&id| {
            if link.in_flight(id) {
                true
            } else {
                link.free(id);
                false
            }
        });
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes over frames to free once they complete.
    pub fn adopt(&mut self, ids: impl IntoIterator<Item = FrameId>) {
        self.pending.extend(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize, tag: u8) -> Vec<u8> {
        let mut b = vec![tag; len];
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b
    }

    #[test]
    fn assembler_cuts_batches_across_any_split() {
        let stream: Vec<u8> = [batch(61, 1), batch(1000, 2), batch(70, 3)]
            .into_iter()
            .flatten()
            .collect();
        for chunk in [1, 5, 12, 13, 100, 2000] {
            let mut a = BatchAssembler::new(1 << 20);
            let mut out = Vec::new();
            for c in stream.chunks(chunk) {
                a.feed(c, &mut |b| {
                    out.push(b.to_vec());
                    Ok(())
                })
                .unwrap();
            }
            assert!(a.at_boundary());
            assert_eq!(
                out,
                vec![batch(61, 1), batch(1000, 2), batch(70, 3)],
                "chunk {chunk}"
            );
        }
        let mut a = BatchAssembler::new(1 << 20);
        assert!(
            a.feed(
                &batch(61, 1)[..12].iter().map(|_| 0).collect::<Vec<_>>(),
                &mut |_| Ok(())
            )
            .is_err()
        );
    }

    #[test]
    fn rto_has_floor_and_backoff() {
        let t = Timing {
            min_rto: Duration::from_millis(5),
            ..Timing::default()
        };
        let mut r = Rtt::new(t);
        let mut s = Stats::default();
        assert_eq!(r.rto(), t.initial_rto);
        r.sample(Duration::from_micros(10), &mut s);
        assert_eq!(r.rto(), Duration::from_millis(5));
        r.back_off();
        assert_eq!(r.rto(), Duration::from_millis(10));
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto(), t.max_rto);
        r.sample(Duration::from_millis(20), &mut s);
        assert!(r.rto() >= Duration::from_millis(20));
    }

    #[test]
    fn receiver_reorders_and_drops_duplicates() {
        let mut r = Receiver::new(4, 16);
        let mut s = Stats::default();
        let mut got = Vec::new();
        let h = |seq, offset| Header {
            kind: Kind::Data,
            flags: 0,
            session: 1,
            seq,
            offset,
        };
        let mut feed = |r: &mut Receiver, seq, off, body: &[u8], s: &mut Stats| {
            r.on_frame(
                &h(seq, off),
                body,
                &mut |b| {
                    got.extend_from_slice(b);
                    Ok(())
                },
                s,
            )
            .unwrap()
        };
        assert_eq!(feed(&mut r, 1, 3, b"def", &mut s), RxOutcome::Accepted);
        assert_eq!(
            r.ack(),
            Message::Ack {
                cum: 0,
                sack: 1,
                window: 4
            }
        );
        assert_eq!(feed(&mut r, 1, 3, b"def", &mut s), RxOutcome::Duplicate);
        assert_eq!(feed(&mut r, 9, 3, b"zzz", &mut s), RxOutcome::OutOfWindow);
        assert_eq!(feed(&mut r, 0, 0, b"abc", &mut s), RxOutcome::Accepted);
        assert_eq!(feed(&mut r, 0, 0, b"abc", &mut s), RxOutcome::Duplicate);
        let mut fin = [0u8; 8];
        fin.copy_from_slice(&6u64.to_be_bytes());
        let fh = Header {
            kind: Kind::Fin,
            flags: 0,
            session: 1,
            seq: 2,
            offset: 0,
        };
        r.on_frame(&fh, &fin, &mut |_| Ok(()), &mut s).unwrap();
        assert!(r.complete());
        assert_eq!(got, b"abcdef");
        assert_eq!(s.duplicates_dropped, 2);
        assert_eq!(s.out_of_window, 1);
    }

    proptest::proptest! {
        /// Any arrival order within the window, with duplicates, yields the
        /// stream exactly once and in order.
        #[test]
        fn receiver_delivers_any_arrival_order_exactly_once(
            seed in proptest::prelude::any::<u64>(),
            frames in 1usize..120,
            window in 1u32..40,
        ) {
            let mut x = seed | 1;
            let mut rnd = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let bodies: Vec<Vec<u8>> = (0..frames).map(|i| vec![i as u8; 1 + (rnd() % 16) as usize]).collect();
            let total: u64 = bodies.iter().map(|b| b.len() as u64).sum();
            let mut offsets = vec![0u64];
            for b in &bodies { offsets.push(offsets.last().unwrap() + b.len() as u64); }
            let mut r = Receiver::new(window, 16);
            let mut stats = Stats::default();
            let mut got = Vec::new();
            let mut acked = 0u32;
            let n = frames as u32 + 1; // + fin
            while !r.complete() {
                // Anything from below the ack (a duplicate) up to a little past the window.
                let lo = acked.saturating_sub(3);
                let seq = lo + (rnd() % u64::from(acked + window + 2 - lo)) as u32;
                if seq >= n { continue; }
                let fin_body = total.to_be_bytes();
                let (h, body): (Header, &[u8]) = if seq as usize == frames {
                    (Header { kind: Kind::Fin, flags: 0, session: 1, seq, offset: 0 }, &fin_body)
                } else {
                    let i = seq as usize;
                    (Header { kind: Kind::Data, flags: 0, session: 1, seq, offset: offsets[i] }, &bodies[i])
                };
                r.on_frame(&h, body, &mut |b| { got.extend_from_slice(b); Ok(()) }, &mut stats).unwrap();
                if let Message::Ack { cum, .. } = r.ack() { acked = cum; }
            }
            proptest::prop_assert_eq!(got, bodies.concat());
        }
    }
}
