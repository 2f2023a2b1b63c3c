//! Writes the node's InterceptorStatus by server-side apply (field manager `interceptor-worker`): the
//! object once (name, labels, ownerReference to the InterceptorConfig, spec), then its `status`
//! subresource as a heartbeat every `period` and soon after a significant change, never twice within
//! `min_gap`, so that a thousand workers cost the API server a few writes a second in all.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use interceptor_crds::interceptor_status::{NodeReport, OwnerConfig};
use interceptor_crds::status_cadence::StatusCadence;
use interceptor_crds::worker_env::STATUS_FIELD_MANAGER;
use interceptor_crds::InterceptorStatus;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use super::pods::SharedPods;
use super::report::{build_report, DropWindow, ReportInput, Significant};
use super::state::Shared;

/// How often the status is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// The heartbeat: a write at least this often (the operator counts a node as reporting while its
    /// heartbeat is younger than three of these).
    pub period: Duration,
    /// Never two writes closer than this, whatever changes.
    pub min_gap: Duration,
    /// How often the report is rebuilt to look for significant changes.
    pub check_every: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing::of(StatusCadence::default())
    }
}

impl Pacing {
    /// The pacing of a cadence from `config.yaml`.
    pub fn of(cadence: StatusCadence) -> Pacing {
        Pacing {
            period: Duration::from_secs(cadence.heartbeat_seconds),
            min_gap: Duration::from_secs(cadence.min_interval_seconds),
            check_every: Duration::from_secs(1),
        }
    }
}

/// What the command line says of the pacing (`--status-interval-seconds` and
/// `--status-min-interval-seconds`): each, when given, wins over the cadence `config.yaml` gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacingOverride {
    pub period: Option<Duration>,
    pub min_gap: Option<Duration>,
    pub check_every: Option<Duration>,
}

impl PacingOverride {
    /// This pacing whatever the config says (tests).
    pub fn fixed(pacing: Pacing) -> PacingOverride {
        PacingOverride {
            period: Some(pacing.period),
            min_gap: Some(pacing.min_gap),
            check_every: Some(pacing.check_every),
        }
    }

    /// The pacing for `cadence` (the base one before any config arrived).
    pub fn apply(&self, cadence: Option<StatusCadence>) -> Pacing {
        let mut pacing = Pacing::of(cadence.unwrap_or_default());
        if let Some(period) = self.period {
            pacing.period = period;
        }
        if let Some(min_gap) = self.min_gap {
            pacing.min_gap = min_gap;
        }
        if let Some(check_every) = self.check_every {
            pacing.check_every = check_every;
        }
        // A heartbeat given on the command line may be shorter than the config's minimum gap.
        pacing.min_gap = pacing.min_gap.min(pacing.period);
        pacing
    }
}

/// When to write (pure: time is given).
#[derive(Clone, Debug)]
pub struct Pacer {
    pacing: Pacing,
    last_attempt: Option<Instant>,
    written: Option<Significant>,
    failures: u32,
}

impl Pacer {
    pub fn new(pacing: Pacing) -> Pacer {
        Pacer {
            pacing,
            last_attempt: None,
            written: None,
            failures: 0,
        }
    }

    /// A new cadence (from a new config) counts from the last write.
    pub fn set_pacing(&mut self, pacing: Pacing) {
        self.pacing = pacing;
    }

    pub fn pacing(&self) -> Pacing {
        self.pacing
    }

    /// When a report with `significant` is due (may be in the past: due now).
    pub fn due(&self, now: Instant, significant: &Significant) -> Instant {
        let Some(last) = self.last_attempt else {
            return now;
        };
        let wait = if self.failures > 0 {
            // Retry a failed write with a backoff that grows to the heartbeat period.
            let factor = 1u32 << self.failures.saturating_sub(1).min(16);
            self.pacing
                .min_gap
                .saturating_mul(factor)
                .min(self.pacing.period)
        } else if self.written.as_ref() != Some(significant) {
            self.pacing.min_gap
        } else {
            self.pacing.period
        };
        last + wait
    }

    /// The earliest any write may happen (the last one before exit).
    pub fn earliest(&self, now: Instant) -> Instant {
        match self.last_attempt {
            Some(last) => (last + self.pacing.min_gap).max(now),
            None => now,
        }
    }

    pub fn wrote(&mut self, at: Instant, significant: Significant) {
        self.last_attempt = Some(at);
        self.written = Some(significant);
        self.failures = 0;
    }

    pub fn failed(&mut self, at: Instant) {
        self.last_attempt = Some(at);
        self.failures = self.failures.saturating_add(1);
    }
}

/// Writes the status of one node.
pub struct StatusWriter {
    pub api: Api<InterceptorStatus>,
    pub owner: OwnerConfig,
    pub node: String,
    pub shared: Arc<Shared>,
    pub pods: SharedPods,
    /// What the command line fixes of the pacing; the rest follows `config.yaml`.
    pub pacing: PacingOverride,
    /// The capture loop counts as stalled after this long without a round.
    pub stall_after: Duration,
    /// The wall clock for `lastHeartbeat` (fixed in tests).
    pub clock: fn() -> Timestamp,
}

/// Why a write of the InterceptorStatus failed (it is retried with a backoff).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Api(kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Kernel drops within this window mark the node Degraded.
const KERNEL_DROP_WINDOW: Duration = Duration::from_secs(60);

/// One write may take this long at most (then it counts as failed and is retried).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl StatusWriter {
    /// The object's name, `<config>-<node>`.
    pub fn name(&self) -> String {
        InterceptorStatus::object_name(&self.owner.name, &self.node)
    }

    /// Writes until `done` turns true, then writes once more (the last report, after the capture has
    /// flushed) and returns.
    pub async fn run(self, mut done: watch::Receiver<bool>) {
        let started = Instant::now();
        let mut pacer = Pacer::new(self.pacing.apply(None));
        let mut window = DropWindow::new(KERNEL_DROP_WINDOW);
        let mut object_applied = false;
        loop {
            let finishing = *done.borrow();
            let now = Instant::now();
            pacer.set_pacing(self.pacing.apply(self.shared.cadence()));
            let report = self.report(&mut window, now.duration_since(started));
            let significant = Significant::of(&report);
            let due = match finishing {
                true => pacer.earliest(now),
                false => pacer.due(now, &significant),
            };
            if now >= due {
                match self.write(&report, &mut object_applied).await {
                    Ok(()) => pacer.wrote(now, significant),
                    Err(e) => {
                        tracing::warn!(name = %self.name(), error = %e, "writing the InterceptorStatus failed");
                        pacer.failed(now);
                    }
                }
                if finishing {
                    return;
                }
                continue;
            }
            let wake = due.min(now + pacer.pacing().check_every);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.shared.changed.notified() => {}
                _ = done.changed() => {}
            }
        }
    }

    fn report(&self, window: &mut DropWindow, since_start: Duration) -> NodeReport {
        let snapshot = self.shared.snapshot();
        let kernel = snapshot.as_ref().map_or(0, |s| s.kernel_drops());
        let recent_kernel_drops = window.record(since_start, kernel);
        let config = self.shared.config();
        let netns = self.shared.netns();
        let pods = self.pods.current();
        build_report(&ReportInput {
            now: (self.clock)(),
            stopping: self.shared.stopping(),
            capture_running: self.shared.capture_running(),
            loop_stalled: self
                .shared
                .loop_stalled(SystemTime::now(), self.stall_after),
            config: &config,
            snapshot: snapshot.as_ref(),
            netns: &netns,
            pods: &pods,
            recent_kernel_drops,
        })
    }

    async fn write(
        &self,
        report: &NodeReport,
        object_applied: &mut bool,
    ) -> Result<(), WriteError> {
        tokio::time::timeout(WRITE_TIMEOUT, self.write_once(report, object_applied))
            .await
            .map_err(|_| WriteError::Timeout(WRITE_TIMEOUT))?
            .map_err(WriteError::Api)
    }

    async fn write_once(
        &self,
        report: &NodeReport,
        object_applied: &mut bool,
    ) -> Result<(), kube::Error> {
        let params = PatchParams::apply(STATUS_FIELD_MANAGER).force();
        let name = self.name();
        if !*object_applied {
            self.apply_object(&params).await?;
            *object_applied = true;
        }
        let patch = report.apply_patch(&name);
        match self
            .api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                // The object is gone (the operator deletes reports of silent nodes): create it again.
                tracing::info!(%name, "InterceptorStatus not found; creating it again");
                self.apply_object(&params).await?;
                self.api
                    .patch_status(&name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    async fn apply_object(&self, params: &PatchParams) -> Result<(), kube::Error> {
        let object = InterceptorStatus::for_node(&self.owner, &self.node);
        self.api
            .patch(&self.name(), params, &Patch::Apply(&object))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interceptor_crds::interceptor_status::NodePhase;

    fn sig(phase: NodePhase) -> Significant {
        Significant::of(&NodeReport {
            phase: Some(phase),
            ..NodeReport::default()
        })
    }

    #[test]
    fn the_pacer_writes_at_once_then_on_the_heartbeat_or_after_a_change() {
        let pacing = Pacing::default();
        let mut pacer = Pacer::new(pacing);
        let t0 = Instant::now();
        let running = sig(NodePhase::Running);
        assert_eq!(pacer.due(t0, &running), t0);
        pacer.wrote(t0, running.clone());
        assert_eq!(pacer.due(t0, &running), t0 + pacing.period);
        let degraded = sig(NodePhase::Degraded);
        assert_eq!(pacer.due(t0, &degraded), t0 + pacing.min_gap);
        // Failures back off from min_gap up to the period.
        pacer.failed(t0);
        assert_eq!(pacer.due(t0, &running), t0 + pacing.min_gap);
        pacer.failed(t0);
        assert_eq!(pacer.due(t0, &running), t0 + pacing.min_gap * 2);
        for _ in 0..40 {
            pacer.failed(t0);
        }
        assert_eq!(pacer.due(t0, &running), t0 + pacing.period);
        assert_eq!(pacer.earliest(t0), t0 + pacing.min_gap);
        assert_eq!(
            pacer.earliest(t0 + Duration::from_secs(60)),
            t0 + Duration::from_secs(60)
        );
    }

    #[test]
    fn the_config_sets_the_cadence_and_the_command_line_overrides_it() {
        let big = StatusCadence::for_nodes(5_000, None);
        let none = PacingOverride::default();
        assert_eq!(none.apply(None), Pacing::default());
        assert_eq!(none.apply(None).period, Duration::from_secs(20));
        assert_eq!(none.apply(Some(big)).period, Duration::from_secs(320));
        assert_eq!(none.apply(Some(big)).min_gap, Duration::from_secs(80));
        let fast = PacingOverride {
            period: Some(Duration::from_secs(2)),
            ..PacingOverride::default()
        };
        let p = fast.apply(Some(big));
        assert_eq!(
            (p.period, p.min_gap),
            (Duration::from_secs(2), Duration::from_secs(2)),
            "the config's gap is cut to the heartbeat given"
        );
        let both = PacingOverride {
            period: Some(Duration::from_secs(3)),
            min_gap: Some(Duration::from_secs(1)),
            check_every: None,
        };
        let p = both.apply(Some(big));
        assert_eq!(
            (p.period, p.min_gap),
            (Duration::from_secs(3), Duration::from_secs(1))
        );
    }

    #[test]
    fn a_new_cadence_counts_from_the_last_write() {
        let t0 = Instant::now();
        let running = sig(NodePhase::Running);
        let mut pacer = Pacer::new(Pacing::default());
        pacer.wrote(t0, running.clone());
        pacer.set_pacing(Pacing::of(StatusCadence::for_nodes(1_500, None)));
        assert_eq!(pacer.due(t0, &running), t0 + Duration::from_secs(80));
        assert_eq!(
            pacer.due(t0, &sig(NodePhase::Degraded)),
            t0 + Duration::from_secs(20)
        );
    }
}
