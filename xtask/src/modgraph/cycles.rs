//! Every elementary cycle of a small directed graph, each listed once, starting at its
//! smallest node.

use std::collections::BTreeSet;

/// More cycles than this in one graph are not listed (the graph needs work either way).
const MAX_CYCLES: usize = 200;

pub fn elementary<'a>(
    nodes: &BTreeSet<String>,
    edges: impl Iterator<Item = &'a (String, String)>,
) -> Vec<Vec<String>> {
    let names: Vec<&String> = nodes.iter().collect();
    let index = |n: &String| names.iter().position(|m| *m == n);
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (a, b) in edges {
        if let (Some(i), Some(j)) = (index(a), index(b)) {
            adj[i].push(j);
        }
    }
    let mut found = Vec::new();
    for start in 0..names.len() {
        let mut path = vec![start];
        search(&adj, start, &mut path, &mut found);
    }
    found
        .into_iter()
        .map(|c| c.into_iter().map(|i| names[i].clone()).collect())
        .collect()
}

/// Extends `path` (which starts at `start`) through nodes greater than `start`, recording each
/// way back to `start`: every cycle is found exactly once, from its smallest node.
fn search(adj: &[Vec<usize>], start: usize, path: &mut Vec<usize>, found: &mut Vec<Vec<usize>>) {
    let Some(&last) = path.last() else {
        return;
    };
    for &next in &adj[last] {
        if found.len() >= MAX_CYCLES {
            return;
        }
        if next == start {
            found.push(path.clone());
        } else if next > start && !path.contains(&next) {
            path.push(next);
            search(adj, start, path, found);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles(edges: &[(&str, &str)]) -> Vec<String> {
        let nodes: BTreeSet<String> = edges
            .iter()
            .flat_map(|(a, b)| [a.to_string(), b.to_string()])
            .collect();
        let edges: Vec<(String, String)> = edges
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        elementary(&nodes, edges.iter())
            .into_iter()
            .map(|c| c.join(" "))
            .collect()
    }

    #[test]
    fn finds_each_cycle_once() {
        assert_eq!(cycles(&[("a", "b"), ("b", "a")]), vec!["a b"]);
        assert_eq!(
            cycles(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "b"), ("c", "d")]),
            vec!["a b c", "b c"]
        );
        assert!(cycles(&[("a", "b"), ("b", "c"), ("a", "c")]).is_empty());
    }
}
