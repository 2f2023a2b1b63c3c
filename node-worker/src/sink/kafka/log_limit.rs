//! Rate limiting of repeated warnings, per kind: the first of a kind is logged at once, the repeats
//! within the next interval are only counted, and the first one after the interval is logged with the
//! count of those suppressed (as the kernel's printk ratelimit and kubelet do). While Kafka is
//! unreachable librdkafka reports the same few errors every second or faster, forever; a node cannot
//! afford a log line for each, and the state stays visible in the metrics and InterceptorStatus anyway.
//!
//! Pure: the caller passes the time, so tests drive it with a fake clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often one kind of warning is logged at most while it repeats.
pub(super) const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Kinds tracked at most. The callers' kinds are error codes and librdkafka's log facilities, a few
/// dozen at most; the bound keeps a misbehaving caller from growing the map without end. Past it, a new
/// kind is logged every time (nothing is suppressed without being counted).
const MAX_KINDS: usize = 256;

/// What to do with one occurrence of a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Log it; `suppressed` repeats of its kind were not logged since the last one that was.
    Log { suppressed: u64 },
    /// A repeat within the interval: counted, reported with the next one logged.
    Suppress,
}

#[derive(Debug)]
struct Window {
    /// When a warning of this kind was last logged.
    logged_at: Instant,
    suppressed: u64,
}

/// Per-kind windows of [`LOG_INTERVAL`] (or the interval given).
#[derive(Debug)]
pub(super) struct LogLimiter<K> {
    interval: Duration,
    kinds: HashMap<K, Window>,
}

impl<K: Eq + Hash> Default for LogLimiter<K> {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

impl<K: Eq + Hash> LogLimiter<K> {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            kinds: HashMap::new(),
        }
    }

    /// One occurrence of a warning of `kind` at `now`.
    pub fn check(&mut self, kind: K, now: Instant) -> Verdict {
        if let Some(window) = self.kinds.get_mut(&kind) {
            if now.saturating_duration_since(window.logged_at) < self.interval {
                window.suppressed += 1;
                return Verdict::Suppress;
            }
            let suppressed = std::mem::take(&mut window.suppressed);
            window.logged_at = now;
            return Verdict::Log { suppressed };
        }
        if self.kinds.len() >= MAX_KINDS {
            // Forget the kinds whose interval is over and that have nothing to report.
            let interval = self.interval;
            self.kinds.retain(|_, w| {
                w.suppressed > 0 || now.saturating_duration_since(w.logged_at) < interval
            });
        }
        if self.kinds.len() < MAX_KINDS {
            self.kinds.insert(
                kind,
                Window {
                    logged_at: now,
                    suppressed: 0,
                },
            );
        }
        Verdict::Log { suppressed: 0 }
    }
}

/// The suffix of a logged warning that says how many like it were suppressed before it ("" for none).
pub(super) fn suppressed_note(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        n => format!(" ({n} more of this kind not logged since the last one)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: seconds after an arbitrary start.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, seconds: u64) -> Instant {
            self.0 + Duration::from_secs(seconds)
        }
    }

    #[test]
    fn the_first_is_logged_at_once_and_repeats_once_a_minute_with_their_count() {
        let clock = Clock(Instant::now());
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(0)),
            Verdict::Log { suppressed: 0 }
        );
        // Every second for the rest of the minute: counted, not logged.
        for s in 1..60 {
            assert_eq!(
                limiter.check("AllBrokersDown", clock.at(s)),
                Verdict::Suppress
            );
        }
        // The minute is over: one line, with the count of those not logged.
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(60)),
            Verdict::Log { suppressed: 59 }
        );
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(61)),
            Verdict::Suppress
        );
        // A long quiet spell, then one: logged at once, the one repeat before it counted.
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(1000)),
            Verdict::Log { suppressed: 1 }
        );
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(1200)),
            Verdict::Log { suppressed: 0 }
        );
    }

    #[test]
    fn an_hour_of_one_warning_a_second_makes_sixty_lines() {
        let clock = Clock(Instant::now());
        let mut limiter = LogLimiter::default();
        let mut logged = 0u64;
        let mut reported = 0u64;
        for s in 0..3600 {
            if let Verdict::Log { suppressed } = limiter.check(1u8, clock.at(s)) {
                logged += 1;
                reported += suppressed;
            }
        }
        assert_eq!(logged, 60);
        // Every occurrence is either logged or counted in a later line (the last minute's are pending).
        assert_eq!(logged + reported, 3600 - 59);
    }

    #[test]
    fn kinds_are_limited_apart() {
        let clock = Clock(Instant::now());
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(0)),
            Verdict::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.check("Resolve", clock.at(1)),
            Verdict::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.check("AllBrokersDown", clock.at(2)),
            Verdict::Suppress
        );
        assert_eq!(limiter.check("Resolve", clock.at(3)), Verdict::Suppress);
    }

    #[test]
    fn a_clock_going_back_suppresses_rather_than_floods() {
        let clock = Clock(Instant::now());
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(
            limiter.check(0u8, clock.at(100)),
            Verdict::Log { suppressed: 0 }
        );
        assert_eq!(limiter.check(0u8, clock.at(50)), Verdict::Suppress);
    }

    #[test]
    fn the_kinds_are_bounded_and_past_the_bound_every_one_is_logged() {
        let clock = Clock(Instant::now());
        let mut limiter = LogLimiter::new(Duration::from_secs(60));
        for kind in 0..MAX_KINDS + 10 {
            assert_eq!(
                limiter.check(kind, clock.at(0)),
                Verdict::Log { suppressed: 0 }
            );
        }
        assert_eq!(limiter.kinds.len(), MAX_KINDS);
        // Not tracked: logged again (never lost).
        assert_eq!(
            limiter.check(MAX_KINDS + 1, clock.at(1)),
            Verdict::Log { suppressed: 0 }
        );
        // Once the windows are over, room is made for new kinds.
        assert_eq!(
            limiter.check(MAX_KINDS + 1, clock.at(61)),
            Verdict::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.check(MAX_KINDS + 1, clock.at(62)),
            Verdict::Suppress
        );
    }

    #[test]
    fn the_note_says_how_many_were_not_logged() {
        assert_eq!(suppressed_note(0), "");
        assert_eq!(
            suppressed_note(59),
            " (59 more of this kind not logged since the last one)"
        );
    }
}
