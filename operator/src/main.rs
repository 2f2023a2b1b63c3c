//! `operator`: `run` (in a cluster), `crds` (print the CRD YAML), `render FILE` (print what would be applied).
//! Exit codes: 0 ok, 2 bad usage or input (with a one-line reason), 1 runtime failure.

mod run;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use interceptor_crds::manifests;
use interceptor_crds::status_cadence::StatusCadence;
use operator::input::parse_config;
use operator::render::{render, to_yaml, RenderSettings, DEFAULT_WORKER_IMAGE};

#[derive(Parser, Debug)]
#[command(
    name = "operator",
    version,
    about = "interceptor's Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reconcile InterceptorConfigs in the cluster (in-cluster or current kubeconfig credentials).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD into --out-dir).
    Crds {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print, as YAML, exactly the objects the operator would apply for the InterceptorConfig in FILE
    /// (`-`: standard input). Needs no cluster. Refuses (exit 2) what admission would refuse.
    Render {
        file: PathBuf,
        /// Worker image for specs that name none.
        #[arg(long, env = "OPERATOR_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
        worker_image: String,
        /// Render as for this many selected nodes: the workers' status cadence (`status` in
        /// config.yaml) grows with the cluster, as in `operator run`.
        #[arg(long, default_value_t = 0)]
        nodes: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Worker image for specs that name none.
    #[arg(long, env = "OPERATOR_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
    pub worker_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Elect a leader on a Lease, so that several replicas are safe.
    #[arg(long, env = "OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "OPERATOR_LEASE_NAME",
        default_value = "interceptor-operator"
    )]
    pub lease_name: String,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "interceptor-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// A worker whose InterceptorStatus heartbeat is older than this many seconds does not count as reporting.
    #[arg(long, env = "OPERATOR_HEARTBEAT_TIMEOUT_SECONDS", default_value_t = 60)]
    pub heartbeat_timeout_seconds: u64,
    /// Reconcile every config at least this often (seconds), to sum heartbeats and counters. A report
    /// whose phase, message, config version or Kafka connection changed triggers one within a second.
    #[arg(long, env = "OPERATOR_RESYNC_SECONDS", default_value_t = 30)]
    pub resync_seconds: u64,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "OPERATOR_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// A failure caused by the input (exit 2) rather than at run time (exit 1).
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Render {
            file,
            worker_image,
            nodes,
        } => render_file(
            &file,
            RenderSettings {
                worker_image,
                status_cadence: StatusCadence::for_nodes(nodes, None),
            },
        ),
        Command::Run(args) => run::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<BadInput>().is_some() => {
            eprintln!("operator: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("operator: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    match out_dir {
        None => print!("{}", manifests::all_yaml()?),
        Some(dir) => {
            for (file, crd) in manifests::crds() {
                let path = dir.join(file);
                std::fs::write(&path, manifests::to_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn render_file(file: &PathBuf, settings: RenderSettings) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| anyhow!(BadInput(format!("{}: {e}", file.display()))))?
    };
    let icfg =
        parse_config(&text).map_err(|e| anyhow!(BadInput(format!("{}: {e}", file.display()))))?;
    let rendered = render(&icfg, &settings)
        .map_err(|e| anyhow!(BadInput(format!("{}: {e}", file.display()))))?;
    print!("{}", to_yaml(&rendered)?);
    Ok(())
}
