//! The kernel TCP data paths, speaking Kafka: a single-broker server whose
//! Fetch responses move records by `sendfile(2)` straight from the segment
//! (Kafka's `FileRecords.writeTo` path) or through a user-space buffer, and a
//! client for both directions.

pub mod broker;
pub mod client;
pub mod records;
pub mod server;

/// How the records region of a Fetch response reaches the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    /// `pread` into a user-space buffer, `write` to the socket: two copies.
    Copy,
    /// `sendfile` from the segment file to the socket: no user-space copy.
    Sendfile,
}

impl std::fmt::Display for TcpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcpMode::Copy => "copy",
            TcpMode::Sendfile => "sendfile",
        })
    }
}
