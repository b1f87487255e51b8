//! Unwind tables per binary, built once: in memory (the [`Registry`], which owns every
//! binary's rows as one shard of a global row array) and on disk (one file per binary, keyed by
//! build-id, else device+inode+mtime), so a second recording of the same server loads its
//! tables instead of evaluating its CFI again.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use probe_common::unwind::{Mapping, ProcMaps, Row, MAX_MAPPINGS, ROWS_CAPACITY};

use super::maps::{self, LoadSegment, MapsEntry};
use super::{cfi, UnwindError};

/// Where and whether tables are cached on disk.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The cache directory; `None`: no disk cache.
    pub dir: Option<PathBuf>,
    /// Rows the registry may hold in all (the BPF row array's capacity).
    pub max_rows: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            dir: default_dir(),
            max_rows: ROWS_CAPACITY as usize,
        }
    }
}

/// `$XDG_CACHE_HOME/kpath/unwind`, else `~/.cache/kpath/unwind`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kpath").join("unwind"))
}

/// One binary the registry has read.
#[derive(Debug, Clone)]
pub struct BinaryInfo {
    /// As the first process that mapped it named it.
    pub path: PathBuf,
    /// The cache key: `b-<build-id hex>` or `f-<dev>-<inode>-<mtime>`.
    pub key: String,
    /// First row of its shard in [`Registry::rows`].
    pub row_start: u32,
    /// Rows in its shard (0: no table, see `error`).
    pub rows: u32,
    /// Time to build or load its rows.
    pub build_ms: f64,
    /// Rows loaded from the disk cache instead of built.
    pub from_cache: bool,
    /// Why it has no table, if it has none.
    pub error: Option<String>,
    segments: Vec<LoadSegment>,
}

/// Why an executable mapping has no rows in a [`ProcessTables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmappedReason {
    /// Anonymous executable memory (JIT code): in the maps with no table.
    Anonymous,
    /// The file could not be read or has no usable CFI: in the maps with no table.
    NoTable(String),
    /// No program header of the file covers the mapping's offset: in the maps with no table.
    NoSegment,
    /// More than [`MAX_MAPPINGS`] executable mappings: left out of the maps.
    TooMany,
}

/// An executable mapping walks through which cannot be unwound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    pub start: u64,
    pub end: u64,
    pub path: String,
    pub reason: UnmappedReason,
}

/// One process's mapping table, ready for `UNWIND_PROC_MAPS`.
#[derive(Debug, Clone)]
pub struct ProcessTables {
    pub tgid: u32,
    pub maps: ProcMaps,
    pub unmapped: Vec<Unmapped>,
}

/// Identity of a file as the kernel sees it, to find it again without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

/// Every binary's rows, one shard each, in the order they were added: a later
/// [`Registry::add_process`] only appends, so earlier shards never move.
#[derive(Debug, Default)]
pub struct Registry {
    options: CacheOptions,
    rows: Vec<Row>,
    binaries: Vec<BinaryInfo>,
    by_file: HashMap<FileId, usize>,
    by_key: HashMap<String, usize>,
}

impl Registry {
    pub fn new(options: CacheOptions) -> Self {
        Registry {
            options,
            ..Registry::default()
        }
    }

    /// Every shard, concatenated (what `UNWIND_ROWS` holds).
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Every binary read so far, in shard order.
    pub fn binaries(&self) -> impl Iterator<Item = &BinaryInfo> {
        self.binaries.iter()
    }

    /// Reads `pid`'s executable mappings, builds (or loads) the tables of binaries not seen
    /// before, and returns the process's mapping table.
    pub fn add_process(&mut self, pid: u32) -> Result<ProcessTables, UnwindError> {
        let entries = maps::read(pid)?;
        let mut maps = Vec::new();
        let mut unmapped = Vec::new();
        for e in entries.iter().filter(|e| e.exec) {
            let source = if e.is_file() {
                Source::File {
                    path: proc_path(pid, e),
                    inode: Some(e.inode),
                }
            } else if e.is_vdso() {
                Source::Memory {
                    pid,
                    start: e.start,
                    len: e.end - e.start,
                }
            } else {
                unmapped.push(unmapped_of(e, UnmappedReason::Anonymous));
                maps.push(mapping(e, 0, None));
                continue;
            };
            let bin = match self.binary(&source, Path::new(&e.path)) {
                Ok(i) => &self.binaries[i],
                Err(err) => {
                    unmapped.push(unmapped_of(e, UnmappedReason::NoTable(format!("{err:#}"))));
                    maps.push(mapping(e, 0, None));
                    continue;
                }
            };
            if let Some(err) = &bin.error {
                unmapped.push(unmapped_of(e, UnmappedReason::NoTable(err.clone())));
            }
            let offset = if e.is_vdso() { 0 } else { e.offset };
            match maps::bias(&bin.segments, offset, e.start) {
                Some(bias) => maps.push(mapping(e, bias, Some(bin))),
                None => {
                    unmapped.push(unmapped_of(e, UnmappedReason::NoSegment));
                    maps.push(mapping(e, 0, None));
                }
            }
        }
        maps.sort_by_key(|m| m.start);
        let mut table = ProcMaps {
            count: 0,
            _pad: 0,
            maps: [Mapping::default(); MAX_MAPPINGS],
        };
        for m in maps.iter().skip(MAX_MAPPINGS) {
            unmapped.push(Unmapped {
                start: m.start,
                end: m.end,
                path: String::new(),
                reason: UnmappedReason::TooMany,
            });
        }
        let kept = maps.len().min(MAX_MAPPINGS);
        table.maps[..kept].copy_from_slice(&maps[..kept]);
        table.count = kept as u32;
        Ok(ProcessTables {
            tgid: pid,
            maps: table,
            unmapped,
        })
    }

    /// Reads one ELF file's table (if it is new) without a process: to warm the cache, or to
    /// measure.
    pub fn add_file(&mut self, path: &Path) -> Result<&BinaryInfo, UnwindError> {
        let source = Source::File {
            path: path.to_owned(),
            inode: None,
        };
        let i = self.binary(&source, path)?;
        Ok(&self.binaries[i])
    }

    /// The index of the binary `source` holds (named `display`), reading it if it is new.
    fn binary(&mut self, source: &Source, display: &Path) -> Result<usize, UnwindError> {
        let (image, id) = match source {
            Source::File { path, inode } => {
                let file = File::open(path).map_err(|source| read_err(path, source))?;
                let meta = file.metadata().map_err(|source| read_err(path, source))?;
                if inode.is_some_and(|ino| ino != meta.ino()) {
                    return Err(UnwindError::Replaced {
                        path: display.to_owned(),
                    });
                }
                let id = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                    size: meta.size(),
                };
                if let Some(&i) = self.by_file.get(&id) {
                    return Ok(i);
                }
                // SAFETY: the mapping is read-only and private; a binary being rewritten
                // under a running process is replaced (new inode), not modified in place,
                // and a torn read only yields bad rows, never unsafety in safe code reading
                // bytes.
                let map = unsafe { memmap2::Mmap::map(&file) }
                    .map_err(|source| read_err(path, source))?;
                (Image::Mapped(map), Some(id))
            }
            Source::Memory { pid, start, len } => {
                let bytes = read_memory(*pid, *start, *len)?;
                (Image::Bytes(bytes), None)
            }
        };
        let display = display.to_owned();
        let started = Instant::now();
        let file = object::File::parse(image.bytes()).map_err(|source| UnwindError::Elf {
            path: display.clone(),
            source,
        })?;
        let segments = maps::load_segments(&file);
        let key = match object::Object::build_id(&file) {
            Ok(Some(b)) if !b.is_empty() => {
                format!(
                    "b-{}",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                )
            }
            _ => match id {
                Some(id) => format!("f-{:x}-{}-{}", id.dev, id.ino, id.mtime_ns),
                None => return Err(UnwindError::NoBuildId { path: display }),
            },
        };
        if let Some(&i) = self.by_key.get(&key) {
            if let Some(id) = id {
                self.by_file.insert(id, i);
            }
            return Ok(i);
        }
        let cached = self
            .options
            .dir
            .as_deref()
            .and_then(|d| load(&d.join(&key), &key));
        let from_cache = cached.is_some();
        let (rows, error) = match cached {
            Some(rows) => (rows, None),
            None => match cfi::build_object(&display, &file) {
                Ok(cfi) => {
                    if let Some(dir) = &self.options.dir {
                        // A cache that cannot be written only costs the next run a rebuild.
                        let _ = store(dir, &key, &cfi.rows);
                    }
                    (cfi.rows, None)
                }
                Err(err) => (Vec::new(), Some(err.to_string())),
            },
        };
        let error = error.or_else(|| rows.is_empty().then(|| "no call frame information".into()));
        if self.rows.len() + rows.len() > self.options.max_rows {
            return Err(UnwindError::TooManyRows {
                path: display,
                limit: self.options.max_rows,
            });
        }
        let info = BinaryInfo {
            path: display,
            key: key.clone(),
            row_start: self.rows.len() as u32,
            rows: rows.len() as u32,
            build_ms: started.elapsed().as_secs_f64() * 1e3,
            from_cache,
            error,
            segments,
        };
        self.rows.extend_from_slice(&rows);
        let i = self.binaries.len();
        self.binaries.push(info);
        self.by_key.insert(key, i);
        if let Some(id) = id {
            self.by_file.insert(id, i);
        }
        Ok(i)
    }
}

enum Source {
    /// A file, and the inode the process mapped (to notice a file replaced since).
    File { path: PathBuf, inode: Option<u64> },
    /// The vDSO, read from the process's memory.
    Memory { pid: u32, start: u64, len: u64 },
}

enum Image {
    Mapped(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl Image {
    fn bytes(&self) -> &[u8] {
        match self {
            Image::Mapped(m) => m,
            Image::Bytes(b) => b,
        }
    }
}

/// The file the mapping maps: `/proc/PID/map_files/START-END` (the very inode, even when
/// deleted or replaced since; opening it needs CAP_SYS_ADMIN), else the path as the process
/// sees it (its mount namespace) through `/proc/PID/root`, else the path itself.
fn proc_path(pid: u32, e: &MapsEntry) -> PathBuf {
    let mapped = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end));
    if File::open(&mapped).is_ok() {
        return mapped;
    }
    let path = e.path.strip_suffix(" (deleted)").unwrap_or(&e.path);
    let through_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
    if through_root.exists() {
        through_root
    } else {
        PathBuf::from(path)
    }
}

fn read_memory(pid: u32, addr: u64, len: u64) -> Result<Vec<u8>, UnwindError> {
    let path = PathBuf::from(format!("/proc/{pid}/mem"));
    let file = File::open(&path).map_err(|source| read_err(&path, source))?;
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, addr)
        .map_err(|source| read_err(&path, source))?;
    Ok(buf)
}

fn read_err(path: &Path, source: std::io::Error) -> UnwindError {
    UnwindError::Read {
        path: path.to_owned(),
        source,
    }
}

fn mapping(e: &MapsEntry, bias: u64, bin: Option<&BinaryInfo>) -> Mapping {
    Mapping {
        start: e.start,
        end: e.end,
        bias,
        row_start: bin.map_or(0, |b| b.row_start),
        row_count: bin.map_or(0, |b| b.rows),
    }
}

fn unmapped_of(e: &MapsEntry, reason: UnmappedReason) -> Unmapped {
    Unmapped {
        start: e.start,
        end: e.end,
        path: e.path.clone(),
        reason,
    }
}

/// The disk format: magic, version, row size, row count, key length, key, rows (12 bytes each,
/// little-endian fields), FNV-1a 64 of everything before it. Any mismatch: the file is ignored
/// and rebuilt.
const MAGIC: &[u8; 8] = b"KPUNWIND";
/// Bump when rows built from the same binary would differ (new rule kinds, fixes).
pub const FORMAT_VERSION: u32 = 1;
const ROW_BYTES: usize = 12;

fn encode(key: &str, rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + key.len() + rows.len() * ROW_BYTES);
    out.extend_from_slice(MAGIC);
    for v in [
        FORMAT_VERSION,
        ROW_BYTES as u32,
        rows.len() as u32,
        key.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(key.as_bytes());
    for r in rows {
        out.extend_from_slice(&r.pc.to_le_bytes());
        out.extend_from_slice(&r.cfa_offset.to_le_bytes());
        out.extend_from_slice(&r.rbp_offset.to_le_bytes());
        out.extend_from_slice(&[r.cfa, r.rbp, 0, 0]);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode(bytes: &[u8], key: &str) -> Option<Vec<Row>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let (magic, rest) = body.split_at_checked(8)?;
    let word = |i: usize| {
        Some(u32::from_le_bytes(
            rest.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    if magic != MAGIC || word(0)? != FORMAT_VERSION || word(1)? as usize != ROW_BYTES {
        return None;
    }
    let (count, key_len) = (word(2)? as usize, word(3)? as usize);
    let rest = &rest[16..];
    if rest.get(..key_len)? != key.as_bytes() || rest.len() != key_len + count * ROW_BYTES {
        return None;
    }
    let rows = rest[key_len..]
        .chunks_exact(ROW_BYTES)
        .map(|c| Row {
            pc: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            cfa_offset: i16::from_le_bytes([c[4], c[5]]),
            rbp_offset: i16::from_le_bytes([c[6], c[7]]),
            cfa: c[8],
            rbp: c[9],
            _pad: [0; 2],
        })
        .collect();
    Some(rows)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn load(path: &Path, key: &str) -> Option<Vec<Row>> {
    decode(&std::fs::read(path).ok()?, key)
}

/// Writes the rows under `dir/key` (through a temporary file and a rename, so a concurrent
/// reader never sees half a file).
fn store(dir: &Path, key: &str, rows: &[Row]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(&encode(key, rows))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::unwind::cfa;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                pc: 0x10,
                cfa_offset: 8,
                rbp_offset: 0,
                cfa: cfa::RSP,
                rbp: 0,
                _pad: [0; 2],
            },
            Row {
                pc: 0x11,
                cfa_offset: -300,
                rbp_offset: -16,
                cfa: cfa::RBP,
                rbp: 1,
                _pad: [0; 2],
            },
            Row {
                pc: 0x40,
                ..Row::default()
            },
        ]
    }

    fn tmp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kpath-unwind-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A child that sleeps until dropped.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn new(bin: &str, args: &[&str]) -> Sleeper {
            let child = std::process::Command::new(bin).args(args).spawn().unwrap();
            // spawn returns while the exec is still setting up the new program; wait until
            // the loader has mapped libc.
            let maps = format!("/proc/{}/maps", child.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !std::fs::read_to_string(&maps)
                .unwrap_or_default()
                .contains("libc.so")
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{bin} never mapped libc"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Sleeper(child)
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn with_rows(r: &Registry) -> Vec<&BinaryInfo> {
        r.binaries().filter(|b| b.rows > 0).collect()
    }

    #[test]
    fn a_second_registry_loads_every_table_from_disk_and_damage_is_rebuilt() {
        let dir = tmp("hit");
        let options = CacheOptions {
            dir: Some(dir.clone()),
            ..CacheOptions::default()
        };
        let child = Sleeper::new("sleep", &["60"]);
        let mut first = Registry::new(options.clone());
        let t1 = first.add_process(child.pid()).unwrap();
        let names: Vec<_> = with_rows(&first)
            .iter()
            .map(|b| b.path.display().to_string())
            .collect();
        // sleep, libc, ld.so and the vDSO (read from the process's memory) all have tables.
        assert!(names.iter().any(|n| n.ends_with("/sleep")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("ld-linux")), "{names:?}");
        assert!(names.iter().any(|n| n == "[vdso]"), "{names:?}");
        assert!(first.binaries().all(|b| !b.from_cache));
        // Only [vsyscall] (executable, no file) has no table.
        assert!(
            t1.unmapped
                .iter()
                .all(|u| u.reason == UnmappedReason::Anonymous),
            "{:?}",
            t1.unmapped
        );

        let mut second = Registry::new(options.clone());
        let t2 = second.add_process(child.pid()).unwrap();
        assert!(with_rows(&second).iter().all(|b| b.from_cache));
        assert_eq!(first.rows(), second.rows());
        assert_eq!(t1.maps.count, t2.maps.count);
        assert_eq!(t1.maps.maps, t2.maps.maps);

        // Damage every cache file: each is ignored, rebuilt and rewritten.
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let mut bytes = std::fs::read(f.path()).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(f.path(), &bytes).unwrap();
        }
        let mut third = Registry::new(options.clone());
        third.add_process(child.pid()).unwrap();
        assert!(third.binaries().all(|b| !b.from_cache));
        assert_eq!(first.rows(), third.rows());
        let mut fourth = Registry::new(options);
        fourth.add_process(child.pid()).unwrap();
        assert!(with_rows(&fourth).iter().all(|b| b.from_cache));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn later_processes_only_append_shards() {
        let a = Sleeper::new("sleep", &["60"]);
        let mut reg = Registry::new(CacheOptions {
            dir: None,
            ..CacheOptions::default()
        });
        let ta = reg.add_process(a.pid()).unwrap();
        let before = reg.rows().to_vec();
        let shards: Vec<_> = reg
            .binaries()
            .map(|b| (b.key.clone(), b.row_start, b.rows))
            .collect();
        // The same process again reads nothing new.
        reg.add_process(a.pid()).unwrap();
        assert_eq!(reg.rows().len(), before.len());
        // Another program adds its own binary; libc, ld.so and the vDSO are shared.
        let b = Sleeper::new("/usr/bin/tail", &["-f", "/dev/null"]);
        let tb = reg.add_process(b.pid()).unwrap();
        assert_eq!(&reg.rows()[..before.len()], &before[..]);
        let now: Vec<_> = reg
            .binaries()
            .map(|b| (b.key.clone(), b.row_start, b.rows))
            .collect();
        assert_eq!(&now[..shards.len()], &shards[..]);
        assert_eq!(now.len(), shards.len() + 1, "{now:?}");
        let libc = |t: &ProcessTables| {
            let m = t.maps.maps[..t.maps.count as usize].iter();
            m.map(|m| (m.row_start, m.row_count))
                .collect::<std::collections::HashSet<_>>()
        };
        assert!(libc(&ta).intersection(&libc(&tb)).count() >= 3);
        // Mappings are sorted and each names a shard inside the rows.
        let maps = &tb.maps.maps[..tb.maps.count as usize];
        assert!(maps.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(maps
            .iter()
            .all(|m| (m.row_start + m.row_count) as usize <= reg.rows().len()));
    }

    #[test]
    fn a_file_without_build_id_is_keyed_by_inode_and_mtime() {
        let dir = tmp("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("sleep-nobuildid");
        let ok = std::process::Command::new("objcopy")
            .args(["--remove-section", ".note.gnu.build-id", "/usr/bin/sleep"])
            .arg(&bin)
            .status()
            .unwrap()
            .success();
        assert!(ok, "objcopy");
        let options = CacheOptions {
            dir: Some(dir.join("cache")),
            ..CacheOptions::default()
        };
        let mut reg = Registry::new(options.clone());
        let first = reg.add_file(&bin).unwrap().clone();
        assert!(
            first.key.starts_with("f-") && !first.from_cache,
            "{first:?}"
        );
        assert!(first.rows > 100);
        assert!(
            Registry::new(options.clone())
                .add_file(&bin)
                .unwrap()
                .from_cache
        );
        // Rewritten in place (a new mtime): the old table is stale, for the disk cache and for
        // a registry that already holds it.
        let data = std::fs::read(&bin).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&bin, &data).unwrap();
        let again = reg.add_file(&bin).unwrap().clone();
        assert_ne!(again.key, first.key);
        assert!(!again.from_cache);
        assert_eq!(again.row_start, first.row_start + first.rows);
        let sleep = Registry::new(options)
            .add_file(Path::new("/usr/bin/sleep"))
            .unwrap()
            .clone();
        assert!(sleep.key.starts_with("b-"), "{}", sleep.key);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn disk_format_round_trips_and_rejects_damage() {
        let bytes = encode("b-ab", &rows());
        assert_eq!(decode(&bytes, "b-ab"), Some(rows()));
        // Another key's file (a hash collision of names, a copied file) is not used.
        assert_eq!(decode(&bytes, "b-cd"), None);
        for i in [0, 8, 12, 30, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(decode(&bad, "b-ab"), None, "byte {i}");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 3], "b-ab"), None);
        // An older version with a valid checksum is ignored too.
        let mut old = bytes[..bytes.len() - 8].to_vec();
        old[8..12].copy_from_slice(&0u32.to_le_bytes());
        let sum = fnv1a(&old);
        old.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(decode(&old, "b-ab"), None);
    }
}
