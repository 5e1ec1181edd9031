//! Privileged-test helpers: frame building, UDP senders, XDP attach and xsk sockets in a lab.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use dataplane::{
    lab::Lab,
    transport::link::FrameLink,
    xdp::{
        loader::{AttachOptions, XdpModeChoice, XdpProgram},
        xsk::{BindMode, XskConfig, XskSocket},
    },
};
use dataplane_common::{WIRE_MAGIC, XdpConfig};

pub const PORT: u16 = 47_000;
pub const KIND_CONTROL: u8 = 0x01;

/// Privileged tests need root; say so plainly instead of failing obscurely.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests need root (CAP_NET_ADMIN, CAP_BPF)");
}

/// A data-plane payload: magic, kind, sequence number, then `fill` bytes.
pub fn payload(kind: u8, seq: u32, fill: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(7 + fill);
    p.extend_from_slice(&WIRE_MAGIC.to_be_bytes());
    p.push(kind);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..fill).map(|i| (i % 251) as u8));
    p
}

/// The sequence number of a received frame (Ethernet/IPv4 without options/UDP).
pub fn seq_of(frame: &[u8]) -> u32 {
    let p = &frame[14 + 20 + 8..];
    u32::from_be_bytes([p[3], p[4], p[5], p[6]])
}

/// Writes an Ethernet/IPv4/UDP frame carrying `payload` into `buf`, returns its length.
pub fn build_frame(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> usize {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let len = 14 + ip_len;
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut buf[14..34];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut buf[34..42];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0); // no UDP checksum (allowed for IPv4)
    buf[42..len].copy_from_slice(payload);
    len
}

/// Sends `payloads` as UDP datagrams from the client namespace to the server.
pub fn send_udp_from_client(lab: &Lab, payloads: Vec<Vec<u8>>) {
    let server = SocketAddrV4::new(lab.config().server_ip, PORT);
    let client_ns = lab.config().client_ns.clone();
    dataplane::lab::spawn_in_netns(&client_ns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("UDP socket in client ns");
        for p in payloads {
            socket.send_to(&p, server).expect("sendto the server");
            // Pace a little so the receiver's ring never overflows.
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .join()
    .expect("client sender thread");
}

/// Attaches the program on the server veth (auto mode) and configures the port.
pub fn attach_server(lab: &Lab, mode: XdpModeChoice) -> XdpProgram {
    lab.in_server(|| {
        let mut opts = AttachOptions::new(lab.config().server_veth.clone());
        opts.mode = mode;
        let mut program = XdpProgram::attach(&opts).unwrap_or_else(|e| panic!("attach: {e:?}"));
        program
            .set_config(&XdpConfig {
                udp_port: PORT,
                ..XdpConfig::default()
            })
            .expect("set config");
        program
    })
    .expect("enter server ns")
}

/// Small copy-mode socket settings for tests.
pub fn small_xsk_config() -> XskConfig {
    XskConfig {
        frame_size: 2048,
        frame_count: 512,
        tx_frames: 256,
        fill_size: 512,
        completion_size: 512,
        rx_size: 512,
        tx_size: 512,
        bind: BindMode::Auto,
        ..XskConfig::default()
    }
}

/// Opens an xsk socket on the server veth, queue 0, and registers it.
pub fn server_socket(lab: &Lab, program: &mut XdpProgram) -> XskSocket {
    let mut socket = lab
        .in_server(|| XskSocket::open(&lab.config().server_veth, &small_xsk_config()))
        .expect("enter server ns")
        .unwrap_or_else(|e| panic!("open xsk: {e:?}"));
    socket.register(program).expect("insert socket in XSKMAP");
    socket
}

/// Receives until `want` frames arrived or `timeout` passed; returns them.
pub fn receive_frames(socket: &mut XskSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    while frames.len() < want && Instant::now() < deadline {
        socket
            .receive(64, &mut |frame| frames.push(frame.to_vec()))
            .expect("receive");
        if frames.len() < want {
            socket.wait(Duration::from_millis(20)).expect("wait");
        }
    }
    frames
}

fn inet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests from namespace `ns` to `dst` over a raw
/// socket (no `ping` binary needed) and returns how many replies came back.
pub fn ping_from(ns: &str, dst: Ipv4Addr, count: u16) -> u16 {
    dataplane::lab::spawn_in_netns(ns, move || {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: valid timeval of the right size for SO_RCVTIMEO.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        let id = (std::process::id() & 0xffff) as u16;
        let mut replies = 0;
        for seq in 0..count {
            let mut echo = [0u8; 64];
            echo[0] = 8;
            echo[4..6].copy_from_slice(&id.to_be_bytes());
            echo[6..8].copy_from_slice(&seq.to_be_bytes());
            let sum = inet_checksum(&echo);
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            // SAFETY: buffer and address are valid for the given lengths.
            unsafe {
                libc::sendto(
                    fd,
                    echo.as_ptr().cast(),
                    echo.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let mut buf = [0u8; 256];
                // SAFETY: buffer valid for its length.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    break;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let icmp = &buf[ihl..n as usize];
                if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
                    replies += 1;
                    break;
                }
            }
        }
        // SAFETY: closes the fd opened above, once.
        unsafe { libc::close(fd) };
        replies
    })
    .join()
    .expect("ping thread")
}

/// Sends whole Ethernet frames, as they are, out of the client's veth end
/// through an AF_PACKET socket: what the server receives is exactly these
/// bytes, whatever their addresses or lengths claim.
pub fn send_raw_from_client(lab: &Lab, frames: Vec<Vec<u8>>) {
    let client_ns = lab.config().client_ns.clone();
    let iface = std::ffi::CString::new(lab.config().client_veth.clone()).unwrap();
    dataplane::lab::spawn_in_netns(&client_ns, move || {
        // SAFETY: if_nametoindex reads the NUL-terminated name only.
        let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        assert_ne!(ifindex, 0, "no client veth {iface:?}");
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for frame in frames {
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: buffer and address are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(
                n,
                frame.len() as isize,
                "AF_PACKET sendto: {}",
                std::io::Error::last_os_error()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: closes the fd opened above, once.
        unsafe { libc::close(fd) };
    })
    .join()
    .expect("raw sender thread");
}
