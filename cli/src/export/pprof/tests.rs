use super::*;
use crate::run::{OncpuSummary, Run};
use crate::stacks::stack::MappingInfo;
use crate::stacks::LockWait;

fn run() -> Run {
    Run {
        kpath_version: "0.1.0".into(),
        started_unix_ms: 1_700_000_000_123,
        duration_ns: 2_500_000_000,
        oncpu: Some(OncpuSummary {
            frequency_hz: 100,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn user(addr: u64, mapping: usize, lines: &[(&str, u32)]) -> Frame {
    Frame {
        kind: FrameKind::User,
        addr,
        mapping: Some(mapping),
        lines: lines
            .iter()
            .map(|&(f, l)| Line {
                function: f.into(),
                file: Some("/src/burn.c".into()),
                line: l,
            })
            .collect(),
    }
}

fn kernel(addr: u64, name: &str) -> Frame {
    Frame {
        addr,
        ..Frame::synthetic(FrameKind::Kernel, name)
    }
}

/// Two threads of one process: `main -> burn (inlined spin)` and `main -> write -> kernel`.
fn stacks() -> SymStacks {
    let main = user(0x401010, 0, &[("main", 20)]);
    let burn = user(0x401100, 0, &[("burn", 9), ("spin", 4)]);
    let s = |comm: &str, frames: Vec<Frame>, weight| Stack {
        tgid: 42,
        comm: comm.into(),
        frames,
        weight,
    };
    SymStacks {
        stacks: vec![
            s("burner", vec![main.clone(), burn.clone()], 30),
            s(
                "burner",
                vec![
                    main.clone(),
                    user(0x401200, 0, &[("write", 0)]),
                    kernel(0xffffffff81002000, "ksys_write"),
                    Frame::synthetic(FrameKind::Kernel, "[kpath bpf]"),
                ],
                5,
            ),
            // The same stack again (another address in `burn` symbolizing alike merges in
            // folded text; here the very same frames merge into one pprof sample).
            s("burner", vec![main, burn], 7),
        ],
        mappings: vec![MappingInfo {
            start: 0x400000,
            end: 0x402000,
            offset: 0,
            path: "/usr/bin/burner".into(),
            build_id: Some("abcd01".into()),
        }],
    }
}

fn str_of(p: &proto::Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

/// Function names of a sample, leaf first, inlined callees before their callers.
fn names(p: &proto::Profile, s: &proto::Sample) -> Vec<String> {
    s.location_id
        .iter()
        .flat_map(|&id| {
            let loc = &p.location[id as usize - 1];
            assert_eq!(loc.id, id);
            loc.line.iter().map(|l| {
                let f = &p.function[l.function_id as usize - 1];
                format!("{}:{}", str_of(p, f.name), l.line)
            })
        })
        .collect()
}

#[test]
fn oncpu_profile_has_types_period_mappings_lines_and_labels() {
    let p = oncpu(&stacks(), &run());
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (str_of(&p, t.r#type), str_of(&p, t.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    assert_eq!(p.period, 10_000_000);
    let pt = p.period_type.as_ref().unwrap();
    assert_eq!(
        (str_of(&p, pt.r#type), str_of(&p, pt.unit)),
        ("cpu", "nanoseconds")
    );
    assert_eq!(p.time_nanos, 1_700_000_000_123_000_000);
    assert_eq!(p.duration_nanos, 2_500_000_000);
    assert_eq!(p.string_table[0], "");
    // The user mapping with its build-id, and the kernel's spanning its one address.
    assert_eq!(p.mapping.len(), 2);
    let m = &p.mapping[0];
    assert_eq!(str_of(&p, m.filename), "/usr/bin/burner");
    assert_eq!(str_of(&p, m.build_id), "abcd01");
    assert_eq!((m.memory_start, m.memory_limit), (0x400000, 0x402000));
    assert!(m.has_functions && m.has_inline_frames);
    let k = &p.mapping[1];
    assert_eq!(str_of(&p, k.filename), "[kernel.kallsyms]");
    assert_eq!(
        (k.memory_start, k.memory_limit),
        (0xffffffff81002000, 0xffffffff81002001)
    );
    // Identical stacks merged, values summed: samples and samples x period.
    assert_eq!(p.sample.len(), 2);
    assert_eq!(p.sample[0].value, [37, 370_000_000]);
    assert_eq!(p.sample[1].value, [5, 50_000_000]);
    assert_eq!(names(&p, &p.sample[0]), ["spin:4", "burn:9", "main:20"]);
    assert_eq!(
        names(&p, &p.sample[1]),
        ["[kpath bpf]:0", "ksys_write:0", "write:0", "main:20"]
    );
    // `main` is one location and one function in both samples.
    assert_eq!(
        p.sample[0].location_id.last(),
        p.sample[1].location_id.last()
    );
    assert_eq!(p.function.len(), 6);
    let loc = &p.location[p.sample[0].location_id[0] as usize - 1];
    assert_eq!((loc.address, loc.mapping_id), (0x401100, 1));
    let labels: Vec<String> = p.sample[0]
        .label
        .iter()
        .map(|l| match l.str {
            0 => format!("{}={}", str_of(&p, l.key), l.num),
            s => format!("{}={}", str_of(&p, l.key), str_of(&p, s)),
        })
        .collect();
    assert_eq!(labels, ["pid=42", "thread_name=burner"]);
}

#[test]
fn the_syscall_label_is_the_outermost_syscall_entry_frame() {
    let mut s = stacks();
    let k = |n: &str| kernel(0xffffffff81000000, n);
    s.stacks[1].frames.splice(
        2..3,
        [
            k("entry_SYSCALL_64_after_hwframe"),
            k("do_syscall_64"),
            k("__x64_sys_write"),
            k("__do_sys_not_this_one"),
        ],
    );
    assert_eq!(syscall_of(&s.stacks[1]), Some("write"));
    assert_eq!(syscall_of(&s.stacks[0]), None);
    let p = offcpu(&s, &run());
    let sc = p.string_table.iter().position(|x| x == "syscall").unwrap() as i64;
    let with: Vec<&str> = p
        .sample
        .iter()
        .flat_map(|x| x.label.iter().filter(|l| l.key == sc))
        .map(|l| str_of(&p, l.str))
        .collect();
    assert_eq!(with, ["write"]);
}

#[test]
fn the_program_is_the_first_mapping_even_below_kernel_frames() {
    let mut s = stacks();
    s.stacks.remove(0);
    let p = oncpu(&s, &run());
    assert_eq!(str_of(&p, p.mapping[0].filename), "/usr/bin/burner");
    assert_eq!(str_of(&p, p.mapping[1].filename), "[kernel.kallsyms]");
    // Still listed leaf first.
    assert_eq!(
        names(&p, &p.sample[0]),
        ["[kpath bpf]:0", "ksys_write:0", "write:0", "main:20"]
    );
}

#[test]
fn totals_match_the_folded_text_of_the_same_stacks() {
    let s = stacks();
    let folded_total = folded::total(&s.folded_text());
    let p = oncpu(&s, &run());
    assert_eq!(
        p.sample.iter().map(|x| x.value[0] as u64).sum::<u64>(),
        folded_total
    );
    let off = offcpu(&s, &run());
    assert_eq!(off.sample_type.len(), 1);
    assert_eq!(
        off.sample.iter().map(|x| x.value[0] as u64).sum::<u64>(),
        folded_total
    );
    // Rebuilt from the folded text alone, the totals and the inlined lines stay.
    let again = from_folded(&s.folded_text(), PprofKind::Oncpu, &run()).unwrap();
    assert_eq!(
        again.sample.iter().map(|x| x.value[0] as u64).sum::<u64>(),
        folded_total
    );
    let burn = again
        .sample
        .iter()
        .find(|x| x.value[0] == 37)
        .expect("the burn stack");
    assert_eq!(names(&again, burn), ["spin:0", "burn:0", "main:0"]);
    assert!(from_folded("no count\n", PprofKind::Oncpu, &run()).is_err());
}

#[test]
fn lock_profile_counts_contentions_and_wait_with_lock_labels() {
    let s = stacks();
    let waits = (0..s.stacks.len())
        .map(|i| LockWait {
            tid: 43,
            contentions: i as u64 + 1,
            lock: "epmutex".into(),
            lock_type: "mutex".into(),
        })
        .collect();
    let p = locks(&LockStacks { stacks: s, waits }, &run());
    let types: Vec<&str> = p.sample_type.iter().map(|t| str_of(&p, t.r#type)).collect();
    assert_eq!(types, ["contentions", "wait"]);
    // Stacks 0 and 2 merge: 1 + 3 contentions, 30 + 7 ns.
    assert_eq!(p.sample[0].value, [4, 37]);
    assert_eq!(p.sample[1].value, [2, 5]);
    let keys: Vec<&str> = p.sample[0]
        .label
        .iter()
        .map(|l| str_of(&p, l.key))
        .collect();
    assert_eq!(keys, ["pid", "thread_name", "tid", "lock", "lock_type"]);
}

#[test]
fn write_run_writes_what_the_profiles_hold_and_reads_back() {
    let dir = std::env::temp_dir().join(format!("kpath-pprof-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profiles = Profiles {
        oncpu_stacks: Some(stacks()),
        ..Default::default()
    };
    let written = write_run(&dir, &profiles, &run()).unwrap();
    assert_eq!(written, [(PprofKind::Oncpu, "oncpu.pb.gz".to_string())]);
    let path = dir.join("oncpu.pb.gz");
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(&raw[..2], [0x1f, 0x8b], "gzipped");
    let back = read_file(&path).unwrap();
    assert_eq!(back, oncpu(&stacks(), &run()));
    assert!(!dir.join("offcpu.pb.gz").exists());
    std::fs::write(&path, b"\x1f\x8bnot gzip").unwrap();
    assert!(matches!(read_file(&path), Err(PprofError::Read { .. })));
    std::fs::write(&path, [0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(read_file(&path), Err(PprofError::Decode { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}
