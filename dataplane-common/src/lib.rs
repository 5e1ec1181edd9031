//! Types that both the XDP program and user space read. Every type is
//! `#[repr(C)]` with no implicit padding, proven by a size assertion.
#![no_std]

use core::mem::size_of;

/// First two bytes of every data-plane frame's UDP payload.
pub const WIRE_MAGIC: u16 = 0xDA7A;

/// Kind byte (after [`WIRE_MAGIC`]) of frames that carry record-batch bytes.
/// Only these frames are subject to fault injection.
pub const KIND_DATA: u8 = 0x10;

/// Map names, as the XDP program declares them and user space looks them up.
pub mod map_name {
    /// `Array<XdpConfig>` with one entry.
    pub const CONFIG: &str = "DP_CONFIG";
    /// `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "DP_COUNTERS";
    /// `HashMap<u32, u32>`: admitted IPv4 source addresses (see [`crate::admitted_key`]).
    pub const ADMITTED: &str = "DP_ADMITTED";
    /// `XskMap`: AF_XDP socket per receive queue.
    pub const SOCKETS: &str = "DP_SOCKETS";
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "dataplane";

/// Number of entries of the XSKMAP, so the highest usable queue id is one less.
pub const MAX_QUEUES: u32 = 64;
/// Number of entries of the admitted-peers map.
pub const MAX_ADMITTED: u32 = 1024;

/// Configuration of the XDP program, the only entry of [`map_name::CONFIG`].
///
/// A fault injector field `n` means "one in `n` data frames, at random"; 0
/// turns that fault off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Destination UDP port of data-plane frames, host byte order; 0 redirects nothing.
    pub udp_port: u16,
    /// [`XdpConfig::ADMIT_ALL`] and future flags.
    pub flags: u16,
    /// Drop one in N data frames.
    pub drop_one_in: u32,
    /// Deliver one in N data frames twice (the frame after it is lost instead).
    pub duplicate_one_in: u32,
    /// Flip the last payload byte of one in N data frames.
    pub corrupt_one_in: u32,
}

impl XdpConfig {
    /// Redirect data-plane frames from any source, not only admitted peers.
    pub const ADMIT_ALL: u16 = 1 << 0;
}

const _: () = assert!(size_of::<XdpConfig>() == 16);

/// Indices of the per-CPU counters in [`map_name::COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Redirected to an AF_XDP socket.
    Redirected = 0,
    /// Not data-plane traffic: left to the kernel's stack.
    Passed = 1,
    /// Claimed to be IPv4/UDP but was truncated or had a bad header length; passed.
    Malformed = 2,
    /// Data-plane port but from a source that is not admitted; passed.
    NotAdmitted = 3,
    /// Admitted data-plane frame but no socket on the receiving queue; passed.
    NoSocket = 4,
    /// Data frame dropped by the fault injector.
    FaultDropped = 5,
    /// Data frame replaced by a copy of an earlier one by the fault injector.
    FaultDuplicated = 6,
    /// Data frame with a byte flipped by the fault injector.
    FaultCorrupted = 7,
}

impl Counter {
    /// Number of counters (entries of the counters map).
    pub const COUNT: u32 = 8;

    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Redirected,
        Counter::Passed,
        Counter::Malformed,
        Counter::NotAdmitted,
        Counter::NoSocket,
        Counter::FaultDropped,
        Counter::FaultDuplicated,
        Counter::FaultCorrupted,
    ];

    /// Short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Redirected => "redirected",
            Counter::Passed => "passed",
            Counter::Malformed => "malformed",
            Counter::NotAdmitted => "not_admitted",
            Counter::NoSocket => "no_socket",
            Counter::FaultDropped => "fault_dropped",
            Counter::FaultDuplicated => "fault_duplicated",
            Counter::FaultCorrupted => "fault_corrupted",
        }
    }
}

/// Key of the admitted-peers map for an IPv4 address: its four octets in
/// network order, read as a native-endian `u32` (how the program loads
/// `saddr` straight out of the header).
pub const fn admitted_key(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// Value stored in the admitted-peers map (its presence is what matters).
pub const ADMITTED: u32 = 1;

#[cfg(feature = "user")]
// SAFETY: XdpConfig is #[repr(C)], Copy, made only of integers and has no
// padding (size asserted above), so every bit pattern is a valid value.
unsafe impl aya::Pod for XdpConfig {}
