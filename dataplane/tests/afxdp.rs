//! The AF_XDP data path end to end: `dataplane serve --mode afxdp` in the
//! server namespace of a veth lab, `dataplane fetch`/`produce --mode afxdp`
//! in the client namespace. Checks that what arrives is byte for byte what
//! was sent, also under injected faults; that malformed and spoofed frames
//! are counted and answered with nothing; that no XDP program outlives the
//! server; and that `--mode auto` falls back, saying why. Each test builds
//! its own lab (unique names), torn down by the `Lab` guard. Run as root.

mod common;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::*;
use dataplane::{
    lab::Lab,
    transport::frame::{
        self, CookieBody, DP_HLEN, DP_OFFSET, Endpoint, Header, Kind, Message, Route,
    },
    xdp::loader::{attached_program_id, wait_detached},
};
use serde_json::Value;

/// The data path's UDP port (the binary's default, on both ends).
const UDP_PORT: u16 = dataplane::DEFAULT_AFXDP_PORT;

/// Longest a client command may take before the test calls it hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// `serve --mode afxdp` on the lab's server veth, admitting the client.
fn serve_afxdp(lab: &Lab, log_dir: &Path, extra: &[&str]) -> Server {
    let c = lab.config();
    let client_ip = c.client_ip.to_string();
    let mut args = vec!["--mode", "afxdp", "--iface", &c.server_veth];
    if !extra.contains(&"--admit-any") {
        args.extend(["--admit", &client_ip]);
    }
    args.extend_from_slice(extra);
    let server = ServeCommand::in_netns(&c.server_ns, c.server_ip).start(log_dir, &args);
    assert!(
        server.log().iter().any(|l| l.contains("afxdp: ")),
        "serve --mode afxdp did not report an AF_XDP path: {:?}",
        server.log()
    );
    server
}

/// Runs `args` (a command line) inside network namespace `ns`, killing it
/// and panicking if it runs longer than [`CLIENT_TIMEOUT`].
fn run_in_netns(ns: &str, args: &[&str]) -> Output {
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip netns exec");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLIENT_TIMEOUT) {
        Ok(out) => out.expect("wait for the client"),
        Err(_) => {
            // SAFETY: kill(2) on the process group our child leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "{args:?} in {ns} hung for {CLIENT_TIMEOUT:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs the binary in the client namespace; panics with its output unless
/// it succeeds. Returns (stdout, stderr).
fn client_ok(lab: &Lab, args: &[&str]) -> (String, String) {
    let mut argv = vec![BIN];
    argv.extend_from_slice(args);
    let out = run_in_netns(&lab.config().client_ns, &argv);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "dataplane {args:?} in the client namespace failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `fetch --mode afxdp` of `topic` into `out_dir`; returns its JSON report.
fn fetch_afxdp(lab: &Lab, server: &Server, topic: &str, out_dir: &Path, extra: &[&str]) -> Value {
    let c = lab.config();
    let server_addr = server.addr.to_string();
    let mut args = vec![
        "fetch",
        "--mode",
        "afxdp",
        "--iface",
        &c.client_veth,
        "--server",
        &server_addr,
        "--topic",
        topic,
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (stdout, _) = client_ok(lab, &args);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("fetch printed no JSON report ({e}): {stdout}"));
    assert_eq!(report["path"], "afxdp", "{report}");
    assert_eq!(report["verified"], true, "{report}");
    report
}

/// Fetches `topic` over AF_XDP and checks the copy is the source, byte for byte.
fn fetch_identical(lab: &Lab, server: &Server, src: &Path, topic: &str, extra: &[&str]) -> Value {
    let out = tempfile::tempdir().unwrap();
    let report = fetch_afxdp(lab, server, topic, out.path(), extra);
    let dir = format!("{topic}-0");
    let source = segment_bytes(&src.join(&dir));
    let copy = segment_bytes(&out.path().join(&dir));
    assert_eq!(report["bytes"], source.len(), "{extra:?}: {report}");
    assert!(
        copy == source,
        "{topic} {extra:?}: the fetched log ({} bytes) differs from the source ({} bytes){}",
        copy.len(),
        source.len(),
        first_difference(&copy, &source)
    );
    report
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!(", first at byte {at}"),
        None => String::new(),
    }
}

/// `produce --mode afxdp` of a generated spec; returns its JSON report.
fn produce_afxdp(
    lab: &Lab,
    server: &Server,
    topic: &str,
    (records, size, per_batch): (u64, usize, u32),
) -> Value {
    let c = lab.config();
    let server_addr = server.addr.to_string();
    let (records, size, per_batch) = (records.to_string(), size.to_string(), per_batch.to_string());
    let (stdout, _) = client_ok(
        lab,
        &[
            "produce",
            "--mode",
            "afxdp",
            "--iface",
            &c.client_veth,
            "--server",
            &server_addr,
            "--topic",
            topic,
            "--records",
            &records,
            "--record-size",
            &size,
            "--batch-records",
            &per_batch,
            "--keys",
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("produce printed no JSON report ({e}): {stdout}"));
    assert_eq!(report["path"], "afxdp", "{report}");
    assert_eq!(report["verified"], true, "{report}");
    report
}

/// Checks that the server's copy of `topic` is a valid log and is exactly
/// what `gen` writes for the same spec.
fn assert_log_is_generated(server_dir: &Path, topic: &str, spec: (u64, usize, u32)) {
    let dir = server_dir.join(format!("{topic}-0"));
    dataplane_ok(&["inspect", dir.to_str().unwrap()]);
    let reference = tempfile::tempdir().unwrap();
    gen_log(reference.path(), topic, spec.0, spec.1, spec.2);
    let expected = segment_bytes(&reference.path().join(format!("{topic}-0")));
    let got = segment_bytes(&dir);
    assert!(
        got == expected,
        "{topic} {spec:?}: the produced log ({} bytes) differs from gen's ({} bytes){}",
        got.len(),
        expected.len(),
        first_difference(&got, &expected)
    );
}

/// Stops the server with `signal` and returns the statistics it logs on the way out.
fn stop_for_statistics(server: &mut Server, signal: i32) -> Value {
    let status = server.finish(signal);
    assert!(
        status.success(),
        "serve exited with {status}: {:?}",
        server.log()
    );
    let log = server.log();
    let line = log
        .iter()
        .find_map(|l| l.split_once("afxdp statistics: ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no statistics line in {log:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("statistics are not JSON ({e}): {line}"))
}

/// The XDP program's counters (`redirected=.. passed=..`) of a report or statistics.
fn xdp_counters(details: &Value) -> HashMap<String, u64> {
    let text = details["xdp_counters"]
        .as_str()
        .unwrap_or_else(|| panic!("no xdp_counters in {details}"));
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("counter value")))
        .collect()
}

fn count(value: &Value, path: &str) -> u64 {
    let mut v = value;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no counter {path} in {value}"))
}

/// Checks inside the server namespace that no XDP program is left on its veth.
fn assert_no_program_on_server(lab: &Lab, why: &str) {
    let veth = lab.config().server_veth.clone();
    let (gone, id) = lab
        .in_server(|| {
            (
                wait_detached(&veth, Duration::from_secs(3)),
                attached_program_id(&veth),
            )
        })
        .expect("enter server ns");
    assert!(gone, "{why}: XDP program id {id:?} is still on {veth}");
}

// --- frames made by hand ---------------------------------------------------

/// A frame from `src` to the lab's server, as the server's socket sees it.
fn frame_to_server(lab: &Lab, src: Endpoint, header: &Header, msg: &Message<'_>) -> Vec<u8> {
    let c = lab.config();
    let route = Route {
        src,
        dst: Endpoint {
            mac: lab.server_mac().expect("server MAC"),
            ip: c.server_ip,
            port: UDP_PORT,
        },
    };
    let mut buf = vec![0u8; 2048];
    let n = frame::build(&mut buf, &route, header, msg).expect("frame fits");
    buf.truncate(n);
    buf
}

/// The UDP payload (data-plane header and body) of a frame built by hand.
fn payload(header: &Header, msg: &Message<'_>) -> Vec<u8> {
    let any = Endpoint {
        mac: [2, 0, 0, 0, 0, 1],
        ip: Ipv4Addr::LOCALHOST,
        port: 1,
    };
    let route = Route { src: any, dst: any };
    let mut buf = vec![0u8; 2048];
    let n = frame::build(&mut buf, &route, header, msg).expect("frame fits");
    buf[DP_OFFSET..n].to_vec()
}

/// Recomputes the data-plane CRC-32C of a payload after it was edited.
fn reseal(payload: &mut [u8]) {
    payload[24..28].fill(0);
    let crc = crc32c::crc32c(payload);
    payload[24..28].copy_from_slice(&crc.to_be_bytes());
}

fn data_header(session: u32, seq: u32, offset: u64) -> Header {
    Header {
        kind: Kind::Data,
        flags: 0,
        session,
        seq,
        offset,
    }
}

/// A plain UDP socket in the client namespace speaking the data-plane
/// protocol by hand to the server (the client side runs no XDP program, so
/// the server's answers reach it through the kernel).
struct HandPeer {
    socket: UdpSocket,
    server: SocketAddrV4,
}

impl HandPeer {
    fn new(lab: &Lab) -> HandPeer {
        let socket = lab
            .in_client(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .expect("enter client ns")
            .expect("UDP socket in the client namespace");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        HandPeer {
            socket,
            server: SocketAddrV4::new(lab.config().server_ip, UDP_PORT),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn send(&self, payload: &[u8]) {
        self.socket
            .send_to(payload, self.server)
            .expect("send to the server");
        // Pace a little so no frame is lost to a full ring.
        std::thread::sleep(Duration::from_micros(300));
    }

    /// The next frame from the server: its header's kind and session, and the body.
    fn receive(&self) -> Option<(Kind, u32, Vec<u8>)> {
        let mut buf = [0u8; 2048];
        let (n, _) = self.socket.recv_from(&mut buf).ok()?;
        assert!(n >= DP_HLEN, "short answer from the server: {n} bytes");
        let kind = Kind::from_u8(buf[2]).expect("known kind from the server");
        let session = u32::from_be_bytes(buf[4..8].try_into().unwrap());
        let len = usize::from(u16::from_be_bytes([buf[20], buf[21]]));
        Some((kind, session, buf[DP_HLEN..DP_HLEN + len].to_vec()))
    }

    /// Sends `payload` until an answer of `kind` comes back; returns its session and body.
    fn exchange(&self, payload: &[u8], kind: Kind) -> (u32, Vec<u8>) {
        for _ in 0..10 {
            self.send(payload);
            while let Some((k, session, body)) = self.receive() {
                if k == kind {
                    return (session, body);
                }
            }
        }
        panic!("no {kind:?} from the server");
    }

    /// The cookie handshake; returns the session id the server gave.
    fn handshake(&self) -> u32 {
        let nonce = 0x5eed_0000_0000_0001;
        let hello = payload(&Header::new(Kind::Hello, 0), &Message::Hello { nonce });
        let (_, body) = self.exchange(&hello, Kind::Cookie);
        let cookie = match Message::decode(Kind::Cookie, &body) {
            Ok(Message::Cookie(c)) => c,
            other => panic!("bad cookie answer: {other:?}"),
        };
        assert_eq!(cookie.nonce, nonce);
        let echo = payload(
            &Header::new(Kind::CookieEcho, 0),
            &Message::CookieEcho {
                cookie,
                window: 64,
                max_frame: 4096,
            },
        );
        let (session, _) = self.exchange(&echo, Kind::Accept);
        assert_ne!(session, 0, "accept without a session id");
        session
    }
}

// --- 1. fetch ----------------------------------------------------------------

/// (topic, records, record size, records per batch): batches of about 1 KiB,
/// 16 KiB and 256 KiB, about 2 MB each.
const FETCH_TOPICS: [(&str, u64, usize, u32); 3] = [
    ("b1k", 20_000, 90, 10),
    ("b16k", 2_048, 1_000, 16),
    ("b256k", 512, 4_000, 64),
];

fn fetch_is_byte_identical(frame_size: &str) {
    require_root();
    let lab = Lab::unique("fe").expect("lab up");
    let src = tempfile::tempdir().unwrap();
    for (topic, records, size, per_batch) in FETCH_TOPICS {
        gen_log(src.path(), topic, records, size, per_batch);
    }
    let frames = ["--frame-size", frame_size];
    let mut server = serve_afxdp(&lab, src.path(), &frames);
    for (topic, records, _, _) in FETCH_TOPICS {
        let report = fetch_identical(&lab, &server, src.path(), topic, &frames);
        assert_eq!(report["records"], records, "{report}");
        assert_eq!(report["first_offset"], 0, "{report}");
        assert_eq!(report["next_offset"], records, "{report}");
    }
    let stats = stop_for_statistics(&mut server, libc::SIGINT);
    eprintln!(
        "fetch with {frame_size}-byte frames, no faults: server statistics {}",
        stats["transport"]
    );
    assert_eq!(count(&stats, "transport.sessions_completed"), 3, "{stats}");
    assert!(count(&stats, "transport.data_frames_sent") > 0, "{stats}");
}

#[test]
fn fetch_is_byte_identical_with_2048_byte_frames() {
    fetch_is_byte_identical("2048");
}

#[test]
fn fetch_is_byte_identical_with_4096_byte_frames() {
    fetch_is_byte_identical("4096");
}

/// The ends agree on the largest frame in the handshake: a server whose
/// socket takes 2048-byte frames (1792 bytes after the kernel's headroom)
/// and a client with 4096-byte frames still exchange everything, both ways.
#[test]
fn ends_with_different_frame_sizes_agree_on_the_smaller() {
    require_root();
    let lab = Lab::unique("fs").expect("lab up");
    let src = tempfile::tempdir().unwrap();
    let (topic, records, size, per_batch) = FETCH_TOPICS[1];
    gen_log(src.path(), topic, records, size, per_batch);
    let mut server = serve_afxdp(&lab, src.path(), &["--frame-size", "2048"]);
    // The client keeps its default 4096-byte frames.
    let report = fetch_identical(&lab, &server, src.path(), topic, &[]);
    assert_eq!(report["records"], records, "{report}");
    let spec = (5_000, 900, 10);
    produce_afxdp(&lab, &server, "mixed", spec);
    let stats = stop_for_statistics(&mut server, libc::SIGTERM);
    assert_eq!(count(&stats, "transport.sessions_completed"), 2, "{stats}");
    assert_eq!(
        count(&stats, "xsk_statistics.rx_dropped"),
        0,
        "no frame too large for the server: {stats}"
    );
    assert_log_is_generated(src.path(), "mixed", spec);
}

// --- 2. produce --------------------------------------------------------------

#[test]
fn produce_writes_exactly_the_log_gen_writes() {
    require_root();
    let lab = Lab::unique("pr").expect("lab up");
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_afxdp(&lab, dir.path(), &[]);
    // About 1 KiB and 256 KiB batches, about 2 MB each.
    let cases = [("p1k", (20_000, 90, 10)), ("p256k", (512, 4_000, 64))];
    for (topic, spec) in cases {
        let report = produce_afxdp(&lab, &server, topic, spec);
        assert_eq!(report["records"], spec.0, "{report}");
        assert_eq!(report["next_offset"], spec.0, "{report}");
    }
    let stats = stop_for_statistics(&mut server, libc::SIGTERM);
    assert_eq!(count(&stats, "transport.sessions_completed"), 2, "{stats}");
    for (topic, spec) in cases {
        assert_log_is_generated(dir.path(), topic, spec);
    }
}

// --- 3. faults ---------------------------------------------------------------

/// Fault injector settings: one in N data frames dropped, duplicated, corrupted.
const FAULTS: [(&str, &[&str]); 3] = [
    ("1% drop", &["--inject-drop", "100"]),
    ("10% drop", &["--inject-drop", "10"]),
    (
        "2% duplicates and 2% corruption",
        &["--inject-duplicate", "50", "--inject-corrupt", "50"],
    ),
];

/// Checks that the faults in `flags` happened (XDP counters of the
/// receiving side) and were recovered from (transport statistics of the
/// receiver and of the sender).
///
/// The bounds are loose on purpose where the transport's own behaviour adds
/// to a counter: a late acknowledgement makes the sender retransmit frames
/// that were not lost, and the receiver then drops them as duplicates.
fn assert_faults_seen(what: &str, flags: &[&str], receiver: &Value, sender: &Value) {
    let counters = xdp_counters(receiver);
    let has = |flag: &str| flags.contains(&flag);
    let retransmissions = count(sender, "transport.retransmissions");
    let checksum_failures = count(receiver, "transport.checksum_failures");
    if has("--inject-drop") {
        assert!(counters["fault_dropped"] > 0, "{what}: {counters:?}");
    }
    if has("--inject-duplicate") {
        assert!(counters["fault_duplicated"] > 0, "{what}: {counters:?}");
        assert!(
            count(receiver, "transport.duplicates_dropped") > 0,
            "{what}: duplicates delivered but none dropped: {receiver}"
        );
    }
    if has("--inject-corrupt") {
        assert!(counters["fault_corrupted"] > 0, "{what}: {counters:?}");
        assert!(
            checksum_failures > 0,
            "{what}: corrupted frames but no checksum failure: {receiver}"
        );
    }
    // Nothing but the injector damages frames on a veth.
    assert!(
        checksum_failures <= counters["fault_corrupted"],
        "{what}: {checksum_failures} checksum failures, {} frames corrupted: {receiver}",
        counters["fault_corrupted"]
    );
    // Every dropped frame, and every frame a duplicate overwrote, was lost
    // and must have been sent again for the stream to complete.
    let lost = counters["fault_dropped"] + counters["fault_duplicated"];
    assert!(
        retransmissions >= lost,
        "{what}: {lost} frames lost, {retransmissions} retransmitted: {sender}"
    );
}

#[test]
fn fetch_is_byte_identical_under_injected_faults() {
    require_root();
    let lab = Lab::unique("ff").expect("lab up");
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 2_048, 1_000, 16);
    for (what, flags) in FAULTS {
        // Data flows to the client: its XDP program injects the faults.
        let mut server = serve_afxdp(&lab, src.path(), &[]);
        let report = fetch_identical(&lab, &server, src.path(), "events", flags);
        let stats = stop_for_statistics(&mut server, libc::SIGINT);
        eprintln!(
            "fetch, {what}: client {}, server retransmissions {}",
            report["details"]["xdp_counters"], stats["transport"]["retransmissions"]
        );
        assert_faults_seen(what, flags, &report["details"], &stats);
        let server_counters = xdp_counters(&stats);
        assert_eq!(server_counters["fault_dropped"], 0, "{what}: {stats}");
    }
}

#[test]
fn produce_is_byte_identical_under_injected_faults() {
    require_root();
    let lab = Lab::unique("pf").expect("lab up");
    let spec = (2_048, 1_000, 16);
    for (what, flags) in FAULTS {
        // Data flows to the server: its XDP program injects the faults.
        let dir = tempfile::tempdir().unwrap();
        let mut server = serve_afxdp(&lab, dir.path(), flags);
        let report = produce_afxdp(&lab, &server, "events", spec);
        let stats = stop_for_statistics(&mut server, libc::SIGINT);
        eprintln!(
            "produce, {what}: server {}, client retransmissions {}",
            stats["xdp_counters"], report["details"]["transport"]["retransmissions"]
        );
        assert_faults_seen(what, flags, &stats, &report["details"]);
        assert_log_is_generated(dir.path(), "events", spec);
    }
}

// --- 4. malformed frames -----------------------------------------------------

#[test]
fn malformed_frames_are_counted_and_fetch_still_works() {
    require_root();
    let lab = Lab::unique("mal").expect("lab up");
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 500, 1_000, 16);
    let mut server = serve_afxdp(&lab, src.path(), &[]);

    // Through the client kernel's UDP stack: well-formed IPv4/UDP around a
    // damaged data-plane header or body.
    let peer = HandPeer::new(&lab);
    let done = payload(
        &Header::new(Kind::Done, 7),
        &Message::Done { last_offset: 0 },
    );
    peer.send(&done[..10]); // truncated data-plane header
    let mut p = done.clone();
    p[21] += 3; // body length says 3 more bytes than there are
    peer.send(&p);
    let mut p = done.clone();
    p[2] = 0x77; // unknown kind
    reseal(&mut p);
    peer.send(&p);
    let mut p = done.clone();
    p[0] = 0xBE; // wrong magic
    reseal(&mut p);
    peer.send(&p);
    let mut p = done.clone();
    *p.last_mut().unwrap() ^= 0x01; // bad CRC-32C
    peer.send(&p);
    let mut p = payload(
        &Header::new(Kind::Ack, 7),
        &Message::Ack {
            cum: 0,
            sack: 0,
            window: 1,
        },
    );
    p.truncate(DP_HLEN + 3); // an ack body of 3 bytes, correctly sealed
    p[20..22].copy_from_slice(&3u16.to_be_bytes());
    reseal(&mut p);
    peer.send(&p);
    // Data for a session that does not exist.
    peer.send(&payload(
        &data_header(0xDEAD_BEEF, 0, 0),
        &Message::Data(&[0xAB; 100]),
    ));

    // Raw Ethernet frames whose IPv4/UDP headers lie.
    let client = Endpoint {
        mac: lab.client_mac().expect("client MAC"),
        ip: lab.config().client_ip,
        port: 40_000,
    };
    let valid = frame_to_server(
        &lab,
        client,
        &Header::new(Kind::Done, 7),
        &Message::Done { last_offset: 0 },
    );
    let ip = frame::ETH_HLEN;
    let udp = ip + frame::IPV4_HLEN;
    let mut bad_ip_checksum = valid.clone();
    bad_ip_checksum[ip + 10] ^= 0xFF;
    let mut bad_udp_length = valid.clone();
    bad_udp_length[udp + 5] += 1;
    let mut ip_longer_than_frame = valid.clone();
    let total = u16::from_be_bytes([valid[ip + 2], valid[ip + 3]]) + 40;
    ip_longer_than_frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    ip_longer_than_frame[ip + 10..ip + 12].fill(0);
    let sum = frame::internet_checksum(&ip_longer_than_frame[ip..udp]);
    ip_longer_than_frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    // So short that the IPv4 header is cut: the XDP program passes it on.
    let ip_header_cut = valid[..ip + 6].to_vec();
    send_raw_from_client(
        &lab,
        vec![
            bad_ip_checksum,
            bad_udp_length,
            ip_longer_than_frame,
            ip_header_cut,
        ],
    );

    // Inside a real session: a produce stream's sequence far outside the
    // window, and the session's frames from another port.
    let session = peer.handshake();
    let request = payload(
        &Header::new(Kind::ProduceRequest, session),
        &Message::ProduceRequest {
            topic: "scratch",
            partition: 0,
        },
    );
    let (_, ack) = peer.exchange(&request, Kind::Ack);
    let window = match Message::decode(Kind::Ack, &ack) {
        Ok(Message::Ack { window, .. }) => window,
        other => panic!("bad ack: {other:?}"),
    };
    peer.send(&payload(
        &data_header(session, window + 1_000, 0),
        &Message::Data(&[0xCD; 100]),
    ));
    let intruder = HandPeer::new(&lab);
    intruder.send(&payload(
        &data_header(session, 0, 0),
        &Message::Data(&[0xEF; 100]),
    ));
    // Close the session so it does not linger.
    peer.send(&payload(
        &Header::new(Kind::Error, session),
        &Message::Error {
            code: frame::code::PROTOCOL,
            reason: "test over",
        },
    ));

    // The server still serves.
    fetch_identical(&lab, &server, src.path(), "events", &[]);

    let stats = stop_for_statistics(&mut server, libc::SIGINT);
    let t = &stats["transport"];
    eprintln!("server statistics after the malformed frames: {stats}");
    let expect = [
        ("malformed.truncated", 2), // short data-plane header, IPv4 longer than the frame
        ("malformed.bad_length", 2), // body length, UDP length
        ("malformed.unknown_kind", 1),
        ("malformed.bad_magic", 1),
        ("malformed.bad_body", 1),
        ("checksum_failures", 2), // CRC-32C, IPv4 header checksum
        ("unknown_session", 2),   // made-up session, real session from another port
        ("out_of_window", 1),
    ];
    for (counter, n) in expect {
        assert_eq!(count(t, counter), n, "{counter}: {t}");
    }
    let counters = xdp_counters(&stats);
    assert!(
        counters["malformed"] >= 1,
        "the XDP program did not count the cut IPv4 header: {counters:?}"
    );
}

// --- 5. spoofed requests -----------------------------------------------------

#[test]
fn requests_without_a_handshake_get_no_data() {
    require_root();
    let lab = Lab::unique("spf").expect("lab up");
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 500, 1_000, 16);
    // Admit any source, so XDP hands the spoofed frames to the server.
    let mut server = serve_afxdp(&lab, src.path(), &["--admit-any"]);
    let fetch = Message::FetchRequest {
        topic: "events",
        partition: 0,
        offset: -2,
        max_bytes: 0,
    };

    // From the client's real address: a made-up session id, and none at all.
    let peer = HandPeer::new(&lab);
    peer.send(&payload(
        &Header::new(Kind::FetchRequest, 0x1234_5678),
        &fetch,
    ));
    peer.send(&payload(&Header::new(Kind::FetchRequest, 0), &fetch));

    // A real session, then its id used from a spoofed source address (and
    // from the right address but a spoofed port).
    let session = peer.handshake();
    let mac = lab.client_mac().expect("client MAC");
    let spoofed = Endpoint {
        mac,
        ip: Ipv4Addr::new(10, 77, 0, 99),
        port: peer.port(),
    };
    let wrong_port = Endpoint {
        mac,
        ip: lab.config().client_ip,
        port: peer.port().wrapping_add(1),
    };
    let header = Header::new(Kind::FetchRequest, session);
    // A spoofed handshake: the cookie goes to the spoofed address, and an
    // echo with a made-up cookie is refused.
    let hello = Message::Hello { nonce: 99 };
    let forged_echo = Message::CookieEcho {
        cookie: CookieBody {
            cookie: 0x0123_4567_89AB_CDEF,
            bucket: 0,
            nonce: 99,
        },
        window: 256,
        max_frame: 4096,
    };
    send_raw_from_client(
        &lab,
        vec![
            frame_to_server(&lab, spoofed, &header, &fetch),
            frame_to_server(&lab, wrong_port, &header, &fetch),
            frame_to_server(&lab, spoofed, &Header::new(Kind::Hello, 0), &hello),
            frame_to_server(
                &lab,
                spoofed,
                &Header::new(Kind::CookieEcho, 0),
                &forged_echo,
            ),
            frame_to_server(
                &lab,
                spoofed,
                &Header::new(Kind::FetchRequest, 0x1234_5678),
                &fetch,
            ),
        ],
    );
    // Nothing for the real peer either: it never asked.
    std::thread::sleep(Duration::from_millis(300));
    while let Some((kind, _, _)) = peer.receive() {
        assert_ne!(kind, Kind::Data, "data reached a peer that never asked");
    }

    let stats = stop_for_statistics(&mut server, libc::SIGINT);
    let t = &stats["transport"];
    eprintln!("server statistics after the spoofed requests: {stats}");
    assert_eq!(count(t, "data_frames_sent"), 0, "data went out: {t}");
    assert_eq!(count(t, "unknown_session"), 5, "{t}");
    assert_eq!(
        count(t, "bad_cookies") + count(t, "stale_cookies"),
        1,
        "{t}"
    );
    assert_eq!(count(t, "sessions_opened"), 1, "{t}");
    assert!(xdp_counters(&stats)["redirected"] >= 7, "{stats}");
}

// --- 6. no program left behind -----------------------------------------------

fn serve_leaves_no_program(signal: i32) {
    require_root();
    let lab = Lab::unique("sig").expect("lab up");
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 200, 1_000, 16);
    let mut server = serve_afxdp(&lab, src.path(), &[]);
    let veth = lab.config().server_veth.clone();
    let attached = lab
        .in_server(|| attached_program_id(&veth))
        .expect("enter server ns");
    assert!(attached.is_some(), "serve --mode afxdp attached no program");
    // Mid-use, not idle: a fetch first.
    fetch_identical(&lab, &server, src.path(), "events", &[]);
    let status = server.finish(signal);
    if signal == libc::SIGKILL {
        assert!(!status.success(), "{status}");
    } else {
        assert!(
            status.success(),
            "serve exited with {status}: {:?}",
            server.log()
        );
        assert!(
            server
                .log()
                .iter()
                .any(|l| l.contains("afxdp statistics: ")),
            "{:?}",
            server.log()
        );
    }
    assert_no_program_on_server(&lab, &format!("after signal {signal}"));
}

#[test]
fn serve_leaves_no_xdp_program_after_sigint() {
    serve_leaves_no_program(libc::SIGINT);
}

#[test]
fn serve_leaves_no_xdp_program_after_sigterm() {
    serve_leaves_no_program(libc::SIGTERM);
}

#[test]
fn serve_leaves_no_xdp_program_after_sigkill() {
    serve_leaves_no_program(libc::SIGKILL);
}

// --- 7. auto ----------------------------------------------------------------

/// `serve --mode auto` on `iface` falls back to sendfile with `reason` in
/// its log, and a TCP fetch from the client namespace gets the whole log.
fn serve_auto_falls_back(lab: &Lab, iface: &str, reason: &str) {
    let c = lab.config();
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 500, 1_000, 16);
    let mut server = ServeCommand::in_netns(&c.server_ns, c.server_ip)
        .start(src.path(), &["--mode", "auto", "--iface", iface]);
    let line = server.wait_for_log("afxdp unavailable");
    assert!(line.contains(reason), "{line}");
    assert!(line.contains("falling back to sendfile"), "{line}");
    server.wait_for_log("(mode sendfile)");
    let out = tempfile::tempdir().unwrap();
    let (stdout, _) = client_ok(
        lab,
        &[
            "fetch",
            "--mode",
            "tcp",
            "--server",
            &server.addr.to_string(),
            "--topic",
            "events",
            "--out-dir",
            out.path().to_str().unwrap(),
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(
        segment_bytes(&out.path().join("events-0")),
        segment_bytes(&src.path().join("events-0")),
        "the fetched log differs from the source"
    );
    let status = server.finish(libc::SIGTERM);
    assert!(status.success(), "{status}: {:?}", server.log());
}

#[test]
fn serve_auto_falls_back_to_sendfile_when_the_interface_runs_another_program() {
    require_root();
    let lab = Lab::unique("abz").expect("lab up");
    let other = attach_server(&lab, dataplane::xdp::loader::XdpModeChoice::Auto);
    let reason = format!(
        "{} already runs XDP program id {}",
        lab.config().server_veth,
        other.program_id()
    );
    serve_auto_falls_back(&lab, &lab.config().server_veth.clone(), &reason);
    // The other program was left alone.
    let veth = lab.config().server_veth.clone();
    let still = lab.in_server(|| attached_program_id(&veth)).unwrap();
    assert_eq!(still, Some(other.program_id()));
}

#[test]
fn serve_auto_falls_back_to_sendfile_without_the_interface() {
    require_root();
    let lab = Lab::unique("ano").expect("lab up");
    serve_auto_falls_back(&lab, "nosuchif0", "no interface nosuchif0");
    assert_no_program_on_server(&lab, "after a fallback");
}

#[test]
fn fetch_auto_without_capabilities_falls_back_to_tcp() {
    require_root();
    let lab = Lab::unique("cap").expect("lab up");
    let c = lab.config();
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 500, 1_000, 16);
    let mut server = ServeCommand::in_netns(&c.server_ns, c.server_ip)
        .start(src.path(), &["--mode", "sendfile"]);
    let out = tempfile::tempdir().unwrap();
    let server_addr = server.addr.to_string();
    // Root without any capability: an empty bounding set leaves an exec'd
    // root process with none.
    let run = run_in_netns(
        &c.client_ns,
        &[
            "setpriv",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
            BIN,
            "fetch",
            "--mode",
            "auto",
            "--iface",
            &c.client_veth,
            "--server",
            &server_addr,
            "--topic",
            "events",
            "--out-dir",
            out.path().to_str().unwrap(),
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{}: {stdout}\n{stderr}", run.status);
    assert!(
        stderr.contains("afxdp unavailable: missing capability CAP_NET_ADMIN; falling back to TCP"),
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["path"], "tcp", "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(
        segment_bytes(&out.path().join("events-0")),
        segment_bytes(&src.path().join("events-0")),
        "the fetched log differs from the source"
    );
    let veth = c.client_veth.clone();
    let left = lab.in_client(|| attached_program_id(&veth)).unwrap();
    assert_eq!(left, None, "a program was attached without capabilities");
    server.finish(libc::SIGTERM);
}
