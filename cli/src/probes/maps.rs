//! Reading maps: per-CPU values folded across CPUs, the lost counters, and the shared stack map
//! through a [`Stacks`] cache, so a stack shared by several keys is read once per recording.
use std::collections::{BTreeMap, HashMap};

use aya::{
    maps::{MapData, PerCpuArray, StackTraceMap},
    Ebpf, Pod,
};
use probe_common::{
    unwind::{UserStack, MAP_USER_STACKS},
    Family, StackKey, MAP_LOST, MAP_STACKS,
};

use crate::kernel::kallsyms::Kallsyms;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("BPF map {name} is missing or has an unexpected type")]
    MissingMap { name: &'static str },
    #[error("reading BPF map {name} failed")]
    Read {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Sums a per-CPU array of u64 per index.
pub fn per_cpu_u64s(ebpf: &Ebpf, name: &'static str) -> Result<Vec<u64>, CollectError> {
    let map: PerCpuArray<&MapData, u64> = per_cpu_array(ebpf, name)?;
    map.iter()
        .map(|v| {
            v.map(|vals| vals.iter().sum())
                .map_err(|source| CollectError::Read { name, source })
        })
        .collect()
}

pub fn per_cpu_array<'a, V: Pod>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<&'a MapData, V>, CollectError> {
    ebpf.map(name)
        .and_then(|m| PerCpuArray::try_from(m).ok())
        .ok_or(CollectError::MissingMap { name })
}

/// Every entry of a hash map shared by all CPUs.
pub fn hash_entries<K: Pod, V: Pod>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<Vec<(K, V)>, CollectError> {
    let map: aya::maps::HashMap<&MapData, K, V> = ebpf
        .map(name)
        .and_then(|m| aya::maps::HashMap::try_from(m).ok())
        .ok_or(CollectError::MissingMap { name })?;
    map.iter()
        .map(|r| r.map_err(|source| CollectError::Read { name, source }))
        .collect()
}

/// Family name -> count.
pub type PerFamily = BTreeMap<String, u64>;

/// Lost events and lost stacks per family name.
pub fn lost(ebpf: &Ebpf) -> Result<(PerFamily, PerFamily), CollectError> {
    let v = per_cpu_u64s(ebpf, MAP_LOST)?;
    let mut events = BTreeMap::new();
    let mut stacks = BTreeMap::new();
    for f in Family::ALL {
        events.insert(
            f.name().to_string(),
            v.get(f as usize).copied().unwrap_or(0),
        );
        let si = probe_common::lost_stacks_index(f) as usize;
        stacks.insert(f.name().to_string(), v.get(si).copied().unwrap_or(0));
    }
    Ok((events, stacks))
}

/// Reads and caches stacks from the shared stack map.
pub struct Stacks<'a> {
    map: Option<StackTraceMap<&'a MapData>>,
    cache: HashMap<i32, Vec<u64>>,
    /// DWARF-unwound user stacks (`StackKey::user_stack`), by key.
    dwarf: Option<aya::maps::HashMap<&'a MapData, u64, UserStack>>,
    dwarf_cache: HashMap<u64, Vec<u64>>,
}

impl<'a> Stacks<'a> {
    pub fn new(ebpf: &'a Ebpf) -> Stacks<'a> {
        Stacks {
            map: ebpf
                .map(MAP_STACKS)
                .and_then(|m| StackTraceMap::try_from(m).ok()),
            cache: HashMap::new(),
            dwarf: ebpf
                .map(MAP_USER_STACKS)
                .and_then(|m| aya::maps::HashMap::try_from(m).ok()),
            dwarf_cache: HashMap::new(),
        }
    }

    /// A key's user stack, innermost first: the DWARF-unwound one when the walker took it,
    /// else the frame-pointer stack.
    pub fn user_ips(&mut self, key: &StackKey) -> &[u64] {
        if key.user_stack == 0 {
            return self.ips(key.ustack_id);
        }
        self.dwarf_ips(key.user_stack)
    }

    /// A key's kernel stack, innermost first: from the address-array store when the sched
    /// family took it at switch-in (`StackKey::kernel_stack`), else by its stack id.
    pub fn kernel_ips(&mut self, key: &StackKey) -> &[u64] {
        if key.kernel_stack != 0 {
            return self.dwarf_ips(key.kernel_stack);
        }
        self.ips(key.kstack_id)
    }

    /// A stack of the address-array store by its key, innermost first (empty if absent): a
    /// DWARF-unwound user stack, or a kernel stack taken at switch-in.
    pub fn dwarf_ips(&mut self, stack: u64) -> &[u64] {
        let map = &self.dwarf;
        self.dwarf_cache.entry(stack).or_insert_with(|| {
            map.as_ref()
                .and_then(|m| m.get(&stack, 0).ok())
                .map(|s| s.frames[..(s.len as usize).min(s.frames.len())].to_vec())
                .unwrap_or_default()
        })
    }

    /// Instruction pointers, innermost first; empty for a negative id or a missing stack.
    pub fn ips(&mut self, id: i32) -> &[u64] {
        let map = &self.map;
        self.cache.entry(id).or_insert_with(|| {
            if id < 0 {
                return Vec::new();
            }
            map.as_ref()
                .and_then(|m| m.get(&(id as u32), 0).ok())
                .map(|st| st.frames().iter().map(|f| f.ip).collect())
                .unwrap_or_default()
        })
    }

    /// Kernel frames as `symbol+0xoff`, innermost first.
    pub fn kernel_frames(&mut self, id: i32, ksyms: &Kallsyms) -> Vec<String> {
        self.ips(id)
            .iter()
            .map(|&ip| ksyms.format_frame(ip))
            .collect()
    }
}

/// The thread name of a stack key.
pub fn comm(key: &StackKey) -> String {
    let end = key
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(key.comm.len());
    String::from_utf8_lossy(&key.comm[..end]).into_owned()
}
