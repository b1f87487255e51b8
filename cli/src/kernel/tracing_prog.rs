//! Whether the kernel loads BPF tracing programs (fentry/fexit, and BTF tracepoints), asked
//! with a two-instruction program instead of by loading kpath's own: some kernels (this project's 6.18 hosts) refuse
//! BPF_PROG_TYPE_TRACING with EPERM and an empty verifier log, and finding that out through
//! aya meant parsing the kernel's BTF a second time and a failed load, ~15% of start-up.
use std::os::fd::{FromRawFd as _, OwnedFd};

use serde::Serialize;

/// What loading a test fentry program on a kernel function said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fentry {
    /// It loaded: fentry/fexit may attach (attaching has the last word).
    Loads,
    /// EPERM at load: this kernel does not allow tracing programs.
    Refused,
    /// Another error (errno): an older kernel, or BTF without the function.
    Failed(i32),
    /// Not tried (not root, or no kernel BTF to name a function by).
    #[default]
    Untried,
}

impl Fentry {
    /// Why BTF tracepoints cannot be used, from the outcome of [`probe_tp_btf`]; `None` when
    /// its test program loaded.
    pub fn tp_btf_unusable(self) -> Option<&'static str> {
        match self {
            Fentry::Loads => None,
            Fentry::Refused => Some("the kernel refused a test BTF tracepoint (EPERM)"),
            Fentry::Failed(_) => Some("a test BTF tracepoint did not load"),
            Fentry::Untried => {
                Some("not tried: no kernel BTF, no bpf_get_task_stack (5.9+), or not root")
            }
        }
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;
const BPF_TRACE_FENTRY: u32 = 24;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_obj_fd` (include/uapi/linux/bpf.h);
/// the kernel takes the size passed and zero-fills the rest.
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
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _pad: u32,
}

/// Loads `r0 = 0; exit` as an fentry program on the vmlinux function with BTF id `btf_id`.
pub fn probe(btf_id: u32) -> Fentry {
    load_test(BPF_TRACE_FENTRY, btf_id)
}

/// The same test as a BTF tracepoint (tp_btf) on the `btf_trace_<event>` typedef with BTF id
/// `btf_id`: a tracing program too, which a kernel may load where it refuses fentry (this
/// project's 6.18 hosts do: fentry EPERM, tp_btf loads and attaches).
pub fn probe_tp_btf(btf_id: u32) -> Fentry {
    load_test(BPF_TRACE_RAW_TP, btf_id)
}

fn load_test(expected_attach_type: u32, btf_id: u32) -> Fentry {
    // mov64 r0, 0; exit (struct bpf_insn, little endian).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads size_of::<ProgLoadAttr>() bytes at &attr, a #[repr(C)] prefix of
    // union bpf_attr's BPF_PROG_LOAD layout (offsets checked in the tests); the insns and
    // license pointers point at locals that outlive the call, and the kernel writes nothing
    // back for this command (no log buffer is given).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EPERM) => Fentry::Refused,
            Some(e) => Fentry::Failed(e),
            None => Fentry::Failed(0),
        };
    }
    // SAFETY: on success bpf(2) returned a new program fd that nothing else owns; dropping the
    // OwnedFd closes it, which unloads the unattached program.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Fentry::Loads
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn attr_layout_matches_the_kernel() {
        assert_eq!(offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(ProgLoadAttr, license), 16);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(offset_of!(ProgLoadAttr, attach_btf_obj_fd), 112);
    }
}
