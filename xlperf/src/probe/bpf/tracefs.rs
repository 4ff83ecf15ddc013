//! tracefs: where tracepoint formats live. Many hosts do not mount it at boot.

use std::{fs, io, path::PathBuf};

pub const MOUNT_POINT: &str = "/sys/kernel/tracing";

fn is_mounted() -> bool {
    mounted_at(&fs::read_to_string("/proc/mounts").unwrap_or_default()).is_some()
}

/// Where tracefs is mounted, per a /proc/mounts text: its usual place when it is there,
/// else the first (containers often have it only under /sys/kernel/debug/tracing).
fn mounted_at(mounts: &str) -> Option<PathBuf> {
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let point = fields.nth(1)?;
            (fields.next() == Some("tracefs")).then_some(point)
        })
        .collect();
    points
        .iter()
        .find(|&&p| p == MOUNT_POINT)
        .or(points.first())
        .map(PathBuf::from)
}

/// The directory to read tracepoint formats from.
pub fn root() -> PathBuf {
    mounted_at(&fs::read_to_string("/proc/mounts").unwrap_or_default())
        .unwrap_or_else(|| PathBuf::from(MOUNT_POINT))
}

/// Mounts tracefs at its usual place if no tracefs is mounted; says what it did.
pub fn ensure_mounted() -> io::Result<&'static str> {
    if is_mounted() {
        return Ok("mounted");
    }
    let target = std::ffi::CString::new(MOUNT_POINT).map_err(io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings; data is null as tracefs takes none.
    let r = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok("was not mounted; mounted it")
}

/// Does the tracepoint `group/name` exist on this kernel?
pub fn has_tracepoint(group: &str, name: &str) -> bool {
    root()
        .join("events")
        .join(group)
        .join(name)
        .join("format")
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tracefs_where_it_is_mounted() {
        let usual = "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/debug/tracing tracefs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(
            mounted_at(usual),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        let debug_only = "debugfs /sys/kernel/debug debugfs rw 0 0\ntracefs /sys/kernel/debug/tracing tracefs rw 0 0\n";
        assert_eq!(
            mounted_at(debug_only),
            Some(PathBuf::from("/sys/kernel/debug/tracing"))
        );
        assert_eq!(mounted_at("proc /proc proc rw 0 0\n"), None);
    }
}
