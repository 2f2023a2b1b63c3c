//! Prometheus metrics of the operator: reconciles, failures by reason, duration, leadership.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Histogram,
    pub leader: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub stale_reports_deleted: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("interceptor_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let leader = Gauge::default();
        let stale_reports_deleted = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles of InterceptorConfigs",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "stale_reports_deleted",
            "InterceptorStatus objects deleted because their node is gone",
            stale_reports_deleted.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            stale_reports_deleted,
        }
    }
}

impl Metrics {
    /// Count one reconcile and how it ended (`None`: success, `Some(reason)`: failure).
    pub fn observe(&self, failure: Option<&str>, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&FailureLabels {
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counts_and_reasons() {
        let m = Metrics::default();
        m.observe(None, Duration::from_millis(3));
        m.observe(Some("apply"), Duration::from_millis(30));
        let text = m.encode();
        assert!(
            text.contains("interceptor_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains("interceptor_operator_reconcile_failures_total{reason=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("interceptor_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
