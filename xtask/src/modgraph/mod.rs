//! The module-graph check of `cargo xtask lint`: which module of a crate refers to which, from
//! the sources alone, and whether that graph has cycles or edges that go up a declared layer
//! order.
//!
//! A module is a file (`a.rs`, `a/mod.rs`, `a/b.rs`) reachable through `mod x;` declarations
//! from `lib.rs` or `main.rs`. An edge is any path that names a module of the crate: `crate::a`,
//! `super::b`, `self::c`, a child module by its bare name, `$crate::` in macros, and (in
//! `main.rs`'s crate) the library's own name; `use` trees count once per leaf. Paths are
//! resolved to the deepest module they name, following `use` re-exports, so `crate::Io`
//! re-exported by `lib.rs` from `io` is an edge to `io`. Comments and string literals are
//! ignored; inline `mod tests { ... }` blocks belong to their file. Graphs are drawn at two
//! granularities: the crate's top-level modules (with its root files as `lib` and `main`),
//! and, for every directory module, its own file and its direct submodules.

mod cycles;
mod lex;
mod resolve;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

use resolve::{Crate, Reference};

/// The crates checked, each with its library's name (how `main.rs` refers to it) and an
/// optional layer order of its top-level modules, highest first: a module may use modules in
/// its own layer and below, never above. Modules not listed are not checked for layering.
/// cli's layout is being rebuilt; its order will be filled in once it settles.
pub const CRATES: &[CrateSpec] = &[
    CrateSpec {
        dir: "cli",
        lib_name: "kpath",
        layers: &[
            &["main"],
            &["cmd"],
            &["agent", "bench", "scenario", "vm"],
            &["render"],
            &["export"],
            &["families", "findings"],
            &["stacks", "process"],
            &["probes"],
            &["kernel"],
            &["run", "fmt", "hist"],
        ],
    },
    CrateSpec {
        dir: "servers",
        lib_name: "servers",
        layers: &[
            &["serve"],
            &["model"],
            &["conn"],
            &["session"],
            &["io", "send", "net", "load"],
            &["http", "reply", "sys"],
        ],
    },
    CrateSpec {
        dir: "xtask",
        lib_name: "xtask",
        layers: &[],
    },
];

pub struct CrateSpec {
    pub dir: &'static str,
    pub lib_name: &'static str,
    pub layers: &'static [&'static [&'static str]],
}

/// One graph: a crate's top level, or the inside of one directory module.
#[derive(Debug)]
pub struct Graph {
    /// `top level`, or the directory module's path (`render`, `vm::guest`).
    pub scope: String,
    pub nodes: BTreeSet<String>,
    /// The directory's own file (`render` for render/mod.rs; `lib`, `main` at the top level).
    /// It declares and dispatches to its submodules, and they use the items it defines
    /// (`super::X`): that is how a directory module is built, so cycles through it are not
    /// reported (its edges are still drawn, and the layer order can forbid them).
    pub own: BTreeSet<String>,
    pub edges: BTreeMap<(String, String), Edge>,
}

#[derive(Debug, Clone)]
pub struct Edge {
    /// Where a reference is (`file:line`), one outside test code when there is one.
    pub at: String,
    /// Every reference is in `#[cfg(test)]` code.
    pub test_only: bool,
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let test = if self.test_only { ", tests only" } else { "" };
        write!(f, "({}{test})", self.at)
    }
}

/// What the check found in one crate.
#[derive(Debug)]
pub struct Findings {
    pub krate: String,
    pub graphs: Vec<Graph>,
    /// (scope, cycle as a node list, the first node not repeated).
    pub cycles: Vec<(String, Vec<String>)>,
    /// (from, to, where) for edges from a lower layer to a higher one.
    pub upward: Vec<(String, String, String)>,
    /// Source files no `mod` declaration reaches (not part of the crate; skipped).
    pub unreachable: Vec<String>,
}

impl Findings {
    pub fn clean(&self) -> bool {
        self.cycles.is_empty() && self.upward.is_empty()
    }
}

/// Runs the check on `<root>/<dir>/src` of one crate.
pub fn check_dir(root: &Path, spec: &CrateSpec) -> Result<Findings> {
    let src = root.join(spec.dir).join("src");
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files)?;
    files.sort();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    Ok(analyze(spec.dir, spec.lib_name, &files, spec.layers))
}

fn read_sources(src: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            read_sources(src, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rel = path.strip_prefix(src).unwrap_or(&path);
            out.push((rel.to_string_lossy().into_owned(), text));
        }
    }
    Ok(())
}

/// The check on in-memory sources: `files` are (path under src, text).
pub fn analyze(
    krate: &str,
    lib_name: &str,
    files: &[(&str, &str)],
    layers: &[&[&str]],
) -> Findings {
    let krate_model = Crate::new(lib_name, files);
    let edges = krate_model.edges();
    let graphs: Vec<Graph> = krate_model
        .directories()
        .into_iter()
        .map(|dir| graph(&krate_model, &dir, &edges))
        .collect();
    let cycles = graphs
        .iter()
        .flat_map(|g| {
            let inner: BTreeSet<String> = g.nodes.difference(&g.own).cloned().collect();
            cycles::elementary(&inner, g.edges.keys())
                .into_iter()
                .map(|c| (g.scope.clone(), c))
        })
        .collect();
    let upward = graphs
        .first()
        .map(|top| upward_edges(top, layers))
        .unwrap_or_default();
    Findings {
        krate: krate.to_string(),
        graphs,
        cycles,
        upward,
        unreachable: krate_model.unreachable(),
    }
}

/// The graph inside directory module `dir` (empty: the crate's top level).
fn graph(krate: &Crate, dir: &[String], refs: &[Reference]) -> Graph {
    let mut g = Graph {
        scope: if dir.is_empty() {
            "top level".to_string()
        } else {
            dir.join("::")
        },
        nodes: krate.nodes_within(dir),
        own: krate.own_within(dir),
        edges: BTreeMap::new(),
    };
    for r in refs {
        let (Some(a), Some(b)) = (
            krate.name_within(dir, &r.from),
            krate.name_within(dir, &r.to),
        ) else {
            continue;
        };
        if a == b {
            continue;
        }
        let edge = g.edges.entry((a, b)).or_insert_with(|| Edge {
            at: r.at.clone(),
            test_only: true,
        });
        if edge.test_only && !r.test {
            *edge = Edge {
                at: r.at.clone(),
                test_only: false,
            };
        }
    }
    g
}

/// Edges of the top-level graph from a module to one in a higher layer (`layers[0]` highest).
fn upward_edges(top: &Graph, layers: &[&[&str]]) -> Vec<(String, String, String)> {
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    top.edges
        .iter()
        .filter(|((a, b), _)| matches!((layer_of(a), layer_of(b)), (Some(la), Some(lb)) if lb < la))
        .map(|((a, b), e)| (a.clone(), b.clone(), e.to_string()))
        .collect()
}

/// Prints every graph's edges, for `cargo xtask lint --graph`.
pub fn print_graphs(f: &Findings) {
    for g in &f.graphs {
        println!(
            "{} ({}): {} modules, {} edges",
            f.krate,
            g.scope,
            g.nodes.len(),
            g.edges.len()
        );
        let mut from_none: BTreeSet<&String> = g.nodes.iter().collect();
        for ((a, b), e) in &g.edges {
            println!("  {a} -> {b}  {e}");
            from_none.remove(a);
        }
        if !from_none.is_empty() {
            let names: Vec<&str> = from_none.iter().map(|s| s.as_str()).collect();
            println!("  (no edges out: {})", names.join(", "));
        }
    }
}

/// Prints what failed, with the edges that make each cycle; returns whether all was clean.
pub fn report(f: &Findings) -> bool {
    for path in &f.unreachable {
        println!(
            "  {}: note: src/{path} is not declared by any module; skipped",
            f.krate
        );
    }
    for (scope, cycle) in &f.cycles {
        let mut ring = cycle.clone();
        ring.push(cycle[0].clone());
        println!("  {} ({scope}): cycle {}", f.krate, ring.join(" -> "));
        if let Some(g) = f.graphs.iter().find(|g| &g.scope == scope) {
            for pair in ring.windows(2) {
                if let Some(e) = g.edges.get(&(pair[0].clone(), pair[1].clone())) {
                    println!("      {} -> {}  {e}", pair[0], pair[1]);
                }
            }
        }
    }
    for (a, b, at) in &f.upward {
        println!(
            "  {}: upward edge {a} -> {b} against the layer order {at}",
            f.krate
        );
    }
    if f.clean() {
        println!("  {}: no cycles, no upward edges", f.krate);
    }
    f.clean()
}
