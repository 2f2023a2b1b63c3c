//! Waiting for something that happens on another thread or task: a packet captured, a pair delivered, a
//! watch event handled, an object written by a controller. One blocking form for plain threads, two
//! for tests on a tokio runtime (which must not block it).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked: a hundredth of the limit, so that in-process conditions are seen
/// within milliseconds and a real API server is asked at most about once a second.
fn interval(limit: Duration) -> Duration {
    (limit / 100).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Blocks until `condition` holds (true) or `limit` passes (false: the caller says what was missing).
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval(limit));
    }
}

/// Polls the async `probe` until it gives a value, which it returns; panics naming `what` when `limit`
/// passes. Time is tokio's, so a test with paused time waits no real time.
pub async fn wait_for<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(interval(limit)).await;
    }
}

/// [`wait_for`] with a plain condition.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    wait_for(what, limit, || {
        std::future::ready(condition().then_some(()))
    })
    .await;
}
