//! A reliable record-batch transport over raw Ethernet/IPv4/UDP frames, built
//! for AF_XDP: frames live in a UMEM, and a frame that must be retransmitted is
//! re-posted from where it already is, never copied again.
//!
//! - [`frame`]: the wire format (build in place, parse without panicking).
//! - [`cookie`]: stateless handshake cookies (SipHash-2-4).
//! - [`reliable`]: sending window, reassembly ring, RTT, batch framing.
//! - [`server`] / [`client`]: sessions over any [`link::FrameLink`].
//! - [`testing`]: an in-memory link pair with fault injection.

pub mod client;
pub mod cookie;
pub mod frame;
pub mod link;
pub mod reliable;
pub mod server;
pub mod stats;
pub mod testing;

pub use client::{
    ClientConfig, ClientError, FetchReport, FetchRequest, ProduceReport, fetch, produce,
};
pub use frame::{Endpoint, KIND_DATA};
pub use server::{BatchAppender, FetchSource, FetchStream, ProduceSink, Server, ServerConfig};
pub use stats::Stats;
#[cfg(test)]
mod tests;
