//! Steers data-plane frames (Ethernet/IPv4/UDP to the configured port, from an
//! admitted peer) to the AF_XDP socket of the receiving queue; everything else
//! goes on to the kernel's stack untouched. Optionally injects faults into
//! data frames so the transport's recovery can be exercised.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use dataplane_common::{Counter, KIND_DATA, MAX_ADMITTED, MAX_QUEUES, WIRE_MAGIC, XdpConfig};

#[map]
static DP_CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);

#[map]
static DP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
static DP_ADMITTED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ADMITTED, 0);

#[map]
static DP_SOCKETS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

/// Largest frame the duplicator can stash (a page: XDP without frags never
/// sees a larger linear frame).
const STASH_MAX: u32 = 4096;

/// A copy of one data frame, waiting to be delivered again in place of the
/// next data frame on the same interface and queue. Per CPU, because XDP
/// cannot clone a frame and has no lock-free shared buffer to keep one in.
#[repr(C)]
struct DupStash {
    len: u32,
    armed: u32,
    ifindex: u32,
    queue: u32,
    data: [u8; STASH_MAX as usize],
}

#[map]
static DP_DUP_STASH: PerCpuArray<DupStash> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;

/// Ethernet header; byte arrays so every field has alignment 1 in the frame.
#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}
const _: () = assert!(size_of::<EthHdr>() == ETH_HLEN);

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}
const _: () = assert!(size_of::<Ipv4Hdr>() == 20);

#[repr(C)]
struct UdpHdr {
    source: [u8; 2],
    dest: [u8; 2],
    len: [u8; 2],
    check: [u8; 2],
}
const _: () = assert!(size_of::<UdpHdr>() == UDP_HLEN);

/// Start of the data-plane header: magic and kind.
#[repr(C)]
struct WirePrefix {
    magic: [u8; 2],
    kind: u8,
}
const _: () = assert!(size_of::<WirePrefix>() == 3);

#[xdp]
pub fn dataplane(ctx: XdpContext) -> u32 {
    match try_dataplane(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

/// The one place a header is read from the frame: `None` unless
/// `[offset, offset + size_of::<T>())` lies inside the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = DP_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the map lookup returned this CPU's slot, valid for the
        // program's run; no other program instance runs on this CPU meanwhile.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn pass(counter: Counter) -> Result<u32, ()> {
    count(counter);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn one_in(n: u32) -> bool {
    // SAFETY: bpf_get_prandom_u32 takes no arguments and has no preconditions.
    n != 0 && unsafe { bpf_get_prandom_u32() } % n == 0
}

fn try_dataplane(ctx: &XdpContext) -> Result<u32, ()> {
    let Some(config) = DP_CONFIG.get(0) else {
        return pass(Counter::Passed);
    };
    let config = *config;
    if config.udp_port == 0 {
        return pass(Counter::Passed);
    }

    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(Counter::Passed);
    };
    // SAFETY: ptr_at checked that the header lies inside the frame.
    if u16::from_be_bytes(unsafe { (*eth).ether_type }) != ETH_P_IPV4 {
        return pass(Counter::Passed);
    }

    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return pass(Counter::Malformed);
    };
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let (version_ihl, protocol, frag_off, saddr) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).protocol,
            (*ip).frag_off,
            (*ip).saddr,
        )
    };
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < size_of::<Ipv4Hdr>() {
        return pass(Counter::Malformed);
    }
    if protocol != IPPROTO_UDP {
        return pass(Counter::Passed);
    }
    // Fragments (more-fragments flag or a nonzero offset) are not data-plane frames.
    if u16::from_be_bytes(frag_off) & 0x3fff != 0 {
        return pass(Counter::Passed);
    }

    let udp_off = ETH_HLEN + ihl;
    let Some(udp) = ptr_at::<UdpHdr>(ctx, udp_off) else {
        return pass(Counter::Malformed);
    };
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let (dest, udp_len) = unsafe { ((*udp).dest, (*udp).len) };
    if u16::from_be_bytes(dest) != config.udp_port {
        return pass(Counter::Passed);
    }

    let admitted = config.flags & XdpConfig::ADMIT_ALL != 0
        // SAFETY: the value is only tested for presence, never read.
        || unsafe { DP_ADMITTED.get(&u32::from_ne_bytes(saddr)) }.is_some();
    if !admitted {
        debug!(
            ctx,
            "data-plane frame from {}.{}.{}.{} not admitted",
            saddr[0],
            saddr[1],
            saddr[2],
            saddr[3]
        );
        return pass(Counter::NotAdmitted);
    }

    let queue = ctx.rx_queue_index();
    if DP_SOCKETS.get(queue).is_none() {
        return pass(Counter::NoSocket);
    }

    let payload_off = udp_off + UDP_HLEN;
    if let Some(prefix) = ptr_at::<WirePrefix>(ctx, payload_off) {
        // SAFETY: ptr_at checked that the prefix lies inside the frame.
        let (magic, kind) = unsafe { ((*prefix).magic, (*prefix).kind) };
        if u16::from_be_bytes(magic) == WIRE_MAGIC && kind == KIND_DATA {
            if let Some(action) = inject_faults(ctx, &config, queue, payload_off, udp_len) {
                return Ok(action);
            }
        }
    }

    match DP_SOCKETS.redirect(queue, u64::from(xdp_action::XDP_PASS)) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => {
            count(Counter::Redirected);
            Ok(action)
        }
        // The socket went away between the lookup and the redirect.
        Ok(action) | Err(action) => {
            count(Counter::NoSocket);
            Ok(action)
        }
    }
}

/// Applies the configured faults to a data frame. Returns the verdict when a
/// fault decides the frame's fate, `None` to redirect it as usual.
#[inline(always)]
fn inject_faults(
    ctx: &XdpContext,
    config: &XdpConfig,
    queue: u32,
    payload_off: usize,
    udp_len: [u8; 2],
) -> Option<u32> {
    if one_in(config.drop_one_in) {
        count(Counter::FaultDropped);
        debug!(ctx, "fault injector: dropped a data frame");
        return Some(xdp_action::XDP_DROP);
    }
    if config.duplicate_one_in != 0 {
        if let Err(()) = duplicate(ctx, config.duplicate_one_in, queue) {
            // The frame was resized but could not be rewritten: it is garbage now.
            count(Counter::FaultDropped);
            return Some(xdp_action::XDP_DROP);
        }
    }
    if one_in(config.corrupt_one_in) {
        // Flip the last byte the UDP length covers (batch bytes in a data
        // frame), which the transport's checksum must catch. Ethernet padding
        // after it would go unnoticed, so it is not the target.
        let frame_len = ctx.data_end() - ctx.data();
        let udp_payload_end = payload_off - UDP_HLEN + usize_from_be(udp_len);
        if udp_payload_end <= frame_len && udp_payload_end > payload_off + size_of::<WirePrefix>() {
            let offset = (udp_payload_end - 1) as u32;
            let mut byte = [0u8; 1];
            // SAFETY: the helpers bounds-check `offset` against the frame
            // themselves; the buffer is one byte on the stack.
            let flipped = unsafe {
                bpf_xdp_load_bytes(ctx.ctx, offset, byte.as_mut_ptr().cast(), 1) == 0 && {
                    byte[0] ^= 0xff;
                    bpf_xdp_store_bytes(ctx.ctx, offset, byte.as_mut_ptr().cast(), 1) == 0
                }
            };
            if flipped {
                count(Counter::FaultCorrupted);
                debug!(ctx, "fault injector: corrupted a data frame");
            }
        }
    }
    None
}

/// `len`, already checked to be within 1..=STASH_MAX, recomputed so that the
/// verifier can see those bounds on the very register passed to a helper
/// (the compiler would otherwise reuse an unbounded copy of it). The
/// volatile read keeps the compiler from folding the arithmetic away.
#[inline(always)]
fn verifier_bounded_len(len: u32) -> u32 {
    // SAFETY: reads a local variable.
    let len = unsafe { core::ptr::read_volatile(&len) };
    (len.wrapping_sub(1) & (STASH_MAX - 1)) + 1
}

#[inline(always)]
fn usize_from_be(bytes: [u8; 2]) -> usize {
    usize::from(u16::from_be_bytes(bytes))
}

/// Duplicates one in `one_in_n` data frames. XDP cannot clone a frame, so the
/// chosen frame is copied into a per-CPU stash and goes on; the next data
/// frame on the same interface and queue is then overwritten with the copy.
/// The receiver sees the chosen sequence number twice and recovers the
/// overwritten frame by retransmission. `Err` means the current frame was
/// resized but not rewritten and must be dropped.
#[inline(always)]
fn duplicate(ctx: &XdpContext, one_in_n: u32, queue: u32) -> Result<(), ()> {
    let Some(stash) = DP_DUP_STASH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: the lookup returned this CPU's entry, valid for the program's
    // run and not touched by anything else on this CPU meanwhile.
    let stash = unsafe { &mut *stash };
    let ifindex = ctx.ingress_ifindex() as u32;
    let frame_len = (ctx.data_end() - ctx.data()) as u32;

    if stash.armed != 0 {
        if stash.ifindex != ifindex || stash.queue != queue {
            return Ok(());
        }
        let len = stash.len;
        if len == 0 || len > STASH_MAX {
            stash.armed = 0;
            return Ok(());
        }
        let delta = len as i32 - frame_len as i32;
        // SAFETY: adjust_tail validates `delta` against the buffer itself.
        if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            // No room to grow this frame: try again on the next one.
            return Ok(());
        }
        stash.armed = 0;
        // SAFETY: `len` is within 1..=STASH_MAX, the size of `data`; the
        // helper bounds-checks the frame side.
        let stored = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                0,
                stash.data.as_mut_ptr().cast(),
                verifier_bounded_len(len),
            )
        };
        if stored != 0 {
            return Err(());
        }
        count(Counter::FaultDuplicated);
        debug!(ctx, "fault injector: delivered a data frame twice");
        return Ok(());
    }

    if frame_len == 0 || frame_len > STASH_MAX || !one_in(one_in_n) {
        return Ok(());
    }
    // SAFETY: `frame_len` is within 1..=STASH_MAX, the size of `data`; the
    // helper bounds-checks the frame side.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            stash.data.as_mut_ptr().cast(),
            verifier_bounded_len(frame_len),
        )
    };
    if loaded == 0 {
        stash.len = frame_len;
        stash.ifindex = ifindex;
        stash.queue = queue;
        stash.armed = 1;
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
