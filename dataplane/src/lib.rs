//! dataplane: moves Kafka-format record batches between log segments and the
//! network by `copy`, `sendfile` or AF_XDP, and measures the three side by side.

pub mod afxdp;
pub mod bench;
pub mod kafka;
pub mod lab;
pub mod log;
pub mod signals;
pub mod tcp;
pub mod transfer;
pub mod transport;
pub mod xdp;

/// UDP port of the AF_XDP data path unless told otherwise.
pub const DEFAULT_AFXDP_PORT: u16 = 7077;
