//! How often each worker writes its InterceptorStatus, chosen by the operator from the number of nodes
//! the workers run on, so that the status traffic of the whole cluster stays within a fixed budget.
//!
//! Every worker writes its status as a heartbeat and soon after a significant change. With a fixed 20 s
//! heartbeat, 5 000 nodes would make 250 writes a second, more than the kubelets' own node Leases
//! (5 000 / 10 s = 500 small writes a second, which Kubernetes sized with care). Here the heartbeat
//! doubles each time the cluster outgrows what [`HEARTBEAT_WRITES_PER_SECOND`] allows at the current
//! one: 20 s up to 500 nodes (as before), 40 s up to 1 000, ..., 320 s up to 8 000. The operator writes
//! the cadence into the worker's `config.yaml` (section `status`) and reads heartbeats with
//! [`StatusCadence::heartbeat_timeout`], so both always agree.
//!
//! Steps rather than a smooth curve: a new cadence is a new `config.yaml`, which every worker reports
//! once (one write per node). Steps make that happen a handful of times in a cluster's life, and the
//! step down waits until the cluster is clearly smaller ([`SHRINK_BELOW`]), so a cluster that autoscales
//! around a boundary does not pay it back and forth.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The heartbeat of a small cluster: what the worker contract always said (at least every 20 s).
pub const BASE_HEARTBEAT_SECONDS: u64 = 20;
/// The heartbeat writes per second the whole cluster may make: a twentieth of the kubelets' Leases at
/// 5 000 nodes. Writes after a change come on top; each node makes at most one per
/// [`StatusCadence::min_interval_seconds`].
pub const HEARTBEAT_WRITES_PER_SECOND: u64 = 25;
/// The longest heartbeat (20 s doubled six times: 21 minutes, for 32 000 nodes and more).
pub const MAX_HEARTBEAT_SECONDS: u64 = BASE_HEARTBEAT_SECONDS << 6;
/// A heartbeat this many times older than the cadence marks the worker as not reporting (3 missed
/// writes: 60 s at the base cadence, as before).
pub const MISSED_HEARTBEATS: u32 = 3;
/// The cadence steps down only once the cluster fits the smaller step with this much room (percent).
pub const SHRINK_BELOW: u64 = 80;

/// The worker's status cadence: `status` in `config.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusCadence {
    /// The heartbeat: the InterceptorStatus is written at least this often.
    pub heartbeat_seconds: u64,
    /// Two writes are never closer than this, whatever changes (a quarter of the heartbeat).
    pub min_interval_seconds: u64,
}

impl Default for StatusCadence {
    fn default() -> Self {
        StatusCadence::with_heartbeat(BASE_HEARTBEAT_SECONDS)
    }
}

impl StatusCadence {
    fn with_heartbeat(heartbeat_seconds: u64) -> StatusCadence {
        StatusCadence {
            heartbeat_seconds,
            min_interval_seconds: (heartbeat_seconds / 4).max(1),
        }
    }

    /// The cadence for workers on `nodes` nodes, given the one they run with now (`current`, if any).
    /// Pure: the same inputs always give the same cadence.
    pub fn for_nodes(nodes: usize, current: Option<StatusCadence>) -> StatusCadence {
        let nodes = nodes as u64;
        let mut heartbeat = BASE_HEARTBEAT_SECONDS;
        while heartbeat < MAX_HEARTBEAT_SECONDS && nodes > capacity(heartbeat) {
            heartbeat *= 2;
        }
        // Staying on a longer heartbeat than needed: until the cluster fits the shorter one with room.
        // A cadence that is not one of the steps (written by hand) is not kept.
        let kept = current
            .map(|c| c.heartbeat_seconds)
            .filter(|&h| h > heartbeat && h <= MAX_HEARTBEAT_SECONDS && is_step(h));
        if let Some(longest) = kept {
            while heartbeat < longest && nodes * 100 > capacity(heartbeat) * SHRINK_BELOW {
                heartbeat *= 2;
            }
        }
        StatusCadence::with_heartbeat(heartbeat)
    }

    /// How old a heartbeat may be before its worker counts as not reporting.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(
            self.heartbeat_seconds
                .saturating_mul(MISSED_HEARTBEATS.into()),
        )
    }

    /// The heartbeat writes per second `nodes` workers make at this cadence.
    pub fn heartbeat_writes_per_second(&self, nodes: usize) -> f64 {
        nodes as f64 / self.heartbeat_seconds.max(1) as f64
    }

    /// Why this cadence cannot be used, if it cannot: the field (in `config.yaml`) and the reason.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.min_interval_seconds == 0 {
            return Err(("status.minIntervalSeconds", "must be positive".into()));
        }
        if self.heartbeat_seconds < self.min_interval_seconds {
            return Err((
                "status.heartbeatSeconds",
                format!(
                    "{} is shorter than status.minIntervalSeconds ({})",
                    self.heartbeat_seconds, self.min_interval_seconds
                ),
            ));
        }
        if self.heartbeat_seconds > MAX_HEARTBEAT_SECONDS {
            return Err((
                "status.heartbeatSeconds",
                format!(
                    "{} is above {MAX_HEARTBEAT_SECONDS}",
                    self.heartbeat_seconds
                ),
            ));
        }
        Ok(())
    }
}

/// The nodes a heartbeat serves within the budget.
fn capacity(heartbeat_seconds: u64) -> u64 {
    heartbeat_seconds * HEARTBEAT_WRITES_PER_SECOND
}

/// Whether `heartbeat_seconds` is one of the steps (a cadence written by hand may not be: then it is
/// not kept).
fn is_step(heartbeat_seconds: u64) -> bool {
    heartbeat_seconds.is_multiple_of(BASE_HEARTBEAT_SECONDS)
        && (heartbeat_seconds / BASE_HEARTBEAT_SECONDS).is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(nodes: usize, current: Option<u64>) -> u64 {
        StatusCadence::for_nodes(nodes, current.map(StatusCadence::with_heartbeat))
            .heartbeat_seconds
    }

    #[test]
    fn small_clusters_keep_the_twenty_seconds_of_the_contract() {
        for nodes in [0, 1, 3, 100, 500] {
            let c = StatusCadence::for_nodes(nodes, None);
            assert_eq!(c, StatusCadence::default(), "{nodes} nodes");
            assert_eq!(c.heartbeat_seconds, 20);
            assert_eq!(c.min_interval_seconds, 5);
            assert_eq!(c.heartbeat_timeout(), Duration::from_secs(60));
        }
    }

    #[test]
    fn the_heartbeat_doubles_as_the_cluster_outgrows_the_budget() {
        let steps = [
            (501, 40),
            (1_000, 40),
            (1_001, 80),
            (2_000, 80),
            (4_000, 160),
            (5_000, 320),
            (8_000, 320),
            (8_001, 640),
            (32_000, 1_280),
            (1_000_000, 1_280),
        ];
        for (nodes, expected) in steps {
            assert_eq!(heartbeat(nodes, None), expected, "{nodes} nodes");
        }
    }

    #[test]
    fn the_budget_holds_up_to_the_longest_heartbeat() {
        for nodes in (0..=32_000).step_by(250) {
            let c = StatusCadence::for_nodes(nodes, None);
            let rate = c.heartbeat_writes_per_second(nodes);
            assert!(
                rate <= HEARTBEAT_WRITES_PER_SECOND as f64,
                "{nodes} nodes: {rate} writes/s"
            );
            // Never more than twice as slow as the budget needs (one step).
            assert!(
                nodes <= 500 || rate > HEARTBEAT_WRITES_PER_SECOND as f64 / 2.0,
                "{nodes} nodes: {rate} writes/s is needlessly slow"
            );
            assert_eq!(c.check(), Ok(()));
        }
    }

    #[test]
    fn five_thousand_nodes_write_a_twentieth_of_the_kubelets_leases() {
        let c = StatusCadence::for_nodes(5_000, None);
        let leases_per_second = 5_000.0 / 10.0;
        let heartbeats = c.heartbeat_writes_per_second(5_000);
        assert!(
            heartbeats <= leases_per_second / 20.0,
            "{heartbeats} writes/s"
        );
        // Writes after changes come on top, at most one per node and min interval.
        assert_eq!(c.min_interval_seconds, 80);
        assert_eq!(c.heartbeat_timeout(), Duration::from_secs(960));
    }

    #[test]
    fn stepping_down_waits_until_the_cluster_is_clearly_smaller() {
        // At 1 000 nodes with 80 s (grown past 1 000 then shrunk back): 40 s would fit exactly, but
        // without room, so 80 s stays; at 800 (80 % of 40 s's 1 000) it steps down.
        assert_eq!(heartbeat(1_000, Some(80)), 80);
        assert_eq!(heartbeat(801, Some(80)), 80);
        assert_eq!(heartbeat(800, Some(80)), 40);
        // Several steps at once when the cluster shrank a lot.
        assert_eq!(heartbeat(10, Some(320)), 20);
        assert_eq!(
            heartbeat(900, Some(320)),
            80,
            "fits 80 s with room, not 40 s"
        );
        // Growing is never held back.
        assert_eq!(heartbeat(1_001, Some(40)), 80);
        // A cadence that is not a step (written by hand) is not kept.
        assert_eq!(heartbeat(1_000, Some(70)), 40);
        // Nor one above the longest step.
        assert_eq!(heartbeat(1_000, Some(1_280)), 80);
        assert_eq!(heartbeat(1_000, Some(2_560)), 40);
    }

    #[test]
    fn cadences_are_checked() {
        let bad = |h, m| {
            StatusCadence {
                heartbeat_seconds: h,
                min_interval_seconds: m,
            }
            .check()
        };
        assert!(bad(20, 0).is_err());
        assert!(bad(4, 5).is_err());
        assert!(bad(MAX_HEARTBEAT_SECONDS + 1, 5).is_err());
        assert_eq!(bad(1, 1), Ok(()));
    }
}
