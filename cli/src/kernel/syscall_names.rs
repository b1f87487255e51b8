//! x86_64 syscall number <-> name, for the `syscalls` family whose raw tracepoints only see numbers.
//!
//! The table in `syscall_table.rs` is generated once from the kernel UAPI header rather than read
//! at run time, so reports render the same on machines without kernel headers. To regenerate
//! (header from `linux-libc-dev`), run in `cli/src`:
//!
//! ```sh
//! { echo '// @generated from /usr/include/x86_64-linux-gnu/asm/unistd_64.h (linux-libc-dev 6.1) by the command in syscall_names.rs; do not edit.'; echo; \
//!   echo '/// x86_64 syscalls as `(nr, name)`, sorted by number.'; \
//!   echo 'pub(crate) static SYSCALLS: &[(u32, &str)] = &['; \
//!   awk '/^#define __NR_/ { sub(/^__NR_/, "", $2); printf "    (%d, \"%s\"),\n", $3, $2 }' \
//!     /usr/include/x86_64-linux-gnu/asm/unistd_64.h | sort -t'(' -k2 -n; \
//!   echo '];'; } > syscall_table.rs
//! ```

#[rustfmt::skip]
#[path = "syscall_table.rs"]
mod syscall_table;

use syscall_table::SYSCALLS;

/// Name of syscall `nr`, if the table knows it.
pub fn name(nr: u32) -> Option<&'static str> {
    SYSCALLS
        .binary_search_by_key(&nr, |&(n, _)| n)
        .ok()
        .map(|i| SYSCALLS[i].1)
}

/// Number of the syscall called `name` (without the `sys_` prefix).
pub fn nr(name: &str) -> Option<u32> {
    SYSCALLS
        .iter()
        .find(|&&(_, n)| n == name)
        .map(|&(nr, _)| nr)
}

/// Name for display: the table's name, or `syscall_NNN` for numbers newer than the table.
pub fn display_name(nr: u32) -> String {
    match name(nr) {
        Some(n) => n.to_string(),
        None => format!("syscall_{nr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[(u32, &str)] = &[
        (0, "read"),
        (3, "close"),
        (9, "mmap"),
        (11, "munmap"),
        (39, "getpid"),
        (43, "accept"),
        (257, "openat"),
        (288, "accept4"),
        (437, "openat2"),
    ];

    #[test]
    fn known_pairs_both_ways() {
        for &(n, s) in KNOWN {
            assert_eq!(name(n), Some(s), "name({n})");
            assert_eq!(nr(s), Some(n), "nr({s})");
            assert_eq!(display_name(n), s);
        }
    }

    #[test]
    fn unknown_numbers_and_names() {
        assert_eq!(name(100_000), None);
        assert_eq!(display_name(100_000), "syscall_100000");
        // 335..=423 is a hole in the x86_64 numbering.
        assert_eq!(name(400), None);
        assert_eq!(nr("sys_read"), None);
        assert_eq!(nr("no_such_syscall"), None);
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(SYSCALLS.len() > 300);
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
