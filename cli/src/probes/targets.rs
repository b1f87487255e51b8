//! What the kernel-side filter traces (see `probe_common::targets`): processes, threads, a
//! process name and a cgroup v2 subtree, which add up; nothing selected traces every task but
//! kpath (`-a`).
use std::{
    ffi::CString,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::Ebpf;
use probe_common::{
    hint_slot,
    target_flags::{COMM, ROOT},
    targets::{
        comm_words, GLOBAL_CGROUP_ID, GLOBAL_CGROUP_LEVEL, GLOBAL_COMM_HI, GLOBAL_COMM_LO,
        GLOBAL_PER_PROCESS, GLOBAL_THREADS, MAP_THREADS,
    },
    GLOBAL_FILTER, MAP_TARGETS, MAP_TARGET_HINTS,
};

use super::{object::Global, Globals, LoadError};

/// The selectors of one recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Whole processes (`-p`, and a command kpath started), with the children they fork.
    pub pids: Vec<u32>,
    /// Single threads (`-t`): (thread id, its process id).
    pub threads: Vec<(u32, u32)>,
    /// Every process of this name (`--comm`), running at the start or started later.
    pub comm: Option<String>,
    /// Every task in this cgroup v2 subtree (`--cgroup`).
    pub cgroup: Option<Cgroup>,
}

/// A cgroup v2 directory, as the kernel names it to BPF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    /// The cgroup id (the directory's inode number on cgroup2).
    pub id: u64,
    /// Depth below the hierarchy's root (the root is level 0).
    pub level: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--cgroup {path}: no such directory")]
    NoCgroup { path: PathBuf },
    #[error(
        "--cgroup {path}: a cgroup v1 hierarchy; kpath selects by cgroup v2 id: use a directory \
         under the cgroup2 mount{}",
        v2_hint(.v2_mount)
    )]
    CgroupV1 {
        path: PathBuf,
        v2_mount: Option<PathBuf>,
    },
    #[error("--cgroup {path}: not a cgroup directory{}", v2_hint(.v2_mount))]
    NotCgroup {
        path: PathBuf,
        v2_mount: Option<PathBuf>,
    },
    #[error("--cgroup {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "--comm: a name is 1 to 15 bytes without '/' or NUL (the kernel's task name), not {name:?}"
    )]
    BadComm { name: String },
    #[error("-t {tid}: no such thread")]
    NoThread { tid: u32 },
}

fn v2_hint(mount: &Option<PathBuf>) -> String {
    match mount {
        Some(m) => format!(" (here: {})", m.display()),
        None => " (none is mounted here)".into(),
    }
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

impl Targets {
    /// Whether nothing is selected: every task but kpath is traced.
    pub fn system_wide(&self) -> bool {
        self.pids.is_empty()
            && self.threads.is_empty()
            && self.comm.is_none()
            && self.cgroup.is_none()
    }

    /// Whether the recording may see more than one process, so its numbers need a
    /// per-process breakdown (a single process can still fork; only one thread cannot).
    pub fn per_process(&self) -> bool {
        !(self.threads.len() == 1
            && self.pids.is_empty()
            && self.comm.is_none()
            && self.cgroup.is_none())
    }

    /// The filter's globals.
    pub fn globals(&self) -> Globals {
        let (lo, hi) = self
            .comm
            .as_deref()
            .map(|c| comm_words(c.as_bytes()))
            .unwrap_or((0, 0));
        let (id, level) = self
            .cgroup
            .as_ref()
            .map(|c| (c.id, c.level))
            .unwrap_or((0, 0));
        vec![
            (GLOBAL_FILTER, Global::from(!self.system_wide())),
            (GLOBAL_THREADS, Global::from(!self.threads.is_empty())),
            (GLOBAL_COMM_LO, Global::U64(lo)),
            (GLOBAL_COMM_HI, Global::U64(hi)),
            (GLOBAL_CGROUP_ID, Global::U64(id)),
            (GLOBAL_CGROUP_LEVEL, Global::U32(level)),
            (GLOBAL_PER_PROCESS, Global::from(self.per_process())),
        ]
    }

    /// Puts the processes and threads in the kernel filter (before anything is attached).
    pub(super) fn fill(&self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        let procs: Vec<(u32, u32)> = self.pids.iter().map(|&p| (p, ROOT)).collect();
        insert(ebpf, MAP_TARGETS, &procs)?;
        let threads: Vec<(u32, u32)> = self.threads.iter().map(|&(t, _)| (t, ROOT)).collect();
        insert(ebpf, MAP_THREADS, &threads)?;
        // A thread's filter check starts at its process's hint.
        let hinted = self
            .pids
            .iter()
            .chain(self.threads.iter().flat_map(|(t, p)| [t, p]));
        set_hints(ebpf, hinted.copied())
    }

    /// Adds the processes already named `--comm` (after the exec and rename followers are
    /// attached, so a process that takes the name meanwhile is seen by one or the other).
    pub(super) fn fill_named(&self, ebpf: &mut Ebpf) -> Result<Vec<u32>, LoadError> {
        let Some(name) = &self.comm else {
            return Ok(Vec::new());
        };
        let pids = pids_named(name);
        let procs: Vec<(u32, u32)> = pids.iter().map(|&p| (p, COMM)).collect();
        set_hints(ebpf, pids.iter().copied())?;
        insert(ebpf, MAP_TARGETS, &procs)?;
        Ok(pids)
    }
}

fn insert(ebpf: &mut Ebpf, name: &'static str, ids: &[(u32, u32)]) -> Result<(), LoadError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut map: aya::maps::HashMap<_, u32, u32> = ebpf
        .map_mut(name)
        .and_then(|m| aya::maps::HashMap::try_from(m).ok())
        .ok_or(LoadError::Map { name })?;
    for &(id, flags) in ids {
        map.insert(id, flags, 0)
            .map_err(|source| LoadError::Target { pid: id, source })?;
    }
    Ok(())
}

fn set_hints(ebpf: &mut Ebpf, ids: impl Iterator<Item = u32>) -> Result<(), LoadError> {
    let mut hints: aya::maps::Array<_, u32> = ebpf
        .map_mut(MAP_TARGET_HINTS)
        .and_then(|m| aya::maps::Array::try_from(m).ok())
        .ok_or(LoadError::Map {
            name: MAP_TARGET_HINTS,
        })?;
    for id in ids {
        hints
            .set(hint_slot(id), 1, 0)
            .map_err(|source| LoadError::Target { pid: id, source })?;
    }
    Ok(())
}

/// Checks a `--comm` name: what the kernel can hold as a task name (it keeps 15 bytes, so a
/// longer name is cut the same way and matches what `ps -o comm` shows).
pub fn check_comm(name: &str) -> Result<String, TargetError> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(TargetError::BadComm { name: name.into() });
    }
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Ok(name[..end].to_string())
}

/// Processes whose main thread is named `name` now.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end_matches('\n') == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The process of thread `tid`.
pub fn thread_group(tid: u32) -> Result<u32, TargetError> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .map_err(|_| TargetError::NoThread { tid })?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(TargetError::NoThread { tid })
}

/// The mount point of the cgroup v2 hierarchy (the `cgroup2` line of /proc/mounts).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    cgroup2_mount_in(&mounts)
}

fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// Resolves `--cgroup PATH`: a directory of the cgroup v2 hierarchy, absolute or relative to
/// the cgroup2 mount.
pub fn cgroup(path: &Path) -> Result<Cgroup, TargetError> {
    let mount = cgroup2_mount();
    let full = match (&mount, path.is_absolute()) {
        (Some(m), false) => m.join(path),
        _ => path.to_path_buf(),
    };
    let io_err = |source: io::Error| TargetError::Io {
        path: full.clone(),
        source,
    };
    let meta = match std::fs::metadata(&full) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Err(TargetError::NoCgroup { path: full }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TargetError::NoCgroup { path: full })
        }
        Err(e) => return Err(io_err(e)),
    };
    match fs_type(&full).map_err(io_err)? {
        CGROUP2_SUPER_MAGIC => {}
        CGROUP_SUPER_MAGIC => {
            return Err(TargetError::CgroupV1 {
                path: full,
                v2_mount: mount,
            })
        }
        _ => {
            return Err(TargetError::NotCgroup {
                path: full,
                v2_mount: mount,
            })
        }
    }
    let canonical = full.canonicalize().map_err(io_err)?;
    let level = match mount.as_ref().and_then(|m| m.canonicalize().ok()) {
        Some(root) => canonical
            .strip_prefix(&root)
            .map(|rel| rel.components().count() as u32)
            .map_err(|_| TargetError::NotCgroup {
                path: full.clone(),
                v2_mount: mount.clone(),
            })?,
        None => {
            return Err(TargetError::NotCgroup {
                path: full,
                v2_mount: None,
            })
        }
    };
    Ok(Cgroup {
        path: canonical,
        id: meta.ino(),
        level,
    })
}

fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    // SAFETY: statfs writes only into `buf`, a zeroed statfs owned here; `c` is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_mount_is_the_cgroup2_line() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn comm_names_are_checked_and_cut_to_the_kernels_15_bytes() {
        assert_eq!(check_comm("nginx").unwrap(), "nginx");
        assert_eq!(
            check_comm("a-very-long-process-name").unwrap(),
            "a-very-long-pro"
        );
        assert!(check_comm("").is_err());
        assert!(check_comm("usr/bin/x").is_err());
    }

    #[test]
    fn selectors_decide_filter_and_breakdown() {
        let all = Targets::default();
        assert!(all.system_wide() && all.per_process());
        let one_thread = Targets {
            threads: vec![(12, 10)],
            ..Default::default()
        };
        assert!(!one_thread.system_wide() && !one_thread.per_process());
        let g = one_thread.globals();
        assert!(g.contains(&(GLOBAL_FILTER, Global::U32(1))));
        assert!(g.contains(&(GLOBAL_THREADS, Global::U32(1))));
        assert!(g.contains(&(GLOBAL_PER_PROCESS, Global::U32(0))));
        let named = Targets {
            comm: Some("kp_worker".into()),
            ..Default::default()
        };
        let (lo, hi) = comm_words(b"kp_worker");
        let g = named.globals();
        assert!(g.contains(&(GLOBAL_COMM_LO, Global::U64(lo))));
        assert!(g.contains(&(GLOBAL_COMM_HI, Global::U64(hi))));
        assert!(g.contains(&(GLOBAL_CGROUP_ID, Global::U64(0))));
    }

    #[test]
    fn a_v1_or_missing_cgroup_is_a_clear_error() {
        let e = cgroup(Path::new("/nonexistent/kpath-cgroup")).unwrap_err();
        assert!(e.to_string().contains("no such directory"), "{e}");
        let e = cgroup(Path::new("/proc")).unwrap_err();
        assert!(e.to_string().contains("not a cgroup directory"), "{e}");
        // This machine kind mounts v1 controllers under /sys/fs/cgroup (see platform facts).
        for v1 in [
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
        ] {
            if fs_type(Path::new(v1)).ok() == Some(CGROUP_SUPER_MAGIC) {
                let e = cgroup(Path::new(v1)).unwrap_err().to_string();
                assert!(e.contains("cgroup v1"), "{e}");
            }
        }
    }

    #[test]
    fn the_v2_root_and_a_child_have_their_levels() {
        let Some(root) = cgroup2_mount() else {
            return; // no cgroup2 here: nothing to resolve
        };
        let c = cgroup(&root).unwrap();
        assert_eq!(c.level, 0);
        assert_eq!(c.id, std::fs::metadata(&root).unwrap().ino());
        if let Some(child) = std::fs::read_dir(&root).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        }) {
            let c = cgroup(&child.path()).unwrap();
            assert_eq!(c.level, 1);
            let rel = child.path().strip_prefix(&root).unwrap().to_path_buf();
            assert_eq!(cgroup(&rel).unwrap().id, c.id);
        }
    }
}
