//! Reading the kernel's bytes: NUL-padded names and plain-old-data records.

/// A NUL-padded C string (a `comm`, a path the kernel copied), not necessarily UTF-8.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A plain-old-data record from the front of `bytes`, if they are long enough.
pub fn pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..size_of::<T>())?;
    // SAFETY: the slice holds size_of::<T>() bytes, T is valid for every bit pattern
    // (Pod: #[repr(C)] integers with explicit padding), and read_unaligned copes with any
    // alignment of the source.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// A plain-old-data record of exactly `bytes.len()` bytes (a ring item of one kind).
pub fn exact_pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() == size_of::<T>())
        .then(|| pod(bytes))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stop_at_the_first_nul() {
        assert_eq!(c_string(b"beam.smp\0\0\0"), "beam.smp");
        assert_eq!(c_string(b"full"), "full");
        assert_eq!(c_string(b"\xff\0"), "\u{fffd}");
    }

    #[test]
    fn records_need_their_size() {
        let bytes = 7u64.to_le_bytes();
        assert_eq!(pod::<u64>(&bytes), Some(7));
        assert_eq!(exact_pod::<u64>(&bytes), Some(7));
        assert_eq!(pod::<u64>(&bytes[..7]), None);
        assert_eq!(exact_pod::<u32>(&bytes), None);
    }
}
