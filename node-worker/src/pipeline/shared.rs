//! What the processing of every connection shares (rules, budgets, counters, the time, the pairs
//! completed by the call in progress), and the one place that makes a connection's context of it.

use super::flow::TableLimits;
use crate::app::{CompletedPair, Env};
use crate::filters::Rules;
use crate::memory::{Allowance, FlowBudget, TotalBudget};
use crate::stats::Counters;
use crate::tcp::reassembly::ReassemblyStats;

pub(super) struct Shared {
    pub rules: Rules,
    pub limits: TableLimits,
    pub total: TotalBudget,
    pub counters: Counters,
    pub reassembly: ReassemblyStats,
    /// Packet time, microseconds.
    pub now_us: i64,
    /// Pairs completed by the call in progress, handed on after it.
    pub completed: Vec<CompletedPair>,
}

/// One connection's view of the pipeline, for one call into it.
pub(super) struct FlowContext<'a> {
    pub env: Env<'a>,
    pub allowance: Allowance<'a>,
    pub reassembly: &'a mut ReassemblyStats,
}

impl Shared {
    /// The context of the connection whose budget is `budget`.
    pub fn context<'a>(&'a mut self, budget: &'a mut FlowBudget) -> FlowContext<'a> {
        FlowContext {
            env: Env {
                rules: &self.rules,
                counters: &mut self.counters,
                now_us: self.now_us,
                completed: &mut self.completed,
            },
            allowance: Allowance {
                flow: budget,
                total: &mut self.total,
                flow_limit: self.limits.flow_buffer,
            },
            reassembly: &mut self.reassembly,
        }
    }
}
