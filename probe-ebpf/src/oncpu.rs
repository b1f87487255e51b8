//! `oncpu`: perf cpu-clock samples of the traced tasks, counted per (tgid, comm, stacks).
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::bpf_get_current_comm,
    macros::{map, perf_event},
    maps::{HashMap, PerCpuArray},
    programs::PerfEventContext,
};
use probe_common::{oncpu::COUNTS_CAPACITY, Family, StackKey};

use crate::{
    count_lost, current_ids, is_traced, stack_id,
    unwind::{self, Regs, Slot},
};

#[map]
static ONCPU_COUNTS: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNTS_CAPACITY, 0);

#[map]
static ONCPU_SAMPLES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Whether the sample interrupted kernel code (the privilege level in the saved CS is 0).
#[inline(always)]
fn in_kernel(ctx: &PerfEventContext) -> bool {
    // `bpf_perf_event_data` starts with x86_64 `struct pt_regs`; cs is its 18th u64.
    const PT_REGS_CS: usize = 17 * 8;
    // SAFETY: `ctx.ctx` is the `bpf_perf_event_data` the kernel passed, whose pt_regs (21 u64s)
    // holds cs at PT_REGS_CS; the verifier checks the context access.
    let cs =
        unsafe { core::ptr::read_volatile((ctx.ctx as *const u8).add(PT_REGS_CS) as *const u64) };
    cs & 3 == 0
}

#[perf_event]
pub fn oncpu_sample(ctx: PerfEventContext) -> u32 {
    sample::<true>(&ctx)
}

/// `oncpu_sample` without the DWARF walker (see `sched_sched_switch_fp`).
#[perf_event]
pub fn oncpu_sample_fp(ctx: PerfEventContext) -> u32 {
    sample::<false>(&ctx)
}

#[inline(always)]
fn sample<const DWARF: bool>(ctx: &PerfEventContext) -> u32 {
    let (tgid, tid) = current_ids();
    if tid == 0 || !is_traced(tgid) {
        return 0;
    }
    if let Some(n) = ONCPU_SAMPLES.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array, valid while the program runs. Only this
        // program uses the map, and a perf event does not fire inside its own program.
        unsafe { *n += 1 };
    }
    let kernel = in_kernel(ctx);
    let dwarf = DWARF && unwind::enabled();
    let user_stack = if dwarf {
        let regs = if kernel {
            Regs::Task
        } else {
            Regs::Ctx(ctx.ctx as *const u8)
        };
        unwind::user_stack(regs, tgid, Slot::Perf)
    } else {
        0
    };
    let key = StackKey {
        tgid,
        kstack_id: stack_id(ctx, 0, Family::Oncpu),
        ustack_id: if dwarf {
            -1
        } else {
            stack_id(ctx, BPF_F_USER_STACK as u64, Family::Oncpu)
        },
        flags: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        user_ret: if kernel && !dwarf {
            crate::user_stack_word()
        } else {
            0
        },
        user_stack,
        kernel_stack: 0,
    };
    if !crate::add_shared(&ONCPU_COUNTS, &key, 1) {
        count_lost(Family::Oncpu);
    }
    0
}
