//! `unwind`: the DWARF CFI walker of user stacks (`--call-graph dwarf`), used by every family
//! that takes a user stack. User space builds the rows (cli `unwind`); this side only
//! interprets them, one frame per `bpf_loop` iteration, following the algorithm stated in
//! probe_common::unwind (and its Rust twin, cli's `unwind::walk`).
//!
//! State lives in a per-CPU scratch value (a [`UserStack`] alone is 1 KiB, twice the BPF
//! stack); the finished stack is inserted into `UNWIND_USER_STACKS` straight from it.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_loop,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    Global,
};
use probe_common::{
    unwind::{
        cfa, event, rbp, Error, Event, Mapping, ProcMaps, Row, UserStack, ERROR_ENTRIES,
        MAX_FRAMES, MAX_MAPPINGS, PROCS_CAPACITY, ROWS_CAPACITY, USER_STACKS_CAPACITY,
    },
    StackKey,
};

/// 1: user stacks are unwound here from DWARF CFI; 0: frame pointers (`bpf_get_stackid`). The
/// loader sets it only where the kernel has bpf_loop and bpf_task_pt_regs; with 0 the walker
/// sits in a branch the verifier proves dead.
#[no_mangle]
static UNWIND_DWARF: Global<u32> = Global::new(0);

#[map]
static UNWIND_ROWS: Array<Row> = Array::with_max_entries(ROWS_CAPACITY, BPF_F_MMAPABLE);

#[map]
static UNWIND_PROC_MAPS: HashMap<u32, ProcMaps> = HashMap::with_max_entries(PROCS_CAPACITY, 0);

#[map]
static UNWIND_USER_STACKS: HashMap<u64, UserStack> =
    HashMap::with_max_entries(USER_STACKS_CAPACITY, 0);

#[map]
static UNWIND_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ERROR_ENTRIES, 0);

#[map]
static UNWIND_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// (kind << 32 | tgid) -> when user space was last told, so that a process without tables
/// sends one event per `ASK_INTERVAL_NS`, not one per sample.
#[map]
static UNWIND_ASKED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Walk state, one per CPU and per [`Slot`].
#[map]
static UNWIND_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(2, 0);

const ASK_INTERVAL_NS: u64 = 200_000_000;

/// Which scratch value a walk uses: a lock-contention tracepoint runs with interrupts on, so a
/// perf sample can interrupt its walk on the same CPU; the two never share state.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Slot {
    Perf = 0,
    Tracepoint = 1,
}

#[repr(C)]
struct Scratch {
    stack: UserStack,
    rip: u64,
    rsp: u64,
    rbp: u64,
    hash: u64,
    tgid: u32,
    /// 1 while rip is an exact pc (the first frame, or one a signal interrupted), 0 while it
    /// is a return address (looked up at rip - 1).
    exact: u32,
    /// 0 once a row said the caller's rbp is unknown.
    rbp_known: u32,
    /// The walk's outcome, an [`Error`]; `u32::MAX` while it runs.
    outcome: u32,
    /// Index of the mapping the previous frame was in: consecutive frames mostly share one,
    /// so it is tried before the binary search.
    last_map: u32,
    _pad: u32,
}

/// What each `bpf_loop` iteration needs, looked up once per walk: the verifier tracks the
/// two pointers through this struct on the caller's stack, so a frame costs no map lookup.
#[repr(C)]
struct Walk {
    s: *mut Scratch,
    pm: *const ProcMaps,
}

/// Where the user registers come from.
pub enum Regs {
    /// A `struct pt_regs` in the program context (a perf sample that interrupted user mode).
    Ctx(*const u8),
    /// The current task's saved user registers (it is in the kernel: a syscall, a fault, or an
    /// interrupt of user mode).
    Task,
}

// x86_64 `struct pt_regs` offsets.
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_CS: usize = 17 * 8;
const PT_REGS_SP: usize = 19 * 8;

/// Whether DWARF unwinding is on (the families then skip `bpf_get_stackid` for user stacks).
#[inline(always)]
pub fn enabled() -> bool {
    UNWIND_DWARF.load() != 0
}

/// Unwinds the current task's user stack and stores it; returns its key in
/// `UNWIND_USER_STACKS`, 0 when there is none (a kernel thread, or the store failed: counted).
#[inline(always)]
pub fn user_stack(regs: Regs, tgid: u32, slot: Slot) -> u64 {
    if !enabled() {
        return 0;
    }
    let Some(s) = UNWIND_SCRATCH.get_ptr_mut(slot as u32) else {
        return 0;
    };
    // SAFETY: `s` is this CPU's value of a per-CPU array for this slot, valid while the
    // program runs; programs run with migration disabled and the slots keep nesting programs
    // apart (see `Slot`).
    let s = unsafe { &mut *s };
    let Some((rip, rsp, rbp, cs)) = read_regs(regs) else {
        count(Error::NoRegs);
        return 0;
    };
    if cs & 3 != 3 || rip == 0 {
        // A kernel thread has no user registers.
        count(Error::NoRegs);
        return 0;
    }
    s.rip = rip;
    s.rsp = rsp;
    s.rbp = rbp;
    s.tgid = tgid;
    s.exact = 1;
    s.rbp_known = 1;
    s.outcome = u32::MAX;
    s.hash = 0xcbf2_9ce4_8422_2325;
    s.stack.len = 0;
    s.stack.complete = 0;
    s.last_map = u32::MAX;

    // SAFETY: the value is only read; user space replaces a process's ProcMaps with one
    // update (the kernel copies the value in place under the bucket lock, so a read may see
    // a mix of old and new mappings: at worst one wrong frame, never an invalid read).
    if let Some(pm) = unsafe { UNWIND_PROC_MAPS.get(tgid) } {
        let mut walk = Walk {
            s: s as *mut Scratch,
            pm: pm as *const ProcMaps,
        };
        // SAFETY: `step` is a BPF subprogram with the callback signature bpf_loop expects
        // (BTF func info comes from `-C link-arg=--btf`), and its context is a `Walk` on this
        // stack frame, alive for the whole call; the helper returns before this frame does.
        unsafe {
            bpf_loop(
                MAX_FRAMES as u32 + 1,
                step as *mut core::ffi::c_void,
                &mut walk as *mut Walk as *mut core::ffi::c_void,
                0,
            )
        };
        if s.outcome == u32::MAX {
            s.outcome = Error::DepthLimit as u32;
        }
    } else {
        // No tables yet: keep the exact pc alone, so the sample still shows where it was.
        ask(tgid, event::NEW_PROCESS, rip);
        push(s, rip);
        s.outcome = Error::NotLoaded as u32;
    }
    if s.outcome == Error::Complete as u32 {
        s.stack.complete = 1;
    }
    count_index(s.outcome);
    store(s)
}

/// Inserts the walked stack under its hash; 0 if the map is full (counted).
#[inline(always)]
fn store(s: &mut Scratch) -> u64 {
    let h = insert_stack(s);
    if h == 0 {
        count(Error::MapFull);
    }
    h
}

/// The kernel stack of `task`, which is not running (the next task of a context switch: its
/// stack is where it last left a CPU), stored with the user stacks; 0 when none was taken
/// (the caller counts it lost).
#[inline(always)]
pub fn task_kernel_stack(task: *mut aya_ebpf::bindings::task_struct) -> u64 {
    use aya_ebpf::helpers::bpf_get_task_stack;
    let Some(s) = UNWIND_SCRATCH.get_ptr_mut(Slot::Tracepoint as u32) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot for tracepoints, valid while the program runs; sched_switch
    // runs with interrupts off, so no other program uses the slot meanwhile.
    let s = unsafe { &mut *s };
    const BYTES: u32 = (MAX_FRAMES * 8) as u32;
    // SAFETY: `task` is the BTF task pointer of the tracepoint's arguments, as the helper
    // requires; the buffer is the scratch slot's frame array, BYTES long.
    let n = unsafe {
        bpf_get_task_stack(
            task,
            s.stack.frames.as_mut_ptr() as *mut core::ffi::c_void,
            BYTES,
            0,
        )
    };
    if n <= 0 {
        return 0;
    }
    let len = (n as usize / 8).min(MAX_FRAMES);
    s.stack.len = 0;
    s.stack.complete = 1;
    s.hash = KERNEL_SEED;
    for i in 0..MAX_FRAMES {
        if i >= len {
            break;
        }
        let pc = s.stack.frames[i];
        if !push(s, pc) {
            break;
        }
    }
    insert_stack(s)
}

/// Seeds kernel stacks' hashes apart from user stacks' (the FNV-1a offset basis, flipped).
const KERNEL_SEED: u64 = !0xcbf2_9ce4_8422_2325;

/// Inserts the scratch slot's stack under its hash (returned); 0 if the map is full.
#[inline(always)]
fn insert_stack(s: &mut Scratch) -> u64 {
    let mut h = s.hash ^ (s.stack.len as u64) ^ ((s.stack.complete as u64) << 40);
    h = mix(h);
    if h == 0 {
        h = 1;
    }
    // SAFETY: only the presence of the entry is tested.
    if unsafe { UNWIND_USER_STACKS.get(h) }.is_some() {
        return h;
    }
    // By reference: a UserStack by value would be copied onto the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = UNWIND_USER_STACKS.insert(h, &s.stack, BPF_NOEXIST as u64);
    match inserted {
        Ok(()) => h,
        // Another CPU inserted the same stack first.
        Err(e) if e == -EEXIST => h,
        Err(_) => 0,
    }
}

const EEXIST: i32 = 17;

#[inline(always)]
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline(always)]
fn push(s: &mut Scratch, pc: u64) -> bool {
    let Some(f) = s.stack.frames.get_mut(s.stack.len as usize) else {
        return false;
    };
    *f = pc;
    s.stack.len += 1;
    s.hash = (s.hash ^ pc).wrapping_mul(0x0000_0100_0000_01b3);
    true
}

#[inline(always)]
fn read_regs(regs: Regs) -> Option<(u64, u64, u64, u64)> {
    match regs {
        Regs::Ctx(p) => {
            // SAFETY: `p` is the program context's `struct pt_regs` (21 u64s), whose fields
            // the verifier lets a perf_event program read.
            unsafe {
                Some((
                    core::ptr::read_volatile(p.add(PT_REGS_IP) as *const u64),
                    core::ptr::read_volatile(p.add(PT_REGS_SP) as *const u64),
                    core::ptr::read_volatile(p.add(PT_REGS_BP) as *const u64),
                    core::ptr::read_volatile(p.add(PT_REGS_CS) as *const u64),
                ))
            }
        }
        Regs::Task => {
            // SAFETY: UNWIND_DWARF is set only on kernels with both helpers;
            // bpf_get_current_task_btf returns the current task as the BTF pointer
            // bpf_task_pt_regs takes, and never fails.
            let p = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as usize;
            if p == 0 {
                return None;
            }
            // SAFETY: bpf_probe_read_kernel checks each address and fails instead of
            // faulting; any bits are a valid u64.
            unsafe {
                Some((
                    bpf_probe_read_kernel((p + PT_REGS_IP) as *const u64).ok()?,
                    bpf_probe_read_kernel((p + PT_REGS_SP) as *const u64).ok()?,
                    bpf_probe_read_kernel((p + PT_REGS_BP) as *const u64).ok()?,
                    bpf_probe_read_kernel((p + PT_REGS_CS) as *const u64).ok()?,
                ))
            }
        }
    }
}

/// One frame: `bpf_loop`'s callback. Returns 1 to stop (the outcome is set), 0 to go on.
#[inline(never)]
extern "C" fn step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` on `user_stack`'s frame (see there); its pointers are this
    // CPU's scratch value of the walk's slot and the process's mappings, both valid while the
    // program runs.
    let (s, pm) = unsafe {
        let w = &*(ctx as *const Walk);
        (&mut *w.s, &*w.pm)
    };
    match frame(s, pm) {
        Ok(()) => 0,
        Err(e) => {
            s.outcome = e as u32;
            1
        }
    }
}

/// Records the current frame and steps to its caller; `Err(Complete)` at the root.
#[inline(always)]
fn frame(s: &mut Scratch, pm: &ProcMaps) -> Result<(), Error> {
    let rip = s.rip;
    if !push(s, rip) {
        return Err(Error::DepthLimit);
    }
    let pc = if s.exact != 0 { rip } else { rip - 1 };
    let Some(m) = mapping(s, pm, pc) else {
        ask(s.tgid, event::UNKNOWN_PC, pc);
        return Err(Error::NoMapping);
    };
    if m.row_count == 0 {
        return Err(Error::NoTable);
    }
    let rel = pc.wrapping_sub(m.bias);
    if rel > u32::MAX as u64 {
        return Err(Error::NoRow);
    }
    let row = find_row(m.row_start, m.row_count, rel as u32).ok_or(Error::NoRow)?;

    let mut fp_step = false;
    let cfa = match row.cfa {
        cfa::STOP => return Err(Error::Complete),
        cfa::SIGNAL => return signal_frame(s),
        cfa::RSP => s.rsp.wrapping_add(row.cfa_offset as i64 as u64),
        cfa::RBP => {
            if s.rbp_known == 0 {
                return Err(Error::CfaFailed);
            }
            s.rbp.wrapping_add(row.cfa_offset as i64 as u64)
        }
        cfa::PLT => {
            // rbp_offset holds the threshold (11, or 10 in an IBT plt).
            let extra = if (rip & 15) as i64 >= row.rbp_offset as i64 {
                8
            } else {
                0
            };
            s.rsp
                .wrapping_add(row.cfa_offset as i64 as u64)
                .wrapping_add(extra)
        }
        cfa::FP_STEP => {
            if s.rbp_known == 0 {
                return Err(Error::CfaFailed);
            }
            count(Error::FpSteps);
            fp_step = true;
            s.rbp.wrapping_add(16)
        }
        _ => return Err(Error::CfaFailed),
    };
    // The stack grows toward the caller: a CFA below the return address slot is corrupt.
    if cfa < s.rsp.wrapping_add(8) {
        return Err(Error::CfaFailed);
    }
    let ra = read_user(cfa.wrapping_sub(8))?;
    let (rbp_kind, rbp_addr) = if fp_step {
        (rbp::AT_CFA, cfa.wrapping_sub(16))
    } else {
        (row.rbp, cfa.wrapping_add(row.rbp_offset as i64 as u64))
    };
    match rbp_kind {
        rbp::UNCHANGED => {}
        rbp::AT_CFA => match read_user(rbp_addr) {
            Ok(v) => {
                s.rbp = v;
                s.rbp_known = 1;
            }
            // Only a later frame that needs rbp fails.
            Err(_) => s.rbp_known = 0,
        },
        _ => s.rbp_known = 0,
    }
    s.rsp = cfa;
    s.exact = 0;
    next(s, ra)
}

/// The mapping holding `pc`: the previous frame's when it still does, else by binary search
/// (the last mapping with start <= pc).
#[inline(always)]
fn mapping<'a>(s: &mut Scratch, pm: &'a ProcMaps, pc: u64) -> Option<&'a Mapping> {
    if let Some(m) = pm.maps.get(s.last_map as usize) {
        if m.start <= pc && pc < m.end {
            return Some(m);
        }
    }
    let n = (pm.count as usize).min(MAX_MAPPINGS);
    let (mut lo, mut hi) = (0usize, n);
    for _ in 0..8 {
        if lo >= hi {
            break;
        }
        let mid = (lo + hi) / 2;
        let m = pm.maps.get(mid)?;
        if m.start <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let i = lo.checked_sub(1)?;
    let m = pm.maps.get(i)?;
    if pc >= m.end {
        return None;
    }
    s.last_map = i as u32;
    Some(m)
}

/// Moves to the caller at `rip`; a zero return address ends the stack by convention (a root
/// whose CFI does not say so, e.g. a thread entry some libc builds leave unmarked).
#[inline(always)]
fn next(s: &mut Scratch, rip: u64) -> Result<(), Error> {
    if rip == 0 {
        return Err(Error::Complete);
    }
    s.rip = rip;
    Ok(())
}

/// A signal trampoline: the interrupted registers are in the ucontext at rsp, and the
/// interrupted pc is exact.
#[inline(always)]
fn signal_frame(s: &mut Scratch) -> Result<(), Error> {
    let uc = s.rsp;
    let rip = read_user(uc.wrapping_add(168))?;
    let rsp = read_user(uc.wrapping_add(160))?;
    let rbp = read_user(uc.wrapping_add(120))?;
    s.rsp = rsp;
    s.rbp = rbp;
    s.rbp_known = 1;
    s.exact = 1;
    next(s, rip)
}

#[inline(always)]
fn read_user(addr: u64) -> Result<u64, Error> {
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting; any
    // bits are a valid u64.
    unsafe { bpf_probe_read_user(addr as *const u64) }.map_err(|_| Error::ReadFailed)
}

/// The last row of the shard `[start, start + n)` with `row.pc <= pc`, unless it is a gap.
#[inline(always)]
fn find_row(start: u32, n: u32, pc: u32) -> Option<Row> {
    let (mut lo, mut hi) = (0u32, n);
    // 2^24 rows per shard at most (16 M: far above any binary's table).
    for _ in 0..24 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let row = UNWIND_ROWS.get(start.wrapping_add(mid))?;
        if row.pc <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return None;
    }
    let row = *UNWIND_ROWS.get(start.wrapping_add(lo - 1))?;
    if row.cfa == 0 {
        return None;
    }
    Some(row)
}

/// The current process (`tgid`) exec'd a program: its table describes mappings that are
/// gone. Drops it and tells user space at once, past the rate limit: a short command's samples
/// come right after its exec.
#[inline(always)]
pub fn exec(tgid: u32) {
    if !enabled() {
        return;
    }
    let had_table = UNWIND_PROC_MAPS.remove(tgid).is_ok();
    if !had_table && !crate::is_traced(tgid) {
        return;
    }
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    let asked = ((event::NEW_PROCESS as u64) << 32) | tgid as u64;
    let _ = UNWIND_ASKED.insert(asked, now, 0);
    let ev = Event {
        tgid,
        kind: event::EXEC,
        pc: 0,
    };
    let _ = UNWIND_EVENTS.output::<Event>(&ev, 0);
}

/// Tells user space about `tgid` (at most once per `ASK_INTERVAL_NS` and kind).
#[inline(always)]
fn ask(tgid: u32, kind: u32, pc: u64) {
    let key = ((kind as u64) << 32) | tgid as u64;
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied at once; a concurrent update can only make it stale.
    if let Some(t) = unsafe { UNWIND_ASKED.get(key) } {
        if now.wrapping_sub(*t) < ASK_INTERVAL_NS {
            return;
        }
    }
    let _ = UNWIND_ASKED.insert(key, now, 0);
    let ev = Event { tgid, kind, pc };
    let _ = UNWIND_EVENTS.output::<Event>(&ev, 0);
}

#[inline(always)]
fn count(e: Error) {
    count_index(e as u32);
}

#[inline(always)]
fn count_index(i: u32) {
    if let Some(p) = UNWIND_ERRORS.get_ptr_mut(i) {
        // SAFETY: this CPU's slot of a per-CPU array, valid while the program runs; a program
        // nesting on this CPU could interleave with the increment and lose one count at worst.
        unsafe { *p += 1 };
    }
}

/// The stack key of the current task, which is in the kernel (a tracepoint): its user stack
/// by the chosen method. `fp_stack` takes the frame-pointer stack id, called only for fp.
#[inline(always)]
pub fn stack_key<const DWARF: bool>(
    tgid: u32,
    kstack_id: i32,
    fp_stack: impl FnOnce() -> i32,
) -> StackKey {
    let dwarf = DWARF && enabled();
    StackKey {
        tgid,
        kstack_id,
        ustack_id: if dwarf { -1 } else { fp_stack() },
        flags: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        user_ret: if dwarf { 0 } else { crate::user_stack_word() },
        user_stack: if DWARF {
            user_stack(Regs::Task, tgid, Slot::Tracepoint)
        } else {
            0
        },
        kernel_stack: 0,
    }
}
