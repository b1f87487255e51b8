//! Symbolization of 10,000 unique stacks (target: under a second).
//!
//! `cargo bench -p kpath --bench symbolize` (root, for real kernel addresses in /proc/kallsyms).
//! Stacks are drawn from this process's own mappings (the bench binary and libc) and the kernel
//! text: 20 user and 12 kernel frames each, from pools of distinct addresses like a busy server's
//! (frames repeat across stacks), then once more with every address distinct (the worst case).
//! Each run symbolizes once into structured stacks, then times the folded text and the pprof
//! profile made from them.
use std::collections::HashSet;
use std::time::Instant;

use kpath::export::pprof;
use kpath::kernel::kallsyms::Kallsyms;
use kpath::run::Run;
use kpath::stacks::{
    maps::{parse_maps, MapsSnapshots},
    symbolize::{RawStack, StackSymbolizer},
};

const STACKS: usize = 10_000;
const USER_FRAMES: usize = 20;
const KERNEL_FRAMES: usize = 12;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, v: &[u64]) -> u64 {
        v[(self.next() % v.len() as u64) as usize]
    }
}

fn main() {
    let t = Instant::now();
    let ksyms = Kallsyms::load().expect("read /proc/kallsyms");
    let kallsyms_ms = t.elapsed().as_secs_f64() * 1e3;
    let me = std::process::id();
    let mut maps = MapsSnapshots::default();
    let text = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mappings: Vec<_> = parse_maps(&text)
        .into_iter()
        .filter(|m| m.path.starts_with('/'))
        .collect();
    maps.merge(me, mappings.clone());
    let (stext, etext) = (
        ksyms.lookup("_stext").unwrap_or(0xffffffff81000000),
        ksyms.lookup("_etext").unwrap_or(0xffffffff82000000),
    );
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let user_addr = |rng: &mut Rng| {
        let m = &mappings[(rng.next() % mappings.len() as u64) as usize];
        m.start + rng.next() % (m.end - m.start)
    };
    let kernel_addr = |rng: &mut Rng| stext + rng.next() % (etext - stext);

    for (label, user_pool, kernel_pool) in [
        ("pooled (5,000 user + 3,000 kernel addresses)", 5_000, 3_000),
        ("all distinct", 0, 0),
    ] {
        let upool: Vec<u64> = (0..user_pool).map(|_| user_addr(&mut rng)).collect();
        let kpool: Vec<u64> = (0..kernel_pool).map(|_| kernel_addr(&mut rng)).collect();
        let mut seen = HashSet::new();
        let mut stacks = Vec::with_capacity(STACKS);
        while stacks.len() < STACKS {
            let user: Vec<u64> = (0..USER_FRAMES)
                .map(|_| {
                    if upool.is_empty() {
                        user_addr(&mut rng)
                    } else {
                        rng.pick(&upool)
                    }
                })
                .collect();
            let kernel: Vec<u64> = (0..KERNEL_FRAMES)
                .map(|_| {
                    if kpool.is_empty() {
                        kernel_addr(&mut rng)
                    } else {
                        rng.pick(&kpool)
                    }
                })
                .collect();
            if seen.insert((user.clone(), kernel.clone())) {
                stacks.push(RawStack {
                    tgid: me,
                    comm: "bench".into(),
                    kernel,
                    user,
                    user_ret: 0,
                    weight: 1,
                    kernel_from_task: false,
                });
            }
        }
        let t = Instant::now();
        let sym = StackSymbolizer::new(&ksyms, &maps);
        let out = sym.symbolize_stacks(&stacks);
        let symbolize = t.elapsed();
        let t = Instant::now();
        let text = out.folded_text();
        let fold = t.elapsed();
        let t = Instant::now();
        let gz = pprof::encode(&pprof::oncpu(&out, &Run::default()));
        let pprof_time = t.elapsed();
        println!(
            "{STACKS} unique stacks, {label}: symbolize {:.1} ms, fold {:.1} ms ({} folded lines), \
             pprof {:.1} ms ({} KiB gzipped); kallsyms load {kallsyms_ms:.1} ms",
            symbolize.as_secs_f64() * 1e3,
            fold.as_secs_f64() * 1e3,
            text.lines().count(),
            pprof_time.as_secs_f64() * 1e3,
            gz.len() / 1024
        );
    }
}
