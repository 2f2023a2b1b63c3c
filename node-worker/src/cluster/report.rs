//! The node's report (the `status` of its InterceptorStatus) from what the worker knows: pure, so that
//! every phase and every counter is tested without an API server.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use interceptor_crds::interceptor_status::{
    KafkaState, MeshMode, NodeCounters, NodePhase, NodeReport, TapMode, TapState, TappedInterface,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::pods::IpTable;
use super::state::{ConfigState, LoopSnapshot, NetnsView};
use crate::discovery::{Mesh, MeshKind};
use crate::source::{CaptureMode, InterfaceInfo};
use crate::stats::DropReason;

/// Everything a report is made of.
#[derive(Clone, Copy, Debug)]
pub struct ReportInput<'a> {
    pub now: Timestamp,
    pub stopping: bool,
    pub capture_running: bool,
    /// The capture loop has not gone round for too long.
    pub loop_stalled: bool,
    pub config: &'a ConfigState,
    pub snapshot: Option<&'a LoopSnapshot>,
    pub netns: &'a NetnsView,
    pub pods: &'a IpTable,
    /// Packets the kernel dropped recently (see [`DropWindow`]).
    pub recent_kernel_drops: u64,
}

/// `namespace/name` of the pod whose network namespace an interface is in; for a namespace no pod is
/// known for, `netns:<inode>`.
pub fn pod_of_interface(info: &InterfaceInfo, netns: &NetnsView, pods: &IpTable) -> String {
    let label = info.netns.as_deref().unwrap_or("host");
    netns
        .addresses_of(label)
        .and_then(|addresses| addresses.iter().find_map(|ip| pods.pod(ip)))
        .map(|p| p.key())
        .unwrap_or_else(|| format!("netns:{label}"))
}

fn tapped_interfaces(
    snapshot: &LoopSnapshot,
    netns: &NetnsView,
    pods: &IpTable,
) -> Vec<TappedInterface> {
    let mesh_of = |info: &InterfaceInfo| -> Option<&Mesh> {
        snapshot
            .taps
            .open
            .iter()
            .find(|t| t.info == *info)
            .and_then(|t| t.mesh.as_ref())
    };
    let entry = |info: &InterfaceInfo, state: TapState, message: Option<&String>| {
        let mesh = mesh_of(info);
        TappedInterface {
            pod: pod_of_interface(info, netns, pods),
            interface: info.name.clone(),
            mode: match info.mode {
                CaptureMode::Loopback => TapMode::Loopback,
                CaptureMode::External | CaptureMode::File => TapMode::External,
            },
            state,
            message: message.cloned(),
            mesh: mesh.map(|m| mesh_mode(m.kind)),
            mesh_reason: mesh.map(|m| m.reason.clone()),
        }
    };
    let mut interfaces: Vec<TappedInterface> = snapshot
        .tapped
        .iter()
        .map(|info| entry(info, TapState::Active, None))
        .chain(
            snapshot
                .failed
                .iter()
                .map(|(info, reason)| entry(info, TapState::Failed, Some(reason))),
        )
        .collect();
    interfaces.sort_by(|a, b| (&a.pod, &a.interface).cmp(&(&b.pod, &b.interface)));
    interfaces
}

/// The status's name of a mesh.
pub fn mesh_mode(kind: MeshKind) -> MeshMode {
    match kind {
        MeshKind::Istio => MeshMode::Istio,
        MeshKind::IstioAmbient => MeshMode::IstioAmbient,
        MeshKind::Linkerd => MeshMode::Linkerd,
    }
}

/// Drops by reason: the pipeline's, and the sink's outcomes (buffer full, failed, purged).
fn drops(snapshot: &LoopSnapshot) -> BTreeMap<String, u64> {
    let mut drops: BTreeMap<String, u64> = snapshot
        .counters
        .drops_by_reason()
        .map(|(r, n)| (r.as_str().to_string(), n))
        .collect();
    let sink = &snapshot.sink;
    for (reason, n) in [
        (DropReason::SinkFull, sink.dropped_full),
        (DropReason::SinkFailed, sink.failed),
        (DropReason::SinkPurged, sink.purged),
    ] {
        if n > 0 {
            *drops.entry(reason.as_str().to_string()).or_default() += n;
        }
    }
    drops
}

/// The phase, and why.
fn phase(input: &ReportInput<'_>) -> (NodePhase, Option<String>) {
    if input.stopping {
        return (
            NodePhase::Stopping,
            Some("shutting down: flushing buffered pairs".into()),
        );
    }
    let mut problems = Vec::new();
    if let Some(refused) = &input.config.refused {
        problems.push(refused.clone());
    }
    if !input.capture_running {
        return match problems.is_empty() {
            true => (
                NodePhase::Starting,
                Some(match input.config.version {
                    None => "waiting for the config".to_string(),
                    Some(_) => "starting capture".to_string(),
                }),
            ),
            false => (NodePhase::Degraded, Some(problems.join("; "))),
        };
    }
    if input.loop_stalled {
        problems.push("the capture loop is stalled".into());
    }
    if let Some(snapshot) = input.snapshot {
        if snapshot.sink.connected == Some(false) {
            // The error itself is in kafka.lastError: librdkafka's wording varies while Kafka is down, and
            // a message that changes is a significant change (a status write) each time.
            problems.push("Kafka unreachable (see kafka.lastError)".to_string());
        }
    }
    if input.recent_kernel_drops > 0 {
        problems.push("the kernel is dropping packets (capture does not keep up)".into());
    }
    match problems.is_empty() {
        true => (NodePhase::Running, None),
        false => (NodePhase::Degraded, Some(problems.join("; "))),
    }
}

pub fn build_report(input: &ReportInput<'_>) -> NodeReport {
    let (phase, message) = phase(input);
    let mut report = NodeReport {
        last_heartbeat: Some(Time(input.now)),
        phase: Some(phase),
        message,
        config_version: input.config.version.clone(),
        ..NodeReport::default()
    };
    if let Some(snapshot) = input.snapshot {
        report.set_interfaces(tapped_interfaces(snapshot, input.netns, input.pods));
        report.counters = NodeCounters {
            packets: snapshot.counters.packets,
            bytes: snapshot.counters.bytes,
            pairs_emitted: snapshot.counters.pairs_emitted,
            kernel_drops: snapshot.kernel_drops(),
            ..NodeCounters::default()
        };
        report.set_drops(drops(snapshot));
        report.kafka = KafkaState {
            connected: snapshot.sink.connected.unwrap_or(false),
            buffered_bytes: snapshot.sink.buffered_bytes,
            purges: snapshot.purges,
            last_error: snapshot.sink.last_error.clone(),
        };
    }
    report
}

/// What makes a report worth writing before the heartbeat is due: a change of phase, message, config,
/// tapped interfaces or Kafka connectivity (counters alone wait for the heartbeat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Significant {
    phase: Option<NodePhase>,
    message: Option<String>,
    config_version: Option<String>,
    interfaces: Vec<(String, String, TapMode, TapState)>,
    kafka_connected: bool,
}

impl Significant {
    pub fn of(report: &NodeReport) -> Significant {
        Significant {
            phase: report.phase,
            message: report.message.clone(),
            config_version: report.config_version.clone(),
            interfaces: report
                .interfaces
                .iter()
                .map(|i| (i.pod.clone(), i.interface.clone(), i.mode, i.state))
                .collect(),
            kafka_connected: report.kafka.connected,
        }
    }
}

/// Kernel drops over a sliding window, so that a burst marks the node Degraded for a while rather
/// than forever (counters only grow) or for one report.
#[derive(Clone, Debug)]
pub struct DropWindow {
    window: Duration,
    samples: VecDeque<(Duration, u64)>,
}

impl DropWindow {
    pub fn new(window: Duration) -> DropWindow {
        DropWindow {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Records the running total at `at` (time since any fixed start) and returns the drops within the
    /// window.
    pub fn record(&mut self, at: Duration, total: u64) -> u64 {
        // Keep one sample from before the window: the baseline the drops within it are counted from.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| at.saturating_sub(*t) >= self.window)
        {
            self.samples.pop_front();
        }
        let oldest = self.samples.front().map_or(total, |(_, n)| *n);
        if self.samples.back().is_none_or(|(_, n)| *n != total) {
            self.samples.push_back((at, total));
        }
        total.saturating_sub(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pods::{pod_info, PodIndex};
    use crate::discovery::NetnsId;
    use crate::sink::SinkStats;
    use crate::source::live::{KernelStats, TapCounters, TapStats, TapsStats};
    use crate::source::LinkType;
    use k8s_openapi::api::core::v1::{Pod, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn table() -> IpTable {
        let mut index = PodIndex::default();
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("web-1".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: Some("10.1.0.5".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        index.apply(pod_info(&pod).unwrap());
        index.ip_table()
    }

    fn view() -> NetnsView {
        NetnsView {
            namespaces: vec![
                (
                    NetnsId { dev: 4, ino: 11 },
                    vec!["10.1.0.5".parse().unwrap()],
                ),
                (
                    NetnsId { dev: 4, ino: 12 },
                    vec!["10.1.0.6".parse().unwrap()],
                ),
            ],
        }
    }

    fn snapshot() -> LoopSnapshot {
        let mut s = LoopSnapshot::default();
        s.counters.packets = 100;
        s.counters.bytes = 6400;
        s.counters.pairs_emitted = 7;
        s.counters.add_drops(DropReason::ContentType, 3);
        s.counters.add_drops(DropReason::SinkFailed, 1);
        s.sink = SinkStats {
            accepted: 7,
            delivered: 4,
            failed: 1,
            purged: 2,
            buffered_bytes: 512,
            connected: Some(true),
            ..SinkStats::default()
        };
        s.purges = 1;
        s.taps = TapsStats {
            closed: TapCounters {
                kernel: KernelStats {
                    dropped: 5,
                    if_dropped: 1,
                    received: 0,
                },
                ..TapCounters::default()
            },
            open: vec![TapStats {
                info: InterfaceInfo {
                    name: "lo".into(),
                    netns: Some("12".into()),
                    mode: CaptureMode::Loopback,
                },
                link_type: LinkType::ETHERNET,
                mesh: Some(Mesh::new(
                    MeshKind::IstioAmbient,
                    "annotation ambient.istio.io/redirection=enabled",
                )),
                counters: TapCounters::default(),
            }],
            ..TapsStats::default()
        };
        s.tapped = vec![
            InterfaceInfo {
                name: "lo".into(),
                netns: Some("12".into()),
                mode: CaptureMode::Loopback,
            },
            InterfaceInfo {
                name: "eth0".into(),
                netns: Some("11".into()),
                mode: CaptureMode::External,
            },
        ];
        s.failed = vec![(
            InterfaceInfo {
                name: "eth1".into(),
                netns: Some("11".into()),
                mode: CaptureMode::External,
            },
            "permission denied".into(),
        )];
        s
    }

    fn input<'a>(
        config: &'a ConfigState,
        snapshot: Option<&'a LoopSnapshot>,
        netns: &'a NetnsView,
        pods: &'a IpTable,
    ) -> ReportInput<'a> {
        ReportInput {
            now: now(),
            stopping: false,
            capture_running: true,
            loop_stalled: false,
            config,
            snapshot,
            netns,
            pods,
            recent_kernel_drops: 0,
        }
    }

    #[test]
    fn a_running_node_reports_interfaces_counters_drops_and_kafka() {
        let config = ConfigState {
            version: Some("42".into()),
            refused: None,
        };
        let (snapshot, netns, pods) = (snapshot(), view(), table());
        let report = build_report(&input(&config, Some(&snapshot), &netns, &pods));
        assert_eq!(report.phase, Some(NodePhase::Running));
        assert_eq!(report.message, None);
        assert_eq!(report.config_version.as_deref(), Some("42"));
        assert_eq!(report.last_heartbeat, Some(Time(now())));
        let interfaces: Vec<_> = report
            .interfaces
            .iter()
            .map(|i| (i.pod.as_str(), i.interface.as_str(), i.mode, i.state))
            .collect();
        assert_eq!(
            interfaces,
            vec![
                ("netns:12", "lo", TapMode::Loopback, TapState::Active),
                ("shop/web-1", "eth0", TapMode::External, TapState::Active),
                ("shop/web-1", "eth1", TapMode::External, TapState::Failed),
            ]
        );
        assert_eq!(
            report.interfaces[2].message.as_deref(),
            Some("permission denied")
        );
        // Per tapped interface: the mesh and why.
        let meshes: Vec<_> = report
            .interfaces
            .iter()
            .map(|i| (i.mesh, i.mesh_reason.as_deref()))
            .collect();
        assert_eq!(
            meshes,
            vec![
                (
                    Some(MeshMode::IstioAmbient),
                    Some("annotation ambient.istio.io/redirection=enabled")
                ),
                (None, None),
                (None, None),
            ]
        );
        assert_eq!(report.pods_tapped, 2, "pods with an active tap");
        assert_eq!(
            (
                report.counters.packets,
                report.counters.bytes,
                report.counters.pairs_emitted
            ),
            (100, 6400, 7)
        );
        assert_eq!(report.counters.kernel_drops, 6);
        assert_eq!(
            report.counters.drops,
            BTreeMap::from([
                ("content_type".to_string(), 3),
                ("sink_failed".to_string(), 2),
                ("sink_purged".to_string(), 2),
            ])
        );
        assert_eq!(report.counters.drops_total, 7);
        assert_eq!(
            report.kafka,
            KafkaState {
                connected: true,
                buffered_bytes: 512,
                purges: 1,
                last_error: None
            }
        );
    }

    #[test]
    fn phases_follow_config_kafka_kernel_and_shutdown() {
        let (netns, pods) = (view(), table());
        let none = ConfigState::default();
        let mut i = input(&none, None, &netns, &pods);
        i.capture_running = false;
        let r = build_report(&i);
        assert_eq!(r.phase, Some(NodePhase::Starting));
        assert_eq!(r.message.as_deref(), Some("waiting for the config"));

        let refused = ConfigState {
            version: None,
            refused: Some("config.yaml of resourceVersion 3 refused: bad".into()),
        };
        let mut i = input(&refused, None, &netns, &pods);
        i.capture_running = false;
        let r = build_report(&i);
        assert_eq!(r.phase, Some(NodePhase::Degraded));
        assert!(r.message.unwrap().contains("refused: bad"));

        let mut down = snapshot();
        down.sink.connected = Some(false);
        down.sink.last_error = Some("all brokers down".into());
        let good = ConfigState {
            version: Some("1".into()),
            refused: None,
        };
        let mut i = input(&good, Some(&down), &netns, &pods);
        i.recent_kernel_drops = 9;
        let r = build_report(&i);
        assert_eq!(r.phase, Some(NodePhase::Degraded));
        assert_eq!(
            r.message.as_deref(),
            Some("Kafka unreachable (see kafka.lastError); the kernel is dropping packets (capture does not keep up)")
        );
        assert!(!r.kafka.connected);

        i.stopping = true;
        assert_eq!(build_report(&i).phase, Some(NodePhase::Stopping));
    }

    #[test]
    fn significance_ignores_counters_but_not_phase_or_interfaces() {
        let config = ConfigState::default();
        let (netns, pods) = (view(), table());
        let mut s = snapshot();
        let a = Significant::of(&build_report(&input(&config, Some(&s), &netns, &pods)));
        s.counters.packets += 1000;
        s.sink.delivered += 10;
        let b = Significant::of(&build_report(&input(&config, Some(&s), &netns, &pods)));
        assert_eq!(a, b);
        s.tapped.pop();
        let c = Significant::of(&build_report(&input(&config, Some(&s), &netns, &pods)));
        assert_ne!(a, c);
    }

    #[test]
    fn kernel_drops_count_within_the_window_only() {
        let mut w = DropWindow::new(Duration::from_secs(60));
        let s = Duration::from_secs;
        assert_eq!(w.record(s(0), 0), 0);
        assert_eq!(w.record(s(10), 5), 5);
        assert_eq!(w.record(s(50), 5), 5);
        assert_eq!(
            w.record(s(65), 7),
            7,
            "counted from the last sample before the window"
        );
        assert_eq!(
            w.record(s(75), 7),
            2,
            "the 5 drops before 10 s are out of the window"
        );
        assert_eq!(w.record(s(200), 7), 0);
    }
}
