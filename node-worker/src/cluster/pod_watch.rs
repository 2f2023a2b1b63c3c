//! Watches the pods on this node (field selector `spec.nodeName`) and keeps two things current: the
//! address table the pipeline names pair ends with, and the per-namespace mesh overrides the capture loop
//! plans its taps with (pod IPs matched to the namespaces of the loop's last scan).

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use interceptor_crds::config::WorkerConfig;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::watch;

use super::pods::{pod_info, PodIndex, SharedPods};
use super::state::Shared;
use crate::capture_loop::LoopControl;
use crate::discovery::MeshOverrides;

/// Where mesh overrides go: the capture loop (its [`LoopControl`]); a recorder in tests.
pub trait MeshTarget: Send + Sync {
    fn set_mesh_overrides(&self, overrides: MeshOverrides);
}

impl MeshTarget for LoopControl {
    fn set_mesh_overrides(&self, overrides: MeshOverrides) {
        LoopControl::set_mesh_overrides(self, overrides);
    }
}

/// Index changes from watch events; a relist is applied at once when it is complete.
#[derive(Debug, Default)]
pub struct PodEvents {
    pub index: PodIndex,
    relisting: Option<Vec<Pod>>,
}

impl PodEvents {
    /// Applies one event; returns whether the index changed.
    pub fn apply(&mut self, event: watcher::Event<Pod>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(Vec::new());
                false
            }
            watcher::Event::InitApply(pod) => {
                self.relisting.get_or_insert_with(Vec::new).push(pod);
                false
            }
            watcher::Event::InitDone => {
                let pods = self.relisting.take().unwrap_or_default();
                self.index.replace_all(pods.iter().filter_map(pod_info))
            }
            watcher::Event::Apply(pod) => match pod_info(&pod) {
                Some(info) => self.index.apply(info),
                None => false,
            },
            watcher::Event::Delete(pod) => match (&pod.metadata.namespace, &pod.metadata.name) {
                (Some(ns), Some(name)) => self.index.remove(ns, name),
                _ => false,
            },
        }
    }

    /// Whether the first list has completed.
    pub fn synced(&self) -> bool {
        self.relisting.is_none()
    }
}

pub struct PodWatch {
    pub api: Api<Pod>,
    pub node: String,
    pub shared: Arc<Shared>,
    pub pods: SharedPods,
    pub config: watch::Receiver<Option<Arc<WorkerConfig>>>,
    /// The capture loop's control, once it runs.
    pub control: watch::Receiver<Option<Arc<dyn MeshTarget>>>,
}

impl PodWatch {
    pub async fn run(mut self) {
        let selector = format!("spec.nodeName={}", self.node);
        let mut events = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .boxed();
        let mut netns = self.shared.watch_netns();
        let mut state = PodEvents {
            relisting: Some(Vec::new()),
            ..PodEvents::default()
        };
        // What the capture loop was last told (None: nothing yet, or a new loop).
        let mut sent: Option<MeshOverrides> = None;
        // A channel whose sender is gone never changes again: stop listening to it (or the loop spins).
        let (mut netns_open, mut config_open, mut control_open) = (true, true, true);
        loop {
            let mut changed = false;
            tokio::select! {
                event = events.next() => match event {
                    None => return,
                    Some(event) => changed |= self.absorb(&mut state, event),
                },
                r = netns.changed(), if netns_open => netns_open = r.is_ok(),
                r = self.config.changed(), if config_open => config_open = r.is_ok(),
                r = self.control.changed(), if control_open => {
                    control_open = r.is_ok();
                    sent = None;
                }
            }
            // Take whatever else is ready now, so that a relist or a burst is published once.
            while let Some(Some(event)) = events.next().now_or_never() {
                changed |= self.absorb(&mut state, event);
            }
            if changed {
                self.pods.publish(state.index.ip_table());
                tracing::debug!(pods = state.index.len(), "pods on this node changed");
            }
            if !state.synced() {
                continue;
            }
            let exclude = self
                .config
                .borrow()
                .as_ref()
                .map(|c| c.filters.exclude_namespaces.clone())
                .unwrap_or_default();
            let overrides = state.index.mesh_overrides(&self.shared.netns(), &exclude);
            let control = self.control.borrow().clone();
            if let Some(control) = control {
                if sent.as_ref() != Some(&overrides) {
                    control.set_mesh_overrides(overrides.clone());
                    sent = Some(overrides);
                }
            }
        }
    }

    fn absorb(
        &self,
        state: &mut PodEvents,
        event: Result<watcher::Event<Pod>, watcher::Error>,
    ) -> bool {
        match event {
            Ok(event) => state.apply(event),
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "watching the node's pods failed; retrying");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, ip: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn a_relist_replaces_the_index_when_complete() {
        let mut events = PodEvents::default();
        assert!(events.apply(watcher::Event::Apply(pod("a", "10.0.0.1"))));
        assert!(!events.apply(watcher::Event::Init));
        assert!(!events.synced());
        assert!(!events.apply(watcher::Event::InitApply(pod("b", "10.0.0.2"))));
        assert_eq!(
            events.index.len(),
            1,
            "the old index serves until the relist is done"
        );
        assert!(events.apply(watcher::Event::InitDone));
        assert!(events.synced());
        let names: Vec<_> = events.index.pods().map(|p| p.name.clone()).collect();
        assert_eq!(names, vec!["b"]);
        assert!(events.apply(watcher::Event::Delete(pod("b", "10.0.0.2"))));
        assert!(events.index.is_empty());
        assert!(!events.apply(watcher::Event::Delete(pod("b", "10.0.0.2"))));
    }
}
