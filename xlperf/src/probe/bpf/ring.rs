//! The call-record ring buffer, read asynchronously.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};
use xlperf_common::{CallRecord, Cost, CostedCallRecord, MapChange, OffCpuRecord};

/// One item of the ring: the kinds differ in size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A completed call, with what was charged to it when anything was.
    Call(CallRecord, Option<Cost>),
    /// An off-CPU period of a target thread (`--sched`).
    OffCpu(OffCpuRecord),
    /// A process stopped itself after the dynamic linker mapped libraries (see
    /// `xlperf_common::rtld`): it waits for SIGCONT.
    MapChange(MapChange),
}

/// Reads a plain-old-data record of exactly `bytes.len()` bytes.
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    crate::bytes::exact_pod(bytes)
}

/// Decodes one ring-buffer item; `None` if its size is none of the record kinds'.
pub fn decode(bytes: &[u8]) -> Option<Item> {
    if let Some(call) = read::<CallRecord>(bytes) {
        return Some(Item::Call(call, None));
    }
    if let Some(costed) = read::<CostedCallRecord>(bytes) {
        return Some(Item::Call(costed.call, Some(costed.cost)));
    }
    if let Some(change) = read::<MapChange>(bytes) {
        return Some(Item::MapChange(change));
    }
    read::<OffCpuRecord>(bytes).map(Item::OffCpu)
}

/// Hands every item in `ring` now to `sink`; returns (items, malformed items).
pub fn drain(ring: &mut RingBuf<MapData>, mut sink: impl FnMut(Item)) -> (usize, u64) {
    let (mut n, mut malformed) = (0, 0);
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(item) => {
                sink(item);
                n += 1;
            }
            None => malformed += 1,
        }
    }
    (n, malformed)
}

/// The `CALL_RECORDS` ring buffer.
pub struct CallRecords {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Items whose size did not match: a kernel/userspace version mismatch.
    pub malformed: u64,
}

impl CallRecords {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the RingBuf owns its map fd and returns the same open fd from
            // as_raw_fd for as long as it lives, and it lives inside the AsyncFd.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            malformed: 0,
        })
    }

    /// The ring itself, for reading outside the event loop (calibration).
    pub fn ring_mut(&mut self) -> &mut RingBuf<MapData> {
        self.ring.get_mut()
    }

    /// Hands every item available now to `sink`; returns how many there were.
    pub fn drain_items(&mut self, sink: impl FnMut(Item)) -> usize {
        let (n, malformed) = drain(self.ring.get_mut(), sink);
        self.malformed += malformed;
        n
    }

    /// Hands every call record available now to `sink` (dropping what was charged to
    /// them and off-CPU periods); returns how many items there were.
    pub fn drain(&mut self, mut sink: impl FnMut(CallRecord)) -> usize {
        self.drain_items(|item| {
            if let Item::Call(call, _) = item {
                sink(call);
            }
        })
    }

    /// Waits until the kernel signals records or `poll_interval` passes. xlperf's programs
    /// submit without waking us, so in practice this is a timer; the wakeup path stays for
    /// programs that do wake.
    pub async fn wait(&mut self, poll_interval: Duration) -> std::io::Result<()> {
        if let Ok(guard) = tokio::time::timeout(poll_interval, self.ring.readable_mut()).await {
            guard?.clear_ready();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exact_size_only() {
        let record = CallRecord {
            start_ns: 1,
            duration_ns: 2,
            boundary: 3,
            parent: 4,
            pid: 5,
            tid: 6,
            depth: 7,
            target: 0,
            thread: 0,
            probe: xlperf_common::ProbeTime {
                emulated_ns: 8,
                stepped_ns: 9,
            },
        };
        // SAFETY: viewing a POD struct as bytes for the test.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<CallRecord>())
        };
        assert_eq!(decode(bytes), Some(Item::Call(record, None)));
        assert_eq!(decode(&bytes[1..]), None);

        let cost = Cost {
            alloc_count: 3,
            runq_ns: 9,
            ..Cost::default()
        };
        let costed = CostedCallRecord { call: record, cost };
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const costed).cast::<u8>(),
                size_of::<CostedCallRecord>(),
            )
        };
        assert_eq!(decode(bytes), Some(Item::Call(record, Some(cost))));

        let off = OffCpuRecord {
            pid: 5,
            blocked_ns: 7,
            ..OffCpuRecord::default()
        };
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const off).cast::<u8>(), size_of::<OffCpuRecord>())
        };
        assert_eq!(decode(bytes), Some(Item::OffCpu(off)));

        let change = MapChange {
            ns: 1,
            pid: 2,
            tid: 3,
        };
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const change).cast::<u8>(), size_of::<MapChange>())
        };
        assert_eq!(decode(bytes), Some(Item::MapChange(change)));
    }
}
