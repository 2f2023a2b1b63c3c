//! `node-worker`: the command line (DESIGN.md, "CLI", contract). Parses arguments, loads the config,
//! builds the sink, and drives the pipeline from a capture source. Exit codes: 0 ok, 2 bad usage or
//! config (one-line reason), 1 runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use interceptor_crds::config::WorkerConfig;
use node_worker::capture_loop::{CaptureLoop, LoopReport, Selection};
use node_worker::discovery::MeshKind;
use node_worker::pair_id::IdPrefix;
use node_worker::pipeline::{Identity, Pipeline};
use node_worker::redirect::RedirectStats;
use node_worker::sink::{LinesSink, Sink};
use node_worker::source::file::{FileEnd, FileSource};
use node_worker::source::{CaptureMode, InterfaceInfo};

#[derive(Parser, Debug)]
#[command(
    name = "node-worker",
    version,
    about = "Captures pod HTTP traffic, pairs requests with responses, filters them and sends the pairs on.",
    long_about = "Captures pod HTTP traffic, pairs requests with responses, filters them by the rules of \
                  config.yaml (sizes, content types, user agents, headers, statuses, paths) and sends the \
                  pairs on as JSON: to stdout, a file, or Kafka.\n\n\
                  Exit codes: 0 ok, 2 bad usage or config, 1 runtime failure."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capture HTTP pairs from a capture file or live interfaces, outside Kubernetes.
    Capture(CaptureArgs),
    /// In-cluster mode, as the operator's DaemonSet runs it: config from the ConfigMap (watched), pods
    /// from the API, status to the node's InterceptorStatus, pairs to Kafka.
    Run(node_worker::cluster::RunArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["read", "interface", "discover"])))]
struct CaptureArgs {
    /// Read packets from a pcap or pcapng file (time is the packets' timestamps).
    #[arg(long, value_name = "FILE")]
    read: Option<PathBuf>,

    /// Capture live on this interface until SIGINT/SIGTERM.
    #[arg(long, value_name = "NAME")]
    interface: Option<String>,

    /// With --interface: the network namespace the interface lives in (e.g. /run/netns/NAME or
    /// /proc/PID/ns/net).
    #[arg(long, value_name = "PATH", requires = "interface")]
    netns: Option<PathBuf>,

    /// With --interface lo: the service mesh running in that namespace. The application's outbound
    /// calls, which the mesh's rules redirect to its proxy's port, are then paired with their real
    /// destination (from conntrack, or else from the answers) instead of being lost. --discover finds
    /// the mesh by itself.
    #[arg(long, value_enum, value_name = "MESH", requires = "interface")]
    mesh: Option<MeshKind>,

    /// Discover every network namespace on the host and capture the interfaces the in-cluster worker
    /// would (a pod's loopback when a service-mesh sidecar runs in it, else its external interface).
    #[arg(long)]
    discover: bool,

    /// The worker configuration (config.yaml, as the operator writes it); defaults to the product rules.
    #[arg(long, value_name = "FILE", env = "INTERCEPTOR_CONFIG_FILE")]
    config: Option<PathBuf>,

    /// Where pairs go: stdout (JSON Lines), file:PATH (JSON Lines), or kafka (config.yaml's kafka).
    #[arg(long, value_name = "SINK", default_value = "stdout")]
    sink: String,

    /// The node name written into each pair.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,

    /// The `<namespace>/<name>` of the InterceptorConfig written into each pair.
    #[arg(
        long,
        env = "INTERCEPTOR_NAME",
        value_name = "NS/NAME",
        default_value = "standalone/interceptor"
    )]
    interceptor: String,

    /// Start every pair id with PREFIX (1 to 32 of 0-9, a-z, '-') instead of a random prefix per run,
    /// so that the same input gives the same output (to compare runs or builds).
    #[arg(long, value_name = "PREFIX")]
    id_prefix: Option<String>,

    /// Also write the final counters as JSON to this file.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "INTERCEPTOR_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

/// A failure, with the exit code it deserves.
enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Capture(args) => {
            init_logging(args.log_format);
            capture(args)
        }
        Command::Run(args) => node_worker::cluster::main(args).map_err(|e| match e.is_usage() {
            true => Failure::Usage(e.to_string()),
            false => Failure::Runtime(e.into()),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(reason)) => {
            eprintln!("node-worker: {reason}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("node-worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: logs piped to a file or a collector stay plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: Option<&Path>) -> Result<WorkerConfig, Failure> {
    let Some(path) = path else {
        return Ok(WorkerConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read config {}: {e}", path.display())))?;
    let loaded = WorkerConfig::from_yaml(&text)
        .map_err(|e| Failure::Usage(format!("invalid config {}: {e}", path.display())))?;
    for key in &loaded.unknown_keys {
        tracing::warn!(key = %key, "config key not known to this version; ignored");
    }
    Ok(loaded.config)
}

fn build_sink(
    spec: &str,
    config: &WorkerConfig,
    identity: &Identity,
    reading_a_file: bool,
) -> Result<Box<dyn Sink>, Failure> {
    if spec == "stdout" {
        return Ok(Box::new(LinesSink::stdout()));
    }
    if let Some(path) = spec.strip_prefix("file:") {
        if path.is_empty() {
            return Err(Failure::Usage("--sink file:PATH needs a path".into()));
        }
        return LinesSink::file(path)
            .map(|s| Box::new(s) as Box<dyn Sink>)
            .map_err(|e| Failure::Usage(e.to_string()));
    }
    if spec == "kafka" {
        // Secrets are masked in the error; bad librdkafka properties are a usage error.
        let sink = node_worker::sink::kafka::KafkaSink::new(&config.kafka, &identity.node)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        if reading_a_file {
            // A capture file is a batch job: fail at once on a missing topic or an unreachable Kafka
            // rather than after reading it. Live capture starts anyway and buffers until Kafka is back.
            sink.ensure_topic(Duration::from_secs(15))
                .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}")))?;
        }
        return Ok(Box::new(sink));
    }
    Err(Failure::Usage(format!(
        "unknown --sink {spec:?}: use stdout, file:PATH or kafka"
    )))
}

fn identity(args: &CaptureArgs) -> Identity {
    let node = args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string())
    });
    Identity {
        node,
        interceptor: args.interceptor.clone(),
    }
}

fn capture(args: CaptureArgs) -> Result<(), Failure> {
    if args.mesh.is_some() && args.interface.as_deref() != Some("lo") {
        // A mesh's redirected connections are seen, in clear, on the pod's loopback only.
        return Err(Failure::Usage(
            "--mesh applies to a pod's loopback: use it with --interface lo --netns PATH".into(),
        ));
    }
    let id_prefix = args
        .id_prefix
        .as_deref()
        .map(IdPrefix::parse)
        .transpose()
        .map_err(|e| Failure::Usage(format!("invalid --id-prefix: {e}")))?;
    let config = load_config(args.config.as_deref())?;
    let identity = identity(&args);
    let sink = build_sink(&args.sink, &config, &identity, args.read.is_some())?;
    let mut pipeline = Pipeline::new(&config, identity, sink);
    if let Some(prefix) = id_prefix {
        pipeline.set_id_prefix(prefix);
    }
    let (outcome, live) = if let Some(path) = &args.read {
        (read_file(&mut pipeline, path)?, None)
    } else {
        let selection = match &args.interface {
            Some(name) => Selection::Interface {
                name: name.clone(),
                netns: args.netns.clone(),
                mesh: args.mesh,
            },
            None => Selection::Discover,
        };
        (
            FileEnd::Complete,
            Some(capture_live(&mut pipeline, &config, selection)?),
        )
    };
    let flushed = pipeline.finish(Duration::from_secs(10));
    report(&pipeline, live.as_ref(), args.stats_json.as_deref())?;
    if let Err(e) = flushed {
        return Err(Failure::Runtime(anyhow::anyhow!("flushing pairs: {e}")));
    }
    if let FileEnd::Truncated(reason) = outcome {
        tracing::warn!(%reason, "the capture file ends early or is corrupt; results are partial");
    }
    Ok(())
}

/// Live capture until SIGINT or SIGTERM (SIGHUP: rescan the host's namespaces now).
fn capture_live(
    pipeline: &mut Pipeline,
    config: &WorkerConfig,
    selection: Selection,
) -> Result<LoopReport, Failure> {
    let mut capture =
        CaptureLoop::new(config, selection).map_err(|e| Failure::Usage(e.to_string()))?;
    let control = capture.control();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, control.stop_flag())
            .context("installing the signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.rescan_flag())
        .context("installing the signal handler")?;
    tracing::info!("capturing; stop with Ctrl-C (SIGINT) or SIGTERM");
    capture.run(pipeline, |_, _| {}).context("capture loop")?;
    let report = capture.report();
    capture.close();
    Ok(report)
}

fn read_file(pipeline: &mut Pipeline, path: &Path) -> Result<FileEnd, Failure> {
    let mut source = FileSource::open(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let interface = pipeline.add_interface(InterfaceInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        netns: None,
        mode: CaptureMode::File,
    });
    Ok(source.for_each(|packet| pipeline.handle(interface, packet)))
}

/// The summary on stderr, and optionally as JSON in a file.
fn report(
    pipeline: &Pipeline,
    live: Option<&LoopReport>,
    stats_json: Option<&Path>,
) -> Result<(), Failure> {
    let counters = pipeline.counters();
    let sink = pipeline.sink_stats();
    let (_, peak_buffered) = pipeline.buffered_bytes();
    if let Some(live) = live {
        let totals = live.taps.totals();
        eprintln!(
            "interfaces: {} tapped now, {} opened, {} released, {} vanished, {} failed to open; kernel: {} received, {} dropped, {} dropped by interface",
            live.tapped.len(),
            live.taps.opened,
            live.taps.released,
            live.taps.vanished,
            live.taps.open_failures,
            totals.kernel.received,
            totals.kernel.dropped,
            totals.kernel.if_dropped
        );
        for tap in &live.taps.open {
            eprintln!(
                "  {:<16} {:<12} {:<9} {:>10} packets {:>8} kernel drops{}",
                tap.info.name,
                tap.info.netns.as_deref().unwrap_or("host"),
                tap.info.mode.as_str(),
                tap.counters.packets,
                tap.counters.kernel.dropped,
                tap.mesh
                    .as_ref()
                    .map(|m| format!("  mesh {} ({})", m.kind.as_str(), m.reason))
                    .unwrap_or_default()
            );
        }
    }
    let redirects = pipeline.redirect_stats();
    if redirects != RedirectStats::default() {
        eprintln!(
            "redirected connections: {} destinations from conntrack, {} from their answers, {} not in conntrack, {} conntrack errors, {} untracked (table full)",
            redirects.resolved, redirects.learned, redirects.unknown, redirects.errors, redirects.table_full
        );
    }
    eprint!("{}", counters.summary());
    eprintln!(
        "sink: {} accepted, {} delivered, {} dropped (buffer full), {} purged, {} failed{}",
        sink.accepted,
        sink.delivered,
        sink.dropped_full,
        sink.purged,
        sink.failed,
        sink.last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default()
    );
    if let Some(path) = stats_json {
        let mut json = serde_json::json!({
            "counters": counters,
            "drops": counters.drops_json(),
            "sink": sink,
            "peak_buffered_bytes": peak_buffered,
            "redirects": {
                "resolved": redirects.resolved,
                "unknown": redirects.unknown,
                "learned": redirects.learned,
                "errors": redirects.errors,
                "table_full": redirects.table_full,
            },
        });
        if let Some(live) = live {
            let totals = live.taps.totals();
            json["capture"] = serde_json::json!({
                "tapped": live.tapped.iter().map(|i| {
                    let mesh = live.taps.open.iter().find(|t| t.info == *i).and_then(|t| t.mesh.as_ref());
                    serde_json::json!({
                        "name": i.name, "netns": i.netns, "mode": i.mode.as_str(),
                        "mesh": mesh.map(|m| m.kind.as_str()), "mesh_reason": mesh.map(|m| m.reason.as_str()),
                    })
                }).collect::<Vec<_>>(),
                "opened": live.taps.opened,
                "released": live.taps.released,
                "vanished": live.taps.vanished,
                "open_failures": live.taps.open_failures,
                "kernel_received": totals.kernel.received,
                "kernel_dropped": totals.kernel.dropped,
                "interface_dropped": totals.kernel.if_dropped,
                "scans": live.scans,
            });
        }
        std::fs::write(path, format!("{json:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
