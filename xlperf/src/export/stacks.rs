//! Which call was inside which: the per-thread nesting of traced calls, and the names
//! every format gives to processes, threads and functions.
//!
//! The kernel keeps a stack of active crossings per thread, so the calls of one thread
//! nest by construction: a call's ancestors are the calls of its thread whose interval
//! contains it and whose depth is smaller. A file is data from outside, though, so the
//! sweep here also guarantees the result is a proper nesting whatever the records say (a
//! call that overlaps one it is not inside is moved to start where that one ended): a
//! timeline viewer given improperly nested slices ends the wrong ones.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BTreeMap;

#[cfg(test)]
use xlperf_common::CALIBRATION_BOUNDARY;
use xlperf_common::is_calibration;

use crate::model::{CallEvent, Capture};

/// The calls of one thread, nested.
#[derive(Debug)]
pub struct ThreadCalls<'a> {
    pub pid: u32,
    pub tid: u32,
    /// In the order they began, a call before the calls inside it.
    pub calls: Vec<NestedCall<'a>>,
}

/// A call placed in its thread's nesting.
#[derive(Debug)]
pub struct NestedCall<'a> {
    pub event: &'a CallEvent,
    /// The call's interval as placed: the record's own unless the records do not nest.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Index in [`ThreadCalls::calls`] of the innermost call containing this one.
    pub parent: Option<usize>,
}

impl NestedCall<'_> {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// The duration without the probe time measured inside the call (what the summary
    /// reports); timelines keep the interval as it happened.
    pub fn corrected_ns(&self) -> u64 {
        self.duration_ns()
            .saturating_sub(self.event.record.probe.sum())
    }

    pub fn boundary(&self) -> u32 {
        self.event.record.boundary
    }
}

/// Every thread's calls, nested, by (pid, tid).
pub fn by_thread(capture: &Capture) -> Vec<ThreadCalls<'_>> {
    let mut groups: BTreeMap<(u32, u32), Vec<&CallEvent>> = BTreeMap::new();
    // The start-up calibration calls measure xlperf itself; no output shows them.
    for event in capture
        .calls
        .iter()
        .filter(|event| !is_calibration(event.record.boundary))
    {
        let key = (event.record.pid, event.record.tid);
        groups.entry(key).or_default().push(event);
    }
    groups
        .into_iter()
        .map(|((pid, tid), calls)| ThreadCalls {
            pid,
            tid,
            calls: nest(calls),
        })
        .collect()
}

/// End of a call as recorded (saturating: a corrupt duration must not wrap around).
fn record_end(event: &CallEvent) -> u64 {
    event
        .record
        .start_ns
        .saturating_add(event.record.duration_ns)
}

/// Places one thread's calls in a proper nesting with a stack sweep.
///
/// Sorted by start, longer first, shallower first, each call closes the open calls that
/// do not contain it; the one left on top is its parent. `floor`, the latest time placed
/// so far, keeps the begin and end times of the result in order: a call never starts
/// before a call it is not inside has ended.
fn nest(mut calls: Vec<&CallEvent>) -> Vec<NestedCall<'_>> {
    calls.sort_by_key(|event| {
        (
            event.record.start_ns,
            Reverse(record_end(event)),
            event.record.depth,
        )
    });
    let mut placed: Vec<NestedCall<'_>> = Vec::with_capacity(calls.len());
    let mut open: Vec<usize> = Vec::new();
    let mut floor = 0;
    for event in calls {
        let (start, end) = (event.record.start_ns, record_end(event));
        while let Some(&top) = open.last() {
            let outer = &placed[top];
            let contains = outer.start_ns <= start && end <= outer.end_ns;
            if contains && outer.event.record.depth < event.record.depth {
                break;
            }
            floor = floor.max(outer.end_ns);
            open.pop();
        }
        let start_ns = start.max(floor);
        floor = start_ns;
        placed.push(NestedCall {
            event,
            start_ns,
            end_ns: end.max(start_ns),
            parent: open.last().copied(),
        });
        open.push(placed.len() - 1);
    }
    placed
}

/// Each call's self time: its corrected duration less its direct children's, in the
/// order of `calls` (the probe time of a call and of everything nested in it is in its
/// `probe_ns`, so this removes every probe's time once). Children of a proper nesting
/// are disjoint and inside their parent, so this is never negative.
pub fn self_times_ns(calls: &[NestedCall<'_>]) -> Vec<u64> {
    let mut children = vec![0u64; calls.len()];
    for call in calls {
        if let Some(parent) = call.parent {
            children[parent] = children[parent].saturating_add(call.corrected_ns());
        }
    }
    calls
        .iter()
        .zip(children)
        .map(|(call, inner)| call.corrected_ns().saturating_sub(inner))
        .collect()
}

/// The function or NIF name of a boundary, or `boundary N` when the file lacks it.
pub fn function_name(capture: &Capture, boundary: u32) -> Cow<'_, str> {
    match capture.boundaries.get(&boundary) {
        Some(info) if !info.function.is_empty() => Cow::Borrowed(&info.function),
        _ => Cow::Owned(format!("boundary {boundary}")),
    }
}

/// A process's name: its own, else its main thread's, else `pid N`.
pub fn process_name(capture: &Capture, pid: u32) -> String {
    if let Some(name) = capture.processes.get(&pid).filter(|name| !name.is_empty()) {
        return name.clone();
    }
    match capture.threads.get(&pid) {
        Some(thread) if !thread.comm.is_empty() => thread.comm.clone(),
        _ => format!("pid {pid}"),
    }
}

/// A thread's name (`comm`): its own, else its process's.
pub fn thread_name(capture: &Capture, pid: u32, tid: u32) -> String {
    match capture.threads.get(&tid) {
        Some(thread) if !thread.comm.is_empty() => thread.comm.clone(),
        _ => process_name(capture, pid),
    }
}

#[cfg(test)]
mod tests {
    use xlperf_common::CallRecord;

    use super::*;

    fn call(start_ns: u64, duration_ns: u64, depth: u32, boundary: u32) -> CallEvent {
        CallEvent {
            record: CallRecord {
                start_ns,
                duration_ns,
                boundary,
                pid: 1,
                tid: 1,
                depth,
                ..CallRecord::default()
            },
            cost: None,
        }
    }

    fn placed(calls: &[CallEvent]) -> Vec<(u32, u64, u64, Option<usize>)> {
        nest(calls.iter().collect())
            .iter()
            .map(|c| (c.boundary(), c.start_ns, c.end_ns, c.parent))
            .collect()
    }

    #[test]
    fn nests_by_containment_and_depth_in_any_input_order() {
        // Records come in the order calls returned: innermost first.
        let calls = [
            call(20, 10, 3, 3),
            call(15, 30, 2, 2),
            call(50, 5, 2, 4),
            call(10, 100, 1, 1),
            call(200, 1, 1, 5),
        ];
        assert_eq!(
            placed(&calls),
            vec![
                (1, 10, 110, None),
                (2, 15, 45, Some(0)),
                (3, 20, 30, Some(1)),
                (4, 50, 55, Some(0)),
                (5, 200, 201, None),
            ]
        );
        let nested = nest(calls.iter().collect());
        assert_eq!(self_times_ns(&nested), vec![65, 20, 10, 5, 1]);
    }

    #[test]
    fn calibration_calls_are_left_out() {
        let capture = Capture {
            calls: vec![call(0, 10, 1, CALIBRATION_BOUNDARY), call(20, 5, 1, 1)],
            ..Capture::default()
        };
        let threads = by_thread(&capture);
        assert_eq!(threads.len(), 1);
        assert_eq!(threads[0].calls.len(), 1);
        assert_eq!(threads[0].calls[0].boundary(), 1);
    }

    #[test]
    fn equal_intervals_nest_by_depth() {
        let calls = [call(10, 5, 2, 2), call(10, 5, 1, 1)];
        assert_eq!(
            placed(&calls),
            vec![(1, 10, 15, None), (2, 10, 15, Some(0))]
        );
    }

    #[test]
    fn overlapping_records_are_made_to_nest() {
        // B overlaps A's end without being inside it; C claims to be inside B by depth
        // but lies outside it in time.
        let calls = [call(0, 10, 1, 1), call(5, 10, 1, 2), call(12, 20, 2, 3)];
        let placed = placed(&calls);
        assert_eq!(
            placed,
            vec![(1, 0, 10, None), (2, 10, 15, None), (3, 15, 32, None)]
        );
    }
}
