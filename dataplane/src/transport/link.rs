//! The boundary between the transport and whatever moves its frames: AF_XDP
//! sockets on a NIC queue (`crate::xdp::xsk`) or, in tests, an in-memory pair.

use std::{io, time::Duration};

/// A frame buffer owned by the link's frame pool (for AF_XDP: a UMEM frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub u32);

/// Moves whole Ethernet frames. TX frames are allocated from the link's pool,
/// built in place and stay the caller's until it frees them, so a frame can be
/// transmitted again (a retransmission) without being copied.
pub trait FrameLink {
    /// Usable bytes of one frame buffer (Ethernet header included): the
    /// largest frame the link carries, which may be less than the buffer
    /// (an AF_XDP socket caps it at the interface's MTU plus 14).
    fn frame_size(&self) -> usize;

    /// Takes a free TX frame out of the pool; `None` when every frame is in use.
    fn alloc(&mut self) -> Option<FrameId>;

    /// The frame's usable bytes ([`FrameLink::frame_size`] of them), to build
    /// a frame in place. Must not be called while
    /// the frame is in flight (see [`FrameLink::in_flight`]).
    fn frame_mut(&mut self, id: FrameId) -> &mut [u8];

    /// Queues `len` bytes of frame `id` for transmission. The frame remains the
    /// caller's. Returns `false` (nothing queued) when the TX ring is full.
    fn transmit(&mut self, id: FrameId, len: usize) -> bool;

    /// True while a transmission of `id` has been queued and not completed; such
    /// a frame may be neither modified, re-queued nor freed.
    fn in_flight(&self, id: FrameId) -> bool;

    /// Returns frame `id` to the pool. The frame must not be in flight.
    fn free(&mut self, id: FrameId);

    /// Kicks the kernel to send what is queued (when it needs a wakeup) and
    /// reaps completed transmissions.
    fn flush(&mut self) -> io::Result<()>;

    /// Receives up to `max` frames, calling `f` with each frame's bytes, then
    /// hands the buffers back for reception. Returns how many were received.
    fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize>;

    /// Blocks up to `timeout` until a frame can be received or a transmission
    /// completes.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
}
