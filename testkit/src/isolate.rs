//! Tests of one module run beside each other, never beside another module's: as when each module was a
//! test binary of its own, which Cargo runs one after the other.
//!
//! Live and Kafka tests need this now that they share a binary: some measure the whole process (open
//! file descriptors, resident memory), some start workers that tap every network namespace on the host
//! (and would see another module's traffic), some load the CPU on purpose and count what the capture
//! lost, and the Kafka outage tests kill brokers. Within a module they were written to run in parallel
//! (unique namespace names, filters on their own addresses, unique topics), across modules they never
//! had to. Offline tests touch nothing shared and do not take this.

use std::sync::{Condvar, Mutex};

/// The module running now and how many of its tests hold a guard.
struct Running {
    module: Option<&'static str>,
    tests: usize,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    module: None,
    tests: 0,
});
static CHANGED: Condvar = Condvar::new();

/// Held for the length of a test; see [`module`].
#[must_use = "the isolation lasts as long as the guard"]
pub struct Guard {
    _private: (),
}

/// Waits until no test of another module runs, then holds that off until the guard drops. Call it
/// first in the test, with `module_path!()`.
pub fn module(name: &'static str) -> Guard {
    // A test that panicked while holding a guard poisons nothing that matters here: the count is
    // updated in `drop`, which runs while it unwinds.
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    while running.module.is_some_and(|m| m != name) {
        running = CHANGED.wait(running).unwrap_or_else(|e| e.into_inner());
    }
    running.module = Some(name);
    running.tests += 1;
    Guard { _private: () }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.tests -= 1;
        if running.tests == 0 {
            running.module = None;
            CHANGED.notify_all();
        }
    }
}
