//! The `dataplane` command line: clap front end only; the work is in the library.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use dataplane::{
    log::{TopicPartition, generate::GenSpec, partition::LogOptions},
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

#[derive(Args)]
struct ServeArgs {
    /// How records reach the network.
    #[arg(long, short, value_enum, default_value_t = TcpMode::Sendfile)]
    mode: TcpMode,
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FsyncArg {
    Never,
    Always,
}

#[derive(Args)]
struct FetchArgs {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    server: SocketAddr,
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
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    server: SocketAddr,
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

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
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
    }
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
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating log directory {}", args.log_dir.display()))?;
    let broker = tcp::broker::Broker::open(&args.log_dir, options, !args.no_auto_create)
        .with_context(|| format!("opening log directory {}", args.log_dir.display()))?;
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let topics = broker.topics();
    ::log::info!(
        "serving {} partition(s) of {} topic(s) from {} on {} (mode {})",
        topics.values().map(Vec::len).sum::<usize>(),
        topics.len(),
        args.log_dir.display(),
        listener.local_addr()?,
        args.mode
    );
    let config = tcp::server::ServerConfig {
        mode: args.mode,
        advertise,
        max_request_bytes: args.max_request_bytes,
    };
    let stop = Arc::new(AtomicBool::new(false));
    tcp::server::serve(listener, Arc::new(broker), config, stop)?;
    Ok(())
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
    if let Some(samples) = args.latency {
        let latency = tcp::client::latency(args.server, &args.partition.tp(), samples)?;
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
    let options = tcp::client::FetchOptions {
        tp: args.partition.tp(),
        start: args.offset,
        max_batches: args.batches,
        max_bytes: args.max_bytes,
        out_dir: args.out_dir,
    };
    let report = tcp::client::fetch(args.server, &options, print_progress("fetch"))?;
    print_report("fetched", &report, args.json)
}

fn produce(args: ProduceArgs) -> Result<()> {
    let options = tcp::client::ProduceOptions {
        tp: args.partition.tp(),
        spec: args.spec.spec(),
        batches_per_request: args.batches_per_request,
        acks: args.acks,
    };
    let report = tcp::client::produce(args.server, &options, print_progress("produce"))?;
    print_report("produced", &report, args.json)
}
