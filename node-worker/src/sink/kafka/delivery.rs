//! Delivery accounting, pure (the time is given): every pair handed to the sink ends in exactly one of
//! delivered, dropped_full, purged or failed, and counts as buffered until then, so that
//! `accepted = delivered + dropped_full + purged + failed + buffered_pairs` at any moment. It also
//! decides when a purge is due: Kafka counts as unreachable while pairs are waiting and none has been
//! delivered, and when that lasts `purgeAfter` the buffer is purged.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sink::SinkStats;

/// How a buffered pair left the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    /// librdkafka's own queue was full when the pair was handed to it.
    DroppedFull,
    Purged,
    Failed,
}

impl Outcome {
    /// What librdkafka's refusal of a pair (`send` returned an error) means.
    pub(super) fn of_refusal(error: &KafkaError) -> Outcome {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => Outcome::DroppedFull,
            _ => Outcome::Failed,
        }
    }

    /// What a failed delivery report means: purged pairs come back as reports with a purge error.
    pub(super) fn of_report(error: &KafkaError) -> Outcome {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => Outcome::Purged,
            _ => Outcome::Failed,
        }
    }
}

/// A purge that became due, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DuePurge {
    /// How long pairs had been waiting without a delivery.
    pub waited: Duration,
    pub pairs: u64,
    pub bytes: u64,
}

/// The counters of one sink, and the clock of the purge.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub stats: SinkStats,
    /// How many times the buffer was purged after an outage.
    pub purges: u64,
    /// Since when pairs have been waiting without any delivery (None when nothing is buffered).
    waiting_since: Option<Instant>,
}

impl Ledger {
    /// A pair of `bytes` is handed to the sink: whether it goes into the buffer (of `limit` bytes). One
    /// that does not fit is counted as dropped_full.
    pub fn accept(&mut self, bytes: u64, limit: u64, now: Instant) -> bool {
        self.stats.accepted += 1;
        if self.stats.buffered_bytes + bytes > limit {
            self.stats.dropped_full += 1;
            return false;
        }
        self.stats.buffered_pairs += 1;
        self.stats.buffered_bytes += bytes;
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        true
    }

    /// A buffered pair of `bytes` left the buffer.
    pub fn settle(&mut self, bytes: u64, outcome: Outcome, now: Instant) {
        let stats = &mut self.stats;
        stats.buffered_pairs = stats.buffered_pairs.saturating_sub(1);
        stats.buffered_bytes = stats.buffered_bytes.saturating_sub(bytes);
        if stats.buffered_pairs == 0 {
            self.waiting_since = None;
        }
        match outcome {
            Outcome::Delivered => {
                stats.delivered += 1;
                stats.connected = Some(true);
                // Progress: the clock for the remaining pairs starts again.
                if stats.buffered_pairs > 0 {
                    self.waiting_since = Some(now);
                }
            }
            Outcome::DroppedFull => stats.dropped_full += 1,
            Outcome::Purged => stats.purged += 1,
            Outcome::Failed => stats.failed += 1,
        }
    }

    /// Whether the buffer is to be purged at `now`: pairs have been waiting `purge_after` without a
    /// delivery. Counts the purge and starts the clock again, so the next one is one more `purge_after`
    /// away; the purged pairs are settled by their delivery reports.
    pub fn purge_due(&mut self, now: Instant, purge_after: Duration) -> Option<DuePurge> {
        let since = self.waiting_since?;
        let waited = now.saturating_duration_since(since);
        if self.stats.buffered_pairs == 0 || waited < purge_after {
            return None;
        }
        self.waiting_since = Some(now);
        self.purges += 1;
        Some(DuePurge {
            waited,
            pairs: self.stats.buffered_pairs,
            bytes: self.stats.buffered_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn adds_up(ledger: &Ledger) -> bool {
        let s = &ledger.stats;
        s.accepted == s.settled() + s.buffered_pairs
    }

    #[test]
    fn every_accepted_pair_is_buffered_or_settled_once() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        assert!(ledger.accept(100, 250, t0));
        assert!(ledger.accept(100, 250, t0));
        // The third does not fit in 250 bytes.
        assert!(!ledger.accept(100, 250, t0));
        assert_eq!(
            (ledger.stats.buffered_pairs, ledger.stats.buffered_bytes),
            (2, 200)
        );
        assert_eq!(ledger.stats.dropped_full, 1);
        assert!(adds_up(&ledger));
        ledger.settle(100, Outcome::Delivered, t0);
        ledger.settle(100, Outcome::Failed, t0);
        assert!(ledger.accept(100, 250, t0));
        ledger.settle(100, Outcome::Purged, t0);
        assert!(ledger.accept(100, 250, t0));
        ledger.settle(100, Outcome::DroppedFull, t0);
        let s = &ledger.stats;
        assert_eq!(
            (s.accepted, s.delivered, s.failed, s.purged, s.dropped_full),
            (5, 1, 1, 1, 2)
        );
        assert_eq!((s.buffered_pairs, s.buffered_bytes), (0, 0));
        assert_eq!(s.connected, Some(true));
        assert!(adds_up(&ledger));
    }

    #[test]
    fn a_purge_is_due_after_purge_after_without_a_delivery() {
        let t0 = Instant::now();
        let purge_after = 60 * SECOND;
        let mut ledger = Ledger::default();
        assert_eq!(ledger.purge_due(t0 + 3600 * SECOND, purge_after), None);
        ledger.accept(10, 1000, t0);
        ledger.accept(20, 1000, t0 + 30 * SECOND);
        assert_eq!(ledger.purge_due(t0 + 59 * SECOND, purge_after), None);
        let due = ledger.purge_due(t0 + 61 * SECOND, purge_after);
        assert_eq!(
            due,
            Some(DuePurge {
                waited: 61 * SECOND,
                pairs: 2,
                bytes: 30
            })
        );
        assert_eq!(ledger.purges, 1);
        // The clock starts again: the next purge is one more purge_after away.
        assert_eq!(ledger.purge_due(t0 + 62 * SECOND, purge_after), None);
        assert!(ledger.purge_due(t0 + 121 * SECOND, purge_after).is_some());
        assert_eq!(ledger.purges, 2);
    }

    #[test]
    fn a_delivery_restarts_the_clock_and_an_empty_buffer_stops_it() {
        let t0 = Instant::now();
        let purge_after = 10 * SECOND;
        let mut ledger = Ledger::default();
        ledger.accept(10, 1000, t0);
        ledger.accept(10, 1000, t0);
        ledger.settle(10, Outcome::Delivered, t0 + 8 * SECOND);
        assert_eq!(ledger.purge_due(t0 + 12 * SECOND, purge_after), None);
        assert!(ledger.purge_due(t0 + 18 * SECOND, purge_after).is_some());
        // A failure is no progress; an empty buffer has nothing to purge.
        ledger.settle(10, Outcome::Failed, t0 + 19 * SECOND);
        assert_eq!(ledger.purge_due(t0 + 100 * SECOND, purge_after), None);
        ledger.accept(10, 1000, t0 + 100 * SECOND);
        assert_eq!(ledger.purge_due(t0 + 105 * SECOND, purge_after), None);
        assert!(ledger.purge_due(t0 + 110 * SECOND, purge_after).is_some());
    }

    #[test]
    fn librdkafka_errors_map_to_outcomes() {
        let error = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            Outcome::of_refusal(&error(RDKafkaErrorCode::QueueFull)),
            Outcome::DroppedFull
        );
        assert_eq!(
            Outcome::of_refusal(&error(RDKafkaErrorCode::MessageSizeTooLarge)),
            Outcome::Failed
        );
        for code in [
            RDKafkaErrorCode::PurgeQueue,
            RDKafkaErrorCode::PurgeInflight,
        ] {
            assert_eq!(Outcome::of_report(&error(code)), Outcome::Purged);
        }
        assert_eq!(
            Outcome::of_report(&error(RDKafkaErrorCode::UnknownTopicOrPartition)),
            Outcome::Failed
        );
    }
}
