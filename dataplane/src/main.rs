//! The `dataplane` command line: clap front end only; the work is in the library.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use dataplane::{
    afxdp::{self, AdmitArgs, AfxdpArgs, FaultArgs},
    bench::run::{BenchMode, Direction},
    log::{TopicPartition, generate::GenSpec, partition::LogOptions},
    signals,
    tcp::{self, TcpMode},
    transfer::TransferReport,
};

/// Moves Kafka record batches between log segments and the network three
/// ways (copy, sendfile, AF_XDP) and measures them side by side.
///
/// Typical session: `dataplane gen` a log, `dataplane serve` it, consume it
/// with `dataplane fetch` (or kcat), and compare the modes with
/// `dataplane bench`.
#[derive(Parser)]
#[command(version, about, long_about, max_term_width = 100)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a topic-partition of generated records in Kafka's on-disk format.
    ///
    /// Deterministic from --seed: the same arguments always write the same bytes.
    /// Example: dataplane gen --log-dir /tmp/log --topic events --records 100000 --record-size 1000 --batch-records 16
    Gen(GenArgs),
    /// Dump the batches of a segment file or partition directory and check them.
    ///
    /// One line per batch (position, offsets, size, records, CRC); exits
    /// non-zero naming the file and byte position of the first corruption.
    /// Example: dataplane inspect /tmp/log/events-0
    Inspect(InspectArgs),
    /// Serve a log directory to Kafka clients (kcat, librdkafka, dataplane fetch).
    ///
    /// --mode sendfile moves records from the segment to the socket with
    /// sendfile(2), as Kafka does; --mode copy reads them into a buffer and
    /// writes them. Example: dataplane serve --mode sendfile --log-dir /tmp/log --listen 127.0.0.1:9092
    Serve(ServeArgs),
    /// Consume a topic-partition to its end (or N batches), verifying every batch.
    ///
    /// Prints bytes, batches and Gbit/s. Example: dataplane fetch --server 127.0.0.1:9092 --topic events
    Fetch(FetchArgs),
    /// Produce generated batches to a topic-partition.
    ///
    /// Example: dataplane produce --server 127.0.0.1:9092 --topic in --records 10000 --record-size 100
    Produce(ProduceArgs),
    /// Compare copy, sendfile and afxdp side by side in one run.
    ///
    /// Brings up the lab (two namespaces and a veth pair) unless given
    /// namespaces and interfaces, then for each batch size and direction
    /// moves a fixed volume with each mode, interleaving repetitions, and
    /// prints a table (medians and min-max, ratios to sendfile), writes JSON
    /// and an SVG chart. Example: dataplane bench --volume 256M --repeat 3
    Bench(BenchArgs),
    /// Bring the lab up or down, or show it.
    ///
    /// The lab is two network namespaces joined by a veth pair, standing in
    /// for two hosts with XDP-capable NICs. Example: dataplane lab up
    Lab(dataplane::lab::LabArgs),
    /// Check what the AF_XDP path needs here, with a verdict and advice for each item.
    ///
    /// Example: dataplane doctor --iface eth1
    Doctor(dataplane::xdp::doctor::DoctorArgs),
}

#[derive(Args, Clone)]
struct PartitionArgs {
    /// Topic name.
    #[arg(long, short)]
    topic: String,
    /// Partition index.
    #[arg(long, short, default_value_t = 0)]
    partition: i32,
}

impl PartitionArgs {
    fn tp(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

#[derive(Args, Clone)]
struct GenSpecArgs {
    /// Number of records.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    records: u64,
    /// Bytes in each record's value.
    #[arg(long, short = 's', default_value_t = 1000)]
    record_size: usize,
    /// Records per batch (a batch of 16 records of 1000 bytes is about 16 KiB).
    #[arg(long, short = 'k', default_value_t = 16)]
    batch_records: u32,
    /// Seed for the record contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give every record a key (`key-<offset>`).
    #[arg(long)]
    keys: bool,
}

impl GenSpecArgs {
    fn spec(&self) -> GenSpec {
        GenSpec {
            records: self.records,
            record_size: self.record_size,
            records_per_batch: self.batch_records,
            seed: self.seed,
            key: self.keys,
        }
    }
}

#[derive(Args)]
struct GenArgs {
    /// Log directory; the partition goes in <log-dir>/<topic>-<partition>.
    #[arg(long, short = 'd')]
    log_dir: PathBuf,
    #[command(flatten)]
    partition: PartitionArgs,
    #[command(flatten)]
    spec: GenSpecArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// A .log segment file or a <topic>-<partition> directory.
    path: PathBuf,
    /// Also print every record (offset, key and value sizes) of uncompressed batches.
    #[arg(long)]
    records: bool,
}

/// How `serve` moves records.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServeMode {
    /// Kafka over TCP, records read into a buffer and written.
    Copy,
    /// Kafka over TCP, records moved by sendfile(2).
    Sendfile,
    /// AF_XDP on --iface/--queue, plus the Kafka listener (sendfile).
    Afxdp,
    /// afxdp where this machine allows it, else sendfile (saying why).
    Auto,
}

/// How a client reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientMode {
    /// The Kafka protocol over TCP (whatever the server's mode).
    Tcp,
    /// AF_XDP on --iface, to the server's --udp-port.
    Afxdp,
    /// afxdp where this machine allows it, else TCP (saying why).
    Auto,
}

#[derive(Args)]
struct ServeArgs {
    /// How records reach the network.
    #[arg(long, short, value_enum, default_value_t = ServeMode::Sendfile)]
    mode: ServeMode,
    /// Address for the Kafka listener.
    #[arg(long, short, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Log directory holding <topic>-<partition> directories.
    #[arg(long, short = 'd')]
    log_dir: PathBuf,
    /// Host:port to give clients in Metadata (default: the address they connected to).
    #[arg(long)]
    advertise: Option<String>,
    /// When to fsync appended batches: never (the page cache decides, like
    /// Kafka's default) or always (before each Produce is acknowledged).
    #[arg(long, value_enum, default_value_t = FsyncArg::Never)]
    fsync: FsyncArg,
    /// Refuse Produce and Metadata requests for topics that do not exist.
    #[arg(long)]
    no_auto_create: bool,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = dataplane::kafka::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    #[command(flatten, next_help_heading = "AF_XDP")]
    afxdp: AfxdpArgs,
    #[command(flatten, next_help_heading = "AF_XDP")]
    admit: AdmitArgs,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FsyncArg {
    Never,
    Always,
}

/// How a client reaches the broker: `fetch` and `produce` alike.
#[derive(Args)]
struct ClientPathArgs {
    /// Broker address (its Kafka listener; AF_XDP uses its IP and --udp-port).
    #[arg(long, default_value = "127.0.0.1:9092")]
    server: SocketAddr,
    /// Path to the server.
    #[arg(long, short, value_enum, default_value_t = ClientMode::Tcp)]
    mode: ClientMode,
    #[command(flatten, next_help_heading = "AF_XDP")]
    afxdp: AfxdpArgs,
    #[command(flatten)]
    faults: FaultArgs,
}

impl ClientPathArgs {
    /// Whether this client takes the AF_XDP path (auto decides by probing).
    fn uses_afxdp(&self) -> bool {
        match self.mode {
            ClientMode::Tcp => false,
            ClientMode::Afxdp => true,
            ClientMode::Auto => auto_afxdp(&self.afxdp, "TCP"),
        }
    }

    /// The server's IPv4 address, which the AF_XDP path needs.
    fn server_ipv4(&self) -> Result<Ipv4Addr> {
        match self.server.ip() {
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(_) => bail!("--server {}: the AF_XDP path speaks IPv4 only", self.server),
        }
    }
}

#[derive(Args)]
struct FetchArgs {
    #[command(flatten)]
    path: ClientPathArgs,
    #[command(flatten)]
    partition: PartitionArgs,
    /// First offset (default: the log start).
    #[arg(long)]
    offset: Option<i64>,
    /// Stop after this many batches (default: at the high watermark seen at the start).
    #[arg(long)]
    batches: Option<u64>,
    /// Max bytes per Fetch response.
    #[arg(long, default_value_t = 8 << 20)]
    max_bytes: i32,
    /// Write what is received to <out-dir>/<topic>-<partition>.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Instead of consuming, measure single-batch request-to-completion
    /// latency: N fetches of one batch each, one at a time.
    #[arg(long, value_name = "N")]
    latency: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    path: ClientPathArgs,
    #[command(flatten)]
    partition: PartitionArgs,
    #[command(flatten)]
    spec: GenSpecArgs,
    /// Batches per Produce request.
    #[arg(long, default_value_t = 16)]
    batches_per_request: usize,
    /// Acknowledgements: 0 (none), 1 (leader), -1 (all; the same here).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Modes to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchMode::Copy, BenchMode::Sendfile, BenchMode::Afxdp])]
    modes: Vec<BenchMode>,
    /// Batch sizes (B, with k/M suffixes: powers of 1024).
    #[arg(long, value_delimiter = ',', default_value = "1k,16k,256k", value_parser = parse_size)]
    batch_sizes: Vec<u64>,
    /// Directions: fetch (log to client) and produce (client to log).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Direction::Fetch, Direction::Produce])]
    directions: Vec<Direction>,
    /// Bytes moved per run (k/M/G suffixes).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    volume: u64,
    /// Interleaved repetitions of every cell (the table shows median and min-max).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Single-batch fetches per mode and batch size for the latency percentiles (0: skip).
    #[arg(long, default_value_t = 2000)]
    latency_samples: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench.json")]
    json: PathBuf,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "bench.svg")]
    svg: PathBuf,
    /// Scratch directory for generated logs (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Kafka port of the servers.
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// Run on existing namespaces and interfaces instead of the lab:
    /// SERVER_NS,SERVER_IFACE,SERVER_IP,CLIENT_NS,CLIENT_IFACE (a namespace may be "-" for this one).
    #[arg(long, value_name = "SPEC")]
    on: Option<String>,
    #[command(flatten, next_help_heading = "Lab")]
    lab: dataplane::lab::LabConfig,
    /// AF_XDP frame size.
    #[arg(long, default_value_t = 4096)]
    frame_size: u32,
    /// AF_XDP bind mode.
    #[arg(long, value_enum, default_value_t = dataplane::xdp::xsk::BindMode::Auto)]
    bind: dataplane::xdp::xsk::BindMode,
    /// XDP attach mode for afxdp (on veth, skb mode skips a copy driver mode makes).
    #[arg(long, value_enum, default_value_t = dataplane::xdp::loader::XdpModeChoice::Auto)]
    xdp_mode: dataplane::xdp::loader::XdpModeChoice,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4096, 16k, 256M or 1G"))?;
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: size out of range"))
}

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // aya warns at length when the kernel refuses the object's BTF and then
    // loads the program without it; that is noise to a user.
    let filter = format!("{level},aya=error,aya_obj=error");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format_target(false)
        .init();
    if let Err(e) = run(cli.command) {
        eprintln!("dataplane: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Gen(args) => gen_log(args),
        Command::Inspect(args) => inspect(args),
        Command::Serve(args) => serve(args),
        Command::Fetch(args) => fetch(args),
        Command::Produce(args) => produce(args),
        Command::Bench(args) => bench(args),
        Command::Lab(args) => Ok(dataplane::lab::run(&args)?),
        Command::Doctor(args) => {
            if dataplane::xdp::doctor::run(&args) == dataplane::xdp::doctor::Verdict::Fail {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Decides whether `auto` gets AF_XDP; prints the reason when it does not.
fn auto_afxdp(args: &AfxdpArgs, fallback: &str) -> bool {
    let reason = match args.iface.as_deref() {
        None => "no --iface given".to_owned(),
        Some(iface) => match dataplane::xdp::doctor::probe(iface, args.queue) {
            Ok(_) => return true,
            Err(reason) => reason.to_string(),
        },
    };
    eprintln!("dataplane: afxdp unavailable: {reason}; falling back to {fallback}");
    false
}

fn gen_log(args: GenArgs) -> Result<()> {
    let tp = args.partition.tp();
    let summary = dataplane::log::generate::generate(&args.log_dir, &tp, &args.spec.spec())
        .with_context(|| format!("generating {tp} in {}", args.log_dir.display()))?;
    let json = serde_json::json!({
        "topic_partition": tp.to_string(),
        "first_offset": summary.first_offset,
        "next_offset": summary.next_offset,
        "records": summary.records,
        "batches": summary.batches,
        "bytes": summary.bytes,
        "seconds": summary.elapsed.as_secs_f64(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "wrote {tp}: offsets {}..{}, {} records in {} batches, {} bytes, in {:.2} s",
            summary.first_offset,
            summary.next_offset,
            summary.records,
            summary.batches,
            summary.bytes,
            summary.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    dataplane::log::inspect::inspect(&args.path, &mut out, args.records)?;
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let stop = signals::stop_on_signals();
    let options = LogOptions {
        fsync: match args.fsync {
            FsyncArg::Never => dataplane::log::partition::FsyncPolicy::Never,
            FsyncArg::Always => dataplane::log::partition::FsyncPolicy::EveryAppend,
        },
        ..LogOptions::default()
    };
    let advertise = match &args.advertise {
        None => None,
        Some(s) => {
            let (host, port) = s
                .rsplit_once(':')
                .with_context(|| format!("--advertise {s:?}: expected HOST:PORT"))?;
            let port = port
                .parse()
                .with_context(|| format!("--advertise {s:?}: bad port"))?;
            Some((host.to_owned(), port))
        }
    };
    let with_afxdp = match args.mode {
        ServeMode::Afxdp => {
            args.afxdp.iface()?;
            true
        }
        ServeMode::Auto => auto_afxdp(&args.afxdp, "sendfile"),
        ServeMode::Copy | ServeMode::Sendfile => false,
    };
    let tcp_mode = if args.mode == ServeMode::Copy {
        TcpMode::Copy
    } else {
        TcpMode::Sendfile
    };
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating log directory {}", args.log_dir.display()))?;
    let broker = Arc::new(
        tcp::broker::Broker::open(&args.log_dir, options, !args.no_auto_create)
            .with_context(|| format!("opening log directory {}", args.log_dir.display()))?,
    );
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let topics = broker.topics();
    let serving = format!(
        "serving {} partition(s) of {} topic(s) from {} on {}",
        topics.values().map(Vec::len).sum::<usize>(),
        topics.len(),
        args.log_dir.display(),
        listener.local_addr()?,
    );
    let config = tcp::server::ServerConfig {
        mode: tcp_mode,
        advertise,
        max_request_bytes: args.max_request_bytes,
    };
    std::thread::scope(|scope| -> Result<()> {
        let tcp_broker = broker.clone();
        let tcp = scope.spawn(move || tcp::server::serve(listener, tcp_broker, config, stop));
        let result = if with_afxdp {
            let details = afxdp::serve(
                broker,
                &args.afxdp,
                &args.admit,
                args.faults,
                stop,
                |obtained| {
                    ::log::info!("{serving} (Kafka: {tcp_mode}; afxdp: {obtained})");
                },
            );
            match details {
                Ok(details) => {
                    ::log::info!("afxdp statistics: {details}");
                    Ok(())
                }
                Err(e) => {
                    // Stop the listener too: a half-working server misleads.
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    Err(e.into())
                }
            }
        } else {
            ::log::info!("{serving} (mode {tcp_mode})");
            Ok(())
        };
        tcp.join()
            .map_err(|_| anyhow::anyhow!("the Kafka listener thread panicked"))??;
        result
    })
}

fn print_progress(what: &str) -> impl FnMut(&TransferReport) + '_ {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |r: &TransferReport| {
        if tty {
            eprint!(
                "\r{what}: {} batches, {:.1} MiB, {:.2} Gbit/s   ",
                r.batches,
                r.bytes as f64 / (1 << 20) as f64,
                r.gbit_per_s
            );
        }
    }
}

fn print_report(what: &str, report: &TransferReport, json: bool) -> Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[K");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "{what}: {} bytes, {} batches, {} records (offsets {}..{}) in {:.3} s: {:.2} Gbit/s, {:.0} batches/s{}",
            report.bytes,
            report.batches,
            report.records,
            report.first_offset,
            report.next_offset,
            report.seconds,
            report.gbit_per_s,
            report.batches_per_s,
            if report.verified {
                ", every batch verified"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn fetch(args: FetchArgs) -> Result<()> {
    if args.max_bytes <= 0 {
        bail!("--max-bytes must be positive");
    }
    let afxdp = args.path.uses_afxdp();
    let tp = args.partition.tp();
    if let Some(samples) = args.latency {
        let latency = if afxdp {
            afxdp::latency(&args.path.afxdp, args.path.server_ipv4()?, &tp, samples)?
        } else {
            tcp::client::latency(args.path.server, &tp, samples)?
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&latency)?);
        } else {
            println!(
                "latency over {} single-batch fetches: p50 {:.1} us, p99 {:.1} us, p999 {:.1} us, max {:.1} us",
                latency.samples, latency.p50, latency.p99, latency.p999, latency.max
            );
        }
        return Ok(());
    }
    let report = if afxdp {
        let server = args.path.server_ipv4()?;
        afxdp::fetch(
            &args.path.afxdp,
            server,
            &tp,
            args.offset,
            args.batches,
            args.out_dir.as_ref(),
            args.path.faults,
        )?
    } else {
        let options = tcp::client::FetchOptions {
            tp,
            start: args.offset,
            max_batches: args.batches,
            max_bytes: args.max_bytes,
            out_dir: args.out_dir,
        };
        tcp::client::fetch(args.path.server, &options, print_progress("fetch"))?
    };
    print_report("fetched", &report, args.json)
}

fn produce(args: ProduceArgs) -> Result<()> {
    let afxdp = args.path.uses_afxdp();
    let report = if afxdp {
        afxdp::produce(
            &args.path.afxdp,
            args.path.server_ipv4()?,
            &args.partition.tp(),
            &args.spec.spec(),
            args.path.faults,
        )?
    } else {
        let options = tcp::client::ProduceOptions {
            tp: args.partition.tp(),
            spec: args.spec.spec(),
            batches_per_request: args.batches_per_request,
            acks: args.acks,
        };
        tcp::client::produce(args.path.server, &options, print_progress("produce"))?
    };
    print_report("produced", &report, args.json)
}

/// `--on SERVER_NS,SERVER_IFACE,SERVER_IP,CLIENT_NS,CLIENT_IFACE`
fn parse_topology(spec: &str) -> Result<dataplane::bench::run::Topology> {
    let f: Vec<&str> = spec.split(',').map(str::trim).collect();
    let [server_ns, server_iface, server_ip, client_ns, client_iface] = f[..] else {
        bail!("--on {spec:?}: expected SERVER_NS,SERVER_IFACE,SERVER_IP,CLIENT_NS,CLIENT_IFACE");
    };
    let ns = |n: &str| (n != "-").then(|| n.to_owned());
    Ok(dataplane::bench::run::Topology {
        server_ns: ns(server_ns),
        client_ns: ns(client_ns),
        server_ip: server_ip
            .parse()
            .with_context(|| format!("--on: server IP {server_ip:?}"))?,
        server_iface: server_iface.into(),
        client_iface: client_iface.into(),
        queue: 0,
        description: format!("{server_iface} ({server_ns}) <- {client_iface} ({client_ns})"),
        mtu: 0,
    })
}

/// The command-line spelling of a value.
fn value_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

fn bench(args: BenchArgs) -> Result<()> {
    use dataplane::bench::{report, run};
    let stop = signals::stop_on_signals();
    let binary = std::env::current_exe().context("finding this program's path")?;
    // The lab, unless told where to run; left as found if it was already up.
    let mut lab_guard = None;
    let topology = match &args.on {
        Some(spec) => parse_topology(spec)?,
        None => {
            let cfg = args.lab.clone();
            let was_up = dataplane::lab::status(&cfg)
                .map(|s| s.is_up())
                .unwrap_or(false);
            if was_up {
                eprintln!(
                    "bench: using the lab that is already up ({} / {})",
                    cfg.server_ns, cfg.client_ns
                );
            } else {
                eprintln!(
                    "bench: bringing the lab up ({} / {}, MTU {})",
                    cfg.server_ns, cfg.client_ns, cfg.mtu
                );
                lab_guard = Some(dataplane::lab::Lab::up(cfg.clone())?);
            }
            run::Topology {
                server_ns: Some(cfg.server_ns.clone()),
                client_ns: Some(cfg.client_ns.clone()),
                server_ip: cfg.server_ip,
                server_iface: cfg.server_veth.clone(),
                client_iface: cfg.client_veth.clone(),
                queue: 0,
                description: format!("lab (veth {} <-> {})", cfg.server_veth, cfg.client_veth),
                mtu: cfg.mtu,
            }
        }
    };
    let (work_dir, temporary) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dataplane-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let plan = run::BenchPlan {
        modes: args.modes.clone(),
        batch_sizes: args.batch_sizes.iter().map(|&b| b as usize).collect(),
        directions: args.directions.clone(),
        volume_bytes: args.volume,
        repetitions: args.repeat.max(1),
        latency_samples: args.latency_samples,
        work_dir: work_dir.clone(),
        port: args.port,
        afxdp_args: vec![
            "--frame-size".into(),
            args.frame_size.to_string(),
            "--bind".into(),
            value_name(&args.bind),
            "--xdp-mode".into(),
            value_name(&args.xdp_mode),
        ],
    };
    let mut bench = run::Bench {
        plan: &plan,
        topology: &topology,
        binary,
        stop,
        progress: Box::new(|line| eprintln!("bench: {line}")),
    };
    let result = bench.run();
    if temporary {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    drop(lab_guard); // tear the lab down before reporting, also on error
    let report = result?;
    print!("{}", report::table(&report));
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    std::fs::write(&args.svg, report::svg(&report))
        .with_context(|| format!("writing {}", args.svg.display()))?;
    println!("wrote {} and {}", args.json.display(), args.svg.display());
    if report.cells.iter().any(|c| !c.verified) {
        bail!("some transfers were not verified; see the table");
    }
    Ok(())
}
