//! The capture file format: a header, then self-checking chunks, written as the
//! recording goes. A recording killed at any moment leaves a file whose complete chunks
//! all read back; the reader stops at the first incomplete one and says so.
//!
//! ```text
//! file   = "XLPERFCAP\n" version:u32le chunk*
//! chunk  = kind:u32le len:u32le crc32(payload):u32le payload[len]
//! ```
//!
//! META, NAMES, BOUNDARIES and END payloads are JSON (`model.rs`); CALLS and OFFCPU are
//! the kernel's records as they came from the ring buffer (after NIF naming), packed:
//! CALLS items are a tag byte (0 plain, 1 with a `Cost`) then the `CallRecord`, then the
//! `Cost` when tagged; OFFCPU items are `OffCpuRecord`s. Unknown chunk kinds are skipped,
//! so later versions can add some without breaking older readers.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use xlperf_common::{CallRecord, Cost, OffCpuRecord};

use crate::model::{BoundaryInfo, CallEvent, Capture, End, Meta, ThreadInfo};

pub const MAGIC: &[u8; 10] = b"XLPERFCAP\n";
/// 2: call records carry the probe time inside them; META has the calibrated costs.
pub const VERSION: u32 = 2;

/// Chunk kinds.
const META: u32 = 1;
const NAMES: u32 = 2;
const BOUNDARIES: u32 = 3;
const CALLS: u32 = 4;
const OFFCPU: u32 = 5;
const END: u32 = 6;

/// A chunk larger than this is not believed (a corrupt length would make us allocate it).
const MAX_CHUNK: u32 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not an xlperf capture file (it does not start with XLPERFCAP); make one with `xlperf record -o FILE`"
    )]
    NotCapture { path: PathBuf },
    #[error(
        "{path} is a version {version} capture file; this xlperf reads version {VERSION}: use the xlperf that recorded it"
    )]
    Version { path: PathBuf, version: u32 },
    #[error("{path} is corrupt: chunk {index} ({what}) does not decode: {why}")]
    Corrupt {
        path: PathBuf,
        index: usize,
        what: &'static str,
        why: String,
    },
    #[error("{path} has no META chunk: the recording was killed before it started writing")]
    NoMeta { path: PathBuf },
}

/// Process and thread names, as they become known.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Names {
    processes: BTreeMap<u32, String>,
    threads: BTreeMap<u32, ThreadInfo>,
}

/// Writes a capture as the recording goes; each `write_*` call is one chunk, on disk
/// once [`flush`](Self::flush) returns.
pub struct CaptureWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl CaptureWriter {
    /// Checks that `path` can be written, before anything runs; leaves no file behind
    /// that was not there (an existing one is left as it is until [`Self::create`]).
    pub fn check(path: &Path) -> Result<(), CaptureError> {
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .map_err(|source| CaptureError::Write {
                path: path.to_owned(),
                source,
            })?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    pub fn create(path: &Path, meta: &Meta) -> Result<Self, CaptureError> {
        let file = File::create(path).map_err(|source| CaptureError::Write {
            path: path.to_owned(),
            source,
        })?;
        let mut writer = Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        };
        writer.io(|out| {
            out.write_all(MAGIC)?;
            out.write_all(&VERSION.to_le_bytes())
        })?;
        writer.json(META, meta)?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn names(
        &mut self,
        processes: &BTreeMap<u32, String>,
        threads: &BTreeMap<u32, ThreadInfo>,
    ) -> Result<(), CaptureError> {
        if processes.is_empty() && threads.is_empty() {
            return Ok(());
        }
        self.json(
            NAMES,
            &Names {
                processes: processes.clone(),
                threads: threads.clone(),
            },
        )
    }

    pub fn boundaries(&mut self, new: &BTreeMap<u32, BoundaryInfo>) -> Result<(), CaptureError> {
        if new.is_empty() {
            return Ok(());
        }
        self.json(BOUNDARIES, new)
    }

    pub fn calls(&mut self, calls: &[CallEvent]) -> Result<(), CaptureError> {
        if calls.is_empty() {
            return Ok(());
        }
        let mut payload = Vec::with_capacity(calls.len() * (1 + size_of::<CallRecord>()));
        for call in calls {
            payload.push(u8::from(call.cost.is_some()));
            payload.extend_from_slice(bytes_of(&call.record));
            if let Some(cost) = &call.cost {
                payload.extend_from_slice(bytes_of(cost));
            }
        }
        self.chunk(CALLS, &payload)
    }

    pub fn off_cpu(&mut self, periods: &[OffCpuRecord]) -> Result<(), CaptureError> {
        if periods.is_empty() {
            return Ok(());
        }
        let mut payload = Vec::with_capacity(size_of_val(periods));
        for period in periods {
            payload.extend_from_slice(bytes_of(period));
        }
        self.chunk(OFFCPU, &payload)
    }

    /// Writes the end chunk and flushes: the file is complete.
    pub fn finish(mut self, end: &End) -> Result<(), CaptureError> {
        self.json(END, end)?;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.io(|out| out.flush())
    }

    fn json(&mut self, kind: u32, value: &impl Serialize) -> Result<(), CaptureError> {
        let payload = serde_json::to_vec(value).map_err(|e| CaptureError::Write {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        self.chunk(kind, &payload)
    }

    fn chunk(&mut self, kind: u32, payload: &[u8]) -> Result<(), CaptureError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_CHUNK)
            .ok_or_else(|| CaptureError::Write {
                path: self.path.clone(),
                source: io::Error::other("chunk over 256 MiB"),
            })?;
        let crc = crc32fast::hash(payload);
        self.io(|out| {
            out.write_all(&kind.to_le_bytes())?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&crc.to_le_bytes())?;
            out.write_all(payload)
        })
    }

    fn io(
        &mut self,
        f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
    ) -> Result<(), CaptureError> {
        f(&mut self.out).map_err(|source| CaptureError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// The bytes of a plain-old-data record.
fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: T is Pod (#[repr(C)], no padding bytes left uninitialised, see
    // xlperf-common), so all size_of::<T>() bytes are initialised and readable.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Reads a plain-old-data record from the front of `bytes`, if it is long enough.
fn read_pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    crate::bytes::pod(bytes)
}

/// Reads a whole capture file.
pub fn read(path: &Path) -> Result<Capture, CaptureError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|source| CaptureError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse(path, &data)
}

/// Decodes a capture from its bytes; `path` only names it in errors.
pub fn parse(path: &Path, data: &[u8]) -> Result<Capture, CaptureError> {
    let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
        return Err(CaptureError::NotCapture {
            path: path.to_owned(),
        });
    };
    let Some(version) = rest.get(..4).map(u32_le) else {
        return Err(CaptureError::NotCapture {
            path: path.to_owned(),
        });
    };
    if version != VERSION {
        return Err(CaptureError::Version {
            path: path.to_owned(),
            version,
        });
    }
    let mut capture = Capture::default();
    let mut rest = &rest[4..];
    let mut meta = None;
    let mut index = 0;
    while !rest.is_empty() {
        let Some((kind, payload, after)) = next_chunk(rest) else {
            capture.truncated = true;
            break;
        };
        rest = after;
        let corrupt = |what: &'static str, why: String| CaptureError::Corrupt {
            path: path.to_owned(),
            index,
            what,
            why,
        };
        match kind {
            META => meta = Some(json::<Meta>(payload).map_err(|e| corrupt("META", e))?),
            NAMES => {
                let names = json::<Names>(payload).map_err(|e| corrupt("NAMES", e))?;
                capture.processes.extend(names.processes);
                capture.threads.extend(names.threads);
            }
            BOUNDARIES => {
                let new = json::<BTreeMap<u32, BoundaryInfo>>(payload)
                    .map_err(|e| corrupt("BOUNDARIES", e))?;
                capture.boundaries.extend(new);
            }
            CALLS => decode_calls(payload, &mut capture.calls).map_err(|e| corrupt("CALLS", e))?,
            OFFCPU => {
                if payload.len() % size_of::<OffCpuRecord>() != 0 {
                    return Err(corrupt(
                        "OFFCPU",
                        "length is not a whole number of records".into(),
                    ));
                }
                capture.off_cpu.extend(
                    payload
                        .chunks_exact(size_of::<OffCpuRecord>())
                        .filter_map(read_pod::<OffCpuRecord>),
                );
            }
            END => capture.end = Some(json::<End>(payload).map_err(|e| corrupt("END", e))?),
            _ => {}
        }
        index += 1;
    }
    capture.meta = meta.ok_or_else(|| CaptureError::NoMeta {
        path: path.to_owned(),
    })?;
    if capture.end.is_none() {
        capture.truncated = true;
    }
    Ok(capture)
}

/// Splits off the next complete chunk whose checksum holds: (kind, payload, rest).
fn next_chunk(data: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    let header = data.get(..12)?;
    let (kind, len, crc) = (
        u32_le(&header[..4]),
        u32_le(&header[4..8]),
        u32_le(&header[8..12]),
    );
    if len > MAX_CHUNK {
        return None;
    }
    let end = 12usize.checked_add(usize::try_from(len).ok()?)?;
    let payload = data.get(12..end)?;
    (crc32fast::hash(payload) == crc).then(|| (kind, payload, &data[end..]))
}

fn decode_calls(mut payload: &[u8], out: &mut Vec<CallEvent>) -> Result<(), String> {
    while let Some((&tag, rest)) = payload.split_first() {
        let record = read_pod::<CallRecord>(rest).ok_or("a call record is cut short")?;
        let rest = &rest[size_of::<CallRecord>()..];
        let (cost, rest) = match tag {
            0 => (None, rest),
            1 => (
                Some(read_pod::<Cost>(rest).ok_or("a call's cost is cut short")?),
                &rest[size_of::<Cost>()..],
            ),
            other => return Err(format!("unknown call tag {other}")),
        };
        out.push(CallEvent { record, cost });
        payload = rest;
    }
    Ok(())
}

fn json<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

fn u32_le(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Meta, Vec<CallEvent>, Vec<OffCpuRecord>, End) {
        let meta = Meta {
            xlperf_version: "0.1.0".into(),
            argv: vec!["xlperf".into(), "record".into()],
            alloc: true,
            ..Meta::default()
        };
        let call = |boundary, cost: Option<Cost>| CallEvent {
            record: CallRecord {
                start_ns: 100,
                duration_ns: 50,
                boundary,
                pid: 7,
                tid: 8,
                depth: 1,
                ..CallRecord::default()
            },
            cost,
        };
        let calls = vec![
            call(1, None),
            call(
                2,
                Some(Cost {
                    alloc_count: 3,
                    alloc_bytes: 300,
                    ..Cost::default()
                }),
            ),
            call(1, None),
        ];
        let off = vec![OffCpuRecord {
            end_ns: 900,
            blocked_ns: 40,
            pid: 7,
            tid: 8,
            ..OffCpuRecord::default()
        }];
        let end = End {
            duration_ns: 1234,
            target_exit_status: Some(0),
            ..End::default()
        };
        (meta, calls, off, end)
    }

    fn write_sample(path: &Path) -> Vec<u8> {
        let (meta, calls, off, end) = sample();
        let mut w = CaptureWriter::create(path, &meta).expect("create");
        let mut procs = BTreeMap::new();
        procs.insert(7, "app".to_owned());
        w.names(&procs, &BTreeMap::new()).expect("names");
        let mut bounds = BTreeMap::new();
        bounds.insert(
            1,
            BoundaryInfo {
                function: "f".into(),
                ..BoundaryInfo::default()
            },
        );
        w.boundaries(&bounds).expect("boundaries");
        w.calls(&calls[..2]).expect("calls");
        w.flush().expect("flush");
        w.calls(&calls[2..]).expect("calls");
        w.off_cpu(&off).expect("off");
        w.finish(&end).expect("finish");
        std::fs::read(path).expect("read back")
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xlperf-capture-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trips() {
        let path = temp("round");
        let bytes = write_sample(&path);
        let capture = parse(&path, &bytes).expect("parse");
        let (meta, calls, off, end) = sample();
        assert_eq!(capture.meta, meta);
        assert_eq!(capture.calls, calls);
        assert_eq!(capture.off_cpu, off);
        assert_eq!(capture.end, Some(end));
        assert_eq!(capture.processes[&7], "app");
        assert_eq!(capture.boundaries[&1].function, "f");
        assert!(!capture.truncated);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_file_cut_anywhere_reads_up_to_its_last_complete_chunk() {
        let path = temp("cut");
        let bytes = write_sample(&path);
        // Magic, version, then the META chunk's header and JSON payload.
        let meta_end = MAGIC.len() + 4 + 12 + serde_json::to_vec(&sample().0).expect("json").len();
        let mut last_calls = 0;
        for cut in 0..bytes.len() {
            match parse(&path, &bytes[..cut]) {
                Ok(capture) => {
                    assert!(capture.truncated, "cut at {cut} is not flagged");
                    // Calls only ever grow as the cut moves on: never a partial chunk.
                    assert!(capture.calls.len() >= last_calls);
                    assert!([0, 2, 3].contains(&capture.calls.len()), "cut at {cut}");
                    last_calls = capture.calls.len();
                }
                Err(CaptureError::NotCapture { .. } | CaptureError::NoMeta { .. }) => {
                    assert!(cut < meta_end, "cut at {cut} lost the META chunk");
                }
                Err(e) => panic!("cut at {cut}: {e}"),
            }
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn foreign_files_get_one_clear_error() {
        let path = Path::new("x.bin");
        let err = parse(path, b"\x7fELF\x02\x01\x01").expect_err("ELF");
        assert!(
            err.to_string().contains("not an xlperf capture file"),
            "{err}"
        );
        let mut future = MAGIC.to_vec();
        future.extend_from_slice(&9u32.to_le_bytes());
        let err = parse(path, &future).expect_err("version 9");
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    /// A small fuzz test: random bytes after a valid header, and random bit flips and
    /// truncations of a valid file, never panic (errors and truncation are fine).
    #[test]
    fn fuzzed_files_never_panic() {
        let path = temp("fuzz");
        let valid = write_sample(&path);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*: deterministic, so a failure reproduces.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for _ in 0..3000 {
            let mut bytes = valid.clone();
            match next() % 3 {
                0 => {
                    for _ in 0..(next() % 8 + 1) {
                        let at = (next() as usize) % bytes.len();
                        bytes[at] ^= 1 << (next() % 8);
                    }
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                _ => {
                    bytes.truncate(MAGIC.len() + 4);
                    bytes.extend((0..(next() % 512)).map(|_| next() as u8));
                }
            }
            let _ = parse(&path, &bytes);
        }
        let _ = std::fs::remove_file(path);
    }
}
