//! Brendan Gregg's folded stack format: `frame;frame;...;frame COUNT`, root first.
use std::collections::BTreeMap;

/// A symbolized stack as folded frame names: root first (comm, user outermost .. innermost,
/// kernel).
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub frames: Vec<String>,
    pub weight: u64,
}

/// Folded text of `stacks`: identical frame lists are merged (different addresses in one function
/// symbolize alike), zero weights dropped, lines sorted so the output is stable.
pub fn fold(stacks: &[Folded]) -> String {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks.iter().filter(|s| s.weight > 0) {
        *merged.entry(s.frames.join(";")).or_default() += s.weight;
    }
    lines(merged)
}

/// The folded lines of merged stacks (`frames weight`), in the map's (sorted) order.
pub(crate) fn lines(merged: BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    for (line, n) in merged {
        out.push_str(&line);
        out.push(' ');
        out.push_str(&n.to_string());
        out.push('\n');
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FoldedError {
    #[error("line {line}: expected `frame;frame;... COUNT`, got {text:?}")]
    Malformed { line: usize, text: String },
}

/// Parses folded text into (stack, count) pairs; blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<(&str, u64)>, FoldedError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim_end()
                .rsplit_once(' ')
                .and_then(|(stack, n)| Some((stack, n.parse().ok()?)))
                .filter(|(stack, _)| !stack.is_empty())
                .ok_or_else(|| FoldedError::Malformed {
                    line: i + 1,
                    text: l.to_string(),
                })
        })
        .collect()
}

/// Folded texts added together: the counts of identical stacks summed, lines sorted (the
/// same text [`fold`] makes of all their stacks at once).
pub fn merge(texts: &[&str]) -> Result<String, FoldedError> {
    let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
    for t in texts {
        for (stack, n) in parse(t)? {
            *merged.entry(stack).or_default() += n;
        }
    }
    Ok(merged
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{s} {n}\n"))
        .collect())
}

/// Sum of the counts of folded text (0 for malformed lines).
pub fn total(text: &str) -> u64 {
    parse(text)
        .map(|v| v.iter().map(|(_, n)| n).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(frames: &[&str], weight: u64) -> Folded {
        Folded {
            frames: frames.iter().map(|s| s.to_string()).collect(),
            weight,
        }
    }

    #[test]
    fn merges_identical_stacks_and_sorts() {
        let text = fold(&[
            f(&["nginx", "main", "ngx_x"], 2),
            f(&["nginx", "main"], 1),
            f(&["nginx", "main", "ngx_x"], 3),
            f(&["nginx", "zero"], 0),
        ]);
        assert_eq!(text, "nginx;main 1\nnginx;main;ngx_x 5\n");
        assert_eq!(total(&text), 6);
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let v = parse("a;b c_[k] 3\n\nx 1\n").unwrap();
        assert_eq!(v, [("a;b c_[k]", 3), ("x", 1)]);
        assert_eq!(
            parse("a;b\n").unwrap_err(),
            FoldedError::Malformed {
                line: 1,
                text: "a;b".into()
            }
        );
        assert!(parse(" 5\n").is_err());
    }

    #[test]
    fn merge_sums_identical_stacks() {
        let m = merge(&["a;b 2\nx 1\n", "a;b 3\na 4\n"]).unwrap();
        assert_eq!(m, "a 4\na;b 5\nx 1\n");
        assert_eq!(m, fold(&[f(&["a", "b"], 5), f(&["x"], 1), f(&["a"], 4)]));
        assert!(merge(&["bad\n"]).is_err());
    }
}
