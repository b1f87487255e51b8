//! The module-graph check on small in-memory source trees.

use super::*;

fn run(files: &[(&str, &str)], layers: &[&[&str]]) -> Findings {
    analyze("t", "t", files, layers)
}

fn edges(f: &Findings, scope: &str) -> Vec<String> {
    let g = f.graphs.iter().find(|g| g.scope == scope).expect("scope");
    g.edges.keys().map(|(a, b)| format!("{a}->{b}")).collect()
}

fn cycles(f: &Findings) -> Vec<String> {
    f.cycles
        .iter()
        .map(|(scope, c)| format!("{scope}: {}", c.join(" ")))
        .collect()
}

#[test]
fn a_clean_tree_passes() {
    let f = run(
        &[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            (
                "a.rs",
                "use crate::b::Thing;\npub fn f() -> Thing { crate::b::make() }",
            ),
            (
                "b.rs",
                "pub struct Thing;\npub fn make() -> Thing { Thing }\n// crate::a::f\n",
            ),
        ],
        &[],
    );
    assert!(f.clean(), "{f:?}");
    assert_eq!(edges(&f, "top level"), vec!["a->b"]);
    assert!(f.unreachable.is_empty());
}

#[test]
fn a_cycle_between_top_level_modules_is_found() {
    let f = run(
        &[
            ("lib.rs", "mod render;\nmod bench;\n"),
            ("render.rs", "fn f() { crate::bench::table(); }"),
            (
                "bench/mod.rs",
                "mod table;\nuse crate::render;\npub use table::table;",
            ),
            ("bench/table.rs", "pub fn table() {}"),
        ],
        &[],
    );
    assert_eq!(cycles(&f), vec!["top level: bench render"]);
    // Inside bench, its mod.rs re-exports from bench::table.
    assert_eq!(edges(&f, "bench"), vec!["bench->bench::table"]);
    assert!(!f.clean());
}

#[test]
fn super_and_grouped_use_resolve_to_their_modules() {
    let f = run(
        &[
            ("lib.rs", "mod io;\nmod model;\nmod response;\n"),
            ("io/mod.rs", "mod body;\nmod cache;\npub struct Io;\n"),
            ("io/body.rs", "use super::{cache::Cache, Io};\n"),
            (
                "io/cache.rs",
                "pub struct Cache;\nfn f() { super::super::response::r(); }",
            ),
            ("model/mod.rs", "mod epoll;\n"),
            (
                "model/epoll.rs",
                "use crate::{io::{self, Io}, response::{r as reply}};",
            ),
            (
                "response.rs",
                "pub fn r() {}\n#[cfg(test)]\nmod tests { use super::*; }",
            ),
        ],
        &[],
    );
    assert_eq!(
        edges(&f, "top level"),
        vec!["io->response", "model->io", "model->response"]
    );
    assert_eq!(edges(&f, "io"), vec!["io::body->io", "io::body->io::cache"]);
    assert!(f.clean(), "{f:?}");
}

#[test]
fn a_cycle_inside_a_directory_module_is_found() {
    let f = run(
        &[
            ("main.rs", "mod stacks;\nfn main() { stacks::run(); }"),
            (
                "stacks/mod.rs",
                "mod fold;\nmod symbolize;\npub fn run() {}",
            ),
            (
                "stacks/fold.rs",
                "use super::symbolize::sym;\npub fn fold() {}",
            ),
            (
                "stacks/symbolize.rs",
                "pub fn sym() { super::fold::fold(); }",
            ),
        ],
        &[],
    );
    assert_eq!(edges(&f, "top level"), vec!["main->stacks"]);
    assert_eq!(cycles(&f), vec!["stacks: stacks::fold stacks::symbolize"]);
}

#[test]
fn upward_edges_against_the_layer_order_are_reported() {
    let files = [
        (
            "main.rs",
            "use t::{cmd, render};\nfn main() { cmd::run(); render::x(); }",
        ),
        ("lib.rs", "pub mod cmd;\npub mod render;\npub mod run;\n"),
        ("cmd.rs", "pub fn run() { crate::render::x(); }"),
        ("render.rs", "pub fn x() { crate::run::y(); }"),
        ("run.rs", "pub fn y() {}\nfn z() { crate::cmd::run(); }"),
    ];
    let layers: &[&[&str]] = &[&["main"], &["cmd"], &["render"], &["run"]];
    let f = run(&files, layers);
    let upward: Vec<String> = f
        .upward
        .iter()
        .map(|(a, b, _)| format!("{a}->{b}"))
        .collect();
    assert_eq!(upward, vec!["run->cmd"]);
    assert!(edges(&f, "top level").contains(&"main->render".to_string()));
    // Without a layer order only the cycle remains.
    let f = run(&files, &[]);
    assert!(f.upward.is_empty());
    assert_eq!(cycles(&f), vec!["top level: cmd render run"]);
}

#[test]
fn undeclared_files_are_skipped_and_listed() {
    let f = run(
        &[
            ("lib.rs", "mod a;\n"),
            ("a.rs", "fn f() { crate::old::g(); }"),
            ("old.rs", "fn g() { crate::a::f(); }"),
        ],
        &[],
    );
    assert_eq!(f.unreachable, vec!["old.rs"]);
    assert!(f.clean());
}

#[test]
fn path_attributes_place_the_file() {
    let f = run(
        &[
            ("lib.rs", "mod kernel;\n"),
            ("kernel/mod.rs", "mod names;\n"),
            (
                "kernel/names.rs",
                "#[path = \"table.rs\"]\nmod table;\nuse table::T;",
            ),
            ("kernel/table.rs", "pub struct T;"),
        ],
        &[],
    );
    assert!(f.unreachable.is_empty(), "{:?}", f.unreachable);
    let g = f
        .graphs
        .iter()
        .find(|g| g.scope == "kernel::names")
        .unwrap();
    assert_eq!(
        g.edges.keys().collect::<Vec<_>>(),
        vec![&(
            "kernel::names".to_string(),
            "kernel::names::table".to_string()
        )]
    );
}

#[test]
fn the_directory_file_and_test_only_edges() {
    let f = run(
        &[
            ("lib.rs", "mod scenario;\npub struct Shared;\n"),
            (
                "scenario/mod.rs",
                "mod compare;\nmod cork;\npub struct Spec;\npub fn run() { cork::run(); }",
            ),
            (
                "scenario/compare.rs",
                "use super::Spec;\nuse crate::Shared;\n#[cfg(test)]\nmod tests { fn t() { super::super::cork::CORK; } }",
            ),
            ("scenario/cork.rs", "use super::compare;\npub fn run() {}"),
        ],
        &[],
    );
    // scenario <-> scenario::cork goes through the directory's own file: not a cycle.
    assert_eq!(
        cycles(&f),
        vec!["scenario: scenario::compare scenario::cork"]
    );
    let g = f.graphs.iter().find(|g| g.scope == "scenario").unwrap();
    let e = &g.edges[&(
        "scenario::compare".to_string(),
        "scenario::cork".to_string(),
    )];
    assert!(e.test_only);
    assert_eq!(e.to_string(), "(scenario/compare.rs:4, tests only)");
    // Nor does scenario -> lib (crate::Shared) against lib's `mod scenario` make one.
    assert_eq!(edges(&f, "top level"), vec!["scenario->lib"]);
}
