//! The TCP paths end to end: `dataplane serve` in both modes against our own
//! client, against kcat (a real librdkafka client), under strace, and fed
//! bad input.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use common::{Server, dataplane, dataplane_ok, gen_log, kcat, segment_bytes};
use dataplane::{
    kafka::messages::{self, api, error},
    log::{TopicPartition, generate},
    tcp::client::{ClientError, KafkaClient},
};

const MODES: [&str; 2] = ["copy", "sendfile"];

#[test]
fn serve_and_fetch_are_byte_identical_in_both_modes() {
    let src = tempfile::tempdir().unwrap();
    // 3000 records of 700 bytes, 9 per batch: about 6.3 KB batches over
    // several Fetch responses of 256 KiB.
    gen_log(src.path(), "events", 3000, 700, 9);
    for mode in MODES {
        let server = Server::start(src.path(), &["--mode", mode]);
        let out = tempfile::tempdir().unwrap();
        let report = dataplane_ok(&[
            "fetch",
            "--server",
            &server.addr.to_string(),
            "--topic",
            "events",
            "--max-bytes",
            "262144",
            "--out-dir",
            out.path().to_str().unwrap(),
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["records"], 3000, "{mode}: {report}");
        assert_eq!(report["next_offset"], 3000, "{mode}");
        assert_eq!(report["verified"], true, "{mode}");
        assert_eq!(
            segment_bytes(&out.path().join("events-0")),
            segment_bytes(&src.path().join("events-0")),
            "{mode}: fetched log differs from the source"
        );
    }
}

/// kcat's `-f '%o %k %s\n'` line for every record `gen` wrote.
fn expected_lines(seed: u64, records: i64, size: usize) -> Vec<String> {
    (0..records)
        .map(|o| {
            let key = generate::record_key(seed, o);
            let value = generate::record_value(seed, o, size);
            format!(
                "{o} {} {}",
                String::from_utf8(key).unwrap(),
                String::from_utf8(value).unwrap()
            )
        })
        .collect()
}

#[test]
fn kcat_consumes_every_record_in_both_modes() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 500, 120, 7);
    let expected = expected_lines(1, 500, 120);
    for mode in MODES {
        let server = Server::start(src.path(), &["--mode", mode]);
        let broker = server.addr.to_string();
        let out = kcat(
            &[
                "-C",
                "-b",
                &broker,
                "-t",
                "events",
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%o %k %s\n",
            ],
            None,
        );
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(got.len(), expected.len(), "{mode}: record count");
        assert_eq!(got, expected, "{mode}: records differ");
    }
}

#[test]
fn kcat_produce_yields_a_valid_log_we_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--mode", "sendfile"]);
    let broker = server.addr.to_string();
    let lines: Vec<String> = (0..200)
        .map(|i| format!("message-{i}-{}", "x".repeat(i % 50)))
        .collect();
    let input = lines.join("\n") + "\n";
    kcat(
        &["-P", "-b", &broker, "-t", "incoming", "-p", "0"],
        Some(input.as_bytes()),
    );

    let partition = dir.path().join("incoming-0");
    let inspect = dataplane_ok(&["inspect", partition.to_str().unwrap()]);
    assert!(
        inspect.contains("200 records"),
        "inspect summary: {inspect}"
    );

    let report = dataplane_ok(&[
        "fetch", "--server", &broker, "--topic", "incoming", "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["records"], 200);

    let out = kcat(
        &[
            "-C",
            "-b",
            &broker,
            "-t",
            "incoming",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        None,
    );
    let got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(got, lines);
}

/// Calls and bytes moved by `call` in an `strace -f -y` log, counting only
/// lines that mention `fd_path` (e.g. ".log>" for segment files).
fn syscall_bytes(trace: &str, call: &str, fd_path: &str) -> (usize, u64) {
    let prefix = format!("{call}(");
    let mut calls = 0;
    let mut bytes = 0;
    for line in trace.lines() {
        // strace pads the pid column ("1483  read(" but "13913 read("), so
        // trim whatever spaces follow it.
        let body = line.split_once(' ').map_or(line, |(pid, rest)| {
            if pid.chars().all(|c| c.is_ascii_digit()) {
                rest.trim_start()
            } else {
                line
            }
        });
        if !body.starts_with(&prefix) || !body.contains(fd_path) {
            continue;
        }
        if let Some(ret) = body
            .rsplit("= ")
            .next()
            .and_then(|r| r.split_whitespace().next())
            && let Ok(n) = ret.parse::<i64>()
        {
            calls += 1;
            bytes += n.max(0) as u64;
        }
    }
    (calls, bytes)
}

#[test]
fn sendfile_mode_moves_records_with_sendfile_and_copy_mode_does_not() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 4000, 1000, 16);
    let log_size = segment_bytes(&src.path().join("events-0")).len() as u64;
    for mode in MODES {
        let trace_file = src.path().join(format!("strace-{mode}.txt"));
        let mut cmd = Command::new("strace");
        cmd.args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=sendfile,read,pread64,write,sendto,writev",
            "-o",
        ])
        .arg(&trace_file)
        .arg(common::BIN);
        let mut server = Server::start_with(cmd, src.path(), &["--mode", mode]);
        let report = dataplane_ok(&[
            "fetch",
            "--server",
            &server.addr.to_string(),
            "--topic",
            "events",
            "--json",
        ]);
        assert!(report.contains("\"records\": 4000"), "{report}");
        // Stop the traced server, not strace: strace then writes out its
        // log and exits when its tracee does.
        let children = format!("/proc/{pid}/task/{pid}/children", pid = server.pid());
        let traced: i32 = std::fs::read_to_string(&children)
            .unwrap()
            .split_whitespace()
            .next()
            .expect("strace has started the server")
            .parse()
            .unwrap();
        // SAFETY: kill(2) on the server process strace started for us.
        unsafe { libc::kill(traced, libc::SIGTERM) };
        server.wait();
        let trace = std::fs::read_to_string(&trace_file).unwrap();
        // Record bytes leave the segment file (".log>") for a socket.
        let (sendfiles, sendfile_bytes) = syscall_bytes(&trace, "sendfile", ".log>");
        let (_, pread_bytes) = syscall_bytes(&trace, "pread64", ".log>");
        let (_, read_bytes) = syscall_bytes(&trace, "read", ".log>");
        let written: u64 = ["write", "sendto", "writev"]
            .iter()
            .map(|c| syscall_bytes(&trace, c, "socket:").1)
            .sum();
        eprintln!(
            "{mode}: sendfile {sendfiles} calls {sendfile_bytes} B, pread64 {pread_bytes} B, write/sendto {written} B, log {log_size} B"
        );
        match mode {
            "sendfile" => {
                assert_eq!(
                    sendfile_bytes, log_size,
                    "every record byte goes by sendfile"
                );
                assert_eq!(
                    pread_bytes + read_bytes,
                    0,
                    "no record byte is read into user space"
                );
                assert!(
                    written < log_size / 100,
                    "only framing is written: {written} B"
                );
            }
            _ => {
                assert_eq!(sendfiles, 0);
                assert_eq!(pread_bytes, log_size, "copy mode reads every record byte");
                assert!(written >= log_size, "and writes it: {written} B");
            }
        }
    }
}

#[test]
fn corrupt_segment_serves_the_valid_prefix_and_inspect_names_the_damage() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 100, 200, 10);
    let segment = src.path().join("events-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Flip a byte inside the 6th batch's records (batches are equal-sized here).
    let batch_len = bytes.len() / 10;
    let position = 5 * batch_len + 100;
    bytes[position] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let out = dataplane(&["inspect", segment.to_str().unwrap()]);
    assert!(!out.status.success(), "inspect must fail on corruption");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("00000000000000000000.log"),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains(&(5 * batch_len).to_string()),
        "names the batch position: {stderr}"
    );

    let server = Server::start(src.path(), &["--mode", "sendfile"]);
    server.wait_for_log("valid prefix");
    let report = dataplane_ok(&[
        "fetch",
        "--server",
        &server.addr.to_string(),
        "--topic",
        "events",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["records"], 50,
        "the five whole batches before the damage"
    );
}

fn raw_request(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut req = Vec::new();
    messages::RequestHeader {
        api_key: key,
        api_version: version,
        correlation_id: 7,
        client_id: Some("t"),
    }
    .encode(&mut req);
    req.extend_from_slice(body);
    let mut framed = (req.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    framed
}

/// Sends raw bytes and reads until the server closes; returns what it sent back.
fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

#[test]
fn malformed_requests_close_that_connection_and_others_are_served() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 200, 100, 10);
    let server = Server::start(src.path(), &["--mode", "sendfile"]);
    let addr = server.addr;
    // A long-lived healthy client, connected before the bad ones.
    let tp = TopicPartition {
        topic: "events".into(),
        partition: 0,
    };
    let mut good = KafkaClient::connect(addr).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "negative length",
            (-5i32).to_be_bytes().to_vec(),
            "negative",
        ),
        (
            "oversized frame",
            (200_000_000i32).to_be_bytes().to_vec(),
            "over the limit",
        ),
        (
            "unknown api key",
            raw_request(999, 0, &[]),
            "unknown API key 999",
        ),
        (
            "unsupported version",
            raw_request(api::FETCH, 3, &[]),
            "Fetch v3 is not supported",
        ),
        (
            "truncated body",
            raw_request(api::FETCH, 11, &[0, 0, 0]),
            "malformed",
        ),
        (
            "truncated frame",
            [&100i32.to_be_bytes()[..], &[1, 2, 3]].concat(),
            "closed after 3 of 100",
        ),
    ];
    for (name, bytes, log_needle) in cases {
        let back = send_raw(addr, &bytes);
        assert!(
            back.is_empty(),
            "{name}: expected the connection closed without a response"
        );
        server.wait_for_log(log_needle);
        assert_eq!(
            good.list_offset(&tp, messages::LATEST_TIMESTAMP).unwrap(),
            200,
            "after {name}"
        );
    }

    // An ApiVersions version we do not know gets a v0 answer with the ranges.
    let back = send_raw(addr, &raw_request(api::API_VERSIONS, 9, &[]));
    assert_eq!(&back[4..8], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(
        i16::from_be_bytes([back[8], back[9]]),
        error::UNSUPPORTED_VERSION
    );

    let report = dataplane_ok(&[
        "fetch",
        "--server",
        &addr.to_string(),
        "--topic",
        "events",
        "--json",
    ]);
    assert!(report.contains("\"records\": 200"));
}

#[test]
fn offset_out_of_range_and_unknown_partition_get_kafka_errors() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 50, 100, 10);
    let server = Server::start(src.path(), &["--mode", "sendfile", "--no-auto-create"]);
    let mut client = KafkaClient::connect(server.addr).unwrap();
    let tp = TopicPartition {
        topic: "events".into(),
        partition: 0,
    };
    match client.fetch(&tp, 1_000_000, 1 << 20, 0) {
        Err(ClientError::Kafka { code, .. }) => assert_eq!(code, error::OFFSET_OUT_OF_RANGE),
        other => panic!("expected OFFSET_OUT_OF_RANGE, got {other:?}"),
    }
    let missing = TopicPartition {
        topic: "nope".into(),
        partition: 0,
    };
    match client.fetch(&missing, 0, 1 << 20, 0) {
        Err(ClientError::Kafka { code, .. }) => assert_eq!(code, error::UNKNOWN_TOPIC_OR_PARTITION),
        other => panic!("expected UNKNOWN_TOPIC_OR_PARTITION, got {other:?}"),
    }
    // The connection is still good after error responses.
    let (_, records) = client.fetch(&tp, 0, 1 << 20, 0).unwrap();
    assert!(!records.is_empty());
}

#[test]
fn a_client_that_disconnects_mid_sendfile_affects_no_one_else() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 20_000, 1000, 16); // about 20 MB
    let server = Server::start(src.path(), &["--mode", "sendfile"]);
    for _ in 0..5 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let request = messages::FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 64 << 20,
            isolation_level: 0,
            topics: vec![messages::FetchTopic {
                name: "events",
                partitions: vec![messages::FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    partition_max_bytes: 64 << 20,
                }],
            }],
        };
        let mut body = Vec::new();
        request.encode(&mut body, 11);
        s.write_all(&raw_request(api::FETCH, 11, &body)).unwrap();
        let mut first = [0u8; 4096];
        s.read_exact(&mut first).unwrap();
        drop(s); // gone with megabytes still to send
    }
    server.wait_for_log("client went away");
    let report = dataplane_ok(&[
        "fetch",
        "--server",
        &server.addr.to_string(),
        "--topic",
        "events",
        "--json",
    ]);
    assert!(report.contains("\"records\": 20000"), "{report}");
}

#[test]
fn a_produced_batch_with_a_bad_crc_is_rejected_and_nothing_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--mode", "sendfile"]);
    let tp = TopicPartition {
        topic: "in".into(),
        partition: 0,
    };
    let mut client = KafkaClient::connect(server.addr).unwrap();
    let spec = generate::GenSpec {
        records: 30,
        record_size: 50,
        records_per_batch: 10,
        seed: 3,
        key: false,
    };
    let mut good = Vec::new();
    generate::batch_into(&spec, 0, 10, &mut good);
    assert_eq!(client.produce(&tp, &good, 1).unwrap(), 0);
    let before = segment_bytes(&dir.path().join("in-0"));

    // Two batches in one request, the second corrupt: neither may be appended.
    let mut bad = Vec::new();
    generate::batch_into(&spec, 10, 10, &mut bad);
    let second = bad.len();
    generate::batch_into(&spec, 20, 10, &mut bad);
    bad[second + 70] ^= 0x01;
    match client.produce(&tp, &bad, 1) {
        Err(ClientError::Kafka { code, message, .. }) => {
            assert_eq!(code, error::CORRUPT_MESSAGE);
            let message = message.unwrap_or_default();
            assert!(message.contains("CRC"), "error message says why: {message}");
        }
        other => panic!("expected CORRUPT_MESSAGE, got {other:?}"),
    }
    assert_eq!(
        segment_bytes(&dir.path().join("in-0")),
        before,
        "nothing of the request was written"
    );
    assert_eq!(
        client.list_offset(&tp, messages::LATEST_TIMESTAMP).unwrap(),
        10
    );
}

#[test]
fn many_concurrent_clients_are_served_in_both_modes() {
    let src = tempfile::tempdir().unwrap();
    gen_log(src.path(), "events", 5000, 500, 10);
    for mode in MODES {
        let server = Server::start(src.path(), &["--mode", mode]);
        let addr = server.addr.to_string();
        let clients: Vec<_> = (0..8)
            .map(|i| {
                let addr = addr.clone();
                // Small responses, so the clients' requests interleave.
                let max_bytes = (16 << 10) * (i + 1);
                std::thread::spawn(move || {
                    dataplane_ok(&[
                        "fetch",
                        "--server",
                        &addr,
                        "--topic",
                        "events",
                        "--max-bytes",
                        &max_bytes.to_string(),
                        "--json",
                    ])
                })
            })
            .collect();
        for client in clients {
            let report: serde_json::Value = serde_json::from_str(&client.join().unwrap()).unwrap();
            assert_eq!(report["records"], 5000, "{mode}: {report}");
            assert_eq!(report["verified"], true, "{mode}");
        }
    }
}
