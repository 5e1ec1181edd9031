//! Wire format: Ethernet II / IPv4 / UDP / data-plane header / body.
//!
//! Data-plane header, big-endian, at UDP payload offset 0:
//!
//! | offset | size | field                                              |
//! |--------|------|----------------------------------------------------|
//! | 0      | 2    | magic, [`WIRE_MAGIC`] (0xDA7A)                     |
//! | 2      | 1    | kind ([`Kind`])                                    |
//! | 3      | 1    | flags (none defined yet; sent as 0)                |
//! | 4      | 4    | session id (0 before the handshake completes)      |
//! | 8      | 4    | sequence number (data and fin frames)              |
//! | 12     | 8    | stream offset of the first body byte (data frames) |
//! | 20     | 2    | body length                                        |
//! | 22     | 2    | reserved, 0                                        |
//! | 24     | 4    | CRC-32C over header (this field zeroed) and body   |
//!
//! The XDP program only looks at magic and kind (bytes 0..3), so those stay put.
//! Parsing never panics: every malformation is a [`FrameError`].

use std::net::Ipv4Addr;

pub use dataplane_common::WIRE_MAGIC;

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// Offset of the data-plane header in a frame.
pub const DP_OFFSET: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
/// Length of the data-plane header.
pub const DP_HLEN: usize = 28;
/// Offset of the body (batch bytes for data frames) in a frame.
pub const BODY_OFFSET: usize = DP_OFFSET + DP_HLEN;
/// Every header in front of the body.
pub const OVERHEAD: usize = BODY_OFFSET;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const IP_FLAG_DF: u16 = 0x4000;
const IP_FLAG_MF: u16 = 0x2000;
const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;
const TTL: u8 = 64;

/// Kind byte of a frame that carries batch bytes. The XDP program's fault
/// injector matches magic + this kind.
pub const KIND_DATA: u8 = 0x10;

/// Hello bodies are padded to this length so that the cookie challenge (the
/// only answer to an unverified peer) is never larger than what provoked it.
pub const HELLO_BODY_LEN: usize = 32;
/// Longest reason carried in an error frame.
pub const MAX_REASON: usize = 200;
/// Longest topic name in a request.
pub const MAX_TOPIC: usize = 249;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    Cookie = 0x02,
    CookieEcho = 0x03,
    Accept = 0x04,
    FetchRequest = 0x05,
    ProduceRequest = 0x06,
    Data = KIND_DATA,
    Fin = 0x11,
    Ack = 0x12,
    Done = 0x13,
    Error = 0x14,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Cookie,
            0x03 => Kind::CookieEcho,
            0x04 => Kind::Accept,
            0x05 => Kind::FetchRequest,
            0x06 => Kind::ProduceRequest,
            KIND_DATA => Kind::Data,
            0x11 => Kind::Fin,
            0x12 => Kind::Ack,
            0x13 => Kind::Done,
            0x14 => Kind::Error,
            _ => return None,
        })
    }
}

/// Error codes carried in error frames.
pub mod code {
    /// The fetch source refused the request (unknown topic, offset out of range...).
    pub const FETCH_REJECTED: u16 = 1;
    /// The produce sink refused a batch or the partition.
    pub const PRODUCE_REJECTED: u16 = 2;
    /// The peer broke the protocol (bad batch framing, offset mismatch...).
    pub const PROTOCOL: u16 = 3;
    /// The server has no room for another session.
    pub const BUSY: u16 = 4;
    /// The server's source failed while streaming.
    pub const SOURCE_FAILED: u16 = 5;
}

/// One side of a flow: MAC, IPv4 address and UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl Endpoint {
    pub fn socket_addr(&self) -> std::net::SocketAddrV4 {
        std::net::SocketAddrV4::new(self.ip, self.port)
    }
}

/// Source and destination of frames built for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl Route {
    pub fn reversed(&self) -> Route {
        Route {
            src: self.dst,
            dst: self.src,
        }
    }
}

/// Fixed fields of the data-plane header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub flags: u8,
    pub session: u32,
    pub seq: u32,
    pub offset: u64,
}

impl Header {
    pub fn new(kind: Kind, session: u32) -> Header {
        Header {
            kind,
            flags: 0,
            session,
            seq: 0,
            offset: 0,
        }
    }
}

/// Why a frame was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: {layer} needs {needed} bytes, {available} available")]
    Truncated {
        layer: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("not IPv4 (ethertype {0:#06x} or version/IHL byte)")]
    NotIpv4(u16),
    #[error("not UDP (IP protocol {0})")]
    NotUdp(u8),
    #[error("IPv4 fragment")]
    Fragmented,
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    #[error("inconsistent length in {0}")]
    BadLength(&'static str),
    #[error("UDP destination port {0} is not ours")]
    WrongPort(u16),
    #[error("bad data-plane magic {0:#06x}")]
    BadMagic(u16),
    #[error("unknown data-plane kind {0:#04x}")]
    UnknownKind(u8),
    #[error("data-plane CRC-32C mismatch")]
    BadChecksum,
    #[error("malformed {0:?} body: {1}")]
    BadBody(Kind, &'static str),
}

/// A parsed frame, borrowing from the receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Where the frame came from (source MAC, IP, port).
    pub src: Endpoint,
    /// Where it was sent (destination MAC, IP, port).
    pub dst: Endpoint,
    pub header: Header,
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    pub fn message(&self) -> Result<Message<'a>, FrameError> {
        Message::decode(self.header.kind, self.body)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn dp_crc(dp_header: &[u8], body: &[u8]) -> u32 {
    let mut h = [0u8; DP_HLEN];
    h.copy_from_slice(&dp_header[..DP_HLEN]);
    h[24..28].fill(0);
    crc32c::crc32c_append(crc32c::crc32c(&h), body)
}

/// Parses a received frame. `port` is the UDP destination port that must
/// match (`None` accepts any).
pub fn parse(buf: &[u8], port: Option<u16>) -> Result<Frame<'_>, FrameError> {
    if buf.len() < ETH_HLEN {
        return Err(FrameError::Truncated {
            layer: "ethernet",
            needed: ETH_HLEN,
            available: buf.len(),
        });
    }
    let ethertype = be16(buf, 12);
    if ethertype != ETHERTYPE_IPV4 {
        return Err(FrameError::NotIpv4(ethertype));
    }
    let ip = &buf[ETH_HLEN..];
    if ip.len() < IPV4_HLEN {
        return Err(FrameError::Truncated {
            layer: "ipv4",
            needed: IPV4_HLEN,
            available: ip.len(),
        });
    }
    if ip[0] >> 4 != 4 {
        return Err(FrameError::NotIpv4(u16::from(ip[0])));
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < IPV4_HLEN {
        return Err(FrameError::BadLength("ipv4 header length"));
    }
    if ip.len() < ihl {
        return Err(FrameError::Truncated {
            layer: "ipv4",
            needed: ihl,
            available: ip.len(),
        });
    }
    if internet_checksum(&ip[..ihl]) != 0 {
        return Err(FrameError::BadIpChecksum);
    }
    let total = usize::from(be16(ip, 2));
    if total < ihl + UDP_HLEN {
        return Err(FrameError::BadLength("ipv4 total length"));
    }
    if total > ip.len() {
        return Err(FrameError::Truncated {
            layer: "ipv4",
            needed: total,
            available: ip.len(),
        });
    }
    let frag = be16(ip, 6);
    if frag & IP_FLAG_MF != 0 || frag & IP_FRAG_OFFSET_MASK != 0 {
        return Err(FrameError::Fragmented);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(FrameError::NotUdp(ip[9]));
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    // Ethernet may pad short frames; the IP total length is what counts.
    let udp = &ip[ihl..total];
    let src_port = be16(udp, 0);
    let dst_port = be16(udp, 2);
    let udp_len = usize::from(be16(udp, 4));
    if udp_len != udp.len() {
        return Err(FrameError::BadLength("udp length"));
    }
    if let Some(p) = port
        && p != dst_port
    {
        return Err(FrameError::WrongPort(dst_port));
    }
    // The UDP checksum is not verified: the data-plane CRC-32C covers what matters.
    let dp = &udp[UDP_HLEN..];
    if dp.len() < DP_HLEN {
        return Err(FrameError::Truncated {
            layer: "data-plane header",
            needed: DP_HLEN,
            available: dp.len(),
        });
    }
    let magic = be16(dp, 0);
    if magic != WIRE_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let kind = Kind::from_u8(dp[2]).ok_or(FrameError::UnknownKind(dp[2]))?;
    let body_len = usize::from(be16(dp, 20));
    if body_len != dp.len() - DP_HLEN {
        return Err(FrameError::BadLength("data-plane body length"));
    }
    let body = &dp[DP_HLEN..];
    if dp_crc(dp, body) != be32(dp, 24) {
        return Err(FrameError::BadChecksum);
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&buf[6..12]);
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&buf[0..6]);
    Ok(Frame {
        src: Endpoint {
            mac: src_mac,
            ip: src_ip,
            port: src_port,
        },
        dst: Endpoint {
            mac: dst_mac,
            ip: dst_ip,
            port: dst_port,
        },
        header: Header {
            kind,
            flags: dp[3],
            session: be32(dp, 4),
            seq: be32(dp, 8),
            offset: be64(dp, 12),
        },
        body,
    })
}

/// The body area of a frame buffer, to be filled before [`finish`].
pub fn body_mut(frame: &mut [u8]) -> &mut [u8] {
    let end = frame.len().min(BODY_OFFSET + usize::from(u16::MAX));
    &mut frame[BODY_OFFSET.min(end)..end]
}

/// Largest body that fits a frame buffer of `frame_size` bytes.
pub fn max_body(frame_size: usize) -> usize {
    frame_size
        .saturating_sub(OVERHEAD)
        .min(usize::from(u16::MAX))
}

/// Writes every header in front of a body of `body_len` bytes already in
/// place (see [`body_mut`]) and returns the frame length. Panics only if the
/// buffer cannot hold the frame, which is a caller bug.
pub fn finish(frame: &mut [u8], route: &Route, header: &Header, body_len: usize) -> usize {
    let len = BODY_OFFSET + body_len;
    assert!(
        len <= frame.len() && body_len <= usize::from(u16::MAX),
        "frame buffer too small"
    );
    let (eth, rest) = frame.split_at_mut(ETH_HLEN);
    eth[0..6].copy_from_slice(&route.dst.mac);
    eth[6..12].copy_from_slice(&route.src.mac);
    eth[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    let ip_total = (len - ETH_HLEN) as u16;
    let ip = &mut rest[..IPV4_HLEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
    ip[4..6].fill(0); // identification: meaningless with DF set
    ip[6..8].copy_from_slice(&IP_FLAG_DF.to_be_bytes());
    ip[8] = TTL;
    ip[9] = IPPROTO_UDP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&route.src.ip.octets());
    ip[16..20].copy_from_slice(&route.dst.ip.octets());
    let csum = internet_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());

    let udp = &mut rest[IPV4_HLEN..IPV4_HLEN + UDP_HLEN];
    udp[0..2].copy_from_slice(&route.src.port.to_be_bytes());
    udp[2..4].copy_from_slice(&route.dst.port.to_be_bytes());
    udp[4..6].copy_from_slice(&((UDP_HLEN + DP_HLEN + body_len) as u16).to_be_bytes());
    udp[6..8].fill(0); // no checksum (allowed for IPv4); the CRC-32C below covers the payload

    let (dp, body) = frame[DP_OFFSET..len].split_at_mut(DP_HLEN);
    dp[0..2].copy_from_slice(&WIRE_MAGIC.to_be_bytes());
    dp[2] = header.kind as u8;
    dp[3] = header.flags;
    dp[4..8].copy_from_slice(&header.session.to_be_bytes());
    dp[8..12].copy_from_slice(&header.seq.to_be_bytes());
    dp[12..20].copy_from_slice(&header.offset.to_be_bytes());
    dp[20..22].copy_from_slice(&(body_len as u16).to_be_bytes());
    dp[22..24].fill(0);
    dp[24..28].fill(0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(dp), body);
    dp[24..28].copy_from_slice(&crc.to_be_bytes());
    len
}

/// Encodes `msg` into the frame's body and finishes the frame; returns its
/// length, or `None` when the buffer is too small.
pub fn build(frame: &mut [u8], route: &Route, header: &Header, msg: &Message<'_>) -> Option<usize> {
    let n = msg.encode(body_mut(frame))?;
    let mut header = *header;
    header.kind = msg.kind();
    Some(finish(frame, route, &header, n))
}

/// Cookie challenge contents, also echoed back by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieBody {
    pub cookie: u64,
    pub bucket: u32,
    pub nonce: u64,
}

/// Typed bodies. Data frames' bytes are in [`Frame::body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Client's first frame; `nonce` ties the answers to this attempt.
    Hello {
        nonce: u64,
    },
    Cookie(CookieBody),
    /// `window`: frames the client can buffer beyond its cumulative ack;
    /// `max_frame`: the largest frame it can receive (its socket's chunk).
    CookieEcho {
        cookie: CookieBody,
        window: u32,
        max_frame: u16,
    },
    /// The session id is in the header. `max_frame` as in the echo: each
    /// side sends frames no larger than the smaller of the two.
    Accept {
        nonce: u64,
        window: u32,
        max_frame: u16,
    },
    FetchRequest {
        topic: &'a str,
        partition: i32,
        offset: i64,
        max_bytes: u64,
    },
    ProduceRequest {
        topic: &'a str,
        partition: i32,
    },
    Data(&'a [u8]),
    /// Sequenced end of stream: the stream is `total` bytes long.
    Fin {
        total: u64,
    },
    /// `cum`: next expected sequence number; bit i of `sack` set means
    /// `cum + 1 + i` was received; `window`: frames the receiver accepts beyond `cum`.
    Ack {
        cum: u32,
        sack: u64,
        window: u32,
    },
    /// Session over; for produce, the offset the sink gave the last batch (-1 if none).
    Done {
        last_offset: i64,
    },
    Error {
        code: u16,
        reason: &'a str,
    },
}

fn put<const N: usize>(dst: &mut [u8], at: &mut usize, bytes: [u8; N]) -> Option<()> {
    dst.get_mut(*at..*at + N)?.copy_from_slice(&bytes);
    *at += N;
    Some(())
}

fn put_str(dst: &mut [u8], at: &mut usize, s: &str, max: usize) -> Option<()> {
    let b = s.as_bytes();
    let b = &b[..floor_char_boundary(s, b.len().min(max))];
    put(dst, at, [b.len() as u8])?;
    dst.get_mut(*at..*at + b.len())?.copy_from_slice(b);
    *at += b.len();
    Some(())
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    kind: Kind,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or(FrameError::BadBody(self.kind, "truncated"))?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(be16(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(be32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(be64(self.take(8)?, 0))
    }
    fn str(&mut self) -> Result<&'a str, FrameError> {
        let n = usize::from(self.u8()?);
        std::str::from_utf8(self.take(n)?).map_err(|_| FrameError::BadBody(self.kind, "not UTF-8"))
    }
    fn cookie(&mut self) -> Result<CookieBody, FrameError> {
        Ok(CookieBody {
            cookie: self.u64()?,
            bucket: self.u32()?,
            nonce: self.u64()?,
        })
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(FrameError::BadBody(self.kind, "trailing bytes"))
        }
    }
}

impl<'a> Message<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Cookie(_) => Kind::Cookie,
            Message::CookieEcho { .. } => Kind::CookieEcho,
            Message::Accept { .. } => Kind::Accept,
            Message::FetchRequest { .. } => Kind::FetchRequest,
            Message::ProduceRequest { .. } => Kind::ProduceRequest,
            Message::Data(_) => Kind::Data,
            Message::Fin { .. } => Kind::Fin,
            Message::Ack { .. } => Kind::Ack,
            Message::Done { .. } => Kind::Done,
            Message::Error { .. } => Kind::Error,
        }
    }

    /// Writes the body into `dst`; returns its length or `None` if it does not fit.
    pub fn encode(&self, dst: &mut [u8]) -> Option<usize> {
        let mut at = 0;
        let d = &mut *dst;
        match *self {
            Message::Hello { nonce } => {
                put(d, &mut at, nonce.to_be_bytes())?;
                d.get_mut(at..HELLO_BODY_LEN)?.fill(0);
                at = HELLO_BODY_LEN;
            }
            Message::Cookie(c) => put_cookie(d, &mut at, &c)?,
            Message::CookieEcho {
                cookie,
                window,
                max_frame,
            } => {
                put_cookie(d, &mut at, &cookie)?;
                put(d, &mut at, window.to_be_bytes())?;
                put(d, &mut at, max_frame.to_be_bytes())?;
            }
            Message::Accept {
                nonce,
                window,
                max_frame,
            } => {
                put(d, &mut at, nonce.to_be_bytes())?;
                put(d, &mut at, window.to_be_bytes())?;
                put(d, &mut at, max_frame.to_be_bytes())?;
            }
            Message::FetchRequest {
                topic,
                partition,
                offset,
                max_bytes,
            } => {
                put(d, &mut at, partition.to_be_bytes())?;
                put(d, &mut at, offset.to_be_bytes())?;
                put(d, &mut at, max_bytes.to_be_bytes())?;
                put_str(d, &mut at, topic, MAX_TOPIC)?;
            }
            Message::ProduceRequest { topic, partition } => {
                put(d, &mut at, partition.to_be_bytes())?;
                put_str(d, &mut at, topic, MAX_TOPIC)?;
            }
            Message::Data(bytes) => {
                d.get_mut(..bytes.len())?.copy_from_slice(bytes);
                at = bytes.len();
            }
            Message::Fin { total } => put(d, &mut at, total.to_be_bytes())?,
            Message::Ack { cum, sack, window } => {
                put(d, &mut at, cum.to_be_bytes())?;
                put(d, &mut at, sack.to_be_bytes())?;
                put(d, &mut at, window.to_be_bytes())?;
            }
            Message::Done { last_offset } => put(d, &mut at, last_offset.to_be_bytes())?,
            Message::Error { code, reason } => {
                put(d, &mut at, code.to_be_bytes())?;
                put_str(d, &mut at, reason, MAX_REASON)?;
            }
        }
        Some(at)
    }

    /// Decodes a body of the given kind; every length is checked.
    pub fn decode(kind: Kind, body: &'a [u8]) -> Result<Message<'a>, FrameError> {
        let mut r = Reader {
            b: body,
            at: 0,
            kind,
        };
        let msg = match kind {
            Kind::Hello => {
                if body.len() < HELLO_BODY_LEN {
                    return Err(FrameError::BadBody(kind, "hello shorter than its padding"));
                }
                let nonce = r.u64()?;
                r.at = body.len();
                Message::Hello { nonce }
            }
            Kind::Cookie => Message::Cookie(r.cookie()?),
            Kind::CookieEcho => Message::CookieEcho {
                cookie: r.cookie()?,
                window: r.u32()?,
                max_frame: r.u16()?,
            },
            Kind::Accept => Message::Accept {
                nonce: r.u64()?,
                window: r.u32()?,
                max_frame: r.u16()?,
            },
            Kind::FetchRequest => {
                let partition = r.u32()? as i32;
                let offset = r.u64()? as i64;
                let max_bytes = r.u64()?;
                let topic = r.str()?;
                Message::FetchRequest {
                    topic,
                    partition,
                    offset,
                    max_bytes,
                }
            }
            Kind::ProduceRequest => {
                let partition = r.u32()? as i32;
                let topic = r.str()?;
                Message::ProduceRequest { topic, partition }
            }
            Kind::Data => {
                r.at = body.len();
                Message::Data(body)
            }
            Kind::Fin => Message::Fin { total: r.u64()? },
            Kind::Ack => Message::Ack {
                cum: r.u32()?,
                sack: r.u64()?,
                window: r.u32()?,
            },
            Kind::Done => Message::Done {
                last_offset: r.u64()? as i64,
            },
            Kind::Error => Message::Error {
                code: r.u16()?,
                reason: r.str()?,
            },
        };
        r.end()?;
        Ok(msg)
    }
}

fn put_cookie(d: &mut [u8], at: &mut usize, c: &CookieBody) -> Option<()> {
    put(d, at, c.cookie.to_be_bytes())?;
    put(d, at, c.bucket.to_be_bytes())?;
    put(d, at, c.nonce.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route() -> Route {
        Route {
            src: Endpoint {
                mac: [2, 0, 0, 0, 0, 1],
                ip: Ipv4Addr::new(10, 0, 0, 1),
                port: 4000,
            },
            dst: Endpoint {
                mac: [2, 0, 0, 0, 0, 2],
                ip: Ipv4Addr::new(10, 0, 0, 2),
                port: 9100,
            },
        }
    }

    #[test]
    fn ipv4_checksum_known_vector() {
        // The classic example header (Wikipedia "IPv4 header checksum"): checksum 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&hdr), 0xb861);
        let mut with = hdr;
        with[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet_checksum(&with), 0);
    }

    #[test]
    fn built_headers_are_standard() {
        let mut buf = [0u8; 256];
        let h = Header {
            kind: Kind::Data,
            flags: 0,
            session: 7,
            seq: 9,
            offset: 1 << 40,
        };
        body_mut(&mut buf)[..5].copy_from_slice(b"hello");
        let n = finish(&mut buf, &route(), &h, 5);
        assert_eq!(n, OVERHEAD + 5);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        assert_eq!(buf[14], 0x45);
        assert_eq!(buf[14 + 8], 64, "TTL");
        assert_eq!(be16(&buf, 14 + 6), 0x4000, "DF, no fragment offset");
        assert_eq!(internet_checksum(&buf[14..34]), 0);
        assert_eq!(be16(&buf, 34 + 4) as usize, 8 + DP_HLEN + 5);
        assert_eq!(&buf[DP_OFFSET..DP_OFFSET + 3], &[0xDA, 0x7A, KIND_DATA]);
        let f = parse(&buf[..n], Some(9100)).unwrap();
        assert_eq!(f.header, h);
        assert_eq!(f.body, b"hello");
        assert_eq!(f.src, route().src);
        assert_eq!(f.dst, route().dst);
        // Ethernet padding after the IP datagram is ignored.
        let f = parse(&buf[..n + 10], Some(9100)).unwrap();
        assert_eq!(f.body, b"hello");
    }

    #[test]
    fn every_message_round_trips() {
        let c = CookieBody {
            cookie: 0x1122334455667788,
            bucket: 42,
            nonce: 99,
        };
        let msgs = [
            Message::Hello { nonce: 5 },
            Message::Cookie(c),
            Message::CookieEcho {
                cookie: c,
                window: 512,
                max_frame: 4096,
            },
            Message::Accept {
                nonce: 5,
                window: 64,
                max_frame: 4096,
            },
            Message::FetchRequest {
                topic: "orders",
                partition: 3,
                offset: -2,
                max_bytes: 1 << 33,
            },
            Message::ProduceRequest {
                topic: "t",
                partition: 0,
            },
            Message::Data(b"abc"),
            Message::Fin { total: 123456789 },
            Message::Ack {
                cum: 10,
                sack: 0b1011,
                window: 100,
            },
            Message::Done { last_offset: -1 },
            Message::Error {
                code: code::PRODUCE_REJECTED,
                reason: "no space",
            },
        ];
        for m in msgs {
            let mut buf = [0u8; 512];
            let n = build(&mut buf, &route(), &Header::new(m.kind(), 77), &m).unwrap();
            let f = parse(&buf[..n], Some(9100)).unwrap();
            assert_eq!(f.header.kind, m.kind());
            assert_eq!(f.header.session, 77);
            assert_eq!(f.message().unwrap(), m);
        }
        // The answer to an unverified hello is no larger than the hello.
        let mut a = [0u8; 512];
        let mut b = [0u8; 512];
        let hello = build(&mut a, &route(), &Header::new(Kind::Hello, 0), &msgs[0]).unwrap();
        let cookie = build(&mut b, &route(), &Header::new(Kind::Cookie, 0), &msgs[1]).unwrap();
        assert!(cookie <= hello);
    }

    #[test]
    fn malformations_have_typed_errors() {
        let mut buf = [0u8; 256];
        let n = build(
            &mut buf,
            &route(),
            &Header::new(Kind::Done, 1),
            &Message::Done { last_offset: 3 },
        )
        .unwrap();
        let ok = buf;
        assert!(parse(&ok[..n], Some(9100)).is_ok());
        assert!(matches!(
            parse(&ok[..10], None),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            parse(&ok[..n - 1], None),
            Err(FrameError::Truncated { .. })
        ));
        assert_eq!(
            parse(&ok[..n], Some(1)).unwrap_err(),
            FrameError::WrongPort(9100)
        );

        let mut b = ok;
        b[12] = 0x86;
        assert!(matches!(parse(&b[..n], None), Err(FrameError::NotIpv4(_))));
        let mut b = ok;
        b[14 + 8] = 63; // TTL changed, checksum not updated
        assert_eq!(parse(&b[..n], None).unwrap_err(), FrameError::BadIpChecksum);
        let mut b = ok;
        b[14 + 9] = 6;
        b[24..26].fill(0);
        let c = internet_checksum(&b[14..34]);
        b[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&b[..n], None).unwrap_err(), FrameError::NotUdp(6));
        let mut b = ok;
        b[DP_OFFSET] = 0;
        assert!(matches!(parse(&b[..n], None), Err(FrameError::BadMagic(_))));
        let mut b = ok;
        b[DP_OFFSET + 2] = 0x77;
        assert_eq!(
            parse(&b[..n], None).unwrap_err(),
            FrameError::UnknownKind(0x77)
        );
        let mut b = ok;
        b[n - 1] ^= 1;
        assert_eq!(parse(&b[..n], None).unwrap_err(), FrameError::BadChecksum);
        let mut b = ok;
        b[34 + 5] ^= 1; // UDP length
        assert!(matches!(
            parse(&b[..n], None),
            Err(FrameError::BadLength(_))
        ));
        assert!(matches!(
            Message::decode(Kind::Ack, &[0; 3]),
            Err(FrameError::BadBody(Kind::Ack, _))
        ));
        assert!(matches!(
            Message::decode(Kind::Hello, &[0; 8]),
            Err(FrameError::BadBody(Kind::Hello, _))
        ));
        assert!(matches!(
            Message::decode(Kind::Error, &[0, 1, 5, b'a']),
            Err(FrameError::BadBody(Kind::Error, _))
        ));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(f) = parse(&bytes, None) {
                let _ = f.message();
            }
            for k in 0..=255u8 {
                if let Some(kind) = Kind::from_u8(k) {
                    let _ = Message::decode(kind, &bytes);
                }
            }
        }

        #[test]
        fn mutated_valid_frames_never_panic(pos in 0usize..200, val in any::<u8>(), cut in 0usize..200) {
            let mut buf = [0u8; 256];
            let m = Message::FetchRequest { topic: "abc", partition: 1, offset: 2, max_bytes: 3 };
            let n = build(&mut buf, &route(), &Header::new(m.kind(), 1), &m).unwrap();
            buf[pos % n] = val;
            if let Ok(f) = parse(&buf[..n.min(cut.max(1))], Some(9100)) {
                let _ = f.message();
            }
        }

        #[test]
        fn data_round_trips(body in proptest::collection::vec(any::<u8>(), 0..1400), seq in any::<u32>(), off in any::<u64>()) {
            let mut buf = vec![0u8; 2048];
            body_mut(&mut buf)[..body.len()].copy_from_slice(&body);
            let h = Header { kind: Kind::Data, flags: 0, session: 3, seq, offset: off };
            let n = finish(&mut buf, &route(), &h, body.len());
            let f = parse(&buf[..n], Some(9100)).unwrap();
            prop_assert_eq!(f.header, h);
            prop_assert_eq!(f.body, &body[..]);
        }
    }
}
