//! Helpers shared by the integration tests: a `dataplane serve` child
//! process that is killed on drop, and running the binary.
#![allow(dead_code)]

mod lab;
// Each test crate uses a different part of the shared helpers.
#[allow(unused_imports)]
pub use lab::*;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_dataplane");

pub fn dataplane(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run dataplane")
}

/// Runs dataplane and panics with its output unless it succeeds.
pub fn dataplane_ok(args: &[&str]) -> String {
    let out = dataplane(args);
    assert!(
        out.status.success(),
        "dataplane {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn gen_log(dir: &Path, topic: &str, records: u64, size: usize, per_batch: u32) {
    dataplane_ok(&[
        "gen",
        "--log-dir",
        dir.to_str().unwrap(),
        "--topic",
        topic,
        "--records",
        &records.to_string(),
        "--record-size",
        &size.to_string(),
        "--batch-records",
        &per_batch.to_string(),
        "--keys",
    ]);
}

/// A running `dataplane serve`; killed on drop. Its log lines are collected.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(log_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with(Command::new(BIN), log_dir, extra)
    }

    /// Starts the server through `cmd` (e.g. strace wrapping the binary).
    pub fn start_with(mut cmd: Command, log_dir: &Path, extra: &[&str]) -> Server {
        let mut child = cmd
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-dir",
                log_dir.to_str().unwrap(),
            ])
            .args(extra)
            // Its own process group, so a wrapper (strace) and the server
            // behind it are signalled together.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dataplane serve");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split(" on ").nth(1).and_then(|s| s.split(' ').next())
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {:?}", log.lock().unwrap());
            }
        };
        Server { child, addr, log }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the server's process group.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the process group our child leads.
        unsafe { libc::kill(-self.pid(), signal) };
    }

    /// Waits for the server (or its wrapper) to exit.
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

pub fn kcat(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed by `cargo xtask setup`");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
