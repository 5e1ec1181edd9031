use clap::Parser;

/// Moves Kafka record batches between log segments and the network by copy,
/// sendfile or AF_XDP, and measures the three side by side.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
