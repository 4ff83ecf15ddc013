"""perfetto_check.py TRACE: decode an xlperf Perfetto trace with Perfetto's own protobuf
definitions (PyPI `perfetto`) and print what a viewer would see, as JSON:
thread tracks, slices per name, the deepest nesting, and nesting errors."""
import json
import sys
from collections import Counter

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

trace = pb.Trace()
with open(sys.argv[1], "rb") as f:
    trace.ParseFromString(f.read())

threads = {}
names = Counter()
depth_max = 0
errors = []
stacks = {}
last_ts = {}
for packet in trace.packet:
    if packet.HasField("track_descriptor"):
        d = packet.track_descriptor
        if d.HasField("thread"):
            threads[d.uuid] = {"pid": d.thread.pid, "tid": d.thread.tid, "name": d.thread.thread_name}
    if packet.HasField("track_event"):
        e = packet.track_event
        track = e.track_uuid
        if packet.timestamp < last_ts.get(track, 0):
            errors.append("time goes back on track %d" % track)
        last_ts[track] = packet.timestamp
        stack = stacks.setdefault(track, [])
        if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            stack.append(e.name)
            if track in threads:
                names[e.name] += 1
                depth_max = max(depth_max, len(stack))
        elif e.type == pb.TrackEvent.TYPE_SLICE_END:
            if not stack:
                errors.append("end without begin on track %d" % track)
            else:
                stack.pop()
errors += ["track %d left open" % t for t, s in stacks.items() if s]
print(json.dumps({
    "thread_tracks": list(threads.values()),
    "slices": names,
    "depth_max": depth_max,
    "errors": errors,
}))
