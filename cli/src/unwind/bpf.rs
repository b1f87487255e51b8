//! The unwind tables in the walker's maps (`--call-graph dwarf`): built before the object
//! loads (so `UNWIND_ROWS` is sized to them), written in bulk, and kept current while
//! recording by a thread that serves the walker's events (a process that exec'd or forked
//! after load, a worker respawned, a library dlopen'ed).
//!
//! `UNWIND_ROWS` is a `BPF_F_MMAPABLE` array: the rows are copied into its mapped memory, one
//! `memcpy` per shard instead of one syscall per row. Shards are only appended and a process's
//! `ProcMaps` is written after its rows, so the walker never sees a half-written shard.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use probe_common::unwind::{
    event, Error, Event, ProcMaps, Row, UserStack, MAP_ERRORS, MAP_EVENTS, MAP_PROC_MAPS, MAP_ROWS,
    MAP_USER_STACKS, PROCS_CAPACITY, USER_STACKS_CAPACITY,
};
use serde::{Deserialize, Serialize};

use super::{CacheOptions, Registry};

/// Rows the array may hold at most (64 MiB of map memory at 16 bytes per element).
const MAX_ROWS_CAPACITY: usize = 4 << 20;
/// Room kept for binaries that appear while recording (an exec'd command, dlopen).
const HEADROOM_ROWS: usize = 1 << 19;
/// The kernel stores array elements 8-byte aligned: a 12-byte row takes 16.
const ROW_STRIDE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BpfTablesError {
    #[error("BPF map {name} is missing or has an unexpected type")]
    Map { name: &'static str },
    #[error("mapping {MAP_ROWS} into memory failed")]
    Mmap(#[source] std::io::Error),
    #[error("writing the mapping table of process {tgid} failed")]
    ProcMaps {
        tgid: u32,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Every map the walker and this module share (checked against the object in a unit test).
pub const MAPS: [&str; 5] = [
    MAP_ROWS,
    MAP_PROC_MAPS,
    MAP_USER_STACKS,
    MAP_ERRORS,
    MAP_EVENTS,
];

/// The row array's size for `built` rows: room for as many again (at least
/// [`HEADROOM_ROWS`]) for binaries that appear while recording, within the cap.
fn rows_capacity(built: usize) -> usize {
    (built + built.max(HEADROOM_ROWS)).min(MAX_ROWS_CAPACITY)
}

/// The files a command will map that can be read before it starts: the program (found on
/// PATH as exec would) and the shared libraries kpath itself maps (libc and ld.so at least,
/// which nearly every program maps too).
pub fn command_files(program: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = which::which(program).ok().into_iter().collect();
    let own = std::fs::read_link("/proc/self/exe").ok();
    let libs = super::maps::read(std::process::id()).unwrap_or_default();
    for e in libs.iter().filter(|e| e.exec && e.is_file()) {
        let p = Path::new(&e.path);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if Some(p) != own.as_deref() && name.contains(".so") && !files.iter().any(|f| f == p) {
            files.push(p.to_path_buf());
        }
    }
    files
}

/// Tables built before the object is loaded.
pub struct Prepared {
    registry: Registry,
    procs: Vec<super::ProcessTables>,
    capacity: usize,
    report: UnwindReport,
    /// A command kpath forked and holds before its exec: until then it is kpath's image, whose
    /// tables nobody asked for.
    held: Option<u32>,
}

/// What run.json says about DWARF unwinding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UnwindReport {
    /// Every binary with a table, in shard order.
    pub binaries: Vec<BinaryReport>,
    /// Rows loaded in all, and the row array's capacity.
    pub rows: u64,
    pub rows_capacity: u64,
    /// Memory of the unwind maps (rows, mapping tables, stored stacks), bytes.
    pub map_bytes: u64,
    /// Time spent building or loading tables, ms (before recording and while).
    pub build_ms: f64,
    /// Binaries whose rows came from the disk cache.
    pub cache_hits: u64,
    /// Processes given tables (at start and while recording).
    pub processes: u64,
    /// Walk outcomes by reason (`complete`, `no_mapping`, ...), from the walker's counters.
    pub outcomes: BTreeMap<String, u64>,
    /// Processes or binaries left without a table, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Whether a new table did not fit the row array (counted, its process left short).
    pub rows_full: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BinaryReport {
    pub path: String,
    pub rows: u64,
    pub build_ms: f64,
    pub from_cache: bool,
}

impl Prepared {
    /// Builds the tables of the processes traced from the start.
    pub fn new(pids: &[u32]) -> Prepared {
        let options = CacheOptions {
            max_rows: MAX_ROWS_CAPACITY,
            ..CacheOptions::default()
        };
        let mut p = Prepared {
            registry: Registry::new(options),
            procs: Vec::new(),
            capacity: 0,
            report: UnwindReport::default(),
            held: None,
        };
        let t0 = Instant::now();
        for &pid in pids {
            match p.registry.add_process(pid) {
                Ok(t) => p.procs.push(t),
                Err(e) => p.report.problems.push(format!("process {pid}: {e}")),
            }
        }
        p.report.build_ms = t0.elapsed().as_secs_f64() * 1e3;
        p.capacity = rows_capacity(p.registry.rows().len());
        p
    }

    /// Builds (or loads from the disk cache) the tables of files a command is about to map:
    /// its executable and the libraries kpath shares with it, so its first samples after exec
    /// do not wait for them. Files that cannot be read are left to the walker's requests.
    pub fn warm(&mut self, files: &[PathBuf]) {
        let t0 = Instant::now();
        for f in files {
            if let Err(e) = self.registry.add_file(f) {
                log::debug!("unwind: warming {}: {e}", f.display());
            }
        }
        self.report.build_ms += t0.elapsed().as_secs_f64() * 1e3;
        self.capacity = rows_capacity(self.registry.rows().len());
    }

    /// `pid` is a command held before its exec: its requests wait for the exec event.
    pub fn hold(&mut self, pid: u32) {
        self.held = Some(pid);
    }

    /// The maps to size before the object loads (see `LoadOptions::max_entries`).
    pub fn max_entries(&self) -> Vec<(&'static str, u32)> {
        vec![(MAP_ROWS, self.capacity as u32)]
    }
}

/// The table server, running while recording.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<UnwindReport>>,
}

/// The row array's memory, mapped shared.
struct RowsMem {
    ptr: *mut u8,
    len: usize,
    capacity: usize,
    _map: MapData,
}

// SAFETY: the mapping is owned by one thread at a time (the server's); the pointer is not
// shared.
unsafe impl Send for RowsMem {}

impl RowsMem {
    fn new(map: MapData, capacity: usize) -> Result<RowsMem, BpfTablesError> {
        let page = 4096;
        let len = (capacity * ROW_STRIDE).div_ceil(page) * page;
        // SAFETY: maps `len` bytes of the array map's fd (BPF_F_MMAPABLE, `capacity` elements
        // of ROW_STRIDE bytes, rounded up to a page as the kernel allows); the result is
        // checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(BpfTablesError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(RowsMem {
            ptr: ptr.cast(),
            len,
            capacity,
            _map: map,
        })
    }

    /// Writes rows `from..` of `rows`; false when they do not fit.
    fn write(&mut self, rows: &[Row], from: usize) -> bool {
        if rows.len() > self.capacity {
            return false;
        }
        for (i, r) in rows.iter().enumerate().skip(from) {
            // SAFETY: `i < capacity`, so the element's 12 bytes lie inside the mapping, at
            // the kernel's element stride; Row is plain repr(C) data, written unaligned-safe.
            unsafe { std::ptr::write_unaligned(self.ptr.add(i * ROW_STRIDE).cast::<Row>(), *r) };
        }
        true
    }
}

impl Drop for RowsMem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing uses any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What the server thread owns.
struct State {
    registry: Registry,
    rows: RowsMem,
    written: usize,
    proc_maps: HashMap<MapData, u32, ProcMaps>,
    report: UnwindReport,
}

impl State {
    /// Appends new rows, then writes the process's mapping table.
    fn install(&mut self, t: &super::ProcessTables) -> Result<(), BpfTablesError> {
        let rows = self.registry.rows();
        if !self.rows.write(rows, self.written) {
            if !self.report.rows_full {
                self.report.problems.push(format!(
                    "process {}: its tables ({} rows in all) do not fit the row array ({})",
                    t.tgid,
                    rows.len(),
                    self.rows.capacity
                ));
            }
            self.report.rows_full = true;
            return Ok(());
        }
        self.written = rows.len();
        self.proc_maps
            .insert(t.tgid, t.maps, 0)
            .map_err(|source| BpfTablesError::ProcMaps {
                tgid: t.tgid,
                source,
            })?;
        self.report.processes += 1;
        Ok(())
    }

    fn add(&mut self, tgid: u32) {
        let t0 = Instant::now();
        let r = self.registry.add_process(tgid);
        self.report.build_ms += t0.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(t) => {
                if let Err(e) = self.install(&t) {
                    self.report.problems.push(format!("{e}"));
                }
            }
            // A process that exited before its turn is not a problem worth a line each.
            Err(super::UnwindError::NoProcess { .. }) => {}
            Err(e) => self.report.problems.push(format!("process {tgid}: {e}")),
        }
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfTablesError>
where
    T: TryFrom<aya::maps::Map>,
{
    ebpf.take_map(name)
        .and_then(|m| T::try_from(m).ok())
        .ok_or(BpfTablesError::Map { name })
}

impl Server {
    /// Writes the prepared tables into the loaded object's maps and starts serving events.
    pub fn start(ebpf: &mut Ebpf, prepared: Prepared) -> Result<Server, BpfTablesError> {
        let rows_map = match ebpf.take_map(MAP_ROWS) {
            Some(aya::maps::Map::Array(m)) => m,
            _ => return Err(BpfTablesError::Map { name: MAP_ROWS }),
        };
        let rows = RowsMem::new(rows_map, prepared.capacity)?;
        let proc_maps: HashMap<MapData, u32, ProcMaps> = take(ebpf, MAP_PROC_MAPS)?;
        let events: RingBuf<MapData> = take(ebpf, MAP_EVENTS)?;
        let mut state = State {
            registry: prepared.registry,
            rows,
            written: 0,
            proc_maps,
            report: prepared.report,
        };
        for t in &prepared.procs {
            state.install(t)?;
        }
        let held = prepared.held;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kpath-unwind".into())
            .spawn(move || serve(state, events, held, &flag))
            .ok();
        Ok(Server { stop, thread })
    }

    /// Stops serving; the report of what was loaded (outcomes come from [`outcomes`]).
    pub fn finish(mut self) -> UnwindReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut state: State,
    mut events: RingBuf<MapData>,
    mut held: Option<u32>,
    stop: &AtomicBool,
) -> UnwindReport {
    while !stop.load(Ordering::SeqCst) {
        let mut asked: Vec<u32> = Vec::new();
        while let Some(item) = events.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the item holds at least one Event (checked), written by the walker as
            // repr(C) plain data; read unaligned.
            let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            if let Some(tgid) = wanted(&ev, &mut held) {
                if !asked.contains(&tgid) {
                    asked.push(tgid);
                }
            }
        }
        for tgid in asked {
            state.add(tgid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    finish_report(state)
}

/// The process an event asks a table for, if any: a held command asks only from its exec on.
fn wanted(ev: &Event, held: &mut Option<u32>) -> Option<u32> {
    match ev.kind {
        event::EXEC if *held == Some(ev.tgid) => {
            *held = None;
            Some(ev.tgid)
        }
        _ if *held == Some(ev.tgid) => None,
        event::NEW_PROCESS | event::UNKNOWN_PC | event::EXEC => Some(ev.tgid),
        _ => None,
    }
}

fn finish_report(state: State) -> UnwindReport {
    let mut r = state.report;
    r.binaries = state
        .registry
        .binaries()
        .filter(|b| b.rows > 0)
        .map(|b| BinaryReport {
            path: b.path.display().to_string(),
            rows: b.rows as u64,
            build_ms: b.build_ms,
            from_cache: b.from_cache,
        })
        .collect();
    for b in state.registry.binaries() {
        if let Some(e) = &b.error {
            r.problems.push(format!("{}: {e}", b.path.display()));
        }
    }
    r.cache_hits = r.binaries.iter().filter(|b| b.from_cache).count() as u64;
    r.rows = state.written as u64;
    r.rows_capacity = state.rows.capacity as u64;
    r.map_bytes = (state.rows.capacity * ROW_STRIDE) as u64
        + PROCS_CAPACITY as u64 * std::mem::size_of::<ProcMaps>() as u64
        + USER_STACKS_CAPACITY as u64 * std::mem::size_of::<UserStack>() as u64;
    r
}

/// The walker's outcome counters, summed over CPUs, by name.
pub fn outcomes(ebpf: &Ebpf) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Some(arr) = ebpf
        .map(MAP_ERRORS)
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
    else {
        return out;
    };
    for e in Error::ALL {
        let n: u64 = arr.get(&(e as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
        out.insert(e.name().to_string(), n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_array_keeps_headroom_within_its_cap() {
        // A recording of a command that has not exec'd yet builds nothing up front.
        assert_eq!(rows_capacity(0), HEADROOM_ROWS);
        // nginx + libc + ld.so, about 50k rows: the fixed headroom dominates.
        assert_eq!(rows_capacity(50_000), 50_000 + HEADROOM_ROWS);
        // A large process gets as much again.
        assert_eq!(rows_capacity(1 << 20), 2 << 20);
        assert_eq!(rows_capacity(3 << 20), MAX_ROWS_CAPACITY);
    }

    #[test]
    fn a_held_command_asks_from_its_exec_on() {
        let ev = |tgid, kind| Event { tgid, kind, pc: 0 };
        let mut held = Some(7);
        // Before exec the held command is kpath's own image: nothing to build.
        assert_eq!(wanted(&ev(7, event::NEW_PROCESS), &mut held), None);
        assert_eq!(wanted(&ev(7, event::UNKNOWN_PC), &mut held), None);
        // Others are served as always.
        assert_eq!(wanted(&ev(8, event::NEW_PROCESS), &mut held), Some(8));
        assert_eq!(wanted(&ev(9, event::EXEC), &mut held), Some(9));
        assert_eq!(wanted(&ev(7, event::EXEC), &mut held), Some(7));
        assert_eq!(held, None);
        assert_eq!(wanted(&ev(7, event::UNKNOWN_PC), &mut held), Some(7));
        assert_eq!(wanted(&ev(7, 99), &mut held), None);
    }

    #[test]
    fn outcome_names_are_the_reports_keys() {
        let names: Vec<&str> = Error::ALL.iter().map(|e| e.name()).collect();
        assert!(names.contains(&"complete") && names.contains(&"table_not_loaded"));
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate outcome names");
    }
}
