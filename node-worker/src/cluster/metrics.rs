//! `/metrics`: the same counters as the InterceptorStatus, in the Prometheus text format. They are read
//! at scrape time from the capture loop's latest snapshot (a collector), so there is no second set of
//! counters to keep in step.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::pods::{IpTable, SharedPods};
use super::report::pod_of_interface;
use super::state::{LoopSnapshot, NetnsView, Shared};
use crate::stats::DropReason;

/// Metric name prefix.
pub const PREFIX: &str = "interceptor_worker";

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
}

#[derive(Debug)]
struct WorkerCollector {
    shared: Arc<Shared>,
    pods: SharedPods,
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn drops(encoder: &mut DescriptorEncoder<'_>, snapshot: &LoopSnapshot) -> fmt::Result {
    let mut by_reason: Vec<(&'static str, u64)> = DropReason::ALL
        .iter()
        .map(|r| (r.as_str(), snapshot.counters.drops(*r)))
        .collect();
    // The sink's outcomes are drops too (the pipeline hands pairs over; the sink loses them).
    for (reason, n) in [
        (DropReason::SinkFull, snapshot.sink.dropped_full),
        (DropReason::SinkFailed, snapshot.sink.failed),
        (DropReason::SinkPurged, snapshot.sink.purged),
    ] {
        if let Some(entry) = by_reason.iter_mut().find(|(r, _)| *r == reason.as_str()) {
            entry.1 += n;
        }
    }
    let mut family = encoder.encode_descriptor(
        "drops",
        "Pairs, messages, packets or connections given up on, by reason",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in by_reason {
        let labels = [("reason", reason)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One series per tapped interface, value 1: its pod, interface, mode, and the mesh detected in the pod
/// with what it was detected by (`none` and empty without a mesh).
fn tap_info(
    encoder: &mut DescriptorEncoder<'_>,
    snapshot: &LoopSnapshot,
    netns: &NetnsView,
    pods: &IpTable,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        "tap_info",
        "Each tapped interface (value 1): pod, interface, mode, and the service mesh detected and why",
        None,
        MetricType::Gauge,
    )?;
    for tap in &snapshot.taps.open {
        let pod = pod_of_interface(&tap.info, netns, pods);
        let mesh = tap.mesh.as_ref();
        let labels = [
            ("pod", pod.as_str()),
            ("interface", tap.info.name.as_str()),
            ("mode", tap.info.mode.as_str()),
            ("mesh", mesh.map_or("none", |m| m.kind.as_str())),
            ("mesh_reason", mesh.map_or("", |m| m.reason.as_str())),
        ];
        ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Connections a mesh redirected to its proxy, by what became of their real destination.
fn redirects(encoder: &mut DescriptorEncoder<'_>, snapshot: &LoopSnapshot) -> fmt::Result {
    let r = &snapshot.redirects;
    let mut family = encoder.encode_descriptor(
        "redirected_connections",
        "Connections a mesh redirected to its proxy on a pod's loopback, by outcome: destination from conntrack (resolved), not in conntrack (unknown), conntrack error, destination from the answers (learned), not tracked (table full)",
        None,
        MetricType::Counter,
    )?;
    for (outcome, n) in [
        ("resolved", r.resolved),
        ("learned", r.learned),
        ("unknown", r.unknown),
        ("error", r.errors),
        ("table_full", r.table_full),
    ] {
        ConstCounter::new(n).encode(family.encode_family(&[("outcome", outcome)])?)?;
    }
    Ok(())
}

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let config = self.shared.config();
        gauge(
            e,
            "config_loaded",
            "1 once a valid config.yaml is in use",
            u64::from(config.version.is_some()),
        )?;
        gauge(
            e,
            "config_refused",
            "1 while the ConfigMap's latest config.yaml is refused (the last good one stays)",
            u64::from(config.refused.is_some()),
        )?;
        gauge(
            e,
            "capture_running",
            "1 while the capture loop runs",
            u64::from(self.shared.capture_running()),
        )?;
        let pods = self.pods.current();
        gauge(
            e,
            "pod_addresses",
            "Pod addresses on this node known from the API",
            pods.len() as u64,
        )?;
        let Some(snapshot) = self.shared.snapshot() else {
            return Ok(());
        };
        let c = &snapshot.counters;
        counter(e, "packets", "Packets captured", c.packets)?;
        counter(e, "bytes", "Bytes of the packets captured", c.bytes)?;
        counter(e, "http_requests", "HTTP requests parsed", c.requests)?;
        counter(e, "http_responses", "HTTP responses parsed", c.responses)?;
        counter(
            e,
            "pairs_emitted",
            "Pairs that passed every rule and were handed to the sink",
            c.pairs_emitted,
        )?;
        counter(
            e,
            "pairs_sidecar_copies",
            "Second copies of exchanges between a pod and a sidecar pod of this node (the sidecar's inbound leg): not sent, the client's tap sent the exchange",
            c.pairs_sidecar_copies,
        )?;
        drops(e, &snapshot)?;
        for (name, help, n) in c.skipped_flows() {
            counter(e, name, help, n)?;
        }
        counter(
            e,
            "kernel_drops",
            "Packets the kernel dropped before the worker read them",
            snapshot.kernel_drops(),
        )?;
        let s = &snapshot.sink;
        counter(
            e,
            "kafka_delivered",
            "Pairs delivered to Kafka",
            s.delivered,
        )?;
        counter(
            e,
            "kafka_failed",
            "Pairs Kafka refused or that could not be delivered",
            s.failed,
        )?;
        counter(
            e,
            "kafka_purged",
            "Pairs purged because Kafka was unreachable longer than purgeAfter",
            s.purged,
        )?;
        counter(
            e,
            "kafka_dropped_full",
            "Pairs dropped because the Kafka buffer was full",
            s.dropped_full,
        )?;
        counter(
            e,
            "kafka_purges",
            "Times the Kafka buffer was purged",
            snapshot.purges,
        )?;
        gauge(
            e,
            "kafka_buffered_pairs",
            "Pairs waiting to be delivered",
            s.buffered_pairs,
        )?;
        gauge(
            e,
            "kafka_buffered_bytes",
            "Bytes of pairs waiting to be delivered",
            s.buffered_bytes,
        )?;
        gauge(
            e,
            "kafka_connected",
            "1 while a Kafka broker connection is up",
            u64::from(s.connected == Some(true)),
        )?;
        gauge(
            e,
            "tapped_interfaces",
            "Interfaces being captured",
            snapshot.tapped.len() as u64,
        )?;
        let netns = self.shared.netns();
        let mut tapped_pods: Vec<String> = snapshot
            .tapped
            .iter()
            .map(|i| pod_of_interface(i, &netns, &pods))
            .collect();
        tapped_pods.sort_unstable();
        tapped_pods.dedup();
        gauge(
            e,
            "tapped_pods",
            "Pods (network namespaces) with a tapped interface",
            tapped_pods.len() as u64,
        )?;
        tap_info(e, &snapshot, &netns, &pods)?;
        redirects(e, &snapshot)?;
        counter(
            e,
            "tap_open_failures",
            "Interfaces that could not be opened for capture",
            snapshot.taps.open_failures,
        )?;
        counter(
            e,
            "scans",
            "Scans of the host's network namespaces",
            snapshot.scans,
        )?;
        Ok(())
    }
}

impl Metrics {
    pub fn new(shared: Arc<Shared>, pods: SharedPods) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(WorkerCollector { shared, pods }));
        Metrics { registry }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Mesh, MeshKind};
    use crate::sink::SinkStats;
    use crate::source::live::{TapCounters, TapStats};
    use crate::source::{CaptureMode, InterfaceInfo, LinkType};

    #[test]
    fn the_exposition_has_the_status_counters() {
        let shared = Shared::new();
        let metrics = Metrics::new(Arc::clone(&shared), SharedPods::default());
        let text = metrics.encode();
        assert!(
            text.contains("interceptor_worker_config_loaded 0"),
            "{text}"
        );
        assert!(!text.contains("interceptor_worker_packets"), "{text}");

        let mut snapshot = LoopSnapshot::default();
        snapshot.counters.packets = 12;
        snapshot.counters.pairs_emitted = 3;
        snapshot.counters.add_drops(DropReason::StatusCode, 2);
        snapshot.counters.flows_tunneled = 4;
        snapshot.sink = SinkStats {
            delivered: 2,
            purged: 1,
            buffered_pairs: 1,
            connected: Some(true),
            ..SinkStats::default()
        };
        snapshot.tapped = vec![InterfaceInfo {
            name: "eth0".into(),
            netns: Some("5".into()),
            mode: CaptureMode::External,
        }];
        let tap = |name: &str, netns: &str, mode, mesh| TapStats {
            info: InterfaceInfo {
                name: name.into(),
                netns: Some(netns.into()),
                mode,
            },
            link_type: LinkType::ETHERNET,
            mesh,
            counters: TapCounters::default(),
        };
        snapshot.taps.open = vec![
            tap("eth0", "5", CaptureMode::External, None),
            tap(
                "lo",
                "6",
                CaptureMode::Loopback,
                Some(Mesh::new(MeshKind::Linkerd, "native sidecar linkerd-proxy")),
            ),
        ];
        snapshot.redirects.resolved = 4;
        snapshot.redirects.unknown = 1;
        shared.publish_snapshot(snapshot);
        let text = metrics.encode();
        for line in [
            "# TYPE interceptor_worker_packets_total counter",
            "interceptor_worker_packets_total 12",
            "interceptor_worker_pairs_emitted_total 3",
            "interceptor_worker_drops_total{reason=\"status_code\"} 2",
            "interceptor_worker_drops_total{reason=\"sink_purged\"} 1",
            "interceptor_worker_drops_total{reason=\"content_type\"} 0",
            "interceptor_worker_kafka_delivered_total 2",
            "interceptor_worker_kafka_buffered_pairs 1",
            "interceptor_worker_kafka_connected 1",
            "interceptor_worker_tapped_interfaces 1",
            "interceptor_worker_tapped_pods 1",
            "interceptor_worker_kernel_drops_total 0",
            "interceptor_worker_flows_tunneled_total 4",
            "interceptor_worker_flows_upgraded_total 0",
            "interceptor_worker_flows_not_http_total 0",
            "interceptor_worker_tap_info{pod=\"netns:5\",interface=\"eth0\",mode=\"external\",mesh=\"none\",mesh_reason=\"\"} 1",
            "interceptor_worker_tap_info{pod=\"netns:6\",interface=\"lo\",mode=\"loopback\",mesh=\"linkerd\",mesh_reason=\"native sidecar linkerd-proxy\"} 1",
            "interceptor_worker_redirected_connections_total{outcome=\"resolved\"} 4",
            "interceptor_worker_redirected_connections_total{outcome=\"unknown\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            text.contains(
                "# HELP interceptor_worker_flows_tunneled_total CONNECT tunnels that are not"
            ),
            "each skipped-connection counter says what it means: {text}"
        );
    }
}
