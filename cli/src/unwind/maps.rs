//! A process's mappings from `/proc/PID/maps`, and the load bias of each executable one.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, SegmentFlags};

use super::UnwindError;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    /// `x` in the permissions.
    pub exec: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (major, minor) and inode of the file; inode 0 for anonymous memory.
    pub dev: (u32, u32),
    pub inode: u64,
    /// The path or pseudo-name (`[vdso]`, `[stack]`), empty for anonymous memory.
    pub path: String,
}

impl MapsEntry {
    /// A mapping of a regular file (not anonymous, not a `[pseudo]` region).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// The vDSO the kernel maps into every process.
    pub fn is_vdso(&self) -> bool {
        self.path == "[vdso]"
    }
}

/// Reads and parses `/proc/PID/maps`.
pub fn read(pid: u32) -> Result<Vec<MapsEntry>, UnwindError> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text =
        std::fs::read_to_string(&path).map_err(|source| UnwindError::NoProcess { pid, source })?;
    parse(&text, &path)
}

/// Parses the text of a maps file (`path` only names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Vec<MapsEntry>, UnwindError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            parse_line(line).ok_or_else(|| UnwindError::BadMapsLine {
                path: path.to_owned(),
                line: i + 1,
                text: line.to_owned(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<MapsEntry> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        Some(f).filter(|f| !f.is_empty())
    };
    let (start, end) = field()?.split_once('-')?;
    let perms = field()?;
    let offset = field()?;
    let (major, minor) = field()?.split_once(':')?;
    let inode = field()?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    Some(MapsEntry {
        start: hex(start)?,
        end: hex(end)?,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
        offset: hex(offset)?,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: rest.trim_start().to_owned(),
    })
}

/// A `PT_LOAD` program header: where the file's bytes `offset..offset+filesz` sit at link time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub exec: bool,
}

/// The file's loadable segments.
pub fn load_segments(file: &object::File) -> Vec<LoadSegment> {
    file.segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            let exec = matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
            LoadSegment {
                vaddr: s.address(),
                offset,
                filesz,
                exec,
            }
        })
        .collect()
}

/// Load bias of a mapping that maps the file from `map_offset` at `map_start`: the amount to
/// subtract from a runtime address to get the link-time address the rows use.
///
/// The loader maps each segment from its page-rounded file offset, so a segment whose bytes
/// start at file offset `o` and link address `v` has, in a mapping of file offset `m` that holds
/// it, link address `v - o + m` at `map_start`. An executable segment is preferred when two
/// segments share the mapping's page. `None` when no segment covers the offset.
pub fn bias(segments: &[LoadSegment], map_offset: u64, map_start: u64) -> Option<u64> {
    const PAGE: u64 = 4096;
    let holds = |s: &&LoadSegment| {
        let first = s.offset & !(PAGE - 1);
        map_offset >= first && map_offset < s.offset + s.filesz.max(1)
    };
    let seg = segments.iter().filter(holds).max_by_key(|s| s.exec)?;
    let link_at_start = seg.vaddr.wrapping_sub(seg.offset).wrapping_add(map_offset);
    Some(map_start.wrapping_sub(link_at_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a23000 r--p 00000000 08:01 1311017                    /usr/sbin/nginx
55d0c0a23000-55d0c0ae1000 r-xp 00023000 08:01 1311017                    /usr/sbin/nginx
7f1c2c228000-7f1c2c37d000 r-xp 00026000 fe:00 42 /lib/x86_64-linux-gnu/libc.so.6
7f1c2c400000-7f1c2c401000 rw-p 00000000 00:00 0 
7ffd5a1f0000-7ffd5a1f2000 r-xp 00000000 00:00 0                          [vdso]
7f00000000-7f00001000 r-xp 00000000 00:2a 7 /tmp/my lib (deleted)
";

    #[test]
    fn parses_paths_pseudo_names_and_anonymous_lines() {
        let maps = parse(MAPS, Path::new("maps")).unwrap();
        assert_eq!(maps.len(), 6);
        assert_eq!(
            maps[1],
            MapsEntry {
                start: 0x55d0c0a23000,
                end: 0x55d0c0ae1000,
                exec: true,
                offset: 0x23000,
                dev: (8, 1),
                inode: 1311017,
                path: "/usr/sbin/nginx".into(),
            }
        );
        assert!(!maps[0].exec);
        assert_eq!(maps[2].dev, (0xfe, 0));
        assert!(maps[3].path.is_empty() && !maps[3].is_file());
        assert!(maps[4].is_vdso() && !maps[4].is_file());
        assert_eq!(maps[5].path, "/tmp/my lib (deleted)");
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let err = parse(
            "0-1 r-xp 0 08:01 1 /a\nnonsense\n",
            Path::new("/proc/7/maps"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/proc/7/maps") && err.contains("line 2"),
            "{err}"
        );
        let err = read(u32::MAX).unwrap_err().to_string();
        assert!(err.contains(&u32::MAX.to_string()), "{err}");
    }

    #[test]
    fn bias_of_pie_non_pie_and_split_mappings() {
        // nginx's text segment: file offset 0x23000 at link address 0x23000.
        let pie = [
            LoadSegment {
                vaddr: 0,
                offset: 0,
                filesz: 0x22a28,
                exec: false,
            },
            LoadSegment {
                vaddr: 0x23000,
                offset: 0x23000,
                filesz: 0xbe4b1,
                exec: true,
            },
        ];
        assert_eq!(bias(&pie, 0x23000, 0x55d0c0a23000), Some(0x55d0c0a00000));
        // A mapping that starts one page into the segment (split by mprotect).
        assert_eq!(bias(&pie, 0x24000, 0x55d0c0a24000), Some(0x55d0c0a00000));
        // A non-PIE executable loads at its link addresses: bias 0.
        let fixed = [LoadSegment {
            vaddr: 0x401000,
            offset: 0x1000,
            filesz: 0x2000,
            exec: true,
        }];
        assert_eq!(bias(&fixed, 0x1000, 0x401000), Some(0));
        // A segment whose vaddr and offset differ (lld puts text at offset + 0x1000), and a
        // segment starting inside its first page.
        let lld = [LoadSegment {
            vaddr: 0x219920,
            offset: 0x218920,
            filesz: 0x4c8d47,
            exec: true,
        }];
        assert_eq!(bias(&lld, 0x218000, 0x7f0000219000), Some(0x7f0000000000));
        assert_eq!(bias(&lld, 0x800000, 0x7f0000219000), None);
    }
}
