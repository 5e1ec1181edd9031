//! Privileged tests of the XDP program, the loader and AF_XDP sockets on a
//! veth lab. Each test builds its own lab (unique names) and tears it down
//! through the `Lab` guard, also when it panics. Run as root.

mod common;

use std::{collections::HashMap, net::SocketAddrV4, process::Command, time::Duration};

use common::*;
use dataplane::{
    lab::Lab,
    transport::link::FrameLink,
    xdp::{
        loader::{
            AttachOptions, AttachedMode, LoaderError, XdpModeChoice, XdpProgram, wait_detached,
        },
        xsk::{BoundMode, XskConfig, XskSocket},
    },
};
use dataplane_common::{Counter, KIND_DATA, XdpConfig};

#[test]
fn program_attaches_in_native_mode_on_a_lab_veth() {
    require_root();
    let lab = Lab::unique("nat").expect("lab up");
    let program = attach_server(&lab, XdpModeChoice::Native);
    assert_eq!(program.mode(), AttachedMode::Native);
    let status = lab.status().expect("lab status");
    let link = status.server_link.expect("server veth exists");
    assert_eq!(
        link.xdp_program,
        Some(program.program_id()),
        "ip link shows our program"
    );
}

#[test]
fn refuses_to_replace_an_attached_program_without_force() {
    require_root();
    let lab = Lab::unique("rep").expect("lab up");
    let first = attach_server(&lab, XdpModeChoice::Native);
    let second = lab
        .in_server(|| XdpProgram::attach(&AttachOptions::new(lab.config().server_veth.clone())))
        .expect("enter server ns");
    match second {
        Err(LoaderError::Busy { iface, id }) => {
            assert_eq!(iface, lab.config().server_veth);
            assert_eq!(id, first.program_id());
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // With force, the other program's link is detached and ours takes its place.
    let forced = lab
        .in_server(|| {
            XdpProgram::attach(&AttachOptions {
                force: true,
                ..AttachOptions::new(lab.config().server_veth.clone())
            })
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("forced attach: {e}"));
    assert_ne!(forced.program_id(), first.program_id());
    let attached = lab.status().unwrap().server_link.unwrap().xdp_program;
    assert_eq!(attached, Some(forced.program_id()));
}

#[test]
fn program_is_gone_after_the_loader_is_dropped() {
    require_root();
    let lab = Lab::unique("drp").expect("lab up");
    let program = attach_server(&lab, XdpModeChoice::Auto);
    drop(program);
    let gone = lab
        .in_server(|| wait_detached(&lab.config().server_veth, Duration::from_secs(2)))
        .expect("enter server ns");
    assert!(gone, "an XDP program is still attached after drop");
    assert_eq!(lab.status().unwrap().server_link.unwrap().xdp_program, None);
}

#[test]
fn ping_still_passes_with_the_program_attached() {
    require_root();
    let lab = Lab::unique("png").expect("lab up");
    let program = attach_server(&lab, XdpModeChoice::Native);
    let replies = ping_from(&lab.config().client_ns, lab.config().server_ip, 3);
    assert_eq!(replies, 3, "ICMP echo through the program");
    let counters = program.counters().expect("counters");
    assert!(
        counters.get(Counter::Passed) >= 3,
        "passed counter did not grow: {counters}"
    );
    assert_eq!(counters.get(Counter::Redirected), 0, "{counters}");
}

#[test]
fn frames_from_an_admitted_peer_reach_the_xsk_socket() {
    require_root();
    let lab = Lab::unique("adm").expect("lab up");
    let mut program = attach_server(&lab, XdpModeChoice::Native);
    let mut socket = server_socket(&lab, &mut program);
    eprintln!("{}", socket.report());
    assert_eq!(socket.report().xdp_mode, Some(AttachedMode::Native));
    assert_eq!(
        socket.report().bind,
        BoundMode::Copy,
        "veth has no zero-copy"
    );
    program.admit(lab.config().client_ip).expect("admit client");

    let n = 50;
    send_udp_from_client(
        &lab,
        (0..n).map(|seq| payload(KIND_DATA, seq, 600)).collect(),
    );
    let frames = receive_frames(&mut socket, n as usize, Duration::from_secs(3));
    let seqs: Vec<u32> = frames.iter().map(|f| seq_of(f)).collect();
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "all frames arrive, in order"
    );
    let counters = program.counters().expect("counters");
    assert_eq!(
        counters.get(Counter::Redirected),
        u64::from(n),
        "{counters}"
    );
    let stats = socket.statistics().expect("XDP_STATISTICS");
    assert_eq!(stats.rx_dropped, 0, "{stats:?}");
}

#[test]
fn frames_from_a_source_not_admitted_are_counted_and_passed() {
    require_root();
    let lab = Lab::unique("nad").expect("lab up");
    let mut program = attach_server(&lab, XdpModeChoice::Native);
    let mut socket = server_socket(&lab, &mut program);
    // Admit somebody else only.
    program.admit("10.77.0.99".parse().unwrap()).expect("admit");

    let n = 20;
    send_udp_from_client(
        &lab,
        (0..n).map(|seq| payload(KIND_DATA, seq, 100)).collect(),
    );
    let frames = receive_frames(&mut socket, 1, Duration::from_millis(500));
    assert!(
        frames.is_empty(),
        "a frame from a non-admitted source was redirected"
    );
    let counters = program.counters().expect("counters");
    assert_eq!(
        counters.get(Counter::NotAdmitted),
        u64::from(n),
        "{counters}"
    );
    assert_eq!(counters.get(Counter::Redirected), 0, "{counters}");

    // ADMIT_ALL lifts the restriction.
    program
        .set_config(&XdpConfig {
            udp_port: PORT,
            flags: XdpConfig::ADMIT_ALL,
            ..Default::default()
        })
        .unwrap();
    send_udp_from_client(&lab, vec![payload(KIND_DATA, 7, 100)]);
    let frames = receive_frames(&mut socket, 1, Duration::from_secs(2));
    assert_eq!(frames.len(), 1);
}

#[test]
fn admitted_frames_without_a_socket_are_counted_and_passed() {
    require_root();
    let lab = Lab::unique("nos").expect("lab up");
    let mut program = attach_server(&lab, XdpModeChoice::Native);
    program.admit(lab.config().client_ip).expect("admit");
    send_udp_from_client(
        &lab,
        (0..5).map(|seq| payload(KIND_DATA, seq, 10)).collect(),
    );
    let counters = program.counters().expect("counters");
    assert_eq!(counters.get(Counter::NoSocket), 5, "{counters}");
}

#[test]
fn xsk_tx_in_one_namespace_is_received_by_the_socket_in_the_other() {
    require_root();
    let lab = Lab::unique("tx").expect("lab up");
    let mut program = attach_server(&lab, XdpModeChoice::Native);
    let mut server = server_socket(&lab, &mut program);
    program.admit(lab.config().client_ip).expect("admit");
    let mut client = lab
        .in_client(|| XskSocket::open(&lab.config().client_veth, &small_xsk_config()))
        .expect("enter client ns")
        .unwrap_or_else(|e| panic!("open client xsk: {e:?}"));
    let src_mac = lab.client_mac().unwrap();
    let dst_mac = lab.server_mac().unwrap();
    let src = SocketAddrV4::new(lab.config().client_ip, 40_000);
    let dst = SocketAddrV4::new(lab.config().server_ip, PORT);

    let n = 100u32;
    let mut ids = Vec::new();
    for seq in 0..n {
        let id = client.alloc().expect("a free TX frame");
        let len = build_frame(
            client.frame_mut(id),
            src_mac,
            dst_mac,
            src,
            dst,
            &payload(KIND_DATA, seq, 1000),
        );
        while !client.transmit(id, len) {
            client.flush().expect("flush");
        }
        ids.push((id, len));
        if seq % 16 == 15 {
            client.flush().expect("flush");
        }
    }
    let mut frames = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while frames.len() < n as usize && std::time::Instant::now() < deadline {
        client.flush().expect("flush");
        server
            .receive(64, &mut |f| frames.push(f.to_vec()))
            .expect("receive");
        server.wait(Duration::from_millis(5)).expect("wait");
    }
    let seqs: Vec<u32> = frames.iter().map(|f| seq_of(f)).collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());

    // Every transmission completes; a frame can then be re-posted as is
    // (a retransmission) and arrives again.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while client.frames_in_flight() > 0 && std::time::Instant::now() < deadline {
        client.flush().expect("flush");
        client.wait(Duration::from_millis(5)).expect("wait");
    }
    assert_eq!(
        client.frames_in_flight(),
        0,
        "transmissions never completed"
    );
    let (id, len) = ids[42];
    assert!(!client.in_flight(id));
    assert!(client.transmit(id, len));
    assert!(client.in_flight(id));
    client.flush().expect("flush");
    let again = receive_frames(&mut server, 1, Duration::from_secs(2));
    assert_eq!(
        again.iter().map(|f| seq_of(f)).collect::<Vec<_>>(),
        vec![42]
    );
    for (id, _) in ids {
        while client.in_flight(id) {
            client.flush().unwrap();
        }
        client.free(id);
    }
    assert_eq!(client.tx_frames_in_use(), 0);
}

#[test]
fn fault_injector_drops_corrupts_and_duplicates_data_frames() {
    require_root();
    let lab = Lab::unique("flt").expect("lab up");
    let mut program = attach_server(&lab, XdpModeChoice::Native);
    let mut socket = server_socket(&lab, &mut program);
    program.admit(lab.config().client_ip).expect("admit");
    let base = XdpConfig {
        udp_port: PORT,
        ..XdpConfig::default()
    };

    // Drop every data frame; control frames are untouched.
    program
        .set_config(&XdpConfig {
            drop_one_in: 1,
            ..base
        })
        .unwrap();
    send_udp_from_client(
        &lab,
        (0..10).map(|seq| payload(KIND_DATA, seq, 100)).collect(),
    );
    send_udp_from_client(&lab, vec![payload(KIND_CONTROL, 99, 100)]);
    let frames = receive_frames(&mut socket, 2, Duration::from_millis(800));
    assert_eq!(
        frames.iter().map(|f| seq_of(f)).collect::<Vec<_>>(),
        vec![99]
    );
    assert_eq!(program.counters().unwrap().get(Counter::FaultDropped), 10);

    // Corrupt every data frame: its last payload byte is flipped.
    program
        .set_config(&XdpConfig {
            corrupt_one_in: 1,
            ..base
        })
        .unwrap();
    let sent = payload(KIND_DATA, 5, 100);
    send_udp_from_client(&lab, vec![sent.clone()]);
    let frames = receive_frames(&mut socket, 1, Duration::from_secs(2));
    assert_eq!(frames.len(), 1);
    let got = &frames[0][42..42 + sent.len()];
    assert_eq!(got[..sent.len() - 1], sent[..sent.len() - 1]);
    assert_eq!(got[sent.len() - 1], !sent[sent.len() - 1]);
    assert_eq!(program.counters().unwrap().get(Counter::FaultCorrupted), 1);

    // Duplicate one in two: the receiver really sees a sequence number twice.
    program
        .set_config(&XdpConfig {
            duplicate_one_in: 2,
            ..base
        })
        .unwrap();
    let n = 200;
    send_udp_from_client(
        &lab,
        (0..n).map(|seq| payload(KIND_DATA, seq, 300)).collect(),
    );
    let frames = receive_frames(&mut socket, n as usize, Duration::from_secs(3));
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for f in &frames {
        *seen.entry(seq_of(f)).or_default() += 1;
    }
    let duplicated = seen.values().filter(|&&c| c > 1).count();
    let counters = program.counters().unwrap();
    eprintln!("{counters}; {duplicated} sequence numbers seen twice");
    assert!(counters.get(Counter::FaultDuplicated) > 0, "{counters}");
    assert!(duplicated > 0, "no duplicate observed by the receiver");
    assert_eq!(duplicated as u64, counters.get(Counter::FaultDuplicated));
}

#[test]
fn doctor_and_probe_on_a_lab_veth() {
    use dataplane::xdp::doctor::{Reason, Verdict, diagnose, probe};
    require_root();
    let lab = Lab::unique("doc").expect("lab up");
    let veth = lab.config().server_veth.clone();
    let (report, caps, missing) = lab
        .in_server(|| {
            (
                diagnose(Some(&veth), 0),
                probe(&veth, 0),
                probe("nonexistent0", 0),
            )
        })
        .expect("enter server ns");
    eprint!("{report}");
    assert!(report.worst() < Verdict::Fail, "{report}");
    let native = report
        .findings
        .iter()
        .any(|f| f.check == "XDP modes" && f.verdict == Verdict::Ok && f.detail.contains("native"));
    assert!(native, "{report}");
    let caps = caps.unwrap_or_else(|r| panic!("probe: {r}"));
    assert_eq!(caps.xdp_mode, AttachedMode::Native);
    assert_eq!(caps.bind, BoundMode::Copy);
    assert_eq!(
        missing.unwrap_err(),
        Reason::NoInterface("nonexistent0".into())
    );
    // The doctor and the probe leave no program behind.
    assert_eq!(lab.status().unwrap().server_link.unwrap().xdp_program, None);
}

/// Run by `program_leaves_with_a_killed_process` in a child process: attaches
/// in the namespace named by the environment, says so, and waits to be killed.
#[test]
#[ignore = "helper run in a child process by program_leaves_with_a_killed_process"]
fn helper_attach_and_wait_for_sigkill() {
    let (Ok(ns), Ok(iface)) = (
        std::env::var("DP_TEST_NETNS"),
        std::env::var("DP_TEST_IFACE"),
    ) else {
        return;
    };
    let program = dataplane::lab::in_netns(&ns, || {
        XdpProgram::attach(&AttachOptions::new(iface)).expect("attach in child")
    })
    .expect("enter namespace");
    println!("ATTACHED {}", program.program_id());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn program_leaves_with_a_killed_process() {
    use std::io::{BufRead, BufReader};
    require_root();
    let lab = Lab::unique("kil").expect("lab up");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_attach_and_wait_for_sigkill",
            "--ignored",
            "--nocapture",
        ])
        .env("DP_TEST_NETNS", &lab.config().server_ns)
        .env("DP_TEST_IFACE", &lab.config().server_veth)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let id: u32 = loop {
        let line = lines.next().expect("child ended before attaching").unwrap();
        if let Some(id) = line.strip_prefix("ATTACHED ") {
            break id.trim().parse().unwrap();
        }
    };
    assert_eq!(
        lab.status().unwrap().server_link.unwrap().xdp_program,
        Some(id)
    );
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    let gone = lab
        .in_server(|| wait_detached(&lab.config().server_veth, Duration::from_secs(3)))
        .unwrap();
    assert!(gone, "program id {id} outlived its SIGKILLed process");
}

#[test]
fn xsk_options_report_what_they_obtained() {
    use dataplane::xdp::xsk::{BindMode, BusyPoll, BusyPollReport, Umem, XskError};
    require_root();
    let lab = Lab::unique("opt").expect("lab up");
    let veth = lab.config().server_veth.clone();

    // Zero-copy does not exist on veth: a clear error naming the bind.
    let zc = lab
        .in_server(|| {
            XskSocket::open(
                &veth,
                &XskConfig {
                    bind: BindMode::ZeroCopy,
                    ..small_xsk_config()
                },
            )
        })
        .unwrap();
    match zc {
        Err(e @ XskError::Socket { call: "bind", .. }) => {
            let text = e.to_string();
            assert!(text.contains(&veth) && text.contains("queue 0"), "{text}");
        }
        other => panic!(
            "zero-copy bind on veth: {:?}",
            other.map(|s| s.report().clone())
        ),
    }

    // Copy mode, need_wakeup off, busy poll asked for: the report says what happened.
    let config = XskConfig {
        bind: BindMode::Copy,
        need_wakeup: false,
        busy_poll: Some(BusyPoll {
            usecs: 20,
            budget: 16,
        }),
        ..small_xsk_config()
    };
    let socket = lab
        .in_server(|| XskSocket::open(&veth, &config))
        .unwrap()
        .expect("copy bind");
    let report = socket.report();
    eprintln!("{report}");
    assert_eq!(report.bind, BoundMode::Copy);
    assert!(!report.need_wakeup);
    assert!(matches!(
        report.busy_poll,
        BusyPollReport::On(_) | BusyPollReport::Refused(_)
    ));
    assert_eq!(
        socket.statistics().expect("XDP_STATISTICS"),
        Default::default()
    );

    // A second socket on the same queue: busy, and said so.
    let busy = lab
        .in_server(|| XskSocket::open(&veth, &small_xsk_config()))
        .unwrap();
    let err = busy.err().expect("second bind on the same queue must fail");
    assert!(err.to_string().contains("busy"), "{err}");

    // Huge pages: either they work or the error says how to get them.
    match Umem::new(2048, 64, true) {
        Ok(umem) => assert!(umem.hugepages()),
        Err(e) => assert!(e.to_string().contains("nr_hugepages"), "{e}"),
    }
}

#[test]
fn lab_up_is_idempotent_and_down_leaves_nothing() {
    use dataplane::lab::{LabConfig, down, netns_list, status, up};
    require_root();
    let config = LabConfig {
        queues: 2,
        ..LabConfig::unique("idm")
    };
    let guard = Lab::up(config.clone()).expect("lab up");
    let first = up(&config).expect("second up");
    assert!(first.is_up());
    assert_eq!(first.server_link.as_ref().unwrap().rx_queues, 2);
    assert_eq!(
        first.server_link.as_ref().unwrap().ipv4,
        vec![(config.server_ip, 24)]
    );
    // Break half of it; up repairs it.
    Command::new("ip")
        .args([
            "-n",
            &config.client_ns,
            "link",
            "del",
            "dev",
            &config.client_veth,
        ])
        .status()
        .unwrap();
    assert!(!status(&config).unwrap().is_up());
    assert!(up(&config).unwrap().is_up());
    assert_eq!(ping_from(&config.client_ns, config.server_ip, 1), 1);
    down(&config).expect("down");
    down(&config).expect("down again is fine");
    assert!(status(&config).unwrap().is_absent());
    let left: Vec<_> = netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.contains(&config.server_ns[3..]))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(guard);
}
