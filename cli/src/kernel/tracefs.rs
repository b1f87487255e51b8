//! tracefs: where it is mounted, mounting it, and trace-event field offsets from its format
//! files (layouts differ between kernels: 6.18's sched_process_fork uses `__data_loc` comms, so
//! `child_pid` moved from 44 to 20).
use std::path::{Path, PathBuf};

/// The places tracefs may be mounted, in the order the kernel documentation prefers.
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mounted tracefs directory, if any.
pub fn tracefs_dir() -> Option<PathBuf> {
    TRACEFS_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Where /proc/mounts says a tracefs is mounted (anyone may read it), preferring the
/// documented places: `tracefs_dir` misses a tracefs it may not read (mode 0700, non-root).
pub fn mount_point() -> Option<PathBuf> {
    mount_point_in(&std::fs::read_to_string("/proc/mounts").ok()?)
}

/// The tracefs mount point in a /proc/mounts text.
pub fn mount_point_in(mounts: &str) -> Option<PathBuf> {
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "tracefs").then_some(point)
        })
        .collect();
    TRACEFS_PATHS
        .iter()
        .find(|p| points.contains(p))
        .or(points.first())
        .map(PathBuf::from)
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is mounted. Returns whether it mounted.
pub fn mount_tracefs() -> std::io::Result<bool> {
    if tracefs_dir().is_some() {
        return Ok(false);
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: every pointer is a NUL-terminated C string literal that lives for the whole
    // program, and a null `data` is allowed (tracefs takes no options here).
    let ret = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// The byte offset of `field` in a trace event record, from the event's tracefs `format` file.
pub fn field_offset(tracefs: &Path, category: &str, event: &str, field: &str) -> Option<u32> {
    let text = std::fs::read_to_string(
        tracefs
            .join("events")
            .join(category)
            .join(event)
            .join("format"),
    )
    .ok()?;
    parse_field_offset(&text, field)
}

/// Finds `field:<type> <field>[...];\toffset:N;` in a tracefs format text.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        // The name is the declaration's last word, without an array suffix.
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:")?.trim().parse().ok())
    })
}

/// The value of every trace-event offset global (`probe_common::offsets::ALL`): read from the
/// format files where tracefs is mounted, else the defaults of the 5.10-6.x layouts.
pub fn event_offsets(tracefs: Option<&Path>) -> Vec<(&'static str, u32)> {
    probe_common::offsets::ALL
        .iter()
        .map(|&(global, cat, ev, field, default)| {
            let off = tracefs
                .and_then(|t| field_offset(t, cat, ev, field))
                .unwrap_or(default);
            (global, off)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracefs_mount_point_from_proc_mounts() {
        let m = "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/debug/tracing tracefs rw 0 0\n\
                 tracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n";
        assert_eq!(
            mount_point_in(m),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        let m = "none /mnt/t tracefs rw 0 0\n";
        assert_eq!(mount_point_in(m), Some(PathBuf::from("/mnt/t")));
        assert_eq!(mount_point_in("proc /proc proc rw 0 0\n"), None);
    }

    /// sched_process_fork on Linux 6.18 (`__data_loc` comms) and on 5.10/6.1.
    const FORK_618: &str = "name: sched_process_fork
ID: 320
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const FORK_510: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";

    #[test]
    fn offsets_follow_the_kernels_layout() {
        assert_eq!(parse_field_offset(FORK_618, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK_510, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_510, "child_comm"), Some(28));
        assert_eq!(parse_field_offset(FORK_618, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK_618, "nope"), None);
    }

    #[test]
    fn offsets_of_this_kernel_match_or_defaults_hold() {
        // Where tracefs is mounted, every offset kpath patches must be found.
        let Some(t) = tracefs_dir() else {
            return;
        };
        for (_, cat, ev, field, _) in probe_common::offsets::ALL {
            if t.join("events").join(cat).join(ev).exists() {
                assert!(
                    field_offset(&t, cat, ev, field).is_some(),
                    "{cat}:{ev} {field}"
                );
            }
        }
    }
}
