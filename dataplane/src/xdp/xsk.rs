//! AF_XDP sockets on one interface queue, behind our own types so the ring
//! library (xdpilone today) stays an implementation detail.
//!
//! One [`XskSocket`] owns a [`Umem`] split in two: the first `tx_frames`
//! frames form the TX pool handed out through [`FrameLink::alloc`], the rest
//! are receive frames that live on the fill ring and go back onto it as soon
//! as [`FrameLink::receive`] has shown them to the caller.

use std::{
    ffi::CString,
    fmt, io,
    num::NonZeroU32,
    os::fd::{AsFd, BorrowedFd},
    ptr::NonNull,
    time::{Duration, Instant},
};

use super::loader::{AttachedMode, LoaderError, XdpProgram};
use crate::transport::link::{FrameId, FrameLink};

const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1 << 0;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
const HUGE_PAGE: usize = 2 << 20;

/// `struct xdp_options` from `<linux/if_xdp.h>`.
#[repr(C)]
#[derive(Default)]
struct XdpOptions {
    flags: u32,
}
const _: () = assert!(size_of::<XdpOptions>() == 4);

/// How to bind the socket to the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum BindMode {
    /// Zero-copy when the driver supports it, else copy (the kernel decides).
    #[default]
    Auto,
    /// Copy mode: the kernel copies frames between its buffers and the UMEM.
    Copy,
    /// Zero-copy mode: the NIC DMAs straight into the UMEM; fails without driver support.
    ZeroCopy,
}

/// What the bind obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BoundMode {
    /// Frames are copied between kernel buffers and the UMEM.
    Copy,
    /// The driver works in the UMEM itself.
    ZeroCopy,
}

impl fmt::Display for BoundMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BoundMode::Copy => "copy",
            BoundMode::ZeroCopy => "zero-copy",
        })
    }
}

/// Busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BusyPoll {
    /// Microseconds to busy-poll in a blocking receive.
    pub usecs: u32,
    /// Packets processed per busy-poll round.
    pub budget: u32,
}

/// Everything needed to open a socket.
#[derive(Clone, Debug)]
pub struct XskConfig {
    /// Bytes per UMEM frame: a power of two in 2048..=4096 (page size).
    pub frame_size: u32,
    /// Total UMEM frames.
    pub frame_count: u32,
    /// How many of them form the TX pool (the rest receive).
    pub tx_frames: u32,
    /// Fill ring entries (power of two).
    pub fill_size: u32,
    /// Completion ring entries (power of two).
    pub completion_size: u32,
    /// RX ring entries (power of two).
    pub rx_size: u32,
    /// TX ring entries (power of two).
    pub tx_size: u32,
    /// Bind mode to ask for.
    pub bind: BindMode,
    /// Ask for `XDP_USE_NEED_WAKEUP` (the kernel then says when a syscall is needed).
    pub need_wakeup: bool,
    /// Busy polling, if wanted.
    pub busy_poll: Option<BusyPoll>,
    /// Back the UMEM with 2 MiB huge pages.
    pub hugepages: bool,
    /// Interface queue to bind to.
    pub queue: u32,
    /// Most descriptors handled per ring operation.
    pub batch: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 4096,
            frame_count: 4096,
            tx_frames: 2048,
            fill_size: 2048,
            completion_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            bind: BindMode::Auto,
            need_wakeup: true,
            busy_poll: None,
            hugepages: false,
            queue: 0,
            batch: 64,
        }
    }
}

/// Outcome of asking for busy polling.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BusyPollReport {
    /// Not asked for.
    Off,
    /// Enabled with these settings.
    On(BusyPoll),
    /// The kernel refused; the text says which option and why.
    Refused(String),
}

/// What a socket actually obtained.
#[derive(Clone, Debug, serde::Serialize)]
pub struct XskReport {
    /// Interface name.
    pub iface: String,
    /// Queue the socket is bound to.
    pub queue: u32,
    /// Copy or zero-copy.
    pub bind: BoundMode,
    /// Whether the kernel honours need_wakeup.
    pub need_wakeup: bool,
    /// Busy polling outcome.
    pub busy_poll: BusyPollReport,
    /// Bytes per UMEM frame.
    pub frame_size: u32,
    /// Largest frame sent: the UMEM frame less the kernel's receive headroom,
    /// or MTU + 14, whichever is smaller.
    pub max_frame: u32,
    /// TX pool frames.
    pub tx_frames: u32,
    /// Receive frames.
    pub rx_frames: u32,
    /// Whether the UMEM is on huge pages.
    pub hugepages: bool,
    /// XDP mode of the program steering frames here, once registered with one.
    pub xdp_mode: Option<AttachedMode>,
}

impl fmt::Display for XskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AF_XDP {} queue {}: XDP {}, {} bind, need_wakeup {}, busy poll {}, frame {} B (frames sent up to {} B), {} TX + {} RX frames{}",
            self.iface,
            self.queue,
            self.xdp_mode
                .map_or("not attached".to_owned(), |m| m.to_string()),
            self.bind,
            if self.need_wakeup { "on" } else { "off" },
            match &self.busy_poll {
                BusyPollReport::Off => "off".to_owned(),
                BusyPollReport::On(b) => format!("on ({} us, budget {})", b.usecs, b.budget),
                BusyPollReport::Refused(why) => format!("refused ({why})"),
            },
            self.frame_size,
            self.max_frame,
            self.tx_frames,
            self.rx_frames,
            if self.hugepages { ", huge pages" } else { "" },
        )
    }
}

/// `XDP_STATISTICS` of a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XskStats {
    /// Frames dropped for reasons other than a full RX ring or an empty fill ring.
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the TX ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// Failures of setting up or driving an AF_XDP socket.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The configuration cannot work.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    /// Mapping the UMEM failed.
    #[error("{call} of the {bytes}-byte UMEM failed{hint}")]
    Umem {
        call: &'static str,
        bytes: usize,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    /// A socket call failed.
    #[error("{call} on {iface} queue {queue} failed{hint}")]
    Socket {
        call: &'static str,
        iface: String,
        queue: u32,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A page-aligned anonymous mapping holding the frames.
pub struct Umem {
    area: NonNull<[u8]>,
    frame_size: u32,
    frame_count: u32,
    hugepages: bool,
}

impl Umem {
    /// Maps `frame_count` frames of `frame_size` bytes, populated up front,
    /// on 2 MiB huge pages if asked.
    pub fn new(frame_size: u32, frame_count: u32, hugepages: bool) -> Result<Self, XskError> {
        if !frame_size.is_power_of_two() || !(2048..=4096).contains(&frame_size) {
            return Err(XskError::Config(format!(
                "frame size {frame_size} must be 2048 or 4096 (a power of two up to the page size)"
            )));
        }
        if frame_count == 0 {
            return Err(XskError::Config("the UMEM needs at least one frame".into()));
        }
        let bytes = frame_size as usize * frame_count as usize;
        let len = if hugepages {
            bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE
        } else {
            bytes
        };
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if hugepages {
            flags |= libc::MAP_HUGETLB;
        }
        // SAFETY: an anonymous mapping at an address of the kernel's choosing
        // touches no existing memory; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let source = io::Error::last_os_error();
            let hint = if hugepages {
                ": no free 2 MiB huge pages? reserve some with \
                 `echo 64 > /proc/sys/vm/nr_hugepages` or drop --hugepages"
            } else {
                ""
            };
            return Err(XskError::Umem {
                call: "mmap",
                bytes: len,
                hint,
                source,
            });
        }
        let area = NonNull::slice_from_raw_parts(
            NonNull::new(ptr.cast::<u8>()).expect("mmap succeeded, so not null"),
            bytes,
        );
        Ok(Umem {
            area,
            frame_size,
            frame_count,
            hugepages,
        })
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of frames.
    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Whether the mapping is on huge pages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }

    /// The frame `index`, whole.
    fn frame(&self, index: u32) -> &[u8] {
        assert!(index < self.frame_count, "UMEM frame {index} out of range");
        let start = index as usize * self.frame_size as usize;
        // SAFETY: the range lies inside the live mapping (checked above); the
        // kernel writes only frames that are on the fill ring, and such frames
        // are never handed out.
        unsafe {
            std::slice::from_raw_parts(
                self.area.cast::<u8>().as_ptr().add(start),
                self.frame_size as usize,
            )
        }
    }

    /// The frame `index`, whole, for writing.
    fn frame_mut(&mut self, index: u32) -> &mut [u8] {
        assert!(index < self.frame_count, "UMEM frame {index} out of range");
        let start = index as usize * self.frame_size as usize;
        // SAFETY: as in `frame`, and `&mut self` makes this the only reference
        // this process holds into the mapping.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.area.cast::<u8>().as_ptr().add(start),
                self.frame_size as usize,
            )
        }
    }

    /// `len` bytes at UMEM offset `addr`, if they lie inside one frame.
    fn bytes_at(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let index = u32::try_from(addr / u64::from(self.frame_size)).ok()?;
        let within = (addr % u64::from(self.frame_size)) as usize;
        if index >= self.frame_count {
            return None;
        }
        self.frame(index).get(within..within + len as usize)
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        let len = if self.hugepages {
            self.area.len().div_ceil(HUGE_PAGE) * HUGE_PAGE
        } else {
            self.area.len()
        };
        // SAFETY: unmaps exactly the mapping made in `new`; the socket that
        // shared it with the kernel was closed before (field order in XskSocket).
        unsafe { libc::munmap(self.area.as_ptr().cast(), len) };
    }
}

// SAFETY: Umem owns its mapping exclusively; moving it to another thread moves
// that ownership.
unsafe impl Send for Umem {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TxState {
    Free,
    Owned,
    InFlight,
}

/// An AF_XDP socket bound to one queue, with its UMEM and four rings.
pub struct XskSocket {
    // Rings and socket first: they are unmapped and closed before the UMEM.
    rx: xdpilone::RingRx,
    tx: xdpilone::RingTx,
    device: xdpilone::DeviceQueue,
    user: xdpilone::User,
    _socket: xdpilone::Socket,
    _xdpilone_umem: xdpilone::Umem,
    umem: Umem,
    tx_frames: u32,
    tx_state: Vec<TxState>,
    tx_free: Vec<u32>,
    in_flight: usize,
    recycle: Vec<u64>,
    batch: u32,
    need_wakeup: bool,
    busy_poll: bool,
    /// Largest frame the interface carries: the UMEM frame, or the MTU plus
    /// the Ethernet header if that is smaller (a larger frame would be
    /// dropped on the wire, silently).
    max_frame: usize,
    report: XskReport,
}

// SAFETY: every field is owned exclusively by this value (the rings, the
// socket and the mapping are not shared with any other object in this
// process), so moving it to another thread is sound.
unsafe impl Send for XskSocket {}

fn errno_of(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

fn hint_for(call: &str, e: &io::Error, bind: BindMode) -> &'static str {
    match (call, e.raw_os_error()) {
        ("socket(AF_XDP)", Some(libc::EAFNOSUPPORT)) => {
            ": this kernel has no XDP sockets (CONFIG_XDP_SOCKETS); use --mode sendfile"
        }
        (_, Some(libc::EPERM)) => ": needs CAP_NET_RAW and CAP_NET_ADMIN (run as root)",
        ("bind", Some(libc::EBUSY)) => ": the queue is busy (another AF_XDP socket is bound to it)",
        ("bind", Some(libc::EOPNOTSUPP)) if bind == BindMode::ZeroCopy => {
            ": the driver has no zero-copy AF_XDP support; use --bind copy or auto"
        }
        ("bind", Some(libc::EINVAL)) => {
            ": is the queue id below the interface's queue count (ethtool -l)?"
        }
        ("if_nametoindex", _) => ": no such interface in this network namespace",
        _ => "",
    }
}

const ETH_HEADER_LEN: usize = 14;
/// Headroom the kernel reserves in each UMEM chunk before a received frame.
const XDP_PACKET_HEADROOM: usize = 256;

impl XskSocket {
    /// Creates the UMEM, the socket and its rings, and binds it to
    /// `config.queue` of `iface` (in the calling thread's network namespace).
    /// The socket receives nothing until its fd is in the XDP program's
    /// XSKMAP (see [`crate::xdp::loader::XdpProgram::set_socket`]).
    pub fn open(iface: &str, config: &XskConfig) -> Result<Self, XskError> {
        for (name, size) in [
            ("fill ring", config.fill_size),
            ("completion ring", config.completion_size),
            ("RX ring", config.rx_size),
            ("TX ring", config.tx_size),
        ] {
            if !size.is_power_of_two() {
                return Err(XskError::Config(format!(
                    "{name} size {size} must be a power of two"
                )));
            }
        }
        if config.tx_frames == 0 || config.tx_frames >= config.frame_count {
            return Err(XskError::Config(format!(
                "TX frames ({}) must leave some of the {} UMEM frames for receiving",
                config.tx_frames, config.frame_count
            )));
        }
        if config.batch == 0 {
            return Err(XskError::Config("batch size must be at least 1".into()));
        }
        let queue = config.queue;
        let fail = |call: &'static str, source: io::Error| XskError::Socket {
            call,
            iface: iface.to_owned(),
            queue,
            hint: hint_for(call, &source, config.bind),
            source,
        };

        let umem = Umem::new(config.frame_size, config.frame_count, config.hugepages)?;
        let xdpilone_config = xdpilone::UmemConfig {
            fill_size: config.fill_size,
            complete_size: config.completion_size,
            frame_size: config.frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is page aligned (mmap), valid for its whole length
        // and outlives the xdpilone objects (they are dropped before `umem`).
        let xdpilone_umem = unsafe { xdpilone::Umem::new(xdpilone_config, umem.area) }
            .map_err(|e| fail("socket(AF_XDP)/XDP_UMEM_REG", errno_of(e)))?;

        let name = CString::new(iface)
            .map_err(|_| XskError::Config(format!("interface name {iface:?} contains NUL")))?;
        let mut info = xdpilone::IfInfo::invalid();
        info.from_name(&name)
            .map_err(|e| fail("if_nametoindex", errno_of(e)))?;
        info.set_queue(queue);

        let socket = xdpilone::Socket::with_shared(&info, &xdpilone_umem)
            .map_err(|e| fail("getsockopt(SO_NETNS_COOKIE)", errno_of(e)))?;
        let device = xdpilone_umem.fq_cq(&socket).map_err(|e| {
            fail(
                "setsockopt(XDP_UMEM_FILL_RING/COMPLETION_RING)",
                errno_of(e),
            )
        })?;

        let mut bind_flags = 0;
        if config.need_wakeup {
            bind_flags |= xdpilone::SocketConfig::XDP_BIND_NEED_WAKEUP;
        }
        match config.bind {
            BindMode::Auto => {}
            BindMode::Copy => bind_flags |= xdpilone::SocketConfig::XDP_BIND_COPY,
            BindMode::ZeroCopy => bind_flags |= xdpilone::SocketConfig::XDP_BIND_ZEROCOPY,
        }
        let user = xdpilone_umem
            .rx_tx(
                &socket,
                &xdpilone::SocketConfig {
                    rx_size: NonZeroU32::new(config.rx_size),
                    tx_size: NonZeroU32::new(config.tx_size),
                    bind_flags,
                },
            )
            .map_err(|e| fail("setsockopt(XDP_RX_RING/XDP_TX_RING)", errno_of(e)))?;
        let rx = user
            .map_rx()
            .map_err(|e| fail("mmap(RX ring)", errno_of(e)))?;
        let tx = user
            .map_tx()
            .map_err(|e| fail("mmap(TX ring)", errno_of(e)))?;

        let fd = user.as_raw_fd();
        let busy_poll = match config.busy_poll {
            None => BusyPollReport::Off,
            Some(b) => match set_busy_poll(fd, b) {
                Ok(()) => BusyPollReport::On(b),
                Err(why) => {
                    log::warn!("{iface} queue {queue}: busy polling refused: {why}");
                    BusyPollReport::Refused(why)
                }
            },
        };

        xdpilone_umem
            .bind(&user)
            .map_err(|e| fail("bind", errno_of(e)))?;
        let bound = bound_mode(fd).map_err(|e| fail("getsockopt(XDP_OPTIONS)", e))?;

        let rx_frames = config.frame_count - config.tx_frames;
        // The kernel keeps XDP_PACKET_HEADROOM in front of every received
        // frame, so a chunk holds that much less frame; a larger frame sent
        // to a socket configured like this one would be dropped (rx_dropped).
        let chunk = config.frame_size as usize - XDP_PACKET_HEADROOM;
        let max_frame = match super::iface::mtu(iface).ok() {
            Some(mtu) => (mtu as usize + ETH_HEADER_LEN).min(chunk),
            None => chunk,
        };
        let mut socket = XskSocket {
            rx,
            tx,
            device,
            user,
            _socket: socket,
            _xdpilone_umem: xdpilone_umem,
            umem,
            tx_frames: config.tx_frames,
            tx_state: vec![TxState::Free; config.tx_frames as usize],
            tx_free: (0..config.tx_frames).rev().collect(),
            in_flight: 0,
            recycle: Vec::with_capacity(rx_frames as usize),
            batch: config.batch,
            need_wakeup: config.need_wakeup,
            busy_poll: matches!(busy_poll, BusyPollReport::On(_)),
            max_frame,
            report: XskReport {
                iface: iface.to_owned(),
                queue,
                bind: bound,
                need_wakeup: config.need_wakeup,
                busy_poll,
                frame_size: config.frame_size,
                max_frame: max_frame as u32,
                tx_frames: config.tx_frames,
                rx_frames,
                hugepages: config.hugepages,
                xdp_mode: None,
            },
        };
        let frame_size = u64::from(config.frame_size);
        socket
            .recycle
            .extend((config.tx_frames..config.frame_count).map(|i| u64::from(i) * frame_size));
        socket.refill();
        Ok(socket)
    }

    /// What was obtained.
    pub fn report(&self) -> &XskReport {
        &self.report
    }

    /// The socket's fd, for the XDP program's XSKMAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd belongs to `self.user`, which lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.user.as_raw_fd()) }
    }

    /// Makes `program` steer this socket's queue to it (its XSKMAP entry) and
    /// records the program's XDP mode in the report.
    pub fn register(&mut self, program: &mut XdpProgram) -> Result<(), LoaderError> {
        program.set_socket(self.report.queue, self.fd())?;
        self.report.xdp_mode = Some(program.mode());
        Ok(())
    }

    /// The kernel's `XDP_STATISTICS` for this socket.
    pub fn statistics(&self) -> Result<XskStats, XskError> {
        let s = self.user.statistics_v2().map_err(|e| XskError::Socket {
            call: "getsockopt(XDP_STATISTICS)",
            iface: self.report.iface.clone(),
            queue: self.report.queue,
            hint: "",
            source: errno_of(e),
        })?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Frames of the TX pool currently handed out (owned or in flight).
    pub fn tx_frames_in_use(&self) -> usize {
        self.tx_frames as usize - self.tx_free.len()
    }

    /// Frames queued for transmission and not yet completed.
    pub fn frames_in_flight(&self) -> usize {
        self.in_flight
    }

    /// Puts every recycled receive frame that fits back on the fill ring.
    fn refill(&mut self) {
        if self.recycle.is_empty() {
            return;
        }
        let mut writer = self.device.fill(self.recycle.len() as u32);
        let inserted = writer.insert(self.recycle.iter().copied()) as usize;
        writer.commit();
        drop(writer);
        self.recycle.drain(..inserted);
    }

    /// Moves completed transmissions back to their owner.
    fn reap_completions(&mut self) -> usize {
        let frame_size = u64::from(self.umem.frame_size);
        let mut reader = self.device.complete(self.batch.max(self.in_flight as u32));
        let mut reaped = 0;
        while let Some(addr) = reader.read() {
            let index = (addr / frame_size) as usize;
            if let Some(state) = self.tx_state.get_mut(index)
                && *state == TxState::InFlight
            {
                *state = TxState::Owned;
                self.in_flight -= 1;
                reaped += 1;
            }
        }
        reader.release();
        reaped
    }

    fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto on our own socket; no buffers are passed.
        let rc = unsafe {
            libc::sendto(
                self.user.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // Transient: the kernel is busy or out of completion space; the
            // descriptors stay queued and the next kick picks them up.
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => Ok(()),
                _ => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "sendto (TX wakeup) on {} queue {}: {e}",
                        self.report.iface, self.report.queue
                    ),
                )),
            };
        }
        Ok(())
    }

    fn kick_rx(&self) -> io::Result<()> {
        // SAFETY: a zero-length, non-blocking recvfrom on our own socket.
        let rc = unsafe {
            libc::recvfrom(
                self.user.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::EINTR) => Ok(()),
                _ => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "recvfrom (fill wakeup) on {} queue {}: {e}",
                        self.report.iface, self.report.queue
                    ),
                )),
            };
        }
        Ok(())
    }
}

fn set_busy_poll(fd: libc::c_int, b: BusyPoll) -> Result<(), String> {
    for (name, option, value) in [
        ("SO_PREFER_BUSY_POLL", SO_PREFER_BUSY_POLL, 1),
        ("SO_BUSY_POLL", libc::SO_BUSY_POLL, b.usecs as libc::c_int),
        (
            "SO_BUSY_POLL_BUDGET",
            SO_BUSY_POLL_BUDGET,
            b.budget as libc::c_int,
        ),
    ] {
        // SAFETY: `value` is a c_int that outlives the call; its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "setsockopt({name}): {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn bound_mode(fd: libc::c_int) -> io::Result<BoundMode> {
    let mut options = XdpOptions::default();
    let mut len = size_of::<XdpOptions>() as libc::socklen_t;
    // SAFETY: `options` and `len` are valid for writes and outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut options as *mut XdpOptions).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if options.flags & XDP_OPTIONS_ZEROCOPY != 0 {
        BoundMode::ZeroCopy
    } else {
        BoundMode::Copy
    })
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl FrameLink for XskSocket {
    fn frame_size(&self) -> usize {
        self.max_frame
    }

    fn alloc(&mut self) -> Option<FrameId> {
        let index = self.tx_free.pop()?;
        self.tx_state[index as usize] = TxState::Owned;
        Some(FrameId(index))
    }

    fn frame_mut(&mut self, id: FrameId) -> &mut [u8] {
        assert!(
            self.tx_state.get(id.0 as usize) == Some(&TxState::Owned),
            "frame {id:?} is not an owned, idle TX frame"
        );
        // Only the part of the frame the wire carries: a frame built to the
        // slice's length is never larger than the MTU allows.
        let max = self.max_frame;
        &mut self.umem.frame_mut(id.0)[..max]
    }

    fn transmit(&mut self, id: FrameId, len: usize) -> bool {
        assert!(
            self.tx_state.get(id.0 as usize) == Some(&TxState::Owned),
            "frame {id:?} is not an owned, idle TX frame"
        );
        assert!(
            len <= self.max_frame,
            "frame length {len} exceeds the frame size"
        );
        let desc = xdpilone::xdp::XdpDesc {
            addr: u64::from(id.0) * u64::from(self.umem.frame_size),
            len: len as u32,
            options: 0,
        };
        let mut writer = self.tx.transmit(1);
        if !writer.insert_once(desc) {
            return false;
        }
        writer.commit();
        drop(writer);
        self.tx_state[id.0 as usize] = TxState::InFlight;
        self.in_flight += 1;
        true
    }

    fn in_flight(&self, id: FrameId) -> bool {
        self.tx_state.get(id.0 as usize) == Some(&TxState::InFlight)
    }

    fn free(&mut self, id: FrameId) {
        assert!(
            self.tx_state.get(id.0 as usize) == Some(&TxState::Owned),
            "frame {id:?} freed while free or in flight"
        );
        self.tx_state[id.0 as usize] = TxState::Free;
        self.tx_free.push(id.0);
    }

    fn flush(&mut self) -> io::Result<()> {
        // Copy mode sends at most a small batch per syscall, so keep kicking
        // while descriptors wait and the kernel makes progress.
        for _ in 0..64 {
            self.reap_completions();
            if self.tx.pending() == 0 || (self.need_wakeup && !self.tx.needs_wakeup()) {
                // Nothing waits, or the driver drains the ring by itself.
                break;
            }
            self.kick_tx()?;
        }
        self.reap_completions();
        Ok(())
    }

    fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let want = max.min(self.batch as usize) as u32;
        let mut received = 0;
        if want > 0 {
            let mut reader = self.rx.receive(want);
            while let Some(desc) = reader.read() {
                match self.umem.bytes_at(desc.addr, desc.len) {
                    Some(bytes) => f(bytes),
                    None => log::warn!("RX descriptor outside the UMEM: {desc:?}"),
                }
                let frame_size = u64::from(self.umem.frame_size);
                self.recycle.push(desc.addr - desc.addr % frame_size);
                received += 1;
            }
            reader.release();
        }
        self.refill();
        if received == 0 && (self.busy_poll || (self.need_wakeup && self.device.needs_wakeup())) {
            self.kick_rx()?;
        }
        Ok(received)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.rx.available() > 0 || self.reap_completions() > 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            // Completions raise no poll event, so while frames are in flight
            // wake up often to reap them.
            let mut slice = deadline - now;
            if self.in_flight > 0 {
                slice = slice.min(Duration::from_millis(1));
                if !self.need_wakeup || self.tx.needs_wakeup() {
                    self.kick_tx()?;
                }
            }
            let mut pollfd = libc::pollfd {
                fd: self.user.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = slice.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd that outlives the call.
            let rc = unsafe { libc::poll(&mut pollfd, 1, millis) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "poll on {} queue {}: {e}",
                            self.report.iface, self.report.queue
                        ),
                    ));
                }
            }
        }
    }
}
