//! Perfetto's protobuf trace format (a `Trace` of `TracePacket`s carrying TrackEvent
//! data), read by ui.perfetto.dev and `trace_processor`.
//!
//! The packets, all on one sequence:
//! 1. a `ClockSnapshot` making `CLOCK_MONOTONIC`, the clock of every record, the trace's
//!    clock (with the wall-clock time of the same instant, so viewers can show it);
//! 2. `TrackDescriptor`s: a process track per process, a thread track per thread, and
//!    under a thread, when it has them, an off-CPU track (off-CPU periods happen inside
//!    calls, and slices on one track must nest) and an `allocated bytes` counter track;
//! 3. `TrackEvent`s in time order: a slice begin and end per call and per off-CPU
//!    period, with names and categories written out (no interning, so no packet needs
//!    incremental state), arguments as debug annotations; a counter value per step.
//!
//! GPU queue and execution tracks would be further child tracks of the process track,
//! once the capture carries GPU work.

use prost::Message as _;

use super::timeline::{self, Arg, ArgValue, CounterPoint, Slice, Thread};
use crate::model::Capture;

/// The one packet sequence of the trace (0 would mean "no sequence").
const SEQUENCE_ID: u32 = 1;

/// The Perfetto trace of `capture`, encoded.
pub fn render(capture: &Capture) -> Vec<u8> {
    let mut writer = Writer::default();
    for process in timeline::build(capture).processes {
        let process_uuid = writer.track(proto::TrackDescriptor {
            process: Some(proto::ProcessDescriptor {
                pid: Some(wire_id(process.pid)),
                process_name: Some(process.name.clone()),
            }),
            ..proto::TrackDescriptor::default()
        });
        for thread in &process.threads {
            writer.thread(process_uuid, thread);
        }
    }
    writer.finish(capture).encode_to_vec()
}

/// Perfetto keeps pids and tids as `int32`; Linux's fit (they stay below 2^22).
fn wire_id(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

/// Tracks and events as they are made; events are put in time order at the end.
#[derive(Default)]
struct Writer {
    last_uuid: u64,
    descriptors: Vec<proto::TracePacket>,
    events: Vec<(u64, proto::TrackEvent)>,
}

impl Writer {
    /// Describes a new track and returns its uuid (1, 2, …: 0 is the global track).
    fn track(&mut self, mut descriptor: proto::TrackDescriptor) -> u64 {
        self.last_uuid += 1;
        descriptor.uuid = Some(self.last_uuid);
        self.descriptors
            .push(packet(None, proto::Data::TrackDescriptor(descriptor)));
        self.last_uuid
    }

    /// A thread's track with its calls, and its off-CPU and allocation tracks.
    fn thread(&mut self, process_uuid: u64, thread: &Thread) {
        let uuid = self.track(proto::TrackDescriptor {
            parent_uuid: Some(process_uuid),
            thread: Some(proto::ThreadDescriptor {
                pid: Some(wire_id(thread.pid)),
                tid: Some(wire_id(thread.tid)),
                thread_name: Some(thread.name.clone()),
            }),
            ..proto::TrackDescriptor::default()
        });
        self.slices(uuid, &thread.calls);
        if !thread.off_cpu.is_empty() {
            let off_cpu = self.track(proto::TrackDescriptor {
                parent_uuid: Some(uuid),
                name: Some(format!("{} {} off-CPU", thread.name, thread.tid)),
                ..proto::TrackDescriptor::default()
            });
            self.slices(off_cpu, &thread.off_cpu);
        }
        for (what, unit, points) in [
            ("allocated bytes", proto::Unit::SizeBytes, &thread.allocated),
            ("off-CPU time", proto::Unit::TimeNs, &thread.off_cpu_total),
        ] {
            if points.is_empty() {
                continue;
            }
            let counter = self.track(proto::TrackDescriptor {
                parent_uuid: Some(uuid),
                name: Some(format!("{} {} {what}", thread.name, thread.tid)),
                counter: Some(proto::CounterDescriptor {
                    unit: Some(unit.into()),
                    ..proto::CounterDescriptor::default()
                }),
                ..proto::TrackDescriptor::default()
            });
            self.counter(counter, points);
        }
    }

    /// Begin and end events of properly nested slices given in begin order: before a
    /// slice begins, the open slices that are not its ancestors end.
    fn slices(&mut self, track_uuid: u64, slices: &[Slice]) {
        let mut open: Vec<usize> = Vec::new();
        for (index, slice) in slices.iter().enumerate() {
            while open.last().is_some_and(|&top| Some(top) != slice.parent) {
                if let Some(top) = open.pop() {
                    self.end(track_uuid, &slices[top]);
                }
            }
            self.begin(track_uuid, slice);
            open.push(index);
        }
        while let Some(top) = open.pop() {
            self.end(track_uuid, &slices[top]);
        }
    }

    fn begin(&mut self, track_uuid: u64, slice: &Slice) {
        let event = proto::TrackEvent {
            r#type: Some(proto::Type::SliceBegin.into()),
            track_uuid: Some(track_uuid),
            name: Some(slice.name.clone()),
            categories: vec![slice.category.clone()],
            debug_annotations: slice.args.iter().map(annotation).collect(),
            ..proto::TrackEvent::default()
        };
        self.events.push((slice.start_ns, event));
    }

    fn end(&mut self, track_uuid: u64, slice: &Slice) {
        let event = proto::TrackEvent {
            r#type: Some(proto::Type::SliceEnd.into()),
            track_uuid: Some(track_uuid),
            ..proto::TrackEvent::default()
        };
        self.events.push((slice.end_ns, event));
    }

    fn counter(&mut self, track_uuid: u64, points: &[CounterPoint]) {
        for point in points {
            let event = proto::TrackEvent {
                r#type: Some(proto::Type::Counter.into()),
                track_uuid: Some(track_uuid),
                counter_value: Some(i64::try_from(point.value).unwrap_or(i64::MAX)),
                ..proto::TrackEvent::default()
            };
            self.events.push((point.ts_ns, event));
        }
    }

    /// The trace: clock, descriptors, then events in time order. The sort is stable, so
    /// an end and a begin at the same instant on one track stay in that order (the trace
    /// processor keeps the file's order for equal timestamps, too).
    fn finish(mut self, capture: &Capture) -> proto::Trace {
        self.events.sort_by_key(|&(ts, _)| ts);
        let mut packets = vec![clock_snapshot(capture)];
        packets.append(&mut self.descriptors);
        packets.extend(
            self.events
                .into_iter()
                .map(|(ts, event)| packet(Some(ts), proto::Data::TrackEvent(event))),
        );
        proto::Trace { packet: packets }
    }
}

fn packet(timestamp: Option<u64>, data: proto::Data) -> proto::TracePacket {
    proto::TracePacket {
        timestamp,
        timestamp_clock_id: timestamp.map(|_| proto::BUILTIN_CLOCK_MONOTONIC),
        trusted_packet_sequence_id: Some(SEQUENCE_ID),
        data: Some(data),
        ..proto::TracePacket::default()
    }
}

/// The first packet: `CLOCK_MONOTONIC` is the trace clock, read at the start of the
/// recording together with the wall clock. It also starts the sequence with a clean
/// incremental state (there is none: nothing is interned).
fn clock_snapshot(capture: &Capture) -> proto::TracePacket {
    let meta = &capture.meta;
    let mut clocks = vec![proto::Clock {
        clock_id: Some(proto::BUILTIN_CLOCK_MONOTONIC),
        timestamp: Some(meta.started_monotonic_ns),
    }];
    if meta.started_unix_ns != 0 {
        clocks.push(proto::Clock {
            clock_id: Some(proto::BUILTIN_CLOCK_REALTIME),
            timestamp: Some(meta.started_unix_ns),
        });
    }
    let snapshot = proto::ClockSnapshot {
        clocks,
        primary_trace_clock: Some(proto::BUILTIN_CLOCK_MONOTONIC_ENUM),
    };
    let mut packet = packet(None, proto::Data::ClockSnapshot(snapshot));
    packet.sequence_flags = Some(proto::SEQ_INCREMENTAL_STATE_CLEARED);
    packet
}

fn annotation(arg: &Arg) -> proto::DebugAnnotation {
    let mut annotation = proto::DebugAnnotation {
        name: Some(arg.key.to_owned()),
        ..proto::DebugAnnotation::default()
    };
    match &arg.value {
        ArgValue::Text(text) => annotation.string_value = Some(text.clone()),
        ArgValue::Count(count) => annotation.uint_value = Some(*count),
    }
    annotation
}

/// The subset of Perfetto's trace protos that xlperf writes, as prost messages.
///
/// Field numbers and enum values are copied from google/perfetto's
/// `protos/perfetto/trace/`: `trace.proto`, `trace_packet.proto`, `clock_snapshot.proto`,
/// `track_event/{track_event,track_descriptor,process_descriptor,thread_descriptor,
/// counter_descriptor,debug_annotation}.proto` and `common/builtin_clock.proto`. Members
/// of a `oneof` of which xlperf only ever sets one (`TrackEvent.name`,
/// `DebugAnnotation.name`, the annotation's value, `counter_value`,
/// `trusted_packet_sequence_id`) are plain optional fields: the encoding is the same.
/// Unknown fields are skipped when decoding, so these also read the traces they write.
pub mod proto {
    /// `BuiltinClock.BUILTIN_CLOCK_REALTIME`.
    pub const BUILTIN_CLOCK_REALTIME: u32 = 1;
    /// `BuiltinClock.BUILTIN_CLOCK_MONOTONIC`, as a clock id.
    pub const BUILTIN_CLOCK_MONOTONIC: u32 = 3;
    /// The same, as the `BuiltinClock` enum value of `primary_trace_clock`.
    pub const BUILTIN_CLOCK_MONOTONIC_ENUM: i32 = 3;
    /// `TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;

    /// `perfetto.protos.Trace`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Trace {
        #[prost(message, repeated, tag = "1")]
        pub packet: Vec<TracePacket>,
    }

    /// `perfetto.protos.TracePacket`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TracePacket {
        #[prost(uint64, optional, tag = "8")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "58")]
        pub timestamp_clock_id: Option<u32>,
        #[prost(uint32, optional, tag = "10")]
        pub trusted_packet_sequence_id: Option<u32>,
        #[prost(uint32, optional, tag = "13")]
        pub sequence_flags: Option<u32>,
        #[prost(oneof = "Data", tags = "6, 11, 60")]
        pub data: Option<Data>,
    }

    /// `TracePacket.data`, the members xlperf writes.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "6")]
        ClockSnapshot(ClockSnapshot),
        #[prost(message, tag = "11")]
        TrackEvent(TrackEvent),
        #[prost(message, tag = "60")]
        TrackDescriptor(TrackDescriptor),
    }

    /// `perfetto.protos.ClockSnapshot`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClockSnapshot {
        #[prost(message, repeated, tag = "1")]
        pub clocks: Vec<Clock>,
        /// A `BuiltinClock` value.
        #[prost(int32, optional, tag = "2")]
        pub primary_trace_clock: Option<i32>,
    }

    /// `perfetto.protos.ClockSnapshot.Clock`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Clock {
        #[prost(uint32, optional, tag = "1")]
        pub clock_id: Option<u32>,
        #[prost(uint64, optional, tag = "2")]
        pub timestamp: Option<u64>,
    }

    /// `perfetto.protos.TrackDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackDescriptor {
        #[prost(uint64, optional, tag = "1")]
        pub uuid: Option<u64>,
        #[prost(uint64, optional, tag = "5")]
        pub parent_uuid: Option<u64>,
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        #[prost(message, optional, tag = "3")]
        pub process: Option<ProcessDescriptor>,
        #[prost(message, optional, tag = "4")]
        pub thread: Option<ThreadDescriptor>,
        #[prost(message, optional, tag = "8")]
        pub counter: Option<CounterDescriptor>,
    }

    /// `perfetto.protos.ProcessDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProcessDescriptor {
        #[prost(int32, optional, tag = "1")]
        pub pid: Option<i32>,
        #[prost(string, optional, tag = "6")]
        pub process_name: Option<String>,
    }

    /// `perfetto.protos.ThreadDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ThreadDescriptor {
        #[prost(int32, optional, tag = "1")]
        pub pid: Option<i32>,
        #[prost(int32, optional, tag = "2")]
        pub tid: Option<i32>,
        #[prost(string, optional, tag = "5")]
        pub thread_name: Option<String>,
    }

    /// `perfetto.protos.CounterDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CounterDescriptor {
        #[prost(enumeration = "Unit", optional, tag = "3")]
        pub unit: Option<i32>,
        #[prost(int64, optional, tag = "4")]
        pub unit_multiplier: Option<i64>,
        #[prost(bool, optional, tag = "5")]
        pub is_incremental: Option<bool>,
    }

    /// `perfetto.protos.CounterDescriptor.Unit`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Unit {
        Unspecified = 0,
        TimeNs = 1,
        Count = 2,
        SizeBytes = 3,
    }

    /// `perfetto.protos.TrackEvent`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackEvent {
        #[prost(string, repeated, tag = "22")]
        pub categories: Vec<String>,
        /// `name_field.name` (non-interned).
        #[prost(string, optional, tag = "23")]
        pub name: Option<String>,
        #[prost(enumeration = "Type", optional, tag = "9")]
        pub r#type: Option<i32>,
        #[prost(uint64, optional, tag = "11")]
        pub track_uuid: Option<u64>,
        /// `counter_value_field.counter_value`.
        #[prost(int64, optional, tag = "30")]
        pub counter_value: Option<i64>,
        #[prost(message, repeated, tag = "4")]
        pub debug_annotations: Vec<DebugAnnotation>,
    }

    /// `perfetto.protos.TrackEvent.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Type {
        Unspecified = 0,
        SliceBegin = 1,
        SliceEnd = 2,
        Instant = 3,
        Counter = 4,
    }

    /// `perfetto.protos.DebugAnnotation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DebugAnnotation {
        /// `name_field.name` (non-interned).
        #[prost(string, optional, tag = "10")]
        pub name: Option<String>,
        /// `value.uint_value`.
        #[prost(uint64, optional, tag = "3")]
        pub uint_value: Option<u64>,
        /// `value.string_value`.
        #[prost(string, optional, tag = "6")]
        pub string_value: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use prost::Message as _;

    use super::proto::{Data, Trace, TrackDescriptor, TrackEvent, Type};
    use super::*;
    use crate::export::testdata::{self, BASE_NS};

    fn decode(capture: &Capture) -> Trace {
        Trace::decode(render(capture).as_slice()).expect("decodes as perfetto.protos.Trace")
    }

    fn descriptors(trace: &Trace) -> Vec<&TrackDescriptor> {
        trace
            .packet
            .iter()
            .filter_map(|p| match &p.data {
                Some(Data::TrackDescriptor(d)) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// (timestamp, event) of every track event, in file order.
    fn events(trace: &Trace) -> Vec<(u64, &TrackEvent)> {
        trace
            .packet
            .iter()
            .filter_map(|p| match &p.data {
                Some(Data::TrackEvent(e)) => Some((p.timestamp.unwrap_or(0), e)),
                _ => None,
            })
            .collect()
    }

    fn kind(event: &TrackEvent) -> Type {
        Type::try_from(event.r#type.unwrap_or(0)).unwrap_or(Type::Unspecified)
    }

    fn uuid_named(trace: &Trace, name: &str) -> u64 {
        descriptors(trace)
            .into_iter()
            .find(|d| d.name.as_deref() == Some(name))
            .and_then(|d| d.uuid)
            .expect("track")
    }

    /// Replays each track's begins and ends like a viewer does: every end closes the
    /// innermost open slice, timestamps never go back, nothing is left open. Returns
    /// each track's slices as (name, begin, end, depth) in begin order.
    fn replay(trace: &Trace) -> HashMap<u64, Vec<(String, u64, u64, usize)>> {
        let mut open: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut done: HashMap<u64, Vec<(String, u64, u64, usize)>> = HashMap::new();
        let mut last_ts: HashMap<u64, u64> = HashMap::new();
        for (ts, event) in events(trace) {
            let track = event.track_uuid.expect("every event names its track");
            let last = last_ts.entry(track).or_insert(0);
            assert!(ts >= *last, "time goes back on track {track}");
            *last = ts;
            let stack = open.entry(track).or_default();
            let slices = done.entry(track).or_default();
            match kind(event) {
                Type::SliceBegin => {
                    let name = event.name.clone().expect("begin has a name");
                    slices.push((name, ts, 0, stack.len()));
                    stack.push(slices.len() - 1);
                }
                Type::SliceEnd => {
                    let index = stack.pop().expect("end matches an open slice");
                    slices[index].2 = ts;
                }
                _ => {}
            }
        }
        assert!(open.values().all(Vec::is_empty), "slices left open");
        done
    }

    #[test]
    fn every_packet_on_one_sequence_and_events_on_the_monotonic_clock() {
        let trace = decode(&testdata::capture());
        assert!(
            trace
                .packet
                .iter()
                .all(|p| p.trusted_packet_sequence_id == Some(SEQUENCE_ID))
        );
        let Some(Data::ClockSnapshot(clock)) = &trace.packet[0].data else {
            panic!("first packet is the clock snapshot");
        };
        assert_eq!(
            clock.primary_trace_clock,
            Some(proto::BUILTIN_CLOCK_MONOTONIC_ENUM)
        );
        assert_eq!(clock.clocks[0].timestamp, Some(BASE_NS));
        for packet in &trace.packet {
            if let Some(Data::TrackEvent(_)) = packet.data {
                assert_eq!(
                    packet.timestamp_clock_id,
                    Some(proto::BUILTIN_CLOCK_MONOTONIC)
                );
                assert!(packet.timestamp.is_some());
            }
        }
    }

    #[test]
    fn one_track_per_process_and_thread() {
        let trace = decode(&testdata::capture());
        let descriptors = descriptors(&trace);
        let processes: Vec<_> = descriptors
            .iter()
            .filter_map(|d| d.process.as_ref())
            .collect();
        assert_eq!(processes.len(), 1);
        assert_eq!(processes[0].pid, Some(100));
        assert_eq!(processes[0].process_name.as_deref(), Some("python3"));
        let threads: Vec<(Option<i32>, Option<i32>, Option<&str>)> = descriptors
            .iter()
            .filter_map(|d| d.thread.as_ref())
            .map(|t| (t.pid, t.tid, t.thread_name.as_deref()))
            .collect();
        assert_eq!(
            threads,
            vec![
                (Some(100), Some(100), Some("python3")),
                (Some(100), Some(101), Some("worker"))
            ]
        );
        // Uuids are unique and every parent is described.
        let uuids: BTreeMap<u64, &TrackDescriptor> = descriptors
            .iter()
            .map(|d| (d.uuid.expect("uuid"), *d))
            .collect();
        assert_eq!(uuids.len(), descriptors.len());
        assert!(
            descriptors
                .iter()
                .filter_map(|d| d.parent_uuid)
                .all(|parent| uuids.contains_key(&parent))
        );
        // Off-CPU tracks for both threads, an allocated-bytes counter for the one that
        // allocated, and an off-CPU time counter for each.
        let counters: Vec<_> = descriptors.iter().filter(|d| d.counter.is_some()).collect();
        assert_eq!(counters.len(), 3);
        let units: Vec<Option<i32>> = counters
            .iter()
            .map(|d| d.counter.as_ref().and_then(|c| c.unit))
            .collect();
        assert_eq!(
            units
                .iter()
                .filter(|&&u| u == Some(i32::from(proto::Unit::SizeBytes)))
                .count(),
            1
        );
        assert_eq!(
            units
                .iter()
                .filter(|&&u| u == Some(i32::from(proto::Unit::TimeNs)))
                .count(),
            2
        );
        uuid_named(&trace, "python3 100 off-CPU time");
        uuid_named(&trace, "worker 101 off-CPU time");
        uuid_named(&trace, "python3 100 off-CPU");
        uuid_named(&trace, "worker 101 off-CPU");
    }

    #[test]
    fn slices_nest_per_track_with_names_and_args() {
        let trace = decode(&testdata::capture());
        let all = events(&trace);
        let begins = all
            .iter()
            .filter(|(_, e)| kind(e) == Type::SliceBegin)
            .count();
        let ends = all
            .iter()
            .filter(|(_, e)| kind(e) == Type::SliceEnd)
            .count();
        // 5 calls and 3 off-CPU slices.
        assert_eq!((begins, ends), (8, 8));

        let tracks = replay(&trace);
        let thread_uuid = |tid: i32| {
            descriptors(&trace)
                .into_iter()
                .find(|d| d.thread.as_ref().and_then(|t| t.tid) == Some(tid))
                .and_then(|d| d.uuid)
                .expect("thread track")
        };
        let us = |n: u64| BASE_NS + n * 1_000;
        assert_eq!(
            tracks[&thread_uuid(100)],
            vec![
                ("A".to_owned(), us(10), us(110), 0),
                ("B".to_owned(), us(30), us(70), 1),
                ("A".to_owned(), us(200), us(210), 0),
            ]
        );
        assert_eq!(
            tracks[&thread_uuid(101)],
            vec![
                ("C".to_owned(), us(50), us(75), 0),
                ("D".to_owned(), us(80), us(80) + 300, 0),
            ]
        );
        assert_eq!(
            tracks[&uuid_named(&trace, "python3 100 off-CPU")],
            vec![
                ("blocked".to_owned(), us(40), us(55), 0),
                ("runnable".to_owned(), us(55), us(60), 0),
            ]
        );

        let b = all
            .iter()
            .find(|(_, e)| e.name.as_deref() == Some("B"))
            .map(|(_, e)| *e)
            .expect("B");
        assert_eq!(b.categories, vec!["ffi".to_owned()]);
        let annotations: BTreeMap<&str, String> = b
            .debug_annotations
            .iter()
            .map(|a| {
                let value = a
                    .string_value
                    .clone()
                    .or(a.uint_value.map(|v| v.to_string()))
                    .unwrap_or_default();
                (a.name.as_deref().unwrap_or_default(), value)
            })
            .collect();
        assert_eq!(annotations["library"], "libfoo.so");
        assert_eq!(annotations["runtime"], "ffi");
        assert_eq!(annotations["alloc_count"], "2");
        assert_eq!(annotations["alloc_bytes"], "300");
        assert_eq!(annotations["offcpu_ns"], "15000");
        assert!(!annotations.contains_key("free_count"));
    }

    #[test]
    fn allocated_bytes_counter_steps_at_call_ends() {
        let trace = decode(&testdata::capture());
        let counter = uuid_named(&trace, "python3 100 allocated bytes");
        let values: Vec<(u64, i64)> = events(&trace)
            .into_iter()
            .filter(|(_, e)| e.track_uuid == Some(counter))
            .map(|(ts, e)| {
                assert_eq!(kind(e), Type::Counter);
                (ts - BASE_NS, e.counter_value.unwrap_or(-1))
            })
            .collect();
        assert_eq!(
            values,
            vec![(10_000, 0), (70_000, 300), (110_000, 400), (210_000, 464)]
        );
    }

    #[test]
    fn improperly_nested_records_still_give_a_valid_trace() {
        let mut capture = testdata::capture();
        // A call that overlaps the end of the first A without being inside it.
        let mut stray = capture.calls[1];
        stray.record.start_ns = BASE_NS + 100_000;
        stray.record.duration_ns = 50_000;
        capture.calls.push(stray);
        let tracks = replay(&decode(&capture));
        assert_eq!(tracks.values().map(Vec::len).sum::<usize>(), 9);
    }

    #[test]
    fn empty_capture_is_just_the_clock() {
        let trace = decode(&Capture::default());
        assert_eq!(trace.packet.len(), 1);
    }
}
