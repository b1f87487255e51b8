//! Attaching programs by kind, with rollback: a method attaches all its programs or none.
use aya::{
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        BtfTracePoint, FEntry, FExit, KProbe, PerfEvent, Program, ProgramError, RawTracePoint,
        TracePoint,
    },
    Btf, Ebpf,
};

/// One program and where it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// A BPF raw tracepoint (by name; needs no tracefs).
    RawTp {
        prog: &'static str,
        tp: &'static str,
    },
    /// A BTF tracepoint (tp_btf: a tracing program on `btf_trace_<tp>`, typed arguments; by
    /// name, no tracefs).
    BtfTp {
        prog: &'static str,
        tp: &'static str,
    },
    /// A trace event (`category:event`, through tracefs).
    TracePoint {
        prog: &'static str,
        category: &'static str,
        event: &'static str,
    },
    /// Two programs on every event pair `category:<enter><x>` / `category:<exit><x>` tracefs
    /// lists (the syscalls:sys_enter_*/sys_exit_* last resort: ~700 attachments).
    EventPairs {
        category: &'static str,
        enter_prog: &'static str,
        enter_prefix: &'static str,
        exit_prog: &'static str,
        exit_prefix: &'static str,
    },
    KProbe {
        prog: &'static str,
        symbol: &'static str,
    },
    /// fentry and fexit trampolines (BTF); kernels that refuse tracing programs fail at load.
    FEntry {
        prog: &'static str,
        symbol: &'static str,
    },
    FExit {
        prog: &'static str,
        symbol: &'static str,
    },
    /// perf_event cpu-clock sampling on every online CPU at the recording's frequency.
    CpuClock { prog: &'static str },
}

/// Programs with a twin without the DWARF walker (`<name>_fp`). A program that holds the
/// walker's bpf_loop callback does not load at all on kernels before 5.13 (they reject its
/// BPF_PSEUDO_FUNC instruction before the verifier could prove it dead), so with frame-pointer
/// stacks the twin loads instead, on every kernel.
pub const FP_TWINS: [(&str, &str); 6] = [
    ("oncpu_sample", "oncpu_sample_fp"),
    ("sched_sched_switch", "sched_sched_switch_fp"),
    ("sched_raw_sched_switch", "sched_raw_sched_switch_fp"),
    ("sched_btf_sched_switch", "sched_btf_sched_switch_fp"),
    ("locks_contention_begin", "locks_contention_begin_fp"),
    (
        "locks_mutex_slowpath_kprobe",
        "locks_mutex_slowpath_kprobe_fp",
    ),
];

/// The program to load for `name`: its frame-pointer twin when `fp` and it has one.
pub fn twin(name: &'static str, fp: bool) -> &'static str {
    if !fp {
        return name;
    }
    FP_TWINS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |&(_, t)| t)
}

impl Prog {
    /// Whether the program attaches by a BTF id (fentry, fexit, BTF tracepoints): loading it
    /// needs the kernel's BTF parsed by aya.
    pub fn attaches_by_btf(&self) -> bool {
        matches!(
            self,
            Prog::FEntry { .. } | Prog::FExit { .. } | Prog::BtfTp { .. }
        )
    }

    /// The same attachment with every program replaced by its twin when `fp` (see [`twin`]).
    pub fn with_twins(self, fp: bool) -> Prog {
        let t = |n| twin(n, fp);
        match self {
            Prog::RawTp { prog, tp } => Prog::RawTp { prog: t(prog), tp },
            Prog::BtfTp { prog, tp } => Prog::BtfTp { prog: t(prog), tp },
            Prog::TracePoint {
                prog,
                category,
                event,
            } => Prog::TracePoint {
                prog: t(prog),
                category,
                event,
            },
            Prog::EventPairs {
                category,
                enter_prog,
                enter_prefix,
                exit_prog,
                exit_prefix,
            } => Prog::EventPairs {
                category,
                enter_prog: t(enter_prog),
                enter_prefix,
                exit_prog: t(exit_prog),
                exit_prefix,
            },
            Prog::KProbe { prog, symbol } => Prog::KProbe {
                prog: t(prog),
                symbol,
            },
            Prog::FEntry { prog, symbol } => Prog::FEntry {
                prog: t(prog),
                symbol,
            },
            Prog::FExit { prog, symbol } => Prog::FExit {
                prog: t(prog),
                symbol,
            },
            Prog::CpuClock { prog } => Prog::CpuClock { prog: t(prog) },
        }
    }

    /// The program's name in the object (the enter program for [`Prog::EventPairs`]).
    pub fn names(&self) -> Vec<&'static str> {
        match *self {
            Prog::RawTp { prog, .. }
            | Prog::BtfTp { prog, .. }
            | Prog::TracePoint { prog, .. }
            | Prog::KProbe { prog, .. }
            | Prog::FEntry { prog, .. }
            | Prog::FExit { prog, .. }
            | Prog::CpuClock { prog } => vec![prog],
            Prog::EventPairs {
                enter_prog,
                exit_prog,
                ..
            } => vec![enter_prog, exit_prog],
        }
    }
}

/// The object and what attaching needs beyond it.
pub struct Attacher<'a> {
    pub ebpf: &'a mut Ebpf,
    pub sample_hz: u64,
    /// Kernel BTF for fentry/fexit and BTF tracepoints, parsed on first use (most kernels kpath meets refuse or
    /// never reach fentry, and parsing costs ~20 ms).
    pub btf: Option<Btf>,
    pub tracefs: Option<&'a std::path::Path>,
    /// Load the frame-pointer twins of the programs that have one (see [`twin`]).
    pub fp: bool,
}

impl Attacher<'_> {
    /// Attaches every program in order; on a failure unloads those this call attached.
    pub fn attach_all(&mut self, progs: &[Prog]) -> Result<(), ProgramError> {
        for (i, p) in progs.iter().enumerate() {
            if let Err(e) = self.attach(&p.with_twins(self.fp)) {
                for done in &progs[..=i] {
                    for name in done.with_twins(self.fp).names() {
                        if let Some(prog) = self.ebpf.program_mut(name) {
                            unload(prog);
                        }
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn attach(&mut self, p: &Prog) -> Result<(), ProgramError> {
        match *p {
            Prog::RawTp { prog, tp } => {
                let prog: &mut RawTracePoint = program(self.ebpf, prog)?;
                prog.load()?;
                prog.attach(tp).map(drop)
            }
            Prog::BtfTp { prog, tp } => {
                let btf = kernel_btf(&mut self.btf)?;
                let prog: &mut BtfTracePoint = program(self.ebpf, prog)?;
                prog.load(tp, btf)?;
                prog.attach().map(drop)
            }
            Prog::TracePoint {
                prog,
                category,
                event,
            } => tracepoint(self.ebpf, prog, category, event),
            Prog::EventPairs {
                category,
                enter_prog,
                enter_prefix,
                exit_prog,
                exit_prefix,
            } => {
                let dir = self.tracefs.map(|t| t.join("events").join(category));
                let names = dir
                    .map(|d| event_pairs(&d, enter_prefix, exit_prefix))
                    .unwrap_or_default();
                for n in &names {
                    tracepoint(
                        self.ebpf,
                        enter_prog,
                        category,
                        &format!("{enter_prefix}{n}"),
                    )?;
                    tracepoint(self.ebpf, exit_prog, category, &format!("{exit_prefix}{n}"))?;
                }
                Ok(())
            }
            Prog::KProbe { prog, symbol } => {
                let prog: &mut KProbe = program(self.ebpf, prog)?;
                prog.load()?;
                prog.attach(symbol, 0).map(drop)
            }
            Prog::FEntry { prog, symbol } => {
                let btf = kernel_btf(&mut self.btf)?;
                let prog: &mut FEntry = program(self.ebpf, prog)?;
                prog.load(symbol, btf)?;
                prog.attach().map(drop)
            }
            Prog::FExit { prog, symbol } => {
                let btf = kernel_btf(&mut self.btf)?;
                let prog: &mut FExit = program(self.ebpf, prog)?;
                prog.load(symbol, btf)?;
                prog.attach().map(drop)
            }
            Prog::CpuClock { prog } => {
                let cpus = aya::util::online_cpus().map_err(|(_, e)| ProgramError::IOError(e))?;
                let hz = self.sample_hz;
                let prog: &mut PerfEvent = program(self.ebpf, prog)?;
                prog.load()?;
                for cpu in cpus {
                    prog.attach(
                        PerfEventConfig::Software(SoftwareEvent::CpuClock),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Frequency(hz),
                        false,
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The kernel's BTF for programs that attach by BTF id, parsed on first use into `btf`.
fn kernel_btf(btf: &mut Option<Btf>) -> Result<&Btf, ProgramError> {
    match btf {
        Some(b) => Ok(b),
        slot @ None => {
            let b = Btf::from_sys_fs().map_err(|e| {
                ProgramError::IOError(std::io::Error::other(format!(
                    "reading kernel BTF failed: {e}"
                )))
            })?;
            Ok(slot.insert(b))
        }
    }
}

/// Loads the trace-event program if needed (one program may attach to many events).
fn tracepoint(
    ebpf: &mut Ebpf,
    name: &str,
    category: &str,
    event: &str,
) -> Result<(), ProgramError> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load()?;
    }
    prog.attach(category, event).map(drop)
}

/// Names `x` with both `<enter>x` and `<exit>x` events in `dir`, sorted.
fn event_pairs(dir: &std::path::Path, enter: &str, exit: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(enter).map(str::to_string))
        .filter(|n| dir.join(format!("{exit}{n}")).exists())
        .collect();
    v.sort();
    v
}

pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    prog.try_into()
}

/// Unloads through the typed program, which detaches its links first.
pub fn unload(p: &mut Program) {
    let _ = match p {
        Program::TracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::PerfEvent(p) => p.unload(),
        _ => Ok(()),
    };
}

/// What a failure of `progs` means, where the kernel's error alone misleads: the host kernel of
/// these machines refuses BPF_PROG_TYPE_TRACING with EPERM and an empty verifier log.
pub fn explain(progs: &[Prog], e: &ProgramError) -> String {
    let chain = error_chain(e);
    let tracing = progs
        .iter()
        .any(|p| matches!(p, Prog::FEntry { .. } | Prog::FExit { .. }));
    if tracing && chain.contains("Operation not permitted") {
        "the kernel refused the tracing program (EPERM at load, empty verifier log): \
         this kernel does not allow fentry/fexit"
            .to_string()
    } else {
        chain
    }
}

/// `e: cause: cause` on one line (aya's errors nest the errno two levels down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_pointer_stacks_load_the_twins_without_the_walker() {
        let p = Prog::CpuClock {
            prog: "oncpu_sample",
        };
        assert_eq!(p.with_twins(false), p);
        assert_eq!(
            p.with_twins(true),
            Prog::CpuClock {
                prog: "oncpu_sample_fp"
            }
        );
        let k = Prog::KProbe {
            prog: "locks_mutex_slowpath_kprobe",
            symbol: "__mutex_lock_slowpath",
        };
        assert_eq!(
            k.with_twins(true).names(),
            ["locks_mutex_slowpath_kprobe_fp"]
        );
        // Programs without a walker have no twin.
        assert_eq!(
            twin("syscalls_raw_sys_enter", true),
            "syscalls_raw_sys_enter"
        );
    }

    #[test]
    fn event_pairs_need_both_halves() {
        let dir = std::env::temp_dir().join(format!("kpath-pairs-{}", std::process::id()));
        for n in [
            "sys_enter_read",
            "sys_exit_read",
            "sys_enter_odd",
            "sys_exit_close",
        ] {
            std::fs::create_dir_all(dir.join(n)).unwrap();
        }
        let v = event_pairs(&dir, "sys_enter_", "sys_exit_");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(v, ["read"]);
    }

    #[test]
    fn fentry_eperm_is_explained() {
        let e = ProgramError::IOError(std::io::Error::from_raw_os_error(libc::EPERM));
        let f = [Prog::FEntry {
            prog: "x",
            symbol: "tcp_close",
        }];
        assert!(explain(&f, &e).contains("does not allow fentry/fexit"));
        let k = [Prog::KProbe {
            prog: "x",
            symbol: "tcp_close",
        }];
        assert!(explain(&k, &e).contains("Operation not permitted"));
    }
}
