//! Helpers shared by the integration tests: a `dataplane serve` child
//! process that is killed on drop, and running the binary.
#![allow(dead_code)]

mod lab;
// Each test crate uses a different part of the shared helpers.
#[allow(unused_imports)]
pub use lab::*;

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
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

/// The bytes of a partition directory's segments, in offset order.
pub fn segment_bytes(dir: &Path) -> Vec<u8> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect()
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
    reader: Option<JoinHandle<()>>,
}

/// How to start a `dataplane serve`: the command that runs the binary (the
/// binary itself, strace wrapping it, or `ip netns exec`) and the Kafka
/// listen address. [`ServeCommand::start`] adds the log directory and the
/// rest of the arguments.
pub struct ServeCommand {
    cmd: Command,
    listen: String,
}

impl ServeCommand {
    /// The binary itself, listening on a free loopback port.
    pub fn new() -> ServeCommand {
        ServeCommand::wrapped(Command::new(BIN))
    }

    /// `cmd` runs the binary (e.g. strace wrapping it); loopback listener.
    pub fn wrapped(cmd: Command) -> ServeCommand {
        ServeCommand {
            cmd,
            listen: "127.0.0.1:0".into(),
        }
    }

    /// The binary inside network namespace `ns` (`ip netns exec`, which
    /// execs it, so the server keeps the child's pid), listening on a free
    /// port of `ip`.
    pub fn in_netns(ns: &str, ip: Ipv4Addr) -> ServeCommand {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN]);
        ServeCommand {
            cmd,
            listen: format!("{ip}:0"),
        }
    }

    /// Starts `serve --listen .. --log-dir log_dir extra..` and waits for
    /// its "serving ... on ADDR" line; panics with its log if it ends first.
    pub fn start(self, log_dir: &Path, extra: &[&str]) -> Server {
        let ServeCommand { mut cmd, listen } = self;
        let mut child = cmd
            .args([
                "serve",
                "--listen",
                &listen,
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
        let reader = std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let addr = line
                    .contains("serving ")
                    .then(|| line.split(" on ").nth(1)?.split(' ').next()?.parse().ok())
                    .flatten();
                // In the log before anyone is told the server is ready.
                sink.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                // SAFETY: kill(2) on the process group our child leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let status = child.wait();
                let _ = reader.join();
                panic!(
                    "server did not start ({status:?}): {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }
}

impl Default for ServeCommand {
    fn default() -> Self {
        ServeCommand::new()
    }
}

impl Server {
    pub fn start(log_dir: &Path, extra: &[&str]) -> Server {
        ServeCommand::new().start(log_dir, extra)
    }

    /// Starts the server through `cmd` (e.g. strace wrapping the binary).
    pub fn start_with(cmd: Command, log_dir: &Path, extra: &[&str]) -> Server {
        ServeCommand::wrapped(cmd).start(log_dir, extra)
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

    /// Sends `signal`, waits (at most 30 s, then SIGKILL and panic) for the
    /// server to exit and for its last log line; returns how it exited.
    pub fn finish(&mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.signal(libc::SIGKILL);
                let _ = self.child.wait();
                panic!(
                    "server did not exit within 30 s of signal {signal}: {:?}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
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
