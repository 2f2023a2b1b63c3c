//! Simulates the status traffic of N worker nodes against a real API server, for measuring the control
//! plane at scale (`bench/status-scale.sh`, BENCHMARKS.md "Status at scale").
//!
//! It creates N Node objects (`load-00000`, ... labelled `interceptor.dev/load-node=true`), then runs N
//! copies of the worker's own [`StatusWriter`]: the same InterceptorStatus objects, the same server-side
//! applies and the same pacing, the cadence read from the InterceptorConfig's ConfigMap as a worker
//! reads it. Nothing is captured: each simulated node publishes a loop snapshot every second with
//! `--interfaces` tapped interfaces and growing counters, so that every heartbeat carries new numbers (a
//! patch that changes nothing would not reach etcd). Writers start spread over one heartbeat, as a
//! DaemonSet rollout spreads them.
//!
//! ```sh
//! cargo run -q -p node-worker --example status_load -- --nodes 1000 --seconds 300 \
//!     --namespace interceptor-system --config load
//! ```
//!
//! After the window, the time from a worker's change to the InterceptorConfig's status: the first
//! simulated node loses Kafka (its report says so at its next permitted write), and the tool watches the
//! config until its Degraded condition names that node; then Kafka comes back, until the condition
//! clears. Printed as `change reached the InterceptorConfig's status in S s` (and `... cleared in S s`).
//!
//! Uses the current kubeconfig. Prints one line per phase; the API server's and etcd's own metrics say
//! what it cost. `--cleanup` deletes the Node objects and the InterceptorStatus objects at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Parser;
use futures::{stream, StreamExt, TryStreamExt};
use interceptor_crds::config::WorkerConfig;
use interceptor_crds::interceptor_status::{OwnerConfig, LABEL_CONFIG};
use interceptor_crds::status_cadence::StatusCadence;
use interceptor_crds::worker_env::{config_map_name, CONFIG_KEY};
use interceptor_crds::{InterceptorConfig, InterceptorStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use node_worker::cluster::pods::SharedPods;
use node_worker::cluster::state::{ConfigState, LoopSnapshot, Shared};
use node_worker::cluster::status::{PacingOverride, StatusWriter};
use node_worker::source::{CaptureMode, InterfaceInfo};
use serde_json::json;
use tokio::sync::watch;

const LOAD_LABEL: &str = "interceptor.dev/load-node";
const FIELD_MANAGER: &str = "interceptor-status-load";
const STATUS_FIELD_MANAGER: &str = "interceptor-status-load-kubelet";

#[derive(Parser, Debug)]
#[command(
    about = "Simulate the InterceptorStatus writes of N worker nodes against a real API server"
)]
struct Args {
    /// Simulated nodes (Node objects and status writers).
    #[arg(long)]
    nodes: usize,
    /// How long the writers run once all have started (the measurement window). Default: three
    /// heartbeats of the config's cadence, at least 120 s.
    #[arg(long)]
    seconds: Option<u64>,
    /// Namespace of the InterceptorConfig.
    #[arg(long, default_value = "interceptor-system")]
    namespace: String,
    /// The InterceptorConfig the statuses belong to (it must exist: its uid is the owner).
    #[arg(long, default_value = "load")]
    config: String,
    /// Tapped interfaces per simulated node (each is a line of the status).
    #[arg(long, default_value_t = 10)]
    interfaces: usize,
    /// Seconds over which the writers start (default: one heartbeat of the config's cadence).
    #[arg(long)]
    ramp_seconds: Option<u64>,
    /// Delete the Node and InterceptorStatus objects at the end.
    #[arg(long)]
    cleanup: bool,
    /// Only delete what an earlier run left, then exit.
    #[arg(long)]
    cleanup_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::try_default().await.context("no kubeconfig")?;
    let statuses: Api<InterceptorStatus> = Api::namespaced(client.clone(), &args.namespace);
    let nodes: Api<Node> = Api::all(client.clone());
    if args.cleanup_only {
        return cleanup(&nodes, &statuses, &args.config).await;
    }
    if args.nodes == 0 {
        bail!("--nodes must be positive");
    }
    let configs: Api<InterceptorConfig> = Api::namespaced(client.clone(), &args.namespace);
    let icfg = configs
        .get(&args.config)
        .await
        .with_context(|| format!("InterceptorConfig {}/{}", args.namespace, args.config))?;
    let owner = OwnerConfig {
        namespace: args.namespace.clone(),
        name: args.config.clone(),
        uid: icfg.uid().context("the InterceptorConfig has no uid")?,
    };

    let started = Instant::now();
    create_nodes(&nodes, args.nodes).await?;
    println!(
        "status_load: {} Node objects applied in {:.1} s",
        args.nodes,
        started.elapsed().as_secs_f64()
    );

    let shared: Vec<Arc<Shared>> = (0..args.nodes).map(|_| Shared::new()).collect();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &args.namespace);
    let cm_name = config_map_name(&args.config);
    // The operator writes the cadence for the nodes it selects: wait (up to two minutes) until it has
    // seen ours, as workers would follow it.
    let expected = StatusCadence::for_nodes(args.nodes, None);
    let waited = Instant::now();
    let cadence = loop {
        let state = read_config(&config_maps, &cm_name).await?;
        let cadence = state.1;
        if cadence == expected || waited.elapsed() > Duration::from_secs(120) {
            publish_config(&shared, &state);
            break cadence;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    println!(
        "status_load: cadence from ConfigMap {cm_name}: heartbeat {} s, min interval {} s",
        cadence.heartbeat_seconds, cadence.min_interval_seconds
    );

    let (done_tx, done_rx) = watch::channel(false);
    let first_disconnected = Arc::new(AtomicBool::new(false));
    let simulate = tokio::spawn(simulate(
        shared.clone(),
        args.interfaces,
        Arc::clone(&first_disconnected),
    ));
    let follow = tokio::spawn(follow_config(config_maps, cm_name, shared.clone()));
    let ramp = Duration::from_secs(args.ramp_seconds.unwrap_or(cadence.heartbeat_seconds));
    let mut writers = Vec::with_capacity(args.nodes);
    let ramp_started = Instant::now();
    for (i, shared) in shared.iter().enumerate() {
        let at = ramp.mul_f64(i as f64 / args.nodes as f64);
        tokio::time::sleep_until((ramp_started + at).into()).await;
        let writer = StatusWriter {
            api: statuses.clone(),
            owner: owner.clone(),
            node: node_name(i),
            shared: Arc::clone(shared),
            pods: SharedPods::default(),
            pacing: PacingOverride::default(),
            stall_after: Duration::from_secs(30),
            clock: k8s_openapi::jiff::Timestamp::now,
        };
        writers.push(tokio::spawn(writer.run(done_rx.clone())));
    }
    let seconds = args
        .seconds
        .unwrap_or((3 * cadence.heartbeat_seconds).max(120));
    println!(
        "status_load: {} writers started over {:.0} s; running {seconds} s",
        args.nodes,
        ramp_started.elapsed().as_secs_f64(),
    );
    // The measurement window: the script reads the API server's and etcd's counters at these two lines.
    println!("status_load: window start");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("status_load: window end");
    // A worker's change, all the way to the config's status.
    let names_first = |icfg: &InterceptorConfig| {
        icfg.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Degraded" && c.status == "True" && c.message.contains(&node_name(0))
            })
        })
    };
    for (disconnected, what) in [(true, "reached"), (false, "cleared from")] {
        first_disconnected.store(disconnected, Ordering::Relaxed);
        let changed = Instant::now();
        loop {
            let icfg = configs.get(&args.config).await?;
            if names_first(&icfg) == disconnected {
                println!(
                    "status_load: a worker's change {what} the InterceptorConfig's status in {:.1} s",
                    changed.elapsed().as_secs_f64()
                );
                break;
            }
            if changed.elapsed() > Duration::from_secs(3 * cadence.heartbeat_seconds.max(60)) {
                println!(
                    "status_load: a worker's change never {what} the InterceptorConfig's status"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for s in &shared {
        s.set_stopping();
    }
    let _ = done_tx.send(true);
    for w in writers {
        let _ = w.await;
    }
    simulate.abort();
    follow.abort();
    if args.cleanup {
        cleanup(&nodes, &statuses, &args.config).await?;
    }
    Ok(())
}

fn node_name(i: usize) -> String {
    format!("load-{i:05}")
}

/// Node objects as a kubelet registers them: ready, with room for pods, so that the DaemonSet's pods
/// are bound to them once (nobody runs them) instead of being retried by the scheduler all along.
async fn create_nodes(nodes: &Api<Node>, n: usize) -> anyhow::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let status_params = PatchParams::apply(STATUS_FIELD_MANAGER).force();
    stream::iter(0..n)
        .map(|i| {
            let name = node_name(i);
            let node = json!({
                "apiVersion": "v1",
                "kind": "Node",
                // The labels every kubelet sets (the worker DaemonSet selects kubernetes.io/os=linux).
                "metadata": {"name": name, "labels": {
                    LOAD_LABEL: "true",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                }},
            });
            let resources = json!({"cpu": "8", "memory": "32Gi", "pods": "110"});
            let status = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated by status_load",
                        "lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                    }],
                },
            });
            let (params, status_params) = (&params, &status_params);
            async move {
                nodes
                    .patch(&name, params, &Patch::Apply(&node))
                    .await
                    .with_context(|| format!("applying Node {name}"))?;
                // Under a field manager of its own: an apply of the status by the manager that applied
                // the labels drops them on 1.20 (fields a manager's apply omits are removed).
                nodes
                    .patch_status(&name, status_params, &Patch::Apply(&status))
                    .await
                    .with_context(|| format!("applying the status of Node {name}"))
            }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await
}

async fn read_config(
    api: &Api<ConfigMap>,
    name: &str,
) -> anyhow::Result<(ConfigState, StatusCadence)> {
    let cm = api
        .get(name)
        .await
        .with_context(|| format!("ConfigMap {name}"))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .with_context(|| format!("ConfigMap {name} has no {CONFIG_KEY}"))?;
    let config = WorkerConfig::from_yaml(text)?.config;
    Ok((
        ConfigState {
            version: cm.resource_version(),
            refused: None,
        },
        config.status,
    ))
}

/// What the worker's ConfigMap watch does with a new config, for every simulated node.
fn publish_config(shared: &[Arc<Shared>], (state, cadence): &(ConfigState, StatusCadence)) {
    for s in shared {
        if s.config() != *state {
            s.set_cadence(*cadence);
            s.set_config(state.clone());
            s.changed.notify_one();
        }
    }
}

/// The ConfigMap as the workers follow it (they watch it; a poll every 5 s costs the same here).
async fn follow_config(api: Api<ConfigMap>, name: String, shared: Vec<Arc<Shared>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match read_config(&api, &name).await {
            Ok(state) => publish_config(&shared, &state),
            Err(e) => eprintln!("status_load: {e:#}"),
        }
    }
}

/// What each simulated capture loop publishes every second: a heartbeat, its taps, growing counters.
async fn simulate(
    shared: Vec<Arc<Shared>>,
    interfaces: usize,
    first_disconnected: Arc<AtomicBool>,
) {
    let tapped: Vec<InterfaceInfo> = (0..interfaces)
        .map(|i| InterfaceInfo {
            name: "eth0".into(),
            netns: Some(format!("{}", 4_026_532_000u64 + i as u64)),
            mode: CaptureMode::External,
        })
        .collect();
    for s in &shared {
        s.set_capture_running(true);
    }
    let mut round: u64 = 0;
    loop {
        round += 1;
        let now = SystemTime::now();
        for (i, s) in shared.iter().enumerate() {
            let mut snapshot = LoopSnapshot {
                tapped: tapped.clone(),
                scans: round / 10,
                ..LoopSnapshot::default()
            };
            // A busy node: a few hundred packets and a few pairs a second, different per node.
            let rate = 200 + (i as u64 % 50) * 10;
            snapshot.counters.packets = round * rate;
            snapshot.counters.bytes = round * rate * 700;
            snapshot.counters.flows = round * rate / 40;
            snapshot.counters.requests = round * rate / 20;
            snapshot.counters.responses = round * rate / 20;
            snapshot.counters.pairs_emitted = round * rate / 25;
            snapshot.sink.connected = Some(!(i == 0 && first_disconnected.load(Ordering::Relaxed)));
            s.publish_snapshot(snapshot);
            s.beat(now);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn cleanup(
    nodes: &Api<Node>,
    statuses: &Api<InterceptorStatus>,
    config: &str,
) -> anyhow::Result<()> {
    let dp = DeleteParams::default();
    nodes
        .delete_collection(
            &dp,
            &ListParams::default().labels(&format!("{LOAD_LABEL}=true")),
        )
        .await
        .context("deleting the Node objects")?;
    statuses
        .delete_collection(
            &dp,
            &ListParams::default().labels(&format!("{LABEL_CONFIG}={config}")),
        )
        .await
        .context("deleting the InterceptorStatus objects")?;
    println!("status_load: cleaned up");
    Ok(())
}
