//! Counters kept by a transport endpoint (server or client).

use serde::Serialize;

use super::frame::FrameError;

/// Frames rejected by the parser, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub truncated: u64,
    pub not_ipv4: u64,
    pub not_udp: u64,
    pub fragmented: u64,
    pub bad_length: u64,
    pub wrong_port: u64,
    pub bad_magic: u64,
    pub unknown_kind: u64,
    pub bad_body: u64,
}

impl Malformed {
    pub fn total(&self) -> u64 {
        self.truncated
            + self.not_ipv4
            + self.not_udp
            + self.fragmented
            + self.bad_length
            + self.wrong_port
            + self.bad_magic
            + self.unknown_kind
            + self.bad_body
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub data_frames_sent: u64,
    pub data_frames_received: u64,
    pub bytes_sent: u64,
    pub acks_sent: u64,
    pub acks_received: u64,
    /// Re-posts of a frame already sent once (timeout or fast retransmit).
    pub retransmissions: u64,
    pub fast_retransmissions: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    pub duplicates_dropped: u64,
    pub out_of_window: u64,
    /// IPv4 header checksum or data-plane CRC-32C mismatches.
    pub checksum_failures: u64,
    pub malformed: Malformed,
    /// Frames naming a session this endpoint does not have (or from another address).
    pub unknown_session: u64,
    /// Frames that parse but make no sense in the session's state.
    pub unexpected: u64,
    pub handshakes_started: u64,
    pub cookies_sent: u64,
    pub bad_cookies: u64,
    pub stale_cookies: u64,
    pub sessions_opened: u64,
    pub sessions_completed: u64,
    pub sessions_failed: u64,
    pub sessions_timed_out: u64,
    pub errors_sent: u64,
    pub errors_received: u64,
    /// Times a frame could not be queued because the TX ring was full.
    pub tx_ring_full: u64,
    /// Times no TX frame was free in the pool.
    pub tx_pool_empty: u64,
    pub rtt_samples: u64,
    /// Latest smoothed round-trip time, microseconds.
    pub srtt_us: u64,
    pub bytes_delivered: u64,
    pub batches_delivered: u64,
}

impl Stats {
    /// Counts a parse failure under its reason.
    pub fn count_rejected(&mut self, e: &FrameError) {
        let m = &mut self.malformed;
        match e {
            FrameError::Truncated { .. } => m.truncated += 1,
            FrameError::NotIpv4(_) => m.not_ipv4 += 1,
            FrameError::NotUdp(_) => m.not_udp += 1,
            FrameError::Fragmented => m.fragmented += 1,
            FrameError::BadLength(_) => m.bad_length += 1,
            FrameError::WrongPort(_) => m.wrong_port += 1,
            FrameError::BadMagic(_) => m.bad_magic += 1,
            FrameError::UnknownKind(_) => m.unknown_kind += 1,
            FrameError::BadBody(..) => m.bad_body += 1,
            FrameError::BadIpChecksum | FrameError::BadChecksum => self.checksum_failures += 1,
        }
    }

    /// Frames that arrived but could not be used (damaged or malformed).
    pub fn frames_lost_or_rejected(&self) -> u64 {
        self.checksum_failures + self.malformed.total()
    }
}
