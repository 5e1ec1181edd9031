//! dataplane: moves Kafka-format record batches between log segments and the
//! network by `copy`, `sendfile` or AF_XDP, and measures the three side by side.

pub mod lab;
pub mod log;
pub mod transport;
pub mod xdp;
