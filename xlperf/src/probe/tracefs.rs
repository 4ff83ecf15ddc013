//! tracefs: where tracepoint formats live. Many hosts do not mount it at boot.

use std::{fs, io, path::Path};

pub const MOUNT_POINT: &str = "/sys/kernel/tracing";

fn is_mounted() -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
        })
        .unwrap_or(false)
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
    Path::new(MOUNT_POINT)
        .join("events")
        .join(group)
        .join(name)
        .join("format")
        .exists()
}
