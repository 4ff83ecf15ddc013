//! The call-record ring buffer, read asynchronously.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};
use xlperf_common::CallRecord;

/// Decodes one ring-buffer item; `None` if its size is not a `CallRecord`'s.
pub fn decode(bytes: &[u8]) -> Option<CallRecord> {
    if bytes.len() != size_of::<CallRecord>() {
        return None;
    }
    // SAFETY: the length matches, CallRecord is plain old data valid for every bit
    // pattern, and read_unaligned copes with any alignment of the item.
    Some(unsafe { bytes.as_ptr().cast::<CallRecord>().read_unaligned() })
}

/// Hands every record in `ring` now to `sink`; returns (records, malformed items).
pub fn drain(ring: &mut RingBuf<MapData>, mut sink: impl FnMut(CallRecord)) -> (usize, u64) {
    let (mut n, mut malformed) = (0, 0);
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(record) => {
                sink(record);
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

    /// Hands every record available now to `sink`; returns how many there were.
    pub fn drain(&mut self, sink: impl FnMut(CallRecord)) -> usize {
        let (n, malformed) = drain(self.ring.get_mut(), sink);
        self.malformed += malformed;
        n
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
        };
        // SAFETY: viewing a POD struct as bytes for the test.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<CallRecord>())
        };
        assert_eq!(decode(bytes), Some(record));
        assert_eq!(decode(&bytes[1..]), None);
    }
}
