//! Just enough of a Rust lexer for the module graph: identifiers, `::` and punctuation, with
//! line numbers. Comments (nested block comments too), string, byte, C and raw string literals,
//! character literals, lifetimes and numbers produce no tokens, so a path written inside them
//! is never taken for a reference.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A plain `"..."` string literal's text, escapes left as written (for `#[path = "..."]`).
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

pub fn tokenize(src: &str) -> Vec<Token> {
    let mut lx = Lexer {
        s: src.chars().collect(),
        i: 0,
        line: 1,
        out: Vec::new(),
    };
    lx.run();
    lx.out
}

struct Lexer {
    s: Vec<char>,
    i: usize,
    line: usize,
    out: Vec<Token>,
}

fn ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer {
    fn at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    /// Moves past one character, counting lines.
    fn bump(&mut self) {
        if self.at(0) == Some('\n') {
            self.line += 1;
        }
        self.i += 1;
    }

    fn push(&mut self, tok: Tok, line: usize) {
        self.out.push(Token { tok, line });
    }

    fn run(&mut self) {
        while let Some(c) = self.at(0) {
            match c {
                '/' if self.at(1) == Some('/') => self.line_comment(),
                '/' if self.at(1) == Some('*') => self.block_comment(),
                '"' => {
                    let line = self.line;
                    let text = self.string();
                    self.push(Tok::Str(text), line);
                }
                '\'' => self.quote(),
                ':' if self.at(1) == Some(':') => {
                    self.push(Tok::PathSep, self.line);
                    self.i += 2;
                }
                c if c.is_ascii_digit() => self.number(),
                c if ident_start(c) => self.word(),
                c if c.is_whitespace() => self.bump(),
                c => {
                    self.push(Tok::Punct(c), self.line);
                    self.i += 1;
                }
            }
        }
    }

    fn line_comment(&mut self) {
        while self.at(0).is_some_and(|c| c != '\n') {
            self.i += 1;
        }
    }

    fn block_comment(&mut self) {
        let mut depth = 0;
        while let Some(c) = self.at(0) {
            if c == '/' && self.at(1) == Some('*') {
                depth += 1;
                self.i += 2;
            } else if c == '*' && self.at(1) == Some('/') {
                depth -= 1;
                self.i += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// A `"..."` string with escapes; `self.i` is at the opening quote. Returns its text.
    fn string(&mut self) -> String {
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.at(0) {
            match c {
                '\\' => {
                    self.i += 1;
                    self.bump();
                }
                '"' => {
                    self.i += 1;
                    return self.s[start..self.i - 1].iter().collect();
                }
                _ => self.bump(),
            }
        }
        self.s[start..].iter().collect()
    }

    /// `r"..."`, `r#"..."#`, ...; `self.i` is at the first `#` or the quote.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.at(0) == Some('#') {
            hashes += 1;
            self.i += 1;
        }
        self.i += 1; // the opening quote
        while let Some(c) = self.at(0) {
            if c == '"' && (1..=hashes).all(|k| self.at(k) == Some('#')) {
                self.i += 1 + hashes;
                return;
            }
            self.bump();
        }
    }

    /// A character literal (`'a'`, `'\n'`, `'\u{1F600}'`) or a lifetime (`'a`, `'static`).
    fn quote(&mut self) {
        self.i += 1;
        if self.at(0) == Some('\\') {
            self.i += 1;
            while self.at(0).is_some_and(|c| c != '\'') {
                self.i += 1;
            }
            self.i += 1;
        } else if self.at(1) == Some('\'') {
            self.i += 2;
        } else {
            while self.at(0).is_some_and(ident_char) {
                self.i += 1;
            }
        }
    }

    fn number(&mut self) {
        while let Some(c) = self.at(0) {
            let fraction = c == '.' && self.at(1).is_some_and(|d| d.is_ascii_digit());
            if !(ident_char(c) || fraction) {
                return;
            }
            self.i += 1;
        }
    }

    /// An identifier, keyword, raw identifier, or the prefix of a byte/C/raw string literal.
    fn word(&mut self) {
        let start = self.i;
        while self.at(0).is_some_and(ident_char) {
            self.i += 1;
        }
        let word: String = self.s[start..self.i].iter().collect();
        let next = self.at(0);
        match (word.as_str(), next) {
            ("r" | "br" | "cr", Some('"')) => self.raw_string(),
            ("r" | "br" | "cr", Some('#')) if matches!(self.at(1), Some('"' | '#')) => {
                self.raw_string()
            }
            ("r", Some('#')) if self.at(1).is_some_and(ident_start) => {
                self.i += 1;
                let start = self.i;
                while self.at(0).is_some_and(ident_char) {
                    self.i += 1;
                }
                let raw: String = self.s[start..self.i].iter().collect();
                self.push(Tok::Ident(raw), self.line);
            }
            ("b" | "c", Some('"')) => {
                self.string();
            }
            ("b", Some('\'')) => self.quote(),
            _ => self.push(Tok::Ident(word), self.line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(src: &str) -> Vec<String> {
        tokenize(src)
            .into_iter()
            .filter_map(|t| match t.tok {
                Tok::Ident(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn comments_strings_and_chars_hide_their_contents() {
        let src = r####"
            // crate::h1 in a line comment
            /* crate::h2 /* nested crate::h3 */ still crate::h4 */
            let s = "crate::h5 \" crate::h6";
            let r = r#"crate::h7 "quoted" crate::h8"#;
            let b = b"crate::h9"; let c = c"crate::h10"; let br = br##"crate::h11"##;
            let q = '"'; let e = '\''; let u = '\u{22}';
            fn f<'a>(x: &'a str) -> &'static str { x }
            keep::this
        "####;
        let ids = idents(src);
        let leaked: Vec<&String> = ids.iter().filter(|i| i.starts_with('h')).collect();
        assert!(leaked.is_empty(), "{leaked:?} leaked from {ids:?}");
        assert!(!ids.contains(&"static".to_string()));
        assert!(ids.ends_with(&["keep".to_string(), "this".to_string()]));
        let strs: Vec<Tok> = tokenize(r#"#[path = "a/b.rs"] x"#)
            .into_iter()
            .map(|t| t.tok)
            .filter(|t| matches!(t, Tok::Str(_)))
            .collect();
        assert_eq!(strs, vec![Tok::Str("a/b.rs".into())]);
    }

    #[test]
    fn path_separators_raw_identifiers_and_lines() {
        let toks = tokenize("a::b\nr#type::c 1.5 x");
        let kinds: Vec<Tok> = toks.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Ident("a".into()),
                Tok::PathSep,
                Tok::Ident("b".into()),
                Tok::Ident("type".into()),
                Tok::PathSep,
                Tok::Ident("c".into()),
                Tok::Ident("x".into()),
            ]
        );
        assert_eq!(toks[3].line, 2);
    }
}
