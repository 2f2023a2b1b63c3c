//! Byte budgets that keep buffering bounded: one per connection and one for the whole worker.
//!
//! Everything a connection buffers (out-of-order segments, message heads and bodies being collected)
//! is reserved here first; a refused reservation is a counted drop, never an allocation.

use crate::stats::DropReason;

/// The worker-wide budget, shared by all connections.
#[derive(Debug)]
pub struct TotalBudget {
    used: usize,
    limit: usize,
    /// The high-water mark, for reports.
    peak: usize,
}

impl TotalBudget {
    pub fn new(limit: usize) -> Self {
        TotalBudget {
            used: 0,
            limit,
            peak: 0,
        }
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn peak(&self) -> usize {
        self.peak
    }
}

/// One connection's share: what it has reserved, checked against its own limit and the total.
#[derive(Debug, Default)]
pub struct FlowBudget {
    used: usize,
}

impl FlowBudget {
    pub fn used(&self) -> usize {
        self.used
    }
}

/// A connection's budget together with the total, for the duration of one packet's processing.
pub struct Allowance<'a> {
    pub flow: &'a mut FlowBudget,
    pub total: &'a mut TotalBudget,
    pub flow_limit: usize,
}

impl Allowance<'_> {
    /// Reserves `n` bytes, or says which limit refused them.
    pub fn reserve(&mut self, n: usize) -> Result<(), DropReason> {
        if self.flow.used + n > self.flow_limit {
            return Err(DropReason::FlowBufferFull);
        }
        if self.total.used + n > self.total.limit {
            return Err(DropReason::TotalBufferFull);
        }
        self.flow.used += n;
        self.total.used += n;
        self.total.peak = self.total.peak.max(self.total.used);
        Ok(())
    }

    /// Returns `n` reserved bytes.
    pub fn release(&mut self, n: usize) {
        debug_assert!(
            n <= self.flow.used,
            "released {n} of {} reserved",
            self.flow.used
        );
        let n = n.min(self.flow.used);
        self.flow.used -= n;
        self.total.used -= n.min(self.total.used);
    }
}

/// Returns everything a connection still holds to the total (when it is forgotten).
pub fn release_flow(flow: &mut FlowBudget, total: &mut TotalBudget) {
    total.used -= flow.used.min(total.used);
    flow.used = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_per_flow_and_in_total() {
        let mut total = TotalBudget::new(100);
        let (mut a, mut b) = (FlowBudget::default(), FlowBudget::default());
        let mut allow_a = Allowance {
            flow: &mut a,
            total: &mut total,
            flow_limit: 60,
        };
        assert_eq!(allow_a.reserve(60), Ok(()));
        assert_eq!(allow_a.reserve(1), Err(DropReason::FlowBufferFull));
        let mut allow_b = Allowance {
            flow: &mut b,
            total: &mut total,
            flow_limit: 60,
        };
        assert_eq!(allow_b.reserve(41), Err(DropReason::TotalBufferFull));
        assert_eq!(allow_b.reserve(40), Ok(()));
        allow_b.release(40);
        assert_eq!(total.used(), 60);
        release_flow(&mut a, &mut total);
        assert_eq!(total.used(), 0);
        assert_eq!(total.peak(), 100);
    }
}
