//! A flat profile from folded stacks: per function, the samples where it is the leaf (self,
//! `perf report --no-children`) and the samples where it is anywhere on the stack (total,
//! `perf report --children`). A recursive function is counted once per sample in its total, so
//! no total exceeds 100%.
use std::collections::{BTreeMap, HashSet};

use super::folded::{self, FoldedError};

/// One function's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlatEntry {
    pub function: String,
    pub self_weight: u64,
    pub total_weight: u64,
}

/// Every function of `text` (folded, root first) and the total weight. `skip_root` leaves out
/// the first frame of each stack (kpath's root frame is the thread name, not a function).
pub fn flat(text: &str, skip_root: bool) -> Result<(Vec<FlatEntry>, u64), FoldedError> {
    let mut by_fn: BTreeMap<&str, FlatEntry> = BTreeMap::new();
    let mut total = 0;
    for (stack, n) in folded::parse(text)? {
        total += n;
        let frames: Vec<&str> = stack.split(';').skip(usize::from(skip_root)).collect();
        let Some(&leaf) = frames.last() else {
            continue;
        };
        let mut seen: HashSet<&str> = HashSet::new();
        for &f in &frames {
            if seen.insert(f) {
                by_fn
                    .entry(f)
                    .or_insert_with(|| FlatEntry {
                        function: f.to_string(),
                        ..Default::default()
                    })
                    .total_weight += n;
            }
        }
        by_fn.get_mut(leaf).expect("inserted above").self_weight += n;
    }
    Ok((by_fn.into_values().collect(), total))
}

/// The `n` largest entries by `key`, ties by name.
pub fn top(entries: &[FlatEntry], n: usize, key: fn(&FlatEntry) -> u64) -> Vec<&FlatEntry> {
    let mut v: Vec<&FlatEntry> = entries.iter().filter(|e| key(e) > 0).collect();
    v.sort_by(|a, b| key(b).cmp(&key(a)).then(a.function.cmp(&b.function)));
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(v: &'a [FlatEntry], f: &str) -> &'a FlatEntry {
        v.iter()
            .find(|e| e.function == f)
            .unwrap_or_else(|| panic!("no {f}"))
    }

    #[test]
    fn self_is_the_leaf_and_total_counts_each_stack_once() {
        let text = "\
srv;main;handle;read_[k] 5
srv;main;handle 3
srv;main;fib;fib;fib 4
srv;main;fib;fib;add 2
";
        let (v, total) = flat(text, true).unwrap();
        assert_eq!(total, 14);
        assert!(v.iter().all(|e| e.function != "srv"), "root skipped");
        let main = get(&v, "main");
        assert_eq!((main.self_weight, main.total_weight), (0, 14));
        let handle = get(&v, "handle");
        assert_eq!((handle.self_weight, handle.total_weight), (3, 8));
        assert_eq!(get(&v, "read_[k]").self_weight, 5);
        // fib recurses: 6 samples under it, not 4*3 + 2*2.
        let fib = get(&v, "fib");
        assert_eq!((fib.self_weight, fib.total_weight), (4, 6));
        assert_eq!(get(&v, "add").total_weight, 2);
        // Self weights add up to the total; no total exceeds it.
        assert_eq!(v.iter().map(|e| e.self_weight).sum::<u64>(), total);
        assert!(v.iter().all(|e| e.total_weight <= total));

        let by_self: Vec<&str> = top(&v, 3, |e| e.self_weight)
            .iter()
            .map(|e| e.function.as_str())
            .collect();
        assert_eq!(by_self, ["read_[k]", "fib", "handle"]);
        let by_total: Vec<&str> = top(&v, 2, |e| e.total_weight)
            .iter()
            .map(|e| e.function.as_str())
            .collect();
        assert_eq!(by_total, ["main", "handle"]);
    }

    #[test]
    fn the_root_counts_when_asked_and_garbage_is_an_error() {
        let (v, _) = flat("a;b 1\n", false).unwrap();
        assert_eq!(get(&v, "a").total_weight, 1);
        let (v, t) = flat("", true).unwrap();
        assert!(v.is_empty() && t == 0);
        assert!(flat("no count here\n", true).is_err());
    }
}
