//! The findings engine: one set of data-driven rules ([`rules::RULES`]) over the facts of a
//! run ([`facts::Facts`]), used by `record` (printed at the end), `report`, run.json and
//! bench.json (`findings`), the HTML report, and the built-in scenarios.
//!
//! A rule fires when every condition of one of its `when` groups holds. Each finding states
//! the measured numbers with their methods (its evidence template filled from the facts),
//! the thresholds that made it fire, what it means, what to try, and the scenario that
//! reproduces it.
use std::fmt::Write as _;

pub mod facts;
pub mod rules;

pub use facts::Facts;

use crate::run::{Finding, Run};
use facts::{Unit, FACTS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    High,
    Medium,
    Info,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// At least.
    Ge,
    /// At most.
    Le,
}

/// `fact op value`; false when the run lacks the fact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cond {
    pub fact: &'static str,
    pub op: Op,
    pub value: f64,
}

impl Cond {
    fn holds(&self, f: &Facts) -> bool {
        match (f.value(self.fact), self.op) {
            (Some(v), Op::Ge) => v >= self.value,
            (Some(v), Op::Le) => v <= self.value,
            (None, _) => false,
        }
    }

    /// `munmap per request ≥ 0.50`.
    fn describe(&self) -> String {
        let (unit, what) = fact(self.fact).map_or((Unit::Rate, self.fact), |&(_, u, w)| (u, w));
        let op = match self.op {
            Op::Ge => "≥",
            Op::Le => "≤",
        };
        format!("{what} {op} {}", show(unit, self.value))
    }
}

/// One rule: when it fires and what it says (`{fact}` in the evidence is the fact's value;
/// `[[...]]` is left out when a fact inside it is missing).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    /// Fires when all conditions of any one group hold.
    pub when: &'static [&'static [Cond]],
    pub evidence: &'static str,
    pub meaning: &'static str,
    pub try_: &'static str,
    pub scenario: Option<&'static str>,
}

impl Rule {
    pub fn fires(&self, f: &Facts) -> bool {
        self.when.iter().any(|g| g.iter().all(|c| c.holds(f)))
    }

    /// The thresholds, as the output states them.
    pub fn thresholds(&self) -> String {
        let groups: Vec<String> = self
            .when
            .iter()
            .map(|g| {
                g.iter()
                    .map(Cond::describe)
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect();
        groups.join(", or ")
    }

    fn finding(&self, f: &Facts) -> Finding {
        Finding {
            id: self.id.to_string(),
            severity: self.severity.name().to_string(),
            title: self.title.to_string(),
            evidence: format!(
                "{} [fires when {}]",
                fill(self.evidence, f),
                self.thresholds()
            ),
            meaning: self.meaning.to_string(),
            try_: self.try_.to_string(),
            scenario: self.scenario.map(str::to_string),
            strategy: None,
        }
    }
}

fn fact(name: &str) -> Option<&'static (&'static str, Unit, &'static str)> {
    FACTS.iter().find(|f| f.0 == name)
}

fn show(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Count => format!("{}", v.round() as u64),
        Unit::Rate => format!("{v:.2}"),
        Unit::Share => format!("{:.1}%", v * 100.0),
        Unit::Ns => crate::fmt::ns(v.round().max(0.0) as u64),
    }
}

/// A placeholder's text: a fact's value in its unit, or a label; `None` when the run lacks it.
fn value_of(name: &str, f: &Facts) -> Option<String> {
    if let Some(l) = f.labels.get(name) {
        return Some(l.clone());
    }
    let v = f.value(name)?;
    Some(show(fact(name).map_or(Unit::Rate, |&(_, u, _)| u), v))
}

/// Fills `{name}` placeholders; an optional part `[[...]]` goes when one of its facts is
/// missing, a missing fact elsewhere shows as `-`.
pub fn fill(template: &str, f: &Facts) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("[[") {
        out.push_str(&fill_part(&rest[..start], f).unwrap_or_else(|m| m));
        let after = &rest[start + 2..];
        let end = after.find("]]").unwrap_or(after.len());
        if let Ok(part) = fill_part(&after[..end], f) {
            out.push_str(&part);
        }
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(&fill_part(rest, f).unwrap_or_else(|m| m));
    out
}

/// `Ok` with every placeholder filled, `Err` with `-` for the missing ones.
fn fill_part(text: &str, f: &Facts) -> Result<String, String> {
    let mut out = String::new();
    let mut missing = false;
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        match value_of(name, f) {
            Some(v) => out.push_str(&v),
            None => {
                missing = true;
                out.push('-');
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    if missing {
        Err(out)
    } else {
        Ok(out)
    }
}

/// Every rule that fires on `facts`, most severe first (then in rule order).
pub fn evaluate(facts: &Facts) -> Vec<Finding> {
    let mut fired: Vec<(Severity, usize, Finding)> = rules::RULES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.fires(facts))
        .map(|(i, r)| (r.severity, i, r.finding(facts)))
        .collect();
    fired.sort_by_key(|(s, i, _)| (*s, *i));
    fired.into_iter().map(|(_, _, f)| f).collect()
}

/// The findings of a recorded run.
pub fn for_run(run: &Run) -> Vec<Finding> {
    evaluate(&Facts::from_run(run))
}

/// The terminal's findings section.
pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nfindings");
    if findings.is_empty() {
        let _ = writeln!(
            out,
            "none of kpath's {} rules fired (`kpath report DIR --json` has the numbers)",
            rules::RULES.len()
        );
        return out;
    }
    for f in findings {
        let who = f
            .strategy
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let _ = writeln!(out, "[{}] {}{who}: {}", f.severity, f.id, f.title);
        let _ = writeln!(out, "  evidence: {}", f.evidence);
        let _ = writeln!(out, "  meaning:  {}", f.meaning);
        let _ = writeln!(out, "  try:      {}", f.try_);
        if let Some(s) = &f.scenario {
            let _ = writeln!(out, "  see:      kpath scenario {s}");
        }
    }
    out
}

/// The HTML report's findings section.
pub fn html(findings: &[Finding]) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::from("<section class=\"findings\"><h2>Findings</h2>");
    if findings.is_empty() {
        let _ = write!(
            out,
            "<p>None of kpath's {} rules fired.</p>",
            rules::RULES.len()
        );
    }
    for f in findings {
        let who = f
            .strategy
            .as_deref()
            .map(|s| format!(" ({})", esc(s)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<div class=\"finding {sev}\" id=\"finding-{id}\"><h3>[{sev}] {title}{who}</h3>\
             <p><b>evidence</b> {ev}</p><p><b>meaning</b> {me}</p><p><b>try</b> {tr}</p>",
            sev = esc(&f.severity),
            id = esc(&f.id),
            title = esc(&f.title),
            ev = esc(&f.evidence),
            me = esc(&f.meaning),
            tr = esc(&f.try_),
        );
        if let Some(s) = &f.scenario {
            let _ = write!(
                out,
                "<p><b>see</b> <code>kpath scenario {}</code></p>",
                esc(s)
            );
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
    out
}

#[cfg(test)]
mod tests;
