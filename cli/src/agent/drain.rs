//! Read-and-clear of the maps a long recording must keep bounded: the stack-key count maps
//! (on-CPU samples, off-CPU time, lock waits) and the shared stack map are emptied after each
//! window, and the per-process and per-comm breakdowns lose the entries of exited processes.
//!
//! Each count entry is removed with `BPF_MAP_LOOKUP_AND_DELETE_ELEM` (Linux 5.14+ for hash
//! maps), which returns the value at the moment of removal: what arrived between the window's
//! read and the removal is then known exactly and counted as lost (it reaches neither window).
//! Per-CPU arrays (syscall and sched statistics, kpaths timings, lost counters) are never
//! cleared: the agent subtracts snapshots instead, so no event falls between two windows.
//! In-flight maps (syscall starts, off-CPU starts, lock starts) are never walked.
use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{Map, MapData},
    Ebpf, Pod,
};

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("BPF map {name} is missing or is not a hash map")]
    MissingMap { name: &'static str },
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The `bpf_attr` of the map element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn map_data<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a MapData, DrainError> {
    match ebpf.map(name) {
        Some(
            Map::HashMap(d) | Map::PerCpuHashMap(d) | Map::LruHashMap(d) | Map::StackTraceMap(d),
        ) => Ok(d),
        _ => Err(DrainError::MissingMap { name }),
    }
}

fn elem_cmd(cmd: libc::c_long, d: &MapData, key: *const u8, value: *mut u8) -> bool {
    let attr = ElemAttr {
        map_fd: d.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as u64,
        value: value as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for the element commands, its size is passed;
    // `key` points at a key of the map's key size and `value` (when used) at a buffer of the
    // map's value size, both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>() as u32,
        )
    };
    r == 0
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// Every key of a hash map, by `BPF_MAP_GET_NEXT_KEY` (entries may come and go meanwhile).
fn keys<K: Pod>(d: &MapData) -> Vec<K> {
    let mut out: Vec<K> = Vec::new();
    let mut next = std::mem::MaybeUninit::<K>::zeroed();
    loop {
        let prev = out
            .last()
            .map_or(std::ptr::null(), |k| k as *const K as *const u8);
        if !elem_cmd(BPF_MAP_GET_NEXT_KEY, d, prev, next.as_mut_ptr() as *mut u8) {
            return out;
        }
        // SAFETY: the kernel wrote a whole key (K is Pod: any bytes are a valid K).
        out.push(unsafe { next.assume_init() });
        if out.len() > 1 << 22 {
            // A map changing faster than it is listed; never loop forever.
            return out;
        }
    }
}

/// Removes every entry of a shared (not per-CPU) hash map, returning each value as it was
/// when removed.
pub fn drain<K: Pod, V: Pod>(ebpf: &Ebpf, name: &'static str) -> Result<Vec<(K, V)>, DrainError> {
    let d = map_data(ebpf, name)?;
    let mut out = Vec::new();
    for k in keys::<K>(d) {
        let mut v = std::mem::MaybeUninit::<V>::zeroed();
        if elem_cmd(
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            d,
            &k as *const K as *const u8,
            v.as_mut_ptr() as *mut u8,
        ) {
            // SAFETY: the kernel wrote the whole value (V is Pod).
            out.push((k, unsafe { v.assume_init() }));
        }
    }
    Ok(out)
}

/// Removes these keys from a map (any hash map, or the stack map with u32 ids); returns how
/// many were there.
pub fn remove<K: Pod>(ebpf: &Ebpf, name: &'static str, keys: &[K]) -> Result<usize, DrainError> {
    let d = map_data(ebpf, name)?;
    Ok(keys
        .iter()
        .filter(|k| {
            elem_cmd(
                BPF_MAP_DELETE_ELEM,
                d,
                *k as *const K as *const u8,
                std::ptr::null_mut(),
            )
        })
        .count())
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// Tells the kernel side that user space changed `TARGETS` (see
/// `probe_common::MAP_TARGETS_GEN`): every CPU's cached target verdict is refreshed.
pub fn targets_changed(ebpf: &Ebpf) -> Result<(), DrainError> {
    let name = probe_common::MAP_TARGETS_GEN;
    let Some(Map::Array(d)) = ebpf.map(name) else {
        return Err(DrainError::MissingMap { name });
    };
    let key = 0u32;
    let mut gen = 0u64;
    let key_ptr = &key as *const u32 as *const u8;
    if elem_cmd(
        BPF_MAP_LOOKUP_ELEM,
        d,
        key_ptr,
        &mut gen as *mut u64 as *mut u8,
    ) {
        // The kernel adds 1 at a time: 2^32 steps never meet its values.
        let mut next = gen.wrapping_add(1 << 32);
        elem_cmd(
            BPF_MAP_UPDATE_ELEM,
            d,
            key_ptr,
            &mut next as *mut u64 as *mut u8,
        );
    }
    Ok(())
}

/// Every key of a map (hash maps and the stack map).
pub fn all_keys<K: Pod>(ebpf: &Ebpf, name: &'static str) -> Result<Vec<K>, DrainError> {
    Ok(keys(map_data(ebpf, name)?))
}
