//! Runs the comparison: for each repetition (interleaved, so drift in the
//! machine spreads over every mode alike), each batch size, each direction
//! and each mode, a fresh server in the server namespace and a client in the
//! client namespace move a fixed volume; the machine's CPU time is sampled
//! around the transfer. Then the single-batch latency probe.
//!
//! Servers and clients are this same binary run as child processes (`serve`,
//! `fetch --json`, `produce --json`) inside the namespaces, so the bench
//! measures exactly what a user runs.

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use super::{
    cpu::CpuTimes,
    report::{self, BenchReport, Cell, Latency, Run, Stat},
};
use crate::log::{TopicPartition, generate::GenSpec};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Step { what: String, detail: String },
    #[error("interrupted")]
    Interrupted,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    Copy,
    Sendfile,
    Afxdp,
}

impl BenchMode {
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Copy => "copy",
            BenchMode::Sendfile => "sendfile",
            BenchMode::Afxdp => "afxdp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Fetch,
    Produce,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Fetch => "fetch",
            Direction::Produce => "produce",
        }
    }
}

/// Where the two ends run.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Network namespace of the server (`None`: this one).
    pub server_ns: Option<String>,
    pub client_ns: Option<String>,
    pub server_ip: Ipv4Addr,
    pub server_iface: String,
    pub client_iface: String,
    pub queue: u32,
    pub description: String,
    pub mtu: u32,
}

#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub modes: Vec<BenchMode>,
    pub batch_sizes: Vec<usize>,
    pub directions: Vec<Direction>,
    pub volume_bytes: u64,
    pub repetitions: usize,
    pub latency_samples: usize,
    /// Scratch space for generated logs (removed afterwards).
    pub work_dir: PathBuf,
    pub port: u16,
    /// Extra arguments for afxdp servers and clients (frame size, bind mode...).
    pub afxdp_args: Vec<String>,
}

const TOPIC: &str = "bench";

/// Records per batch and bytes per record for batches of about `batch` bytes:
/// records of about 1000 bytes (one record below 2 KiB).
pub fn batch_shape(batch: usize) -> (u32, usize) {
    const BATCH_OVERHEAD: usize = 61;
    const RECORD_OVERHEAD: usize = 9;
    let records = (batch / 1024).max(1);
    let size = ((batch.saturating_sub(BATCH_OVERHEAD)) / records)
        .saturating_sub(RECORD_OVERHEAD)
        .max(1);
    (records as u32, size)
}

fn gen_spec(batch: usize, volume: u64) -> GenSpec {
    let (per_batch, size) = batch_shape(batch);
    let batches = (volume / batch as u64).max(1);
    GenSpec {
        records: batches * u64::from(per_batch),
        record_size: size,
        records_per_batch: per_batch,
        seed: 7,
        key: false,
    }
}

fn in_ns(ns: &Option<String>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A server child; SIGTERM and wait on drop.
struct ServerProcess {
    child: Child,
    /// Its "serving ..." line, which says what it obtained.
    serving: String,
}

impl ServerProcess {
    fn start(mut cmd: Command, what: &str) -> Result<Self, BenchError> {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(format!("starting {what}")))?;
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut seen = Vec::new();
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("serving") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(line));
                    }
                } else if tx.is_some() {
                    seen.push(line);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let mut server = ServerProcess {
            child,
            serving: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) => {
                server.serving = line;
                Ok(server)
            }
            Ok(Err(log)) => Err(BenchError::Step {
                what: what.into(),
                detail: log,
            }),
            Err(_) => {
                server.stop();
                Err(BenchError::Step {
                    what: what.into(),
                    detail: "no \"serving\" line within 30 s".into(),
                })
            }
        }
    }

    fn stop(&mut self) {
        // Once reaped, the pid may belong to someone else: never signal it.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_json(mut cmd: Command, what: &str) -> Result<serde_json::Value, BenchError> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(io_err(format!("running {what}")))?;
    if !out.status.success() {
        return Err(BenchError::Step {
            what: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Step {
        what: what.into(),
        detail: format!("unreadable JSON: {e}"),
    })
}

pub struct Bench<'a> {
    pub plan: &'a BenchPlan,
    pub topology: &'a Topology,
    pub binary: PathBuf,
    pub stop: &'a AtomicBool,
    /// Progress lines (stderr by default).
    pub progress: Box<dyn FnMut(&str) + 'a>,
}

impl Bench<'_> {
    fn check_stop(&self) -> Result<(), BenchError> {
        if self.stop.load(Ordering::Relaxed) {
            Err(BenchError::Interrupted)
        } else {
            Ok(())
        }
    }

    fn server_command(&self, mode: BenchMode, log_dir: &Path) -> Command {
        let t = self.topology;
        let mut cmd = in_ns(&t.server_ns, &self.binary);
        let listen = SocketAddr::from((t.server_ip, self.plan.port));
        cmd.args(["serve", "--log-dir"])
            .arg(log_dir)
            .args(["--listen", &listen.to_string()]);
        match mode {
            BenchMode::Copy => cmd.args(["--mode", "copy"]),
            BenchMode::Sendfile => cmd.args(["--mode", "sendfile"]),
            BenchMode::Afxdp => cmd
                .args([
                    "--mode",
                    "afxdp",
                    "--iface",
                    &t.server_iface,
                    "--queue",
                    &t.queue.to_string(),
                ])
                .args(&self.plan.afxdp_args),
        };
        cmd
    }

    fn client_command(&self, mode: BenchMode, verb: &str) -> Command {
        let t = self.topology;
        let mut cmd = in_ns(&t.client_ns, &self.binary);
        cmd.arg(verb).args(["--topic", TOPIC, "--json"]);
        match mode {
            BenchMode::Afxdp => {
                let server = SocketAddr::from((t.server_ip, crate::DEFAULT_AFXDP_PORT));
                cmd.args([
                    "--mode",
                    "afxdp",
                    "--iface",
                    &t.client_iface,
                    "--queue",
                    &t.queue.to_string(),
                ])
                .args(["--server", &server.to_string()])
                .args(&self.plan.afxdp_args);
            }
            _ => {
                cmd.args([
                    "--server",
                    &SocketAddr::from((t.server_ip, self.plan.port)).to_string(),
                ]);
            }
        }
        cmd
    }

    /// Generates the fetch-direction log for each batch size once.
    fn prepare_logs(&mut self) -> Result<Vec<(usize, PathBuf)>, BenchError> {
        let mut out = Vec::new();
        for &size in &self.plan.batch_sizes {
            let dir = self.plan.work_dir.join(format!("fetch-{size}"));
            if !dir.join(format!("{TOPIC}-0")).exists() {
                (self.progress)(&format!(
                    "generating {} of {} batches",
                    report::human_bytes(self.plan.volume_bytes as usize),
                    report::human_bytes(size)
                ));
                let tp = TopicPartition {
                    topic: TOPIC.into(),
                    partition: 0,
                };
                crate::log::generate::generate(&dir, &tp, &gen_spec(size, self.plan.volume_bytes))
                    .map_err(|e| BenchError::Step {
                        what: format!("generating {}", dir.display()),
                        detail: e.to_string(),
                    })?;
            }
            out.push((size, dir));
        }
        Ok(out)
    }

    fn measure(&self, client: Command, what: &str) -> Result<(Run, serde_json::Value), BenchError> {
        let before = CpuTimes::read().map_err(io_err("reading /proc/stat"))?;
        let json = run_json(client, what)?;
        let after = CpuTimes::read().map_err(io_err("reading /proc/stat"))?;
        let num = |k: &str| json[k].as_f64().unwrap_or(f64::NAN);
        let cpu_seconds = before.busy_seconds_until(&after);
        let bytes = num("bytes");
        let run = Run {
            bytes: bytes as u64,
            batches: num("batches") as u64,
            seconds: num("seconds"),
            gbit_per_s: num("gbit_per_s"),
            batches_per_s: num("batches_per_s"),
            cpu_seconds,
            cpu_seconds_per_gb: cpu_seconds / (bytes / 1e9),
            verified: json["verified"].as_bool().unwrap_or(false),
            details: json
                .get("details")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        };
        Ok((run, json))
    }

    pub fn run(&mut self) -> Result<BenchReport, BenchError> {
        let plan = self.plan;
        let logs = self.prepare_logs()?;
        let mut cells: Vec<Cell> = Vec::new();
        let total =
            plan.repetitions * plan.batch_sizes.len() * plan.directions.len() * plan.modes.len();
        let mut step = 0;
        for rep in 0..plan.repetitions {
            for (size, log_dir) in &logs {
                for &direction in &plan.directions {
                    for &mode in &plan.modes {
                        self.check_stop()?;
                        step += 1;
                        let label = format!(
                            "{} {} {} batches",
                            direction.name(),
                            mode.name(),
                            report::human_bytes(*size)
                        );
                        (self.progress)(&format!("[{step}/{total}] rep {} {label}", rep + 1));
                        let (run, obtained) =
                            self.one_run(mode, direction, *size, log_dir, &label)?;
                        (self.progress)(&format!(
                            "    {:.2} Gbit/s, {:.0} batches/s, {:.2} CPU-s/GB{}",
                            run.gbit_per_s,
                            run.batches_per_s,
                            run.cpu_seconds_per_gb,
                            if run.verified {
                                ", verified"
                            } else {
                                ", NOT VERIFIED"
                            }
                        ));
                        let idx = match cells.iter().position(|c| {
                            c.mode == mode.name()
                                && c.direction == direction.name()
                                && c.batch_bytes == *size
                        }) {
                            Some(i) => i,
                            None => {
                                cells.push(Cell {
                                    mode: mode.name().into(),
                                    direction: direction.name().into(),
                                    batch_bytes: *size,
                                    obtained: obtained.clone(),
                                    runs: Vec::new(),
                                    gbit_per_s: Stat::of([]),
                                    batches_per_s: Stat::of([]),
                                    cpu_seconds_per_gb: Stat::of([]),
                                    latency_us: None,
                                    verified: false,
                                });
                                cells.len() - 1
                            }
                        };
                        cells[idx].runs.push(run);
                    }
                }
            }
        }
        if plan.latency_samples > 0 && plan.directions.contains(&Direction::Fetch) {
            for (size, log_dir) in &logs {
                for &mode in &plan.modes {
                    self.check_stop()?;
                    (self.progress)(&format!(
                        "latency: {} {} batches, {} samples",
                        mode.name(),
                        report::human_bytes(*size),
                        plan.latency_samples
                    ));
                    let latency = self.latency(mode, log_dir)?;
                    if let Some(cell) = cells.iter_mut().find(|c| {
                        c.mode == mode.name() && c.direction == "fetch" && c.batch_bytes == *size
                    }) {
                        cell.latency_us = Some(latency);
                    }
                }
            }
        }
        for cell in &mut cells {
            cell.summarise();
        }
        // Sort for reading: direction, batch size, then copy/sendfile/afxdp.
        let order = |m: &str| {
            ["copy", "sendfile", "afxdp"]
                .iter()
                .position(|x| *x == m)
                .unwrap_or(9)
        };
        cells.sort_by(|a, b| {
            (a.direction.as_str(), a.batch_bytes, order(&a.mode)).cmp(&(
                b.direction.as_str(),
                b.batch_bytes,
                order(&b.mode),
            ))
        });
        let ratios = report::ratios(&cells);
        Ok(BenchReport {
            schema: report::SCHEMA_VERSION,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            network: self.topology.description.clone(),
            mtu: self.topology.mtu,
            volume_bytes: plan.volume_bytes,
            repetitions: plan.repetitions,
            latency_samples: plan.latency_samples,
            cells,
            ratios,
        })
    }

    fn one_run(
        &self,
        mode: BenchMode,
        direction: Direction,
        size: usize,
        fetch_log: &Path,
        label: &str,
    ) -> Result<(Run, String), BenchError> {
        let produce_dir = self.plan.work_dir.join("produce");
        let log_dir = match direction {
            Direction::Fetch => fetch_log.to_path_buf(),
            Direction::Produce => {
                let _ = std::fs::remove_dir_all(&produce_dir);
                std::fs::create_dir_all(&produce_dir)
                    .map_err(io_err(format!("creating {}", produce_dir.display())))?;
                produce_dir.clone()
            }
        };
        let server = ServerProcess::start(
            self.server_command(mode, &log_dir),
            &format!("{label}: server"),
        )?;
        let client = match direction {
            Direction::Fetch => self.client_command(mode, "fetch"),
            Direction::Produce => {
                let spec = gen_spec(size, self.plan.volume_bytes);
                let mut c = self.client_command(mode, "produce");
                c.args(["--records", &spec.records.to_string()])
                    .args(["--record-size", &spec.record_size.to_string()])
                    .args(["--batch-records", &spec.records_per_batch.to_string()]);
                c
            }
        };
        let (run, json) = self.measure(client, &format!("{label}: client"))?;
        let obtained = match mode {
            // Both ends' sockets: the server says what it got in its "serving" line.
            BenchMode::Afxdp => format!(
                "server {}; client {}",
                server
                    .serving
                    .split("afxdp: ")
                    .nth(1)
                    .unwrap_or("?")
                    .trim_end_matches(')'),
                json["obtained"].as_str().unwrap_or("?")
            ),
            _ => format!("tcp {}", mode.name()),
        };
        drop(server);
        if direction == Direction::Produce {
            let _ = std::fs::remove_dir_all(&produce_dir);
        }
        Ok((run, obtained))
    }

    fn latency(&self, mode: BenchMode, log_dir: &Path) -> Result<Latency, BenchError> {
        let _server = ServerProcess::start(
            self.server_command(mode, log_dir),
            &format!("latency {}: server", mode.name()),
        )?;
        let mut client = self.client_command(mode, "fetch");
        client.args(["--latency", &self.plan.latency_samples.to_string()]);
        let json = run_json(client, &format!("latency {}: client", mode.name()))?;
        serde_json::from_value(json).map_err(|e| BenchError::Step {
            what: format!("latency {}", mode.name()),
            detail: e.to_string(),
        })
    }
}
