//! The worker's configuration from its ConfigMap (`config.yaml`), watched through the API so that a change
//! applies without a restart.
//!
//! [`ConfigTracker`] decides (pure) what each observed version means: apply it (and whether the Kafka
//! producer must be rebuilt), nothing changed, refuse it (the last good one stays), or the ConfigMap is
//! gone. [`ConfigWatch`] is the I/O around it: the watch, building the new producer (a producer that
//! cannot be built refuses the config too), and publishing what was applied.

use std::sync::Arc;

use futures::StreamExt;
use interceptor_crds::config::WorkerConfig;
use interceptor_crds::worker_env::CONFIG_KEY;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::watch;

use super::sink::{SinkFactory, SinkSwitch};
use super::state::{ConfigState, Shared};
use crate::sink::SinkError;

/// Why no producer could be built for a config (which is then refused).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The factory refused the `kafka` section, or librdkafka did.
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("building the sink panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// What the watch saw of the ConfigMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed<'a> {
    Present {
        version: &'a str,
        /// `data["config.yaml"]`, if the key exists.
        text: Option<&'a str>,
    },
    Absent,
}

impl<'a> Observed<'a> {
    pub fn of(cm: &'a ConfigMap) -> Observed<'a> {
        Observed::Present {
            version: cm.metadata.resource_version.as_deref().unwrap_or(""),
            text: cm
                .data
                .as_ref()
                .and_then(|d| d.get(CONFIG_KEY))
                .map(String::as_str),
        }
    }
}

/// What to do about an observed version.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A valid configuration that differs from the running one (or the first one).
    Apply {
        config: Box<WorkerConfig>,
        version: String,
        /// The `kafka` section changed (or there was no producer yet): build a new one.
        kafka_changed: bool,
        unknown_keys: Vec<String>,
    },
    /// Same content as the running configuration (a relist, or another field of the ConfigMap).
    Unchanged { version: String },
    /// Invalid: the running configuration stays.
    Refuse { version: String, reason: String },
    /// The ConfigMap does not exist (or was deleted): the running configuration stays.
    Missing,
}

/// The configuration in use and where it came from.
#[derive(Clone, Debug, Default)]
pub struct ConfigTracker {
    running: Option<(WorkerConfig, String)>,
}

impl ConfigTracker {
    pub fn running(&self) -> Option<&WorkerConfig> {
        self.running.as_ref().map(|(c, _)| c)
    }

    pub fn running_version(&self) -> Option<&str> {
        self.running.as_ref().map(|(_, v)| v.as_str())
    }

    pub fn decide(&self, observed: Observed<'_>) -> Decision {
        let (version, text) = match observed {
            Observed::Absent => return Decision::Missing,
            Observed::Present { version, text } => (version.to_string(), text),
        };
        let Some(text) = text else {
            return Decision::Refuse {
                version,
                reason: format!("the ConfigMap has no {CONFIG_KEY} key"),
            };
        };
        match WorkerConfig::from_yaml(text) {
            Err(e) => Decision::Refuse {
                version,
                reason: e.to_string(),
            },
            Ok(loaded) => match self.running() {
                Some(running) if *running == loaded.config => Decision::Unchanged { version },
                running => Decision::Apply {
                    kafka_changed: running.is_none_or(|r| r.kafka != loaded.config.kafka),
                    config: Box::new(loaded.config),
                    version,
                    unknown_keys: loaded.unknown_keys,
                },
            },
        }
    }

    /// The configuration was applied.
    pub fn accept(&mut self, config: WorkerConfig, version: String) {
        self.running = Some((config, version));
    }

    /// Same content under a new version.
    pub fn touch(&mut self, version: String) {
        if let Some((_, v)) = self.running.as_mut() {
            *v = version;
        }
    }

    /// The state the status reports after a refusal or a missing ConfigMap.
    pub fn refused(&self, reason: String) -> ConfigState {
        ConfigState {
            version: self.running_version().map(str::to_string),
            refused: Some(match self.running_version() {
                Some(v) => format!("{reason}; running with resourceVersion {v}"),
                None => format!("{reason}; not capturing until a valid config arrives"),
            }),
        }
    }
}

/// Watches the ConfigMap and applies what it holds.
pub struct ConfigWatch {
    pub api: Api<ConfigMap>,
    /// `namespace/name`, for messages.
    pub display: String,
    pub name: String,
    pub factory: Arc<dyn SinkFactory>,
    pub switch: Arc<SinkSwitch>,
    pub shared: Arc<Shared>,
    /// The configuration applied last (None until the first valid one).
    pub applied: watch::Sender<Option<Arc<WorkerConfig>>>,
    pub tracker: ConfigTracker,
}

impl ConfigWatch {
    /// Runs until the watch ends (never, in practice: the watcher retries with backoff).
    pub async fn run(mut self) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut events = watcher(self.api.clone(), config).default_backoff().boxed();
        // Whether the ConfigMap was listed since the last (re)list started.
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = false,
                Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                    listed = true;
                    self.observe(Observed::of(&cm)).await;
                }
                Ok(watcher::Event::InitDone) => {
                    if !listed {
                        self.observe(Observed::Absent).await;
                    }
                }
                Ok(watcher::Event::Delete(_)) => self.observe(Observed::Absent).await,
                Err(e) => {
                    tracing::warn!(configmap = %self.display, error = %e, "watching the ConfigMap failed; retrying")
                }
            }
        }
    }

    /// Decide about one observation and act on it.
    pub async fn observe(&mut self, observed: Observed<'_>) {
        match self.tracker.decide(observed) {
            Decision::Apply {
                config,
                version,
                kafka_changed,
                unknown_keys,
            } => {
                for key in &unknown_keys {
                    tracing::warn!(%key, %version, "config key not known to this version; ignored");
                }
                let first = self.tracker.running().is_none();
                if first || (kafka_changed && self.factory.follows_kafka_config()) {
                    if let Err(reason) = self.build_sink(&config).await {
                        self.refuse(&version, format!("kafka: {reason}"));
                        return;
                    }
                }
                tracing::info!(configmap = %self.display, %version, kafka_changed, "config applied");
                self.tracker
                    .accept(config.as_ref().clone(), version.clone());
                self.shared.set_cadence(config.status);
                self.shared.set_config(ConfigState {
                    version: Some(version),
                    refused: None,
                });
                self.applied.send_replace(Some(Arc::new(*config)));
            }
            Decision::Unchanged { version } => {
                self.tracker.touch(version.clone());
                self.shared.set_config(ConfigState {
                    version: Some(version),
                    refused: None,
                });
            }
            Decision::Refuse { version, reason } => self.refuse(&version, reason),
            Decision::Missing => {
                let reason = format!("ConfigMap {} not found", self.display);
                tracing::warn!("{reason}");
                self.shared.set_config(self.tracker.refused(reason));
            }
        }
    }

    fn refuse(&self, version: &str, reason: String) {
        tracing::warn!(configmap = %self.display, %version, %reason, "config refused; the last good one stays");
        let reason = format!("config.yaml of resourceVersion {version} refused: {reason}");
        self.shared.set_config(self.tracker.refused(reason));
    }

    /// Build the producer for `config` (it may block briefly: off the async threads) and hand it to the
    /// capture thread.
    async fn build_sink(&self, config: &WorkerConfig) -> Result<(), BuildError> {
        let factory = Arc::clone(&self.factory);
        let kafka = config.kafka.clone();
        let sink = tokio::task::spawn_blocking(move || factory.build(&kafka)).await??;
        self.switch.install(sink);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present<'a>(version: &'a str, text: &'a str) -> Observed<'a> {
        Observed::Present {
            version,
            text: Some(text),
        }
    }

    #[test]
    fn the_first_valid_config_is_applied_with_a_new_producer() {
        let tracker = ConfigTracker::default();
        match tracker.decide(present("7", "limits: {maxMessageBytes: 2048}\nfoo: 1\n")) {
            Decision::Apply {
                config,
                version,
                kafka_changed,
                unknown_keys,
            } => {
                assert_eq!(config.limits.max_message_bytes, 2048);
                assert_eq!(version, "7");
                assert!(kafka_changed);
                assert_eq!(unknown_keys, vec!["foo".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        // Empty text: every default.
        assert!(matches!(
            tracker.decide(present("8", "")),
            Decision::Apply { config, .. } if *config == WorkerConfig::default()
        ));
    }

    #[test]
    fn changes_apply_and_only_kafka_changes_rebuild_the_producer() {
        let mut tracker = ConfigTracker::default();
        tracker.accept(WorkerConfig::default(), "1".into());
        assert_eq!(
            tracker.decide(present("2", "")),
            Decision::Unchanged {
                version: "2".into()
            }
        );
        match tracker.decide(present("3", "filters: {excludePaths: []}")) {
            Decision::Apply { kafka_changed, .. } => assert!(!kafka_changed),
            other => panic!("{other:?}"),
        }
        match tracker.decide(present("4", "kafka: {topic: other}")) {
            Decision::Apply { kafka_changed, .. } => assert!(kafka_changed),
            other => panic!("{other:?}"),
        }
        tracker.touch("5".into());
        assert_eq!(tracker.running_version(), Some("5"));
    }

    #[test]
    fn invalid_configs_are_refused_with_a_reason_and_the_last_good_one_stays() {
        let mut tracker = ConfigTracker::default();
        tracker.accept(WorkerConfig::default(), "1".into());
        for (text, needle) in [
            ("limits: [", "expected"),
            ("kafka: {brokers: []}", "kafka.brokers"),
            ("limits: {maxMessageBytes: -1}", "maxMessageBytes"),
            (
                "kafka: {properties: {enable.delivery.reports: 'false'}}",
                "kafka.properties: \"enable.delivery.reports\" cannot be set",
            ),
        ] {
            match tracker.decide(present("2", text)) {
                Decision::Refuse { version, reason } => {
                    assert_eq!(version, "2");
                    assert!(reason.contains(needle), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            tracker.decide(Observed::Present {
                version: "3",
                text: None
            }),
            Decision::Refuse { reason, .. } if reason.contains("config.yaml")
        ));
        assert_eq!(tracker.decide(Observed::Absent), Decision::Missing);
        let state = tracker.refused("bad".into());
        assert_eq!(state.version.as_deref(), Some("1"));
        assert_eq!(
            state.refused.as_deref(),
            Some("bad; running with resourceVersion 1")
        );
        let fresh = ConfigTracker::default().refused("bad".into());
        assert_eq!(fresh.version, None);
        assert!(fresh.refused.unwrap().contains("not capturing"));
    }
}
