//! Folded stacks (Brendan Gregg's format, read by flamegraph.pl, inferno, speedscope):
//! one line per distinct stack, `comm;library:function;library:function COUNT`.
//!
//! A stack is a thread's chain of traced calls, outermost first, under the thread's
//! name; COUNT is the self time spent with exactly that stack, in µs (each call's
//! duration less its direct children's, summed per stack in ns, then rounded). Stacks
//! that round to 0 µs are left out, and lines are sorted, so the output of a capture is
//! always the same text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::stacks::{self, ThreadCalls};
use crate::model::Capture;

/// The folded lines of `capture`, each ending in a newline.
pub fn render(capture: &Capture) -> String {
    let mut out = String::new();
    for (stack, self_ns) in stack_self_times(capture) {
        let micros = self_ns.saturating_add(500) / 1_000;
        if micros != 0 {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{stack} {micros}");
        }
    }
    out
}

/// Self time in ns of every distinct stack, by stack text.
fn stack_self_times(capture: &Capture) -> BTreeMap<String, u64> {
    let mut tree = StackTree::default();
    for thread in stacks::by_thread(capture) {
        tree.add_thread(capture, &thread);
    }
    let mut totals = BTreeMap::new();
    for (stack, self_ns) in tree.stacks.into_iter().zip(tree.self_ns) {
        // Two boundaries may share a name (one function probed in two processes): their
        // stacks are one stack in the graph.
        let total: &mut u64 = totals.entry(stack).or_default();
        *total = total.saturating_add(self_ns);
    }
    totals
}

/// Distinct stacks, each built once from its parent's, so that a long recording costs
/// one lookup per call rather than one string per call.
#[derive(Default)]
struct StackTree {
    /// Text of each stack.
    stacks: Vec<String>,
    self_ns: Vec<u64>,
    roots: HashMap<String, usize>,
    children: HashMap<(usize, u32), usize>,
}

impl StackTree {
    fn add_thread(&mut self, capture: &Capture, thread: &ThreadCalls<'_>) {
        let root = self.root(&frame_text(&stacks::thread_name(
            capture, thread.pid, thread.tid,
        )));
        let self_times = stacks::self_times_ns(&thread.calls);
        let mut nodes = Vec::with_capacity(thread.calls.len());
        for (call, self_ns) in thread.calls.iter().zip(self_times) {
            let parent = call.parent.map_or(root, |index| nodes[index]);
            let node = self.child(capture, parent, call.boundary());
            self.self_ns[node] = self.self_ns[node].saturating_add(self_ns);
            nodes.push(node);
        }
    }

    fn root(&mut self, name: &str) -> usize {
        if let Some(&node) = self.roots.get(name) {
            return node;
        }
        let node = self.push(name.to_owned());
        self.roots.insert(name.to_owned(), node);
        node
    }

    fn child(&mut self, capture: &Capture, parent: usize, boundary: u32) -> usize {
        if let Some(&node) = self.children.get(&(parent, boundary)) {
            return node;
        }
        let text = format!("{};{}", self.stacks[parent], frame(capture, boundary));
        let node = self.push(text);
        self.children.insert((parent, boundary), node);
        node
    }

    fn push(&mut self, text: String) -> usize {
        self.stacks.push(text);
        self.self_ns.push(0);
        self.stacks.len() - 1
    }
}

/// `function [library]`, or the bare name when the file does not describe the boundary.
/// The function comes first: a flame graph cuts labels at the end to fit a frame, and a
/// library prefix would leave only `libfoo.so:` of every narrow one.
fn frame(capture: &Capture, boundary: u32) -> String {
    let function = stacks::function_name(capture, boundary);
    match capture.boundaries.get(&boundary) {
        Some(info) if !info.library.is_empty() => {
            frame_text(&format!("{function} [{}]", info.library))
        }
        _ => frame_text(&function),
    }
}

/// A name made safe for the format: `;` separates frames (replaced by `:`, as
/// stackcollapse-perf does) and a line break would end the line.
fn frame_text(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testdata;

    #[test]
    fn self_time_per_stack_in_us() {
        // A: 100 µs less B's 40, plus the second A's 10; D's 0.3 µs rounds to nothing.
        assert_eq!(
            render(&testdata::capture()),
            "python3;A [libfoo.so] 70\n\
             python3;A [libfoo.so];B [libfoo.so] 40\n\
             worker;C [libbar.so] 25\n"
        );
    }

    #[test]
    fn same_named_threads_merge_and_unknown_boundaries_keep_their_id() {
        let mut capture = testdata::capture();
        // The worker renamed like the main thread, and C's description lost.
        if let Some(worker) = capture.threads.get_mut(&testdata::WORKER_TID) {
            worker.comm = "python3".to_owned();
        }
        capture.boundaries.remove(&3);
        assert_eq!(
            render(&capture),
            "python3;A [libfoo.so] 70\n\
             python3;A [libfoo.so];B [libfoo.so] 40\n\
             python3;boundary 3 25\n"
        );
    }

    #[test]
    fn separators_in_names_are_cleaned() {
        let mut capture = testdata::capture();
        if let Some(info) = capture.boundaries.get_mut(&3) {
            info.function = "f<[u8; 8]>\nx".to_owned();
        }
        assert!(render(&capture).contains("worker;f<[u8: 8]> x [libbar.so] 25\n"));
    }

    #[test]
    fn empty_capture_is_empty() {
        assert_eq!(render(&Capture::default()), "");
    }
}
