//! The Rust twin of the BPF user-stack walker: the same steps over the same tables, so tests
//! can check the tables and the algorithm against an independent unwinder on real stacks.
//!
//! # The algorithm (the BPF walker does exactly this)
//!
//! State: `rip`, `rsp`, `rbp` (plus "rbp known", initially true), `exact` (initially true),
//! `frames = [rip]`. Each step:
//!
//! 1. `pc = exact ? rip : rip - 1` (a return address points after its call; the call itself
//!    is in the caller's row range).
//! 2. Mapping: the last of `maps[0..count]` with `start <= pc` (binary search; `count` clamped
//!    to `MAX_MAPPINGS`); none, or `pc >= end`: outcome `NoMapping`. `row_count == 0`:
//!    `NoTable`.
//! 3. `rel = pc - bias`; above `u32::MAX`: `NoRow`. Row: the last row of the shard
//!    `rows[row_start .. row_start + row_count]` with `row.pc <= rel` (binary search); none,
//!    or a gap row (`cfa == 0`): `NoRow`.
//! 4. By `row.cfa`:
//!    - `STOP`: outcome `Complete` (the root: its return address is undefined).
//!    - `SIGNAL`: the `ucontext` is at `rsp`: new `rip = [rsp+168]`, `rsp = [rsp+160]`,
//!      `rbp = [rsp+120]` (rbp known); any read failing: `ReadFailed`. `exact = true`.
//!    - `RSP`: `cfa = rsp + cfa_offset`. `RBP`: `cfa = rbp + cfa_offset` (rbp unknown:
//!      `CfaFailed`). `PLT`: `cfa = rsp + cfa_offset + ((rip & 15) >= rbp_offset ? 8 : 0)`
//!      (`rbp_offset` holds the threshold: 11, or 10 for an IBT plt). `FP_STEP`:
//!      `cfa = rbp + 16` (rbp unknown: `CfaFailed`), count one `FpSteps`. Any other kind:
//!      `CfaFailed`. Then `cfa < rsp + 8` (the stack must grow toward the caller):
//!      `CfaFailed`. New `rip = [cfa - 8]` (failing: `ReadFailed`). New rbp: for `FP_STEP`
//!      `[cfa - 16]`; else by `row.rbp`: `UNCHANGED` keeps it, `AT_CFA` reads
//!      `[cfa + rbp_offset]`, `UNKNOWN` makes it unknown; a failed rbp read makes it unknown
//!      (only a later frame that needs it fails). New `rsp = cfa`, `exact = false`.
//! 5. New `rip == 0`: outcome `Complete` (the zero return address that ends a stack by
//!    convention). `frames` already holding `MAX_FRAMES`: `DepthLimit`. Else push `rip` and
//!    repeat.
//!
//! Every address read is 8 bytes of user memory (`bpf_probe_read_user`).

use probe_common::unwind::{cfa, rbp, Error, Mapping, ProcMaps, Row, MAX_FRAMES, MAX_MAPPINGS};

/// The user registers a walk starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regs {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
}

/// A walk's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Innermost first; the first is the starting rip, the rest are return addresses (or, after
    /// a signal frame, the interrupted pc).
    pub frames: Vec<u64>,
    /// [`Error::Complete`] or why the walk stopped.
    pub outcome: Error,
    /// Frame-pointer steps taken for rules kpath does not interpret.
    pub fp_steps: u32,
}

/// Offsets in the x86_64 `ucontext_t` a signal trampoline's rsp points at
/// (uc_mcontext at 40, then r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip).
pub const UC_RBP: u64 = 120;
pub const UC_RSP: u64 = 160;
pub const UC_RIP: u64 = 168;

/// Walks the stack of a process whose tables are `maps` (rows in `rows`), reading its memory
/// with `read` (8 bytes at an address, `None` if unreadable).
pub fn walk(regs: Regs, read: impl Fn(u64) -> Option<u64>, maps: &ProcMaps, rows: &[Row]) -> Walk {
    let mut w = Walk {
        frames: vec![regs.rip],
        outcome: Error::Complete,
        fp_steps: 0,
    };
    let (mut rip, mut rsp) = (regs.rip, regs.rsp);
    let mut frame_rbp = Some(regs.rbp);
    let mut exact = true;
    w.outcome = loop {
        let pc = if exact { rip } else { rip.wrapping_sub(1) };
        let Some(m) = find_mapping(maps, pc) else {
            break Error::NoMapping;
        };
        if m.row_count == 0 {
            break Error::NoTable;
        }
        let Some(row) = find_row(m, pc, rows) else {
            break Error::NoRow;
        };
        match row.cfa {
            cfa::STOP => break Error::Complete,
            cfa::SIGNAL => {
                let (Some(r), Some(s), Some(b)) =
                    (read(rsp + UC_RIP), read(rsp + UC_RSP), read(rsp + UC_RBP))
                else {
                    break Error::ReadFailed;
                };
                (rip, rsp, frame_rbp, exact) = (r, s, Some(b), true);
            }
            kind => {
                let off = i64::from(row.cfa_offset) as u64;
                let cfa = match (kind, frame_rbp) {
                    (cfa::RSP, _) => rsp.wrapping_add(off),
                    (cfa::RBP, Some(b)) => b.wrapping_add(off),
                    (cfa::PLT, _) => {
                        let past_push = (rip & 15) >= row.rbp_offset as u64;
                        rsp.wrapping_add(off) + if past_push { 8 } else { 0 }
                    }
                    (cfa::FP_STEP, Some(b)) => {
                        w.fp_steps += 1;
                        b.wrapping_add(16)
                    }
                    _ => break Error::CfaFailed,
                };
                if cfa < rsp.saturating_add(8) {
                    break Error::CfaFailed;
                }
                let Some(ra) = read(cfa - 8) else {
                    break Error::ReadFailed;
                };
                frame_rbp = match (kind, row.rbp) {
                    (cfa::FP_STEP, _) => read(cfa - 16),
                    (_, rbp::UNCHANGED) => frame_rbp,
                    (_, rbp::AT_CFA) => read(cfa.wrapping_add(i64::from(row.rbp_offset) as u64)),
                    _ => None,
                };
                (rip, rsp, exact) = (ra, cfa, false);
            }
        }
        if rip == 0 {
            break Error::Complete;
        }
        if w.frames.len() >= MAX_FRAMES {
            break Error::DepthLimit;
        }
        w.frames.push(rip);
    };
    w
}

/// The mapping holding `pc`: the last with `start <= pc`, if `pc < end`.
pub fn find_mapping(maps: &ProcMaps, pc: u64) -> Option<&Mapping> {
    let maps = &maps.maps[..(maps.count as usize).min(MAX_MAPPINGS)];
    let i = maps.partition_point(|m| m.start <= pc).checked_sub(1)?;
    Some(&maps[i]).filter(|m| pc < m.end)
}

/// The row covering `pc` in mapping `m`'s shard: the last with `row.pc <= pc - bias`, unless
/// it is a gap.
pub fn find_row<'r>(m: &Mapping, pc: u64, rows: &'r [Row]) -> Option<&'r Row> {
    let rel = u32::try_from(pc.wrapping_sub(m.bias)).ok()?;
    let start = m.row_start as usize;
    let shard = rows.get(start..start.checked_add(m.row_count as usize)?)?;
    let i = shard.partition_point(|r| r.pc <= rel).checked_sub(1)?;
    Some(&shard[i]).filter(|r| r.cfa != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const BASE: u64 = 0x5000_0000;

    fn r(pc: u32, kind: u8, off: i16, rbp_kind: u8, rbp_off: i16) -> Row {
        Row {
            pc,
            cfa_offset: off,
            rbp_offset: rbp_off,
            cfa: kind,
            rbp: rbp_kind,
            _pad: [0; 2],
        }
    }

    /// One binary at link address 0 loaded at BASE: f at 0x100 (rsp+16), g at 0x200 (rbp
    /// frame), a plt at 0x300, the signal trampoline at 0x400, the root at 0x500, a gap at 0x600.
    fn tables() -> (ProcMaps, Vec<Row>) {
        let rows = vec![
            r(0x100, cfa::RSP, 16, rbp::UNCHANGED, 0),
            r(0x200, cfa::RBP, 16, rbp::AT_CFA, -16),
            r(0x300, cfa::PLT, 8, rbp::UNCHANGED, 11),
            r(0x3ff, cfa::SIGNAL, 0, 0, 0),
            r(0x500, cfa::STOP, 0, 0, 0),
            r(0x600, 0, 0, 0, 0),
            r(0x700, cfa::FP_STEP, 0, 0, 0),
            r(0x800, 0, 0, 0, 0),
        ];
        let mut maps = ProcMaps {
            count: 1,
            _pad: 0,
            maps: [Mapping::default(); MAX_MAPPINGS],
        };
        maps.maps[0] = Mapping {
            start: BASE,
            end: BASE + 0x1000,
            bias: BASE,
            row_start: 0,
            row_count: rows.len() as u32,
        };
        (maps, rows)
    }

    fn run(regs: Regs, mem: &HashMap<u64, u64>) -> Walk {
        let (maps, rows) = tables();
        walk(regs, |a| mem.get(&a).copied(), &maps, &rows)
    }

    #[test]
    fn rsp_rbp_and_root_rows() {
        // f (rsp+16) returns into g (rbp frame), which returns into the root.
        let mem = HashMap::from([
            (0x1008, BASE + 0x210), // f's return address at CFA-8 = 0x1010-8
            (0x2008, BASE + 0x501), // g's: CFA = rbp(0x2000)+16, RA at CFA-8
            (0x2000, 0x3000),       // g's caller rbp at CFA-16
        ]);
        let w = run(
            Regs {
                rip: BASE + 0x120,
                rsp: 0x1000,
                rbp: 0x2000,
            },
            &mem,
        );
        assert_eq!(w.frames, vec![BASE + 0x120, BASE + 0x210, BASE + 0x501]);
        assert_eq!(w.outcome, Error::Complete);
    }

    #[test]
    fn return_addresses_are_looked_up_one_byte_back() {
        // A return address at exactly 0x300 (just after a call at the end of g's range) is
        // g's, not the plt's.
        let mem = HashMap::from([(0x1008, BASE + 0x300), (0x2008, 0)]);
        let w = run(
            Regs {
                rip: BASE + 0x120,
                rsp: 0x1000,
                rbp: 0x2000,
            },
            &mem,
        );
        assert_eq!(w.frames, vec![BASE + 0x120, BASE + 0x300]);
        // g's frame: CFA = 0x2010, RA [0x2008] = 0 ends the stack.
        assert_eq!(w.outcome, Error::Complete);
    }

    #[test]
    fn plt_offset_depends_on_the_position_in_the_entry() {
        let mem = HashMap::from([(0x1000, BASE + 0x501), (0x1008, BASE + 0x502)]);
        let before = run(
            Regs {
                rip: BASE + 0x306,
                rsp: 0x1000,
                rbp: 0,
            },
            &mem,
        );
        assert_eq!(before.frames[1], BASE + 0x501);
        let after = run(
            Regs {
                rip: BASE + 0x30b,
                rsp: 0x1000,
                rbp: 0,
            },
            &mem,
        );
        assert_eq!(after.frames[1], BASE + 0x502);
    }

    #[test]
    fn signal_frame_restores_registers_and_next_pc_is_exact() {
        // f returns into the trampoline (0x400, looked up at 0x3ff); the ucontext at the
        // trampoline's rsp (0x1010) holds an interrupted pc exactly at the root's first byte.
        let mem = HashMap::from([
            (0x1008, BASE + 0x400),
            (0x1010 + UC_RIP, BASE + 0x500),
            (0x1010 + UC_RSP, 0x5000),
            (0x1010 + UC_RBP, 0x6000),
        ]);
        let w = run(
            Regs {
                rip: BASE + 0x120,
                rsp: 0x1000,
                rbp: 0,
            },
            &mem,
        );
        assert_eq!(w.frames, vec![BASE + 0x120, BASE + 0x400, BASE + 0x500]);
        assert_eq!(w.outcome, Error::Complete);
    }

    #[test]
    fn failures_have_their_reasons() {
        let none = HashMap::new();
        let at = |rip| {
            run(
                Regs {
                    rip,
                    rsp: 0x1000,
                    rbp: 0x2000,
                },
                &none,
            )
            .outcome
        };
        assert_eq!(at(0x10), Error::NoMapping);
        assert_eq!(at(BASE + 0x650), Error::NoRow);
        assert_eq!(at(BASE + 0x50), Error::NoRow);
        assert_eq!(at(BASE + 0x120), Error::ReadFailed);
        // An rbp frame whose rbp was lost.
        let mem = HashMap::from([(0x1008, BASE + 0x301), (0x1010, BASE + 0x220)]);
        let (maps, mut rows) = tables();
        rows[2].rbp_offset = 16; // never past the push: CFA = rsp + 8
        rows[0].rbp = rbp::UNKNOWN;
        let w = walk(
            Regs {
                rip: BASE + 0x120,
                rsp: 0x1000,
                rbp: 0x2000,
            },
            |a| mem.get(&a).copied(),
            &maps,
            &rows,
        );
        assert_eq!(w.frames, vec![BASE + 0x120, BASE + 0x301, BASE + 0x220]);
        assert_eq!(w.outcome, Error::CfaFailed);
        // No table for the mapping.
        let (mut maps, rows) = tables();
        maps.maps[0].row_count = 0;
        let w = walk(
            Regs {
                rip: BASE + 0x120,
                rsp: 0,
                rbp: 0,
            },
            |_| None,
            &maps,
            &rows,
        );
        assert_eq!(w.outcome, Error::NoTable);
    }

    #[test]
    fn frame_pointer_steps_and_the_depth_limit() {
        // A frame-pointer loop: every frame is an FP_STEP row whose saved rbp points one
        // frame further up, forever (until MAX_FRAMES).
        let read = |a: u64| {
            Some(if a.is_multiple_of(16) {
                a + 16
            } else {
                BASE + 0x701
            })
        };
        let (maps, rows) = tables();
        let w = walk(
            Regs {
                rip: BASE + 0x710,
                rsp: 0x1000,
                rbp: 0x1000,
            },
            read,
            &maps,
            &rows,
        );
        assert_eq!(w.outcome, Error::DepthLimit);
        assert_eq!(w.frames.len(), MAX_FRAMES);
        assert_eq!(w.fp_steps as usize, MAX_FRAMES);
        // A CFA that does not move up the stack is refused.
        let w = walk(
            Regs {
                rip: BASE + 0x710,
                rsp: 0x1000,
                rbp: 0x10,
            },
            read,
            &maps,
            &rows,
        );
        assert_eq!(w.outcome, Error::CfaFailed);
    }
}
