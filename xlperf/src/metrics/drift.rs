//! How far probe costs have drifted from their calibration at start.
//!
//! A recording's durations are corrected with the probe costs measured when it began, but
//! on a shared or virtual machine those costs move with its load: single-stepping here
//! ranged from 3.3 to 6.6 µs a hit within minutes while emulated hits moved by a few
//! percent. So xlperf keeps calling its own calibration functions a few dozen times a
//! second during the recording (the canary, `calibrate::Canary`); their records go
//! through the ring, and into capture files, like any other. Each kind of site's factor
//! is the median in-call time of its recent canary calls over the one at start, and every
//! record's probe time is scaled by it before it is removed. A capture replayed through
//! the same code gets the same factors.

use std::collections::VecDeque;

use xlperf_common::{CALIBRATION_BOUNDARY, CALIBRATION_STEPPED, CallRecord, ProbeTime};

use crate::probe::calibrate::ProbeCosts;

/// Canary durations a factor is the median of: five canary runs' worth, so that one run
/// during which xlperf itself was held up moves nothing.
const WINDOW: usize = 99;

#[derive(Debug, Clone)]
pub struct Drift {
    kinds: [Kind; 2],
}

#[derive(Debug, Clone)]
struct Kind {
    /// In-call ns at start; 0 when unknown (no correction is then scaled).
    baseline: u64,
    recent: VecDeque<u64>,
    factor: f64,
    /// Sum and count of the factors seen, for the recording's mean.
    factor_sum: f64,
    updates: u64,
}

impl Kind {
    fn new(baseline: u64) -> Self {
        Self {
            baseline,
            recent: VecDeque::with_capacity(WINDOW),
            factor: 1.0,
            factor_sum: 0.0,
            updates: 0,
        }
    }

    fn observe(&mut self, in_call_ns: u64) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(in_call_ns);
        if self.baseline == 0 || self.recent.len() < WINDOW {
            return;
        }
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        self.factor = median as f64 / self.baseline as f64;
        self.factor_sum += self.factor;
        self.updates += 1;
    }

    fn mean(&self) -> f64 {
        if self.updates == 0 {
            1.0
        } else {
            self.factor_sum / self.updates as f64
        }
    }
}

impl Drift {
    pub fn new(costs: &ProbeCosts) -> Self {
        Self {
            kinds: [
                Kind::new(costs.pair.emulated.in_call_ns),
                Kind::new(costs.pair.single_stepped.in_call_ns),
            ],
        }
    }

    /// Takes in a canary record; false when `record` is not one.
    pub fn observe(&mut self, record: &CallRecord) -> bool {
        let kind = match record.boundary {
            CALIBRATION_BOUNDARY => 0,
            CALIBRATION_STEPPED => 1,
            _ => return false,
        };
        self.kinds[kind].observe(record.duration_ns);
        true
    }

    /// The probe time of `time` at today's costs.
    pub fn scaled(&self, time: &ProbeTime) -> u64 {
        scale(time.emulated_ns, self.kinds[0].factor)
            .saturating_add(scale(time.stepped_ns, self.kinds[1].factor))
    }

    /// `record`'s duration without its probe time at today's costs.
    pub fn corrected_ns(&self, record: &CallRecord) -> u64 {
        record
            .duration_ns
            .saturating_sub(self.scaled(&record.probe))
    }

    /// The probe time of `time` at the recording's mean costs (for totals).
    pub fn scaled_mean(&self, time: &ProbeTime) -> u64 {
        scale(time.emulated_ns, self.kinds[0].mean())
            .saturating_add(scale(time.stepped_ns, self.kinds[1].mean()))
    }

    /// The current factors (emulated, single-stepped).
    pub fn factors(&self) -> (f64, f64) {
        (self.kinds[0].factor, self.kinds[1].factor)
    }
}

fn scale(ns: u64, factor: f64) -> u64 {
    (ns as f64 * factor).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::calibrate::{PairCost, PerKind};

    fn costs() -> ProbeCosts {
        ProbeCosts {
            pair: PerKind {
                emulated: PairCost {
                    total_ns: 900,
                    in_call_ns: 400,
                },
                single_stepped: PairCost {
                    total_ns: 4000,
                    in_call_ns: 3000,
                },
            },
            ..ProbeCosts::default()
        }
    }

    fn canary(boundary: u32, duration_ns: u64) -> CallRecord {
        CallRecord {
            boundary,
            duration_ns,
            ..CallRecord::default()
        }
    }

    #[test]
    fn single_stepping_that_got_dearer_is_removed_at_its_new_cost() {
        let mut drift = Drift::new(&costs());
        let call = CallRecord {
            boundary: 1,
            duration_ns: 8000,
            probe: ProbeTime {
                emulated_ns: 400,
                stepped_ns: 3000,
            },
            ..CallRecord::default()
        };
        assert_eq!(drift.corrected_ns(&call), 4600, "at the start-up costs");
        assert!(!drift.observe(&call), "not a canary");
        for _ in 0..WINDOW {
            assert!(drift.observe(&canary(CALIBRATION_STEPPED, 4500)));
            assert!(drift.observe(&canary(CALIBRATION_BOUNDARY, 400)));
        }
        assert_eq!(drift.factors(), (1.0, 1.5));
        // 8000 - 400 - 1.5 * 3000
        assert_eq!(drift.corrected_ns(&call), 3100);
        assert!(drift.scaled_mean(&call.probe) > 3400);
    }
}
