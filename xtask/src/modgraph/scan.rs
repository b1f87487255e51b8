//! What one source file says about modules: the `mod x;` it declares, every path it writes
//! (`a::b::c`, `crate::x`, `super::y`, `$crate::z`), and its `use` trees flattened into paths
//! (`use crate::{a, b::{c, self}}` gives `crate::a`, `crate::b::c` and `crate::b`).

use super::lex::{tokenize, Tok, Token};

/// A path as written, and where: inside which inline `mod x { ... }` blocks of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRef {
    pub segs: Vec<String>,
    /// Names of the enclosing inline modules (`mod tests { ... }`), outermost first.
    pub inline: Vec<String>,
    pub line: usize,
    /// For a `use` item, the name it binds (the last segment or its `as` alias; `None` for
    /// globs and `as _`).
    pub binds: Option<String>,
    pub is_use: bool,
    /// Inside a `#[cfg(test)]` inline module.
    pub test: bool,
}

#[derive(Debug, Default)]
pub struct FileScan {
    /// `mod x;` at the file's top level (the files this one owns), with the file named by a
    /// `#[path = "..."]` attribute in front of it.
    pub mod_decls: Vec<(String, Option<String>)>,
    pub paths: Vec<PathRef>,
}

pub fn scan(src: &str) -> FileScan {
    let toks = tokenize(src);
    let mut out = FileScan::default();
    let mut depth = 0usize;
    // (inline module name, brace depth inside it, whether it is #[cfg(test)])
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let names = || inline.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>();
        let test = inline.iter().any(|(_, _, t)| *t);
        match &toks[i].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                inline.retain(|(_, d, _)| *d <= depth);
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(Tok::Ident(name)), Some(next)) = (tok(&toks, i + 1), tok(&toks, i + 2))
                {
                    match next {
                        Tok::Punct(';') if depth == 0 => {
                            out.mod_decls.push((name.clone(), path_attr(&toks, i)))
                        }
                        Tok::Punct('{') => {
                            inline.push((name.clone(), depth + 1, after_cfg_test(&toks, i)))
                        }
                        _ => {}
                    }
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let line = toks[i].line;
                i += 1;
                let mut flat = Vec::new();
                use_tree(&toks, &mut i, Vec::new(), &mut flat);
                for (segs, binds) in flat {
                    out.paths.push(PathRef {
                        segs,
                        inline: names(),
                        line,
                        binds,
                        is_use: true,
                        test,
                    });
                }
                continue;
            }
            Tok::Ident(kw) if kw == "pub" && is_pub_in(&toks, i) => {
                // `pub(in crate::a)` names who may see an item, not a dependency.
                while i < toks.len() && toks[i].tok != Tok::Punct(')') {
                    i += 1;
                }
            }
            Tok::Ident(_) if starts_path(&toks, i) => {
                let (segs, end) = path_at(&toks, i);
                out.paths.push(PathRef {
                    segs,
                    inline: names(),
                    line: toks[i].line,
                    binds: None,
                    is_use: false,
                    test,
                });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn tok(toks: &[Token], i: usize) -> Option<&Tok> {
    toks.get(i).map(|t| &t.tok)
}

/// Whether the `mod` at `i` (possibly after `pub`) follows `#[cfg(test)]`.
fn after_cfg_test(toks: &[Token], mut i: usize) -> bool {
    if i > 0 && matches!(tok(toks, i - 1), Some(Tok::Ident(s)) if s == "pub") {
        i -= 1;
    }
    let want = ["#", "[", "cfg", "(", "test", ")", "]"];
    i >= want.len()
        && toks[i - want.len()..i]
            .iter()
            .zip(want)
            .all(|(t, w)| match &t.tok {
                Tok::Ident(s) => s == w,
                Tok::Punct(c) => c.to_string() == w,
                Tok::PathSep | Tok::Str(_) => false,
            })
}

/// The `"file"` of a `#[path = "file"]` right before the `mod` at `i` (possibly after `pub`).
fn path_attr(toks: &[Token], mut i: usize) -> Option<String> {
    if i > 0 && matches!(tok(toks, i - 1), Some(Tok::Ident(s)) if s == "pub") {
        i -= 1;
    }
    let t = |k: usize| i.checked_sub(k).and_then(|j| tok(toks, j));
    let shape = t(6) == Some(&Tok::Punct('#'))
        && t(5) == Some(&Tok::Punct('['))
        && matches!(t(4), Some(Tok::Ident(p)) if p == "path")
        && t(3) == Some(&Tok::Punct('='))
        && t(1) == Some(&Tok::Punct(']'));
    match t(2) {
        Some(Tok::Str(file)) if shape => Some(file.clone()),
        _ => None,
    }
}

fn is_pub_in(toks: &[Token], i: usize) -> bool {
    tok(toks, i + 1) == Some(&Tok::Punct('('))
        && matches!(tok(toks, i + 2), Some(Tok::Ident(s)) if s == "in")
}

/// An identifier followed by `::` that does not itself follow `::` (`::std::x` and the tail of
/// a path are not starts).
fn starts_path(toks: &[Token], i: usize) -> bool {
    tok(toks, i + 1) == Some(&Tok::PathSep)
        && matches!(tok(toks, i + 2), Some(Tok::Ident(_)))
        && (i == 0 || tok(toks, i - 1) != Some(&Tok::PathSep))
}

/// `a::b::c` from `i`; `$crate` counts as `crate`. Returns the segments and the index after.
fn path_at(toks: &[Token], mut i: usize) -> (Vec<String>, usize) {
    let mut segs = Vec::new();
    while let Some(Tok::Ident(s)) = tok(toks, i) {
        segs.push(s.clone());
        if tok(toks, i + 1) == Some(&Tok::PathSep)
            && matches!(tok(toks, i + 2), Some(Tok::Ident(_)))
        {
            i += 2;
        } else {
            i += 1;
            break;
        }
    }
    (segs, i)
}

/// One use tree from `i` (after `use`, or inside a group) with `prefix` already taken;
/// appends (path, bound name) and leaves `i` after the tree (and after a final `;`).
fn use_tree(
    toks: &[Token],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    while let Some(t) = tok(toks, *i) {
        match t {
            Tok::PathSep => *i += 1,
            Tok::Ident(s) => {
                *i += 1;
                if s != "self" || path.is_empty() {
                    path.push(s.clone());
                }
                if tok(toks, *i) == Some(&Tok::PathSep) {
                    continue;
                }
                let mut binds = path.last().cloned();
                if matches!(tok(toks, *i), Some(Tok::Ident(a)) if a == "as") {
                    binds = match tok(toks, *i + 1) {
                        Some(Tok::Ident(alias)) if alias != "_" => Some(alias.clone()),
                        _ => None, // `as _`
                    };
                    *i += 2;
                }
                out.push((path, binds));
                break;
            }
            Tok::Punct('*') => {
                *i += 1;
                out.push((path, None));
                break;
            }
            Tok::Punct('{') => {
                *i += 1;
                while !matches!(tok(toks, *i), None | Some(Tok::Punct('}'))) {
                    use_tree(toks, i, path.clone(), out);
                    if tok(toks, *i) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                break;
            }
            _ => break,
        }
    }
    if tok(toks, *i) == Some(&Tok::Punct(';')) {
        *i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(src: &str) -> Vec<(String, Option<String>)> {
        scan(src)
            .paths
            .into_iter()
            .filter(|p| p.is_use)
            .map(|p| (p.segs.join("::"), p.binds))
            .collect()
    }

    #[test]
    fn grouped_use_trees_flatten_with_self_globs_and_aliases() {
        let got = uses("use crate::{a, b::{self, c as d}, e::*, f::G as _};\nuse std::io;");
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            got,
            vec![
                ("crate::a".into(), s("a")),
                ("crate::b".into(), s("b")),
                ("crate::b::c".into(), s("d")),
                ("crate::e".into(), None),
                ("crate::f::G".into(), None),
                ("std::io".into(), s("io")),
            ]
        );
    }

    #[test]
    fn paths_mod_declarations_and_inline_modules() {
        let src = "mod a;\npub mod b;\nfn f() { crate::x::y(); super::z::W::new(); $crate::m::n!(); }\n\
                   pub(in crate::hidden) fn g() {}\n\
                   #[cfg(test)]\nmod tests { use super::*; fn t() { self::q::r(); } }\nfn h() { k::l(); }";
        let s = scan(src);
        let decls: Vec<&str> = s.mod_decls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(decls, vec!["a", "b"]);
        let with_path = scan("#[path = \"gen/table.rs\"]\nmod table;\nmod plain;");
        assert_eq!(
            with_path.mod_decls,
            vec![
                ("table".to_string(), Some("gen/table.rs".to_string())),
                ("plain".to_string(), None)
            ]
        );
        let paths: Vec<(String, Vec<String>)> = s
            .paths
            .iter()
            .map(|p| (p.segs.join("::"), p.inline.clone()))
            .collect();
        let test: Vec<bool> = s.paths.iter().map(|p| p.test).collect();
        assert_eq!(test, [false, false, false, true, true, false]);
        let tests = vec!["tests".to_string()];
        assert_eq!(
            paths,
            vec![
                ("crate::x::y".into(), vec![]),
                ("super::z::W::new".into(), vec![]),
                ("crate::m::n".into(), vec![]),
                ("super".into(), tests.clone()),
                ("self::q::r".into(), tests),
                ("k::l".into(), vec![]),
            ]
        );
    }
}
