//! Every example in every `--help` parses: the lines under "Examples:" are taken from the help
//! clap renders, shell syntax is reduced to the arguments kpath would get (`$(...)` becomes a
//! number, a pipe or redirection ends the command, two spaces start its description), and the
//! result goes through `Cli::try_parse_from`. Commands nested in an example (`vm -- ARGS`,
//! `record -- kpath ...`) are parsed too.
use clap::{CommandFactory, Parser};

use super::Cli;

/// The example lines of one rendered help text: those under "Examples:" that run kpath.
fn example_lines(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.trim_end() == "Examples:" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let t = line.trim_start();
        let t = t.strip_prefix("sudo ").unwrap_or(t);
        if t.starts_with("kpath ") || t == "kpath" {
            out.push(t.to_string());
        }
    }
    out
}

/// `$(...)` (nested parentheses allowed) replaced by `1234`, as a shell would substitute a pid.
fn substitute(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let mut depth = 0;
        let mut end = rest.len();
        for (j, c) in rest[i + 1..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1 + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push_str("1234");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The arguments of one example: description cut at two spaces, the command at the first
/// unquoted `|`, `>`, `<`, `;` or `&`, words split and unquoted as by sh.
fn words(line: &str) -> Vec<String> {
    let line = substitute(line);
    let command = line.split("  ").next().unwrap_or_default();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '|' | '>' | '<' | ';' | '&') => break,
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Parses one example and the kpath commands nested in it; the error says which failed.
fn check(line: &str) -> Result<(), String> {
    let args = words(line);
    check_args(&args).map_err(|e| format!("{line:?}: {e}"))
}

fn check_args(args: &[String]) -> Result<(), String> {
    let cli = Cli::try_parse_from(args).map_err(|e| e.render().to_string())?;
    // --probes and --method are strings to clap; the families check their words.
    let families = match &cli.command {
        super::Command::Record(a) => Some((&a.probe.probes, &a.probe.methods)),
        super::Command::Agent(a) => Some((&a.probe.probes, &a.probe.methods)),
        super::Command::Costs(a) => Some((&a.probes, &a.methods)),
        _ => None,
    };
    if let Some((probes, methods)) = families {
        crate::families::parse_families(probes).map_err(|e| format!("--probes: {e:#}"))?;
        crate::families::parse_forced(methods).map_err(|e| format!("--method: {e:#}"))?;
    }
    let nested: Option<Vec<String>> = match cli.command {
        super::Command::Vm(a) => Some(std::iter::once("kpath".into()).chain(a.args).collect()),
        super::Command::Record(a) if a.sel.command.first().is_some_and(|c| c == "kpath") => {
            Some(a.sel.command)
        }
        _ => None,
    };
    match nested {
        Some(inner) => check_args(&inner).map_err(|e| format!("in {:?}: {e}", inner.join(" "))),
        None => Ok(()),
    }
}

/// Every subcommand's long help, and the top level's.
fn helps() -> Vec<(String, String)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = vec![("kpath".to_string(), cmd.render_long_help().to_string())];
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    for name in names {
        let sub = cmd.find_subcommand_mut(&name).expect("listed above");
        out.push((name, sub.render_long_help().to_string()));
    }
    out
}

#[test]
fn every_subcommand_has_examples_of_itself() {
    for (name, help) in helps() {
        let lines = example_lines(&help);
        let own = if name == "kpath" {
            "kpath ".to_string()
        } else {
            format!("kpath {name}")
        };
        assert!(
            lines.iter().any(|l| l.starts_with(&own)),
            "kpath {name} --help has no example of itself:\n{help}"
        );
    }
}

#[test]
fn every_help_example_parses() {
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, help) in helps() {
        for line in example_lines(&help) {
            n += 1;
            if let Err(e) = check(&line) {
                failures.push(format!("kpath {name} --help: {e}"));
            }
        }
    }
    assert!(n >= 30, "only {n} examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_checker_rejects_what_kpath_would_reject() {
    assert!(check("kpath record --bogus -d 1").is_err());
    assert!(check("kpath load http://127.0.0.1:8080/ -d 0").is_err());
    assert!(check("kpath vm --kernel bookworm -- record --nope").is_err());
    assert!(check("kpath record -d 1 -- kpath workload --files x").is_err());
    assert!(check("kpath record -d 1 -- ./anything --goes").is_ok());
    assert!(check("kpath record --method kpaths=nosuch -d 1").is_err());
    assert!(check("kpath costs --traced --probes bogus").is_err());
}

#[test]
fn shell_syntax_is_reduced_to_arguments() {
    assert_eq!(
        words("kpath record -p $(pidof nginx | tr ' ' ,) -d 10    every nginx process"),
        ["kpath", "record", "-p", "1234", "-d", "10"]
    );
    assert_eq!(
        words("kpath doctor --json | jq .methods"),
        ["kpath", "doctor", "--json"]
    );
    assert_eq!(
        words("kpath costs --json > costs.json"),
        ["kpath", "costs", "--json"]
    );
    assert_eq!(
        words("kpath record -- sh -c 'exit 3'"),
        ["kpath", "record", "--", "sh", "-c", "exit 3"]
    );
    assert_eq!(
        example_lines("Examples:\n  sudo kpath doctor\n  other\n      continued\n"),
        ["kpath doctor"]
    );
}
