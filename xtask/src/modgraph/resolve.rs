//! A crate's module tree (from `mod x;` declarations) and the resolution of written paths to
//! the modules they name.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::scan::{scan, FileScan, PathRef};

/// Which crate root a module hangs from: only tells `lib.rs` and `main.rs` apart, since the
/// modules of both share one namespace of file paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Root {
    Lib,
    Bin,
}

/// A module: its path under the crate root (empty for `lib.rs`/`main.rs`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub root: Root,
    pub path: Vec<String>,
}

/// One path in the code that names a module.
pub struct Reference {
    pub from: Node,
    pub to: Node,
    /// `file:line` under src.
    pub at: String,
    /// Only in `#[cfg(test)]` code.
    pub test: bool,
}

struct File {
    rel: String,
    node: Node,
    scan: FileScan,
}

/// An absolute path as written (not yet cut down to a module).
type Abs = (Root, Vec<String>);

pub struct Crate {
    lib_name: String,
    files: Vec<File>,
    unreachable: Vec<String>,
    /// Every module but the roots.
    modules: BTreeSet<Vec<String>>,
    /// Top-level modules declared by `main.rs` (the binary's own).
    bin_top: BTreeSet<String>,
    /// Per module, the names its `use` items bind and what they stand for.
    imports: BTreeMap<Node, BTreeMap<String, Abs>>,
}

/// Where a file sits in the tree by its path under src: `a/b.rs` and `a/b/mod.rs` are `a::b`.
/// `None` for `src/bin/...` (other crates).
fn file_module(rel: &str) -> Option<(Option<Root>, Vec<String>)> {
    match rel {
        "lib.rs" => return Some((Some(Root::Lib), Vec::new())),
        "main.rs" => return Some((Some(Root::Bin), Vec::new())),
        _ if rel.starts_with("bin/") => return None,
        _ => {}
    }
    let mut path: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if path.last().is_some_and(|l| l == "mod") {
        path.pop();
    }
    Some((None, path))
}

/// `file` (from a `#[path]` in the source file `rel`) as a path under src, `..` resolved.
fn relative_to(rel: &str, file: &str) -> String {
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    for part in file.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl Crate {
    pub fn new(lib_name: &str, sources: &[(&str, &str)]) -> Crate {
        let mut by_path: BTreeMap<(Option<Root>, Vec<String>), (String, FileScan)> =
            BTreeMap::new();
        let mut unreachable = Vec::new();
        for (rel, text) in sources {
            match file_module(rel) {
                Some(key) => {
                    by_path.insert(key, (rel.to_string(), scan(text)));
                }
                None => unreachable.push(rel.to_string()),
            }
        }
        let mut krate = Crate {
            lib_name: lib_name.to_string(),
            files: Vec::new(),
            unreachable,
            modules: BTreeSet::new(),
            bin_top: BTreeSet::new(),
            imports: BTreeMap::new(),
        };
        krate.walk_tree(by_path);
        krate.collect_imports();
        krate
    }

    /// Follows `mod x;` from the roots; files nothing declares end up in `unreachable`.
    fn walk_tree(
        &mut self,
        mut by_path: BTreeMap<(Option<Root>, Vec<String>), (String, FileScan)>,
    ) {
        let mut queue: VecDeque<Node> = VecDeque::new();
        for root in [Root::Lib, Root::Bin] {
            if by_path.contains_key(&(Some(root), Vec::new())) {
                queue.push_back(Node {
                    root,
                    path: Vec::new(),
                });
            }
        }
        while let Some(node) = queue.pop_front() {
            let key = (node.path.is_empty().then_some(node.root), node.path.clone());
            let Some((rel, scan)) = by_path.remove(&key) else {
                continue; // declared, but no file (inline, #[path] or cfg'd away)
            };
            for (child, attr) in &scan.mod_decls {
                let mut path = node.path.clone();
                path.push(child.clone());
                if let Some(file) = attr {
                    // `#[path]`: the file, relative to the declaring file's folder, is this module.
                    let moved = file_module(&relative_to(&rel, file))
                        .and_then(|(_, at)| by_path.remove(&(None, at)));
                    if let Some(entry) = moved {
                        by_path.insert((None, path.clone()), entry);
                    }
                }
                if node.path.is_empty() && node.root == Root::Bin {
                    self.bin_top.insert(child.clone());
                }
                if by_path.contains_key(&(None, path.clone())) {
                    self.modules.insert(path.clone());
                    queue.push_back(Node {
                        root: node.root,
                        path,
                    });
                }
            }
            self.files.push(File { rel, node, scan });
        }
        self.unreachable
            .extend(by_path.into_values().map(|(rel, _)| rel));
        self.unreachable.sort();
    }

    fn collect_imports(&mut self) {
        let mut imports: BTreeMap<Node, BTreeMap<String, Abs>> = BTreeMap::new();
        for file in &self.files {
            for p in file
                .scan
                .paths
                .iter()
                .filter(|p| p.is_use && p.inline.is_empty())
            {
                if let (Some(name), Some(abs)) = (&p.binds, self.absolute(&file.node, p)) {
                    imports
                        .entry(file.node.clone())
                        .or_default()
                        .insert(name.clone(), abs);
                }
            }
        }
        self.imports = imports;
    }

    fn root_of(&self, path: &[String], fallback: Root) -> Root {
        match path.first() {
            None => fallback,
            Some(top) if self.bin_top.contains(top) => Root::Bin,
            Some(_) => Root::Lib,
        }
    }

    /// The absolute form of a written path, or `None` when it names nothing in this crate
    /// (another crate, a local item, a generic parameter).
    fn absolute(&self, from: &Node, p: &PathRef) -> Option<Abs> {
        let mut current = from.path.clone();
        current.extend(p.inline.iter().cloned());
        let segs = &p.segs;
        let first = segs.first()?.as_str();
        let join = |base: &[String], rest: &[String]| [base, rest].concat();
        match first {
            "crate" => Some((from.root, segs[1..].to_vec())),
            _ if first == self.lib_name && from.root == Root::Bin => {
                Some((Root::Lib, segs[1..].to_vec()))
            }
            "self" => Some((from.root, join(&current, &segs[1..]))),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let keep = current.len().checked_sub(ups)?;
                Some((from.root, join(&current[..keep], &segs[ups..])))
            }
            _ if self.modules.contains(&join(&current, &segs[..1])) => {
                Some((from.root, join(&current, segs)))
            }
            _ => None,
        }
    }

    /// The deepest module an absolute path names, looking through `use` re-exports.
    fn resolve(&self, abs: Abs, depth: usize) -> Node {
        let (root, segs) = abs;
        let mut n = segs.len();
        while n > 0 && !self.modules.contains(&segs[..n]) {
            n -= 1;
        }
        let node = Node {
            root: self.root_of(&segs[..n], root),
            path: segs[..n].to_vec(),
        };
        if depth < 8 && n < segs.len() {
            if let Some((r, target)) = self.imports.get(&node).and_then(|m| m.get(&segs[n])) {
                let next = [target.as_slice(), &segs[n + 1..]].concat();
                return self.resolve((*r, next), depth + 1);
            }
        }
        node
    }

    /// Every reference between modules.
    pub fn edges(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for file in &self.files {
            for p in &file.scan.paths {
                if let Some(abs) = self.absolute(&file.node, p) {
                    out.push(Reference {
                        from: file.node.clone(),
                        to: self.resolve(abs, 0),
                        at: format!("{}:{}", file.rel, p.line),
                        test: p.test,
                    });
                }
            }
        }
        out
    }

    /// The crate's top level (empty), then every module that has submodules, sorted.
    pub fn directories(&self) -> Vec<Vec<String>> {
        let mut dirs: BTreeSet<Vec<String>> = BTreeSet::new();
        dirs.insert(Vec::new());
        for m in &self.modules {
            dirs.insert(m[..m.len() - 1].to_vec());
        }
        dirs.into_iter().collect()
    }

    /// The nodes of the graph inside `dir`: its own file and its direct submodules (at the top
    /// level: `lib`, `main` and the top-level modules).
    pub fn nodes_within(&self, dir: &[String]) -> BTreeSet<String> {
        let mut nodes: BTreeSet<String> = self
            .files
            .iter()
            .filter_map(|f| self.name_within(dir, &f.node))
            .collect();
        nodes.extend(self.own_within(dir));
        nodes
    }

    /// The names of `dir`'s own file in its graph (`lib` and `main` at the top level).
    pub fn own_within(&self, dir: &[String]) -> BTreeSet<String> {
        if !dir.is_empty() {
            return [dir.join("::")].into();
        }
        self.files
            .iter()
            .filter(|f| f.node.path.is_empty())
            .filter_map(|f| self.name_within(dir, &f.node))
            .collect()
    }

    /// `node`'s name in the graph inside `dir`, `None` when it lies outside `dir`.
    pub fn name_within(&self, dir: &[String], node: &Node) -> Option<String> {
        if dir.is_empty() {
            return Some(match (node.path.first(), node.root) {
                (Some(top), _) => top.clone(),
                (None, Root::Lib) => "lib".to_string(),
                (None, Root::Bin) => "main".to_string(),
            });
        }
        if node.path.len() < dir.len() || node.path[..dir.len()] != *dir {
            return None;
        }
        Some(node.path[..(dir.len() + 1).min(node.path.len())].join("::"))
    }

    pub fn unreachable(&self) -> Vec<String> {
        self.unreachable.clone()
    }
}
