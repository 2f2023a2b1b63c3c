//! `capture-gen`: writes a realistic HTTP traffic capture (pcap) for benchmarks and experiments.
//! See `node_worker::synth::mix` for what the mix contains.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use node_worker::synth::flood::{write_flood, FloodKind};
use node_worker::synth::h2mix;
use node_worker::synth::mix::{write_pcap, MixOptions};

#[derive(Parser, Debug)]
#[command(
    name = "capture-gen",
    version,
    about = "Writes a pcap of many concurrent keep-alive HTTP connections: JSON and form exchanges of every \
             size (gzip, chunked, pipelined) mixed with everything the default rules drop."
)]
struct Args {
    /// Where to write the capture.
    #[arg(long, short)]
    out: PathBuf,
    /// Approximate size of the capture, in MB (10^6 bytes).
    #[arg(long, default_value_t = 1000)]
    size_mb: u64,
    /// Connections open at once (with --flood: connections of the flood).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Instead of the mix, a flood of --connections connections that stay open, for the memory
    /// benchmark: `syn` (a SYN each, never answered), `handshake` (handshake, then silence) or
    /// `request` (handshake and one request never answered).
    #[arg(long, value_parser = parse_flood)]
    flood: Option<FloodKind>,
    /// Instead of the HTTP/1 mix, HTTP/2 with prior knowledge: batches of concurrent streams (GETs
    /// and JSON POSTs) per connection, requests HPACK-encoded as nghttp2 does (dynamic table),
    /// responses as nginx does, JSON answers over one or several DATA frames; every stream a pair.
    #[arg(long, conflicts_with = "flood")]
    h2: bool,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write what was generated (JSON: exchanges per kind, pairs the default rules keep).
    #[arg(long)]
    stats: Option<PathBuf>,
}

fn parse_flood(s: &str) -> Result<FloodKind, String> {
    FloodKind::parse(s).ok_or_else(|| format!("unknown flood {s:?} (syn, handshake, request)"))
}

/// Writes a flood; prints what it wrote.
fn flood(args: &Args, kind: FloodKind) -> ExitCode {
    let Ok(n) = u32::try_from(args.connections) else {
        eprintln!(
            "capture-gen: --connections {} is too many for a flood",
            args.connections
        );
        return ExitCode::from(2);
    };
    let start = MixOptions::default().start_us;
    let result =
        std::fs::File::create(&args.out).and_then(|file| write_flood(kind, n, start, file));
    match result {
        Ok(frames) => {
            let json =
                serde_json::json!({"flood": kind.name(), "connections": n, "frames": frames});
            eprintln!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capture-gen: cannot write {}: {e}", args.out.display());
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(kind) = args.flood {
        return flood(&args, kind);
    }
    let options = MixOptions {
        target_bytes: args.size_mb.saturating_mul(1_000_000),
        connections: args.connections,
        seed: args.seed,
        ..MixOptions::default()
    };
    let result = std::fs::File::create(&args.out).and_then(|file| {
        if args.h2 {
            h2mix::write_pcap(&options, file)
        } else {
            write_pcap(&options, file)
        }
    });
    match result {
        Ok(stats) => {
            let json = serde_json::json!({
                "frames": stats.frames,
                "bytes": stats.bytes,
                "connections": stats.connections,
                "exchanges": stats.exchanges,
                "expected_pairs": stats.expected_pairs,
            });
            eprintln!("{json:#}");
            if let Some(path) = args.stats {
                if let Err(e) = std::fs::write(&path, format!("{json:#}\n")) {
                    eprintln!("capture-gen: cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capture-gen: cannot write {}: {e}", args.out.display());
            ExitCode::from(1)
        }
    }
}
