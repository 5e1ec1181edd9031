//! A short `dataplane bench` on its own lab: the JSON report must be
//! complete (every mode, size and direction asked for, with figures) and
//! every transfer verified. Speed is measured, never asserted.

mod common;

use dataplane::lab::LabConfig;

#[test]
fn a_short_bench_writes_a_complete_verified_report_and_removes_its_lab() {
    common::require_root();
    let lab = LabConfig::unique("bn");
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    let svg = out.path().join("bench.svg");
    let output = std::process::Command::new(common::BIN)
        .args([
            "bench",
            "--volume",
            "2M",
            "--repeat",
            "2",
            "--latency-samples",
            "20",
        ])
        .args(["--batch-sizes", "1k,64k", "--directions", "fetch,produce"])
        .args([
            "--json",
            json.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ])
        .args(["--server-ns", &lab.server_ns, "--client-ns", &lab.client_ns])
        .args([
            "--server-veth",
            &lab.server_veth,
            "--client-veth",
            &lab.client_veth,
        ])
        .output()
        .expect("run dataplane bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["repetitions"], 2);
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(
        cells.len(),
        3 * 2 * 2,
        "3 modes x 2 sizes x 2 directions: {report}"
    );
    for mode in ["copy", "sendfile", "afxdp"] {
        for batch in [1024, 65536] {
            for direction in ["fetch", "produce"] {
                let cell = cells
                    .iter()
                    .find(|c| {
                        c["mode"] == mode
                            && c["batch_bytes"] == batch
                            && c["direction"] == direction
                    })
                    .unwrap_or_else(|| panic!("no cell {mode} {batch} {direction}"));
                let what = format!("{mode} {batch} {direction}");
                assert_eq!(cell["verified"], true, "{what}");
                let runs = cell["runs"].as_array().unwrap();
                assert_eq!(runs.len(), 2, "{what}: one run per repetition");
                for run in runs {
                    assert_eq!(run["verified"], true, "{what}");
                    // Whole batches of about the size asked for: the volume within 5%.
                    let bytes = run["bytes"].as_u64().unwrap() as f64;
                    assert!(
                        (bytes / f64::from(2 << 20) - 1.0).abs() < 0.05,
                        "{what}: moved {bytes} B"
                    );
                    assert!(run["gbit_per_s"].as_f64().unwrap() > 0.0, "{what}");
                    // Present for every run; a 2 MiB transfer may take less
                    // than one clock tick, so its value is not asserted.
                    assert!(run["cpu_seconds"].is_number(), "{what}: {run}");
                }
                let obtained = cell["obtained"].as_str().unwrap();
                if mode == "afxdp" {
                    assert!(
                        obtained.contains("AF_XDP") && obtained.contains("bind"),
                        "{what}: {obtained}"
                    );
                } else {
                    assert_eq!(obtained, format!("tcp {mode}"));
                }
                if direction == "fetch" {
                    let latency = &cell["latency_us"];
                    assert_eq!(latency["samples"], 20, "{what}: {latency}");
                    assert!(latency["p99"].as_f64().unwrap() >= latency["p50"].as_f64().unwrap());
                } else {
                    assert!(cell["latency_us"].is_null(), "{what}");
                }
            }
        }
    }
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(
        ratios.len(),
        2 * 2 * 2,
        "copy and afxdp against sendfile per size and direction"
    );
    assert!(
        stdout.contains("vs sendfile"),
        "the table is printed: {stdout}"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("afxdp"));

    // The bench brought its lab up and must have taken it down.
    let left = dataplane::lab::netns_list().unwrap();
    assert!(
        !left.contains(&lab.server_ns) && !left.contains(&lab.client_ns),
        "lab left behind: {left:?}"
    );
}
