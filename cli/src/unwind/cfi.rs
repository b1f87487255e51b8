//! DWARF call frame information of one ELF file turned into [`Row`]s for x86_64.
//!
//! Every FDE of `.eh_frame` (and of `.debug_frame` when the file has one) is evaluated with
//! gimli into its table of rows; each row is reduced to the few rules the BPF walker knows
//! (see [`probe_common::unwind::cfa`]); rows are placed at the file's link-time addresses,
//! gaps between FDEs get a gap row, and identical neighbours are merged.

use std::path::Path;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Reader,
    Register, RegisterRule, UnwindContext, UnwindSection, UnwindTableRow,
};
use object::{Object, ObjectSection};
use probe_common::unwind::{cfa, rbp, Row};

use super::UnwindError;

/// x86_64 DWARF register numbers (System V psABI, figure 3.36).
const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// The rows of one binary, with what was seen building them.
#[derive(Debug, Default, Clone)]
pub struct Cfi {
    /// Sorted by pc, identical neighbours merged, gaps marked with `cfa == 0`.
    pub rows: Vec<Row>,
    /// FDEs turned into rows.
    pub fdes: usize,
    /// FDEs whose instructions gimli could not evaluate (their range stays a gap).
    pub skipped_fdes: usize,
}

/// The rows of the FDE covering `start..end`, before gaps and merging.
struct Span {
    start: u64,
    end: u64,
    /// 0 for `.eh_frame`, 1 for `.debug_frame`: where both cover an address, `.eh_frame` wins.
    source: u8,
    rows: Vec<(u64, Row)>,
}

type Bytes<'a> = EndianSlice<'a, LittleEndian>;

/// Builds the rows of the ELF file `data` (read from `path`, named in errors).
pub fn build(path: &Path, data: &[u8]) -> Result<Cfi, UnwindError> {
    let file = object::File::parse(data).map_err(|source| UnwindError::Elf {
        path: path.to_owned(),
        source,
    })?;
    build_object(path, &file)
}

/// [`build`] for an already parsed file.
pub fn build_object(path: &Path, file: &object::File) -> Result<Cfi, UnwindError> {
    let cfi_err = |source| UnwindError::Cfi {
        path: path.to_owned(),
        source,
    };
    let section = |name: &str| {
        file.section_by_name(name)
            .and_then(|s| Some((s.address(), s.data().ok()?)))
    };
    let mut bases = BaseAddresses::default();
    if let Some((addr, _)) = section(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(addr);
    }
    if let Some((addr, _)) = section(".text") {
        bases = bases.set_text(addr);
    }
    if let Some((addr, _)) = section(".got") {
        bases = bases.set_got(addr);
    }
    let mut spans = Vec::new();
    let mut out = Cfi::default();
    if let Some((addr, data)) = section(".eh_frame") {
        let bases = bases.clone().set_eh_frame(addr);
        let eh = EhFrame::new(data, LittleEndian);
        collect(&eh, &bases, 0, &mut spans, &mut out).map_err(cfi_err)?;
    }
    if let Some((_, data)) = section(".debug_frame") {
        let mut df = DebugFrame::new(data, LittleEndian);
        df.set_address_size(8);
        collect(&df, &bases, 1, &mut spans, &mut out).map_err(cfi_err)?;
    }
    out.rows = assemble(spans, path)?;
    Ok(out)
}

/// Evaluates every FDE of `section` into a [`Span`].
fn collect<'a, S: UnwindSection<Bytes<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    source: u8,
    spans: &mut Vec<Span>,
    out: &mut Cfi,
) -> gimli::Result<()>
where
    S::Offset: std::hash::Hash + Eq + Copy,
{
    let mut ctx = Box::new(UnwindContext::new());
    let mut cies = std::collections::HashMap::new();
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = match partial.parse(|section, bases, offset| {
            if let Some(cie) = cies.get(&offset) {
                return Ok(Clone::clone(cie));
            }
            let cie = section.cie_from_offset(bases, offset)?;
            cies.insert(offset, cie.clone());
            Ok(cie)
        }) {
            Ok(fde) => fde,
            Err(_) => {
                out.skipped_fdes += 1;
                continue;
            }
        };
        // Linkers leave FDEs of discarded functions with a zero length (often at address 0).
        if fde.len() == 0 {
            continue;
        }
        let signal = fde.is_signal_trampoline();
        let mut rows = Vec::new();
        let evaluated = (|| -> gimli::Result<()> {
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                if row.start_address() < row.end_address() {
                    rows.push((row.start_address(), to_row(section, row, signal)));
                }
            }
            Ok(())
        })();
        if evaluated.is_err() {
            out.skipped_fdes += 1;
            continue;
        }
        out.fdes += 1;
        spans.push(Span {
            start: fde.initial_address(),
            end: fde.end_address(),
            source,
            rows,
        });
    }
    Ok(())
}

/// Reduces one gimli row to a [`Row`] (pc left 0: the caller places it).
fn to_row<'a, S: UnwindSection<Bytes<'a>>>(
    section: &S,
    row: &UnwindTableRow<usize>,
    signal: bool,
) -> Row {
    if signal {
        return Row {
            cfa: cfa::SIGNAL,
            ..Row::default()
        };
    }
    // The root: whatever the CFA rule, there is no caller.
    if let Some(RegisterRule::Undefined) = row.register(RA) {
        return Row {
            cfa: cfa::STOP,
            ..Row::default()
        };
    }
    let expression =
        |e: &gimli::UnwindExpression<usize>| e.get(section).ok().map(|e| e.0.slice().to_vec());
    let (kind, base_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => match *register {
            RSP => (cfa::RSP, *offset),
            RBP => (cfa::RBP, *offset),
            _ => return fp_step(),
        },
        CfaRule::Expression(e) => match expression(e).as_deref().and_then(plt_rule) {
            Some((offset, threshold)) => {
                return Row {
                    cfa: cfa::PLT,
                    cfa_offset: offset,
                    rbp_offset: threshold,
                    rbp: rbp::UNCHANGED,
                    ..Row::default()
                }
            }
            None => return fp_step(),
        },
    };
    let ra = row.register(RA);
    let (rbp_kind, rbp_offset) = match row.register(RBP) {
        None | Some(RegisterRule::SameValue) => (rbp::UNCHANGED, 0),
        Some(RegisterRule::Offset(off)) => match i16::try_from(off) {
            Ok(off) => (rbp::AT_CFA, off),
            Err(_) => (rbp::UNKNOWN, 0),
        },
        Some(_) => (rbp::UNKNOWN, 0),
    };
    if ra != Some(RegisterRule::Offset(-8)) {
        return fp_step();
    }
    let Ok(cfa_offset) = i16::try_from(base_offset) else {
        return fp_step();
    };
    Row {
        pc: 0,
        cfa_offset,
        rbp_offset,
        cfa: kind,
        rbp: rbp_kind,
        _pad: [0; 2],
    }
}

fn fp_step() -> Row {
    Row {
        cfa: cfa::FP_STEP,
        ..Row::default()
    }
}

/// Recognises the CFA expression binutils emits for lazy `.plt` sections:
/// `breg7 (rsp) +N; breg16 (rip) +0; lit15; and; litT; ge; lit3; shl; plus`, that is
/// CFA = rsp + N + ((rip & 15) >= T ? 8 : 0) (T is 11 for the classic 16-byte entry, 10 for the
/// IBT one). Returns (N, T).
pub fn plt_rule(expr: &[u8]) -> Option<(i16, i16)> {
    const BREG7: u8 = 0x77;
    const BREG16: u8 = 0x80;
    const LIT0: u8 = 0x30;
    const LIT15: u8 = 0x3f;
    const AND: u8 = 0x1a;
    const GE: u8 = 0x2a;
    const LIT3: u8 = 0x33;
    const SHL: u8 = 0x24;
    const PLUS: u8 = 0x22;
    let (&first, rest) = expr.split_first()?;
    if first != BREG7 {
        return None;
    }
    let mut reader = EndianSlice::new(rest, LittleEndian);
    let offset = reader.read_sleb128().ok()?;
    match reader.slice() {
        [BREG16, 0, LIT15, AND, lit, GE, LIT3, SHL, PLUS] if (LIT0..=LIT15).contains(lit) => {
            Some((i16::try_from(offset).ok()?, i16::from(lit - LIT0)))
        }
        _ => None,
    }
}

/// Sorts the spans, drops any that overlaps an earlier one, places each row at its pc, puts a
/// gap row wherever no FDE covers the next addresses, and merges identical neighbours.
fn assemble(mut spans: Vec<Span>, path: &Path) -> Result<Vec<Row>, UnwindError> {
    spans.sort_by_key(|s| (s.start, s.source));
    let pc32 = |pc: u64| {
        u32::try_from(pc).map_err(|_| UnwindError::AddressTooHigh {
            path: path.to_owned(),
            pc,
        })
    };
    let mut rows = Vec::new();
    let mut covered_to: Option<u64> = None;
    for span in spans {
        if let Some(end) = covered_to {
            if span.start < end {
                continue;
            }
            if span.start > end {
                rows.push(gap(pc32(end)?));
            }
        }
        for (pc, mut row) in span.rows {
            row.pc = pc32(pc)?;
            rows.push(row);
        }
        // The end of the last FDE must fit as well: the gap row after it goes there.
        covered_to = Some(u64::from(pc32(span.end)?));
    }
    if let Some(end) = covered_to {
        rows.push(gap(pc32(end)?));
    }
    merge(&mut rows);
    Ok(rows)
}

fn gap(pc: u32) -> Row {
    Row {
        pc,
        ..Row::default()
    }
}

/// Drops every row whose rule equals the one before it (it changes nothing), and of rows at
/// one pc keeps the last.
pub fn merge(rows: &mut Vec<Row>) {
    let same_rule = |a: &Row, b: &Row| Row { pc: 0, ..*a } == Row { pc: 0, ..*b };
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for &row in rows.iter() {
        if let Some(last) = out.last_mut() {
            if last.pc == row.pc {
                *last = row;
                let n = out.len();
                if n >= 2 && same_rule(&out[n - 2], &out[n - 1]) {
                    out.pop();
                }
                continue;
            }
            if same_rule(last, &row) {
                continue;
            }
        }
        out.push(row);
    }
    *rows = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pc: u32, kind: u8, off: i16) -> Row {
        Row {
            pc,
            cfa: kind,
            cfa_offset: off,
            ..Row::default()
        }
    }

    #[test]
    fn merge_drops_repeated_rules_and_keeps_last_at_one_pc() {
        let mut rows = vec![
            row(0x10, cfa::RSP, 8),
            row(0x11, cfa::RSP, 8),
            row(0x12, cfa::RSP, 16),
            row(0x20, 0, 0),
            row(0x20, cfa::RSP, 16),
            row(0x30, 0, 0),
            row(0x40, 0, 0),
        ];
        merge(&mut rows);
        assert_eq!(
            rows,
            vec![
                row(0x10, cfa::RSP, 8),
                row(0x12, cfa::RSP, 16),
                row(0x30, 0, 0)
            ]
        );
    }

    #[test]
    fn plt_expressions_are_recognised_with_their_threshold() {
        let lazy = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(plt_rule(&lazy), Some((8, 11)));
        let ibt = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3a, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(plt_rule(&ibt), Some((8, 10)));
        // The signal frame's CFA (breg7 +160; deref) is not a PLT.
        assert_eq!(plt_rule(&[0x77, 0xa0, 0x01, 0x06]), None);
        assert_eq!(plt_rule(&lazy[..10]), None);
    }

    #[test]
    fn overlapping_and_far_spans() {
        let span = |start, end, source, rows: Vec<(u64, Row)>| Span {
            start,
            end,
            source,
            rows,
        };
        let spans = vec![
            span(0x200, 0x210, 0, vec![(0x200, row(0, cfa::RSP, 8))]),
            // .debug_frame covering the same function loses to .eh_frame.
            span(0x200, 0x210, 1, vec![(0x200, row(0, cfa::RBP, 16))]),
            span(
                0x100,
                0x180,
                0,
                vec![(0x100, row(0, cfa::RSP, 8)), (0x101, row(0, cfa::RSP, 16))],
            ),
        ];
        let rows = assemble(spans, Path::new("t")).unwrap();
        assert_eq!(
            rows,
            vec![
                row(0x100, cfa::RSP, 8),
                row(0x101, cfa::RSP, 16),
                row(0x180, 0, 0),
                row(0x200, cfa::RSP, 8),
                row(0x210, 0, 0),
            ]
        );
        let high = vec![span(
            0x1_0000_0000,
            0x1_0000_0010,
            0,
            vec![(0x1_0000_0000, row(0, 1, 8))],
        )];
        let err = assemble(high, Path::new("/big")).unwrap_err().to_string();
        assert!(err.contains("/big") && err.contains("0x100000000"), "{err}");
    }
}
