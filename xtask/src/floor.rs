//! The kernel's own floor under kpath's syscall tracing: empty BPF programs (`r0 = 0; exit`) on
//! the sys_enter and sys_exit raw tracepoints.
//!
//! Attaching anything to those tracepoints sends every task on the machine through the syscall
//! tracing slow path; what kpath's programs add on top is the difference to this condition.
//! The same programs can also call argument-less helpers first ([`Helper`]): the floor of a
//! tracer that must read the clock at both ends of every syscall to time it exactly.
//! Loaded with bpf(2) directly (a few instructions need no loader library).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// The attached programs; dropping this detaches them.
pub struct EmptyRawTracepoints {
    _links: Vec<OwnedFd>,
    _prog: OwnedFd,
}

/// Helpers that take no arguments, by their number in `enum bpf_func_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    KtimeGetNs = 5,
    GetCurrentPidTgid = 14,
}

impl EmptyRawTracepoints {
    /// Attaches one empty program to each named raw tracepoint.
    pub fn attach(tracepoints: &[&str]) -> io::Result<Self> {
        Self::attach_calling(tracepoints, &[])
    }

    /// Attaches to each named raw tracepoint one program that calls `helpers` in turn, ignores
    /// their results and returns 0.
    pub fn attach_calling(tracepoints: &[&str], helpers: &[Helper]) -> io::Result<Self> {
        let prog = load(&program(helpers))?;
        let mut links = Vec::new();
        for tp in tracepoints {
            let name = std::ffi::CString::new(*tp).map_err(io::Error::other)?;
            let mut attr = RawTracepointOpenAttr {
                name: name.as_ptr() as u64,
                prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
                _pad: 0,
            };
            let fd = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|e| {
                io::Error::new(e.kind(), format!("attaching to raw tracepoint {tp}: {e}"))
            })?;
            links.push(fd);
        }
        Ok(EmptyRawTracepoints {
            _links: links,
            _prog: prog,
        })
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// The first fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel takes the size we pass and
/// requires the rest to be zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
struct RawTracepointOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `call h` for each helper (BPF_JMP | BPF_CALL, imm = the helper's number), then
/// BPF_ALU64 | BPF_MOV | BPF_K with dst r0 and imm 0, then BPF_JMP | BPF_EXIT.
fn program(helpers: &[Helper]) -> Vec<u64> {
    let mut insns: Vec<u64> = helpers.iter().map(|&h| 0x85 | (h as u64) << 32).collect();
    insns.extend([0xb7, 0x95]);
    insns
}

fn load(insns: &[u64]) -> io::Result<OwnedFd> {
    // GPL: bpf_get_current_pid_tgid and bpf_ktime_get_ns are offered to any licence, but a
    // GPL program may call every helper this module might list.
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &mut attr)
        .map_err(|e| io::Error::new(e.kind(), format!("loading a floor BPF program: {e}")))
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: bpf(2) reads (and for some commands writes) exactly size_of::<T>() bytes at attr,
    // which is a live, exclusively borrowed, fully initialized #[repr(C)] prefix of union
    // bpf_attr (ProgLoadAttr or RawTracepointOpenAttr, layouts checked in the tests). The
    // pointers inside it (insns, license, name) point at locals of the callers that outlive this
    // call; the kernel copies what it needs before returning.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success bpf(2) returns a new file descriptor that nothing else in this process
    // owns or will close, so the OwnedFd may take ownership of it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_program_is_two_instructions_returning_zero() {
        // struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm; }, little endian.
        let mov_r0_0 = 0xb7u64;
        assert_eq!(mov_r0_0 & 0xff, 0x07 | 0x30 | 0x80); // BPF_ALU64 | BPF_K | BPF_MOV
        assert_eq!(mov_r0_0 >> 8, 0); // dst r0, imm 0
        assert_eq!(0x95u64, 0x05 | 0x90); // BPF_JMP | BPF_EXIT
        assert_eq!(program(&[]), vec![0xb7, 0x95]);
    }

    #[test]
    fn helper_calls_come_first_with_the_number_in_imm() {
        let p = program(&[Helper::KtimeGetNs, Helper::GetCurrentPidTgid]);
        assert_eq!(p.len(), 4);
        // BPF_JMP | BPF_CALL, no registers, offset 0; imm in the high 32 bits.
        assert_eq!(p[0] & 0xffff_ffff, 0x05 | 0x80);
        assert_eq!(p[0] >> 32, 5);
        assert_eq!(p[1] >> 32, 14);
        assert_eq!(&p[2..], &[0xb7, 0x95]);
    }

    #[test]
    fn attr_layouts_match_the_kernel() {
        // Offsets of union bpf_attr's BPF_PROG_LOAD fields up to prog_flags.
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 48);
        assert_eq!(std::mem::size_of::<RawTracepointOpenAttr>(), 16);
    }

    #[test]
    fn attaches_and_detaches_when_root() {
        if !crate::util::is_root() {
            assert!(
                std::env::var_os("KPATH_REQUIRE_ROOT_TESTS").is_none(),
                "root-only test run without root"
            );
            return;
        }
        let floor = EmptyRawTracepoints::attach(&["sys_enter", "sys_exit"]).expect("attach");
        drop(floor);
        // The verifier accepts the helper calls (it checks their numbers and the program type).
        let calls = [Helper::KtimeGetNs, Helper::GetCurrentPidTgid];
        let clock = EmptyRawTracepoints::attach_calling(&["sys_enter"], &calls).expect("attach");
        drop(clock);
        let err = EmptyRawTracepoints::attach(&["no_such_tracepoint_kpath"]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("no_such_tracepoint_kpath")));
    }
}
