//! Snapshots of `/proc/PID/maps`, taken while the targets live.
//!
//! User stack addresses only mean something together with the mappings of their process, and a
//! process that exits before the recording ends takes them along. So `kpath record` snapshots the
//! maps of every traced tgid when it first appears and every ~200 ms, and symbolization later works
//! from file paths and file offsets alone. A mapped file that was deleted or replaced on disk is
//! kept open through `/proc/PID/map_files` when possible, so it still symbolizes.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

/// One executable mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub inode: u64,
    /// The path as the kernel shows it, without a ` (deleted)` suffix; `[vdso]` and the like for
    /// special mappings, empty for anonymous ones (JIT code).
    pub path: String,
    /// The file on disk is not the mapped one (deleted, or replaced by another inode).
    pub stale: bool,
    /// The mapped file itself, held open when `stale` (via `/proc/PID/map_files`).
    pub held: Option<Arc<File>>,
}

impl Mapping {
    /// Whether this mapping has the same identity as `o` (same range, file and offset).
    fn same(&self, o: &Mapping) -> bool {
        self.start == o.start
            && self.end == o.end
            && self.offset == o.offset
            && self.inode == o.inode
            && self.path == o.path
    }

    /// A path blazesym can open for this mapping's file, if any.
    pub fn open_path(&self) -> Option<String> {
        if let Some(f) = &self.held {
            use std::os::fd::AsRawFd;
            return Some(format!("/proc/self/fd/{}", f.as_raw_fd()));
        }
        (!self.stale && self.path.starts_with('/')).then(|| self.path.clone())
    }

    /// The module name shown for frames that could not be symbolized.
    pub fn module(&self) -> &str {
        if self.path.is_empty() {
            return "anon";
        }
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Executable mappings of a `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode [path]
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let _dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start();
    if !perms.contains('x') {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        path: path.to_string(),
        stale: deleted,
        held: None,
    })
}

/// Every executable mapping seen per tgid, newest first, so an address resolves against the
/// mapping that was live most recently.
#[derive(Debug, Default)]
pub struct MapsSnapshots {
    by_tgid: HashMap<u32, Vec<Mapping>>,
    /// Raw text of the last snapshot per tgid: an unchanged process costs one read.
    last_text: HashMap<u32, String>,
}

impl MapsSnapshots {
    /// Reads `/proc/TGID/maps` and merges it in; false when the process is gone.
    pub fn snapshot(&mut self, tgid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/maps")) else {
            return false;
        };
        if self.last_text.get(&tgid) == Some(&text) {
            return true;
        }
        let mut fresh = parse_maps(&text);
        for m in &mut fresh {
            check_on_disk(tgid, m);
        }
        self.merge(tgid, fresh);
        self.last_text.insert(tgid, text);
        true
    }

    /// Merges mappings (e.g. parsed from a saved maps text) into `tgid`'s set.
    pub fn merge(&mut self, tgid: u32, fresh: Vec<Mapping>) {
        let known = self.by_tgid.entry(tgid).or_default();
        known.retain(|old| !fresh.iter().any(|m| m.same(old)));
        let mut merged = fresh;
        merged.append(known);
        *known = merged;
    }

    /// The mapping holding `addr` in `tgid`.
    pub fn find(&self, tgid: u32, addr: u64) -> Option<&Mapping> {
        self.by_tgid
            .get(&tgid)?
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
    }

    pub fn has(&self, tgid: u32) -> bool {
        self.by_tgid.contains_key(&tgid)
    }

    pub fn tgids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_tgid.keys().copied()
    }
}

/// Marks a mapping whose file on disk is no longer the mapped one, and holds the mapped file
/// open through `map_files` (root only) so it can still be read after the process exits.
fn check_on_disk(tgid: u32, m: &mut Mapping) {
    if !m.path.starts_with('/') {
        return;
    }
    if !m.stale {
        m.stale = std::fs::metadata(&m.path).map_or(true, |md| md.ino() != m.inode);
    }
    if m.stale {
        let mf = format!("/proc/{tgid}/map_files/{:x}-{:x}", m.start, m.end);
        m.held = File::open(Path::new(&mf)).ok().map(Arc::new);
    }
}

/// The thread-group id of a task id (TARGETS also holds thread ids of traced processes).
fn tgid_of(id: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Keeps [`MapsSnapshots`] current during a recording: new ids are snapshotted at once, known
/// live tgids every [`MapsRecorder::PERIOD`].
#[derive(Debug, Default)]
pub struct MapsRecorder {
    pub snapshots: MapsSnapshots,
    seen_ids: HashSet<u32>,
    live: HashSet<u32>,
    last_round: Option<Instant>,
}

impl MapsRecorder {
    pub const PERIOD: Duration = Duration::from_millis(200);

    /// Takes note of the traced ids (tgids or thread ids); snapshots new ones now and all live
    /// ones when a period has passed.
    pub fn poll(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            if !self.seen_ids.insert(id) {
                continue;
            }
            let Some(tgid) = tgid_of(id) else { continue };
            if self.live.insert(tgid) && !self.snapshots.snapshot(tgid) {
                self.live.remove(&tgid);
            }
        }
        if self.last_round.is_none_or(|t| t.elapsed() >= Self::PERIOD) {
            self.last_round = Some(Instant::now());
            self.refresh();
        }
    }

    /// Snapshots every live tgid now (also called once at the end of a recording).
    pub fn refresh(&mut self) {
        let snaps = &mut self.snapshots;
        self.live.retain(|&t| snaps.snapshot(t));
    }

    /// Forgets every process that has exited (its mappings, the ids it was seen by): a
    /// long-running recording (the agent) calls this after each window's stacks are read.
    /// Returns how many processes were forgotten.
    pub fn evict_exited(&mut self) -> usize {
        self.refresh();
        let live = &self.live;
        let before = self.snapshots.by_tgid.len();
        self.snapshots.by_tgid.retain(|t, _| live.contains(t));
        self.snapshots.last_text.retain(|t, _| live.contains(t));
        self.seen_ids
            .retain(|&id| std::path::Path::new(&format!("/proc/{id}")).exists());
        before - self.snapshots.by_tgid.len()
    }

    /// Snapshots `tgid` if it was never seen (system-wide recordings learn tgids from stacks).
    pub fn ensure(&mut self, tgid: u32) {
        if !self.snapshots.has(tgid) && self.snapshots.snapshot(tgid) {
            self.live.insert(tgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a2e000 r--p 00000000 fd:01 1311 /usr/sbin/nginx
55d0c0a2e000-55d0c0b1d000 r-xp 0002e000 fd:01 1311 /usr/sbin/nginx
7f0c1c028000-7f0c1c1bd000 r-xp 00028000 fd:01 2222 /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)
7f0c1c400000-7f0c1c401000 rwxp 00000000 00:00 0 
7ffd2f1e5000-7ffd2f1e7000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn keeps_executable_mappings_and_flags_deleted_files() {
        let m = parse_maps(MAPS);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].start, 0x55d0c0a2e000);
        assert_eq!(m[0].offset, 0x2e000);
        assert_eq!(m[0].path, "/usr/sbin/nginx");
        assert!(!m[0].stale);
        assert_eq!(m[1].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(m[1].stale);
        assert_eq!(
            m[1].open_path(),
            None,
            "a deleted file is not opened by path"
        );
        assert_eq!(m[1].module(), "libc.so.6");
        assert_eq!(m[2].module(), "anon");
        assert_eq!(m[3].path, "[vdso]");
    }

    #[test]
    fn newer_mappings_win_and_old_ones_stay_resolvable() {
        let mut s = MapsSnapshots::default();
        s.merge(7, parse_maps("1000-2000 r-xp 00000000 fd:01 1 /old\n"));
        s.merge(
            7,
            parse_maps("1000-2000 r-xp 00000000 fd:01 2 /new\n3000-4000 r-xp 0 fd:01 3 /lib\n"),
        );
        assert_eq!(s.find(7, 0x1800).unwrap().path, "/new");
        assert_eq!(s.find(7, 0x3000).unwrap().path, "/lib");
        assert!(s.find(7, 0x2000).is_none());
        assert!(s.find(8, 0x1800).is_none());
    }

    #[test]
    fn snapshots_this_process_and_survive_its_absence() {
        let mut r = MapsRecorder::default();
        r.poll([std::process::id()]);
        let me = std::process::id();
        let f = snapshots_this_process_and_survive_its_absence as *const () as u64;
        let m = r.snapshots.find(me, f).expect("own code is mapped");
        assert!(m.path.starts_with('/'), "{m:?}");
        r.refresh();
        assert!(r.snapshots.find(me, f).is_some());
        // A pid that does not exist is simply not snapshotted.
        r.poll([u32::MAX - 1]);
        assert!(!r.snapshots.has(u32::MAX - 1));
    }
}
