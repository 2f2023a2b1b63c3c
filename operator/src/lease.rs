//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas are safe: only the holder
//! reconciles. The holder renews the Lease every few seconds; a Lease not renewed for its duration can be
//! taken over. Writes use the Lease's `resourceVersion`, so two replicas can never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::Api;

/// What to do with the Lease as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder stopped renewing it: take it over.
    Takeover,
    /// Someone else holds it.
    Wait { holder: String },
}

/// The decision for `lease` (pure).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return match lease {
            None => Decision::Create,
            Some(_) => Decision::Takeover,
        };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Takeover;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match &spec.renew_time {
        Some(renewed) if now.duration_since(renewed.0) <= duration => Decision::Wait {
            holder: holder.to_string(),
        },
        _ => Decision::Takeover,
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaderElector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// Try to acquire or renew the Lease; whether we hold it afterwards. Losing a race is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref(), &self.identity, now);
        let previous = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let mut spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            renew_time: Some(MicroTime(now)),
            acquire_time: previous.acquire_time.clone(),
            lease_transitions: previous.lease_transitions,
            ..LeaseSpec::default()
        };
        let result = match decision {
            Decision::Wait { .. } => return Ok(false),
            Decision::Create => {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(0);
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::Takeover => {
                if decision == Decision::Takeover {
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions =
                        Some(previous.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                let mut lease = current.unwrap_or_default();
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up (on shutdown), so that another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("me"), 0, 15)), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 990, 15)), "me", now),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 900, 15)), "me", now),
            Decision::Takeover
        );
        assert_eq!(
            decide(Some(&lease(None, 999, 15)), "me", now),
            Decision::Takeover
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 999, 15)), "me", now),
            Decision::Takeover
        );
    }
}
